"""What the operator's threads share: the API seam, the settings, the caches, the work queue.

Kopf's indexes are the caches (quantwise.handlers.cache); Kopf hands them to every handler, and
the first handler call attaches them here so that the worker threads can read them. Reads merge
the cache with the operator's own writes it does not show yet (quantwise.handlers.writes).
"""

from __future__ import annotations

import datetime
import logging
import threading
import time
from collections.abc import Mapping
from typing import Any

from quantwise.handlers.cache import GPU_INDEX_KEY, ModelKey, ModelView
from quantwise.handlers.queue import WorkQueue
from quantwise.handlers.writes import Ledger
from quantwise.k8s import Kube
from quantwise.planning.inventory import GpuPool, pools
from quantwise.reconcile.observe import Applied
from quantwise.render.names import LWS_GROUP, LWS_VERSION
from quantwise.settings import Settings

# How long a "not installed" answer about LeaderWorkerSet is trusted ("installed" is for good:
# Kopf watches the resource from then on, or, watching named namespaces, after a restart).
LWS_RECHECK_SECONDS = 60.0
# How often a paused replica (peering) looks whether it may act again.
PEERING_CHECK_SECONDS = 10.0
log = logging.getLogger("quantwise.runtime")


def _values(store: Any) -> list[Any]:
    """A copy of a Kopf index store's values (Kopf changes it on its own thread: retry)."""
    for _ in range(5):
        try:
            return list(store)
        except RuntimeError:  # "dictionary changed size during iteration"
            continue
    return list(store)


class Runtime:
    """The state the handlers and the worker threads share (thread-safe)."""

    def __init__(self, kube: Kube, settings: Settings) -> None:
        self.kube = kube
        self.settings = settings
        self.queue: WorkQueue[ModelKey] = WorkQueue()
        self.ledger = Ledger()
        self.indexes: Mapping[str, Any] | None = None
        self._attached = threading.Event()
        self._guard = threading.Lock()
        self._seen: dict[tuple[str, str, str], str] = {}
        self._log_reads: dict[str, float] = {}
        self._progress_reads: dict[str, float] = {}
        self._failures: dict[ModelKey, int] = {}
        self._lws: tuple[float, bool] | None = None
        self._paused: tuple[float, bool] = (0.0, False)

    # ----- the caches -----

    def attach(self, kwargs: Mapping[str, Any]) -> None:
        """Keep Kopf's indexes (every handler gets them); workers start once they are here."""
        if self.indexes is None:
            self.indexes = {k: v for k, v in kwargs.items() if hasattr(v, "get")}
            self._attached.set()

    def wait_attached(self, timeout: float | None = None) -> bool:
        """Block until Kopf has filled the caches and called a handler."""
        return self._attached.wait(timeout)

    def shutdown(self) -> None:
        """Stop the workers (also those still waiting for the caches)."""
        self.queue.shutdown()
        self._attached.set()

    def _lookup(self, index: str, key: Any) -> list[Any]:
        store = (self.indexes or {}).get(index)
        if store is None:
            return []
        found = store.get(key)
        return _values(found) if found is not None else []

    def model(self, key: ModelKey) -> ModelView | None:
        """The QuantizedModel (None: not there), with the operator's own last status write."""
        cached = next(iter(self._lookup("models", key)), None)
        return self.ledger.fresher(
            ("QuantizedModel", *key), cached.resource_version if cached else None, cached
        )

    def model_keys(self) -> list[ModelKey]:
        """Every QuantizedModel the cache holds."""
        store = (self.indexes or {}).get("models")
        return sorted(_values(store.keys())) if store is not None else []

    def job(self, namespace: str, model: str, job: str) -> dict[str, Any] | None:
        """The model's Job called ``job`` (trimmed), or None."""
        cached = next(
            (j for j in self._lookup("jobs", (namespace, model)) if j["metadata"]["name"] == job),
            None,
        )
        version = (cached or {}).get("metadata", {}).get("resourceVersion")
        view: dict[str, Any] | None = self.ledger.fresher(("Job", namespace, job), version, cached)
        return view

    def job_pods(self, namespace: str, job: str) -> list[dict[str, Any]]:
        """The Job's pods (trimmed), newest first."""
        found = self._lookup("pods", ("job", namespace, job))
        return sorted(
            found, key=lambda p: p["metadata"].get("creationTimestamp") or "", reverse=True
        )

    def serving_pods(self, namespace: str, model: str) -> list[dict[str, Any]]:
        """The model's vLLM pods (trimmed)."""
        return self._lookup("pods", ("serving", namespace, model))

    def applied(self, kind: str, namespace: str, name: str) -> Applied | None:
        """A Deployment, LeaderWorkerSet or Service quantwise applies, as it is now."""
        index = {"Deployment": "deployments", "LeaderWorkerSet": "leaderworkersets",
                 "Service": "services"}[kind]  # fmt: skip
        cached = next(iter(self._lookup(index, (namespace, name))), None)
        version = cached.resource_version if cached else None
        view: Applied | None = self.ledger.fresher((kind, namespace, name), version, cached)
        return view

    def inventory(self, node_selector: Mapping[str, str] | None = None) -> tuple[GpuPool, ...]:
        """The GPU pools of the labelled nodes that ``node_selector`` selects."""
        return pools(self._lookup("gpu_nodes", GPU_INDEX_KEY), node_selector)

    # ----- what changed, what to do -----

    def changed(self, key: tuple[str, str, str], version: str | None) -> bool:
        """Whether ``version`` (a fingerprint of what reconcile reads) of an object is news.

        None: the object was deleted. A relist of an unchanged object, or the operator's own
        write that changed nothing reconcile reads, is not news.
        """
        with self._guard:
            if version is None:
                self._seen.pop(key, None)
                return True
            if self._seen.get(key) == version:
                return False
            self._seen[key] = version
            return True

    def wake(self, key: ModelKey) -> None:
        """Reconcile this model soon."""
        self.queue.add(key)

    def wake_all(self) -> None:
        """Reconcile every model (the periodic resync; after a pause)."""
        for key in self.model_keys():
            self.queue.add(key)

    def failed(self, key: ModelKey) -> float:
        """Count a failed reconcile; the seconds to wait before the next (doubling backoff)."""
        with self._guard:
            count = self._failures.get(key, 0)
            self._failures[key] = count + 1
        delay = self.settings.retry_backoff_seconds * 2**count
        return float(min(self.settings.retry_max_seconds, delay))

    def succeeded(self, key: ModelKey) -> None:
        """Reset the model's backoff."""
        with self._guard:
            self._failures.pop(key, None)

    def forget(self, key: ModelKey) -> None:
        """Drop what is kept of a deleted model."""
        with self._guard:
            self._failures.pop(key, None)
        self.ledger.forget(*key)

    # ----- pod logs -----

    def log_due(self, pod_uid: str) -> bool:
        """Whether a pod's log is to be read now: never read, or a failed read's wait is over."""
        with self._guard:
            return self._log_reads.get(pod_uid, 0.0) <= time.monotonic()

    def log_read(self, pod_uid: str, ok: bool) -> None:
        """Record a read of a pod's log.

        A log that was read is not read again (it will not grow the line); one that failed is
        tried again after ``settings.log_retry_seconds``.
        """
        with self._guard:
            self._log_reads[pod_uid] = (
                float("inf") if ok else time.monotonic() + self.settings.log_retry_seconds
            )

    def progress_due(self, pod_uid: str) -> bool:
        """Whether a running Job pod's log tail is to be read now (at most once an interval)."""
        with self._guard:
            return self._progress_reads.get(pod_uid, 0.0) <= time.monotonic()

    def progress_read(self, pod_uid: str) -> None:
        """Record a read (or a failed one) of a Job pod's log: the next is an interval away."""
        with self._guard:
            self._progress_reads[pod_uid] = (
                time.monotonic() + self.settings.progress_interval_seconds
            )

    # ----- discovery and peering -----

    def lws_installed(self) -> bool:
        """Whether the API server serves LeaderWorkerSets (discovery)."""
        now = time.monotonic()
        with self._guard:
            cached = self._lws
        if cached is not None and (cached[1] or now - cached[0] < LWS_RECHECK_SECONDS):
            return cached[1]
        served = self.kube.api_group_served(LWS_GROUP, LWS_VERSION)
        with self._guard:
            self._lws = (now, served)
        return served

    def active(self) -> bool:
        """Whether this replica may act (always, when standalone).

        With peering: when no live replica of the same or a higher priority is in the peering
        object (Kopf's own rule).
        """
        if not self.settings.peering:
            return True
        now = time.monotonic()
        with self._guard:
            checked, paused = self._paused
        if now - checked < PEERING_CHECK_SECONDS:
            return not paused
        # One ClusterKopfPeering when watching every namespace, else a KopfPeering in each.
        scopes = [None] if self.settings.cluster_wide else list(self.settings.namespaces)
        was_paused = paused
        paused = any(
            outranked(
                self.kube.peering_status(self.settings.peering, scope) or {},
                self.settings.identity or "",
                self.settings.priority,
            )
            for scope in scopes
        )
        with self._guard:
            self._paused = (now, paused)
        if was_paused and not paused:
            log.info("no replica outranks this one any more: acting again")
            self.wake_all()
        return not paused


def outranked(
    peers: Mapping[str, Any], identity: str, priority: int, now: datetime.datetime | None = None
) -> bool:
    """Whether a live peer other than ``identity`` has ``priority`` or more.

    ``peers`` is a Kopf peering object's status: ``{id: {priority, lifetime, lastseen}}``; a
    peer is live until ``lastseen + lifetime``. Kopf pauses every replica that such a peer
    outranks or ties (its peering engine), so a worker of this replica must not act then.
    """
    now = now or datetime.datetime.now(datetime.UTC)
    for peer, info in list(peers.items()):
        if peer == identity or not isinstance(info, Mapping):
            continue
        try:
            seen = datetime.datetime.fromisoformat(str(info.get("lastseen")).replace("Z", "+00:00"))
            if seen.tzinfo is None:
                seen = seen.replace(tzinfo=datetime.UTC)
            lifetime = float(info.get("lifetime") or 60)
        except ValueError:
            continue
        live = seen + datetime.timedelta(seconds=lifetime) > now
        if live and int(info.get("priority") or 0) >= priority:
            return True
    return False
