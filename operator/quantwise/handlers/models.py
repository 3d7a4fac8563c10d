"""Kopf handlers for QuantizedModels: thin, they observe, call the pure reconcile, and act.

Every trigger (the QuantizedModel created, changed or resumed; one of its Jobs or Deployments
changed; a periodic drift check) runs the same level-triggered :func:`reconcile_model`, which
reads the current state from the API server, so no trigger carries state of its own.
"""

from __future__ import annotations

import datetime
import json
import logging
import os
import threading
import time
from collections import defaultdict
from typing import Any

import kopf

import quantwise.metrics as metrics
from quantwise import API_GROUP, API_VERSION, PLURAL
from quantwise.api.spec import QuantizedModelSpec
from quantwise.k8s import LWS_GROUP, LWS_VERSION, Kube, LogUnavailableError
from quantwise.planning.inventory import LABEL_PRODUCT, GpuPool, NodeGpus, node_gpus, pools
from quantwise.reconcile.core import (
    DeploymentState,
    JobState,
    Observation,
    Outcome,
    Settings,
    reconcile,
)
from quantwise.reconcile.measured import LOG_LIMIT_BYTES, parse_vllm_log
from quantwise.reconcile.validation import kernel_validator
from quantwise.render.names import LABEL_MANAGED_BY, LABEL_ROLE, job_name, selector_labels
from quantwise.vllm import DEFAULT_IMAGE

# How often every known model is reconciled even when nothing changed: a Deployment edited or
# deleted by hand is restored within this time.
DRIFT_CHECK_SECONDS = float(os.environ.get("QUANTWISE_DRIFT_CHECK_SECONDS", "120"))
# Seconds before Kopf retries a handler that raised (the API seam has already retried 429/5xx
# answers and timeouts with backoff; this is what is left: an API server down for longer).
RETRY_BACKOFF_SECONDS = float(os.environ.get("QUANTWISE_RETRY_BACKOFF_SECONDS", "15"))
# How long the answer to "is LeaderWorkerSet installed?" is trusted.
LWS_DISCOVERY_SECONDS = 60.0
# A serving pod's log that could not be read is tried again after this long (the next reconcile
# after it: the drift check, or any change of the model or its children).
LOG_RETRY_SECONDS = 60.0
GPU_INDEX_KEY = "gpu"


class Runtime:
    """What the handlers share: the API seam, operator settings, one lock per model."""

    def __init__(self, kube: Kube, settings: Settings) -> None:
        self.kube = kube
        self.settings = settings
        self._locks: defaultdict[tuple[str, str], threading.Lock] = defaultdict(threading.Lock)
        self._guard = threading.Lock()
        self._known: set[tuple[str, str]] = set()
        self._children: dict[tuple[str, str, str], str] = {}
        # Kopf's index of GPU nodes (set by the first handler call; the drift thread reads it).
        self.gpu_nodes: Any = None
        self._lws: tuple[float, bool] | None = None
        # pod uid -> when its log may be read (again); inf: read, not to be read again.
        self._log_reads: dict[str, float] = {}

    def log_due(self, pod_uid: str) -> bool:
        """Whether a pod's log is to be read now: never read, or a failed read's wait is over."""
        with self._guard:
            return self._log_reads.get(pod_uid, 0.0) <= time.monotonic()

    def log_read(self, pod_uid: str, ok: bool) -> None:
        """Record a read of a pod's log.

        A log that was read is not read again (it will not grow the line); one that failed is
        tried again after LOG_RETRY_SECONDS.
        """
        with self._guard:
            self._log_reads[pod_uid] = float("inf") if ok else time.monotonic() + LOG_RETRY_SECONDS

    def lws_installed(self) -> bool:
        """Whether the API server serves LeaderWorkerSets (discovery, cached for a minute)."""
        now = time.monotonic()
        with self._guard:
            cached = self._lws
        if cached is not None and now - cached[0] < LWS_DISCOVERY_SECONDS:
            return cached[1]
        served = self.kube.api_group_served(LWS_GROUP, LWS_VERSION)
        with self._guard:
            self._lws = (now, served)
        return served

    def inventory(self) -> tuple[GpuPool, ...]:
        """The GPU pools of the labelled nodes Kopf has indexed (empty before the first call)."""
        index = self.gpu_nodes
        if index is None:
            return ()
        for _ in range(3):  # the index changes under the event loop: copy, retry if it moved
            try:
                return pools(list(index.get(GPU_INDEX_KEY, ())))
            except RuntimeError:
                continue
        return ()

    def remember(self, namespace: str, name: str) -> None:
        """Include a model in the periodic drift check."""
        with self._guard:
            self._known.add((namespace, name))

    def forget(self, namespace: str, name: str) -> None:
        """Drop a deleted model from the drift check."""
        with self._guard:
            self._known.discard((namespace, name))
            self._locks.pop((namespace, name), None)

    def known_models(self) -> list[tuple[str, str]]:
        """The models the drift check visits."""
        with self._guard:
            return sorted(self._known)

    def child_changed(self, kind: str, namespace: str, name: str, version: str | None) -> bool:
        """Whether this ``version`` of a Job or Deployment is news (None: it was deleted).

        ``version`` is a fingerprint of what reconcile reads of the child (:func:`fingerprint`).
        Kopf lists every watched object again each time a watch restarts, and each apply by the
        operator itself updates managedFields: neither changes what reconcile would decide.
        """
        key = (kind, namespace, name)
        with self._guard:
            if version is None:
                self._children.pop(key, None)
                return True
            if self._children.get(key) == version:
                return False
            self._children[key] = version
            return True

    def lock(self, namespace: str, name: str) -> threading.Lock:
        """The lock that serialises reconciles of one QuantizedModel across handler threads."""
        with self._guard:
            return self._locks[(namespace, name)]


def _now() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def job_state(job: dict[str, Any], pods: list[dict[str, Any]]) -> JobState:
    """What reconcile needs of a Job: done or not, why it failed, its pod's last words."""
    status = job.get("status") or {}
    conditions = {
        c.get("type"): c for c in status.get("conditions") or [] if c.get("status") == "True"
    }
    failed = conditions.get("Failed")
    succeeded = "Complete" in conditions or (status.get("succeeded") or 0) > 0
    message: str | None = None
    oom_killed = False
    pending = False
    pending_message: str | None = None
    for pod in pods:
        for container in (pod.get("status") or {}).get("containerStatuses") or []:
            terminated = (container.get("state") or {}).get("terminated")
            if terminated and terminated.get("message") and message is None:
                message = terminated["message"]
            if terminated and terminated.get("reason") == "OOMKilled":
                oom_killed = True
    if pods and not succeeded and not failed:
        newest = pods[0].get("status") or {}
        if newest.get("phase") == "Pending":
            pending = True
            for cond in newest.get("conditions") or []:
                if cond.get("type") == "PodScheduled" and cond.get("status") == "False":
                    pending_message = cond.get("message")
    return JobState(
        name=job["metadata"]["name"],
        active=(status.get("active") or 0) > 0,
        succeeded=bool(succeeded) and not failed,
        failed=failed is not None,
        failure_reason=failed.get("reason") if failed else None,
        failure_message=failed.get("message") if failed else None,
        termination_message=message,
        pod_pending=pending,
        pod_pending_message=pending_message,
        oom_killed=oom_killed,
    )


def deployment_state(dep: dict[str, Any]) -> DeploymentState:
    """What reconcile needs of a Deployment: how many replicas are up to date and available."""
    status = dep.get("status") or {}
    return DeploymentState(
        replicas=status.get("replicas") or 0,
        available_replicas=status.get("availableReplicas") or 0,
        updated_replicas=status.get("updatedReplicas") or 0,
        generation=(dep.get("metadata") or {}).get("generation") or 0,
        observed_generation=status.get("observedGeneration") or 0,
    )


def observe(rt: Runtime, body: dict[str, Any]) -> Observation:
    """Read the Job and the workload (Deployment or LeaderWorkerSet) of a QuantizedModel."""
    kube = rt.kube
    meta = body["metadata"]
    namespace, name = meta["namespace"], meta["name"]
    job: JobState | None = None
    try:
        spec = QuantizedModelSpec.model_validate(body.get("spec") or {})
    except ValueError:
        spec = None
    if spec is not None:
        job_body = kube.get_job(namespace, job_name(name, spec))
        if job_body is not None:
            job = job_state(job_body, kube.job_pods(namespace, job_body["metadata"]["name"]))
    dep = kube.get_deployment(namespace, name)
    # A LeaderWorkerSet exists only when the last plan spanned nodes (or one is being made):
    # read it then, not on every reconcile of every model.
    plan = (body.get("status") or {}).get("plan") or {}
    lws_installed: bool | None = None
    lws: dict[str, Any] | None = None
    if (plan.get("pipelineParallelSize") or 1) > 1 or _needs_lws(spec):
        lws_installed = rt.lws_installed()
        if lws_installed:
            lws = kube.get_leader_worker_set(namespace, name)
    inventory = rt.inventory() if spec is not None and spec.serving.gpu is None else None
    workload = lws if (plan.get("pipelineParallelSize") or 1) > 1 else dep
    vllm_log: tuple[str, str] | None = None
    log_error: str | None = None
    if workload is not None and plan and not plan.get("measured"):
        ready = (workload.get("status") or {}).get(
            "readyReplicas" if workload is lws else "availableReplicas"
        )
        if ready:
            vllm_log, log_error = read_vllm_log(rt, namespace, name, leaders=workload is lws)
    return Observation(
        name=name,
        namespace=namespace,
        uid=meta.get("uid") or "",
        generation=meta.get("generation") or 0,
        spec=body.get("spec") or {},
        status=body.get("status") or {},
        annotations=meta.get("annotations") or {},
        job=job,
        deployment=deployment_state(dep) if dep is not None else None,
        now=_now(),
        lws_installed=lws_installed,
        leader_worker_set=lws_state(lws) if lws is not None else None,
        inventory=inventory,
        vllm_log=vllm_log,
        vllm_log_error=log_error,
    )


def read_vllm_log(
    rt: Runtime, namespace: str, name: str, leaders: bool
) -> tuple[tuple[str, str] | None, str | None]:
    """The start of a ready serving pod's log (a leader's, for a LeaderWorkerSet), and why not.

    Read only while the plan has no measurement yet, once per pod: a pod whose log had no
    KV-cache line is not read again (its log will not grow one). The log is optional: a read
    that fails (no permission for pods/log, a kubelet that cannot be reached, a pod gone) is
    returned as a message, never raised, and tried again after LOG_RETRY_SECONDS.
    """
    labels = selector_labels(name)
    if leaders:
        labels[LABEL_ROLE] = "leader"
    selector = ",".join(f"{k}={v}" for k, v in labels.items())
    for pod in rt.kube.serving_pods(namespace, selector):
        meta, status = pod.get("metadata") or {}, pod.get("status") or {}
        statuses = status.get("containerStatuses") or []
        if status.get("phase") != "Running" or not any(c.get("ready") for c in statuses):
            continue
        uid = str(meta.get("uid") or meta.get("name"))
        if not rt.log_due(uid):
            continue
        container = "vllm-leader" if leaders else "vllm"
        try:
            text = rt.kube.pod_log(namespace, meta["name"], container, LOG_LIMIT_BYTES)
        except LogUnavailableError as exc:
            rt.log_read(uid, ok=False)
            return None, (
                f"could not read the log of pod {meta['name']} ({exc}); trying again in "
                f"{LOG_RETRY_SECONDS:.0f} s"
            )
        rt.log_read(uid, ok=True)
        if parse_vllm_log(text) is None:
            return None, None
        return (str(meta["name"]), text), None
    return None, None


def _needs_lws(spec: QuantizedModelSpec | None) -> bool:
    """Whether a plan may span nodes: then the operator must know if LWS is installed."""
    return spec is not None and spec.serving.max_nodes > 1


def lws_state(lws: dict[str, Any]) -> DeploymentState:
    """A LeaderWorkerSet's progress in a Deployment's terms (groups are its replicas)."""
    status = lws.get("status") or {}
    generation = (lws.get("metadata") or {}).get("generation") or 0
    return DeploymentState(
        replicas=status.get("replicas") or 0,
        available_replicas=status.get("readyReplicas") or 0,
        updated_replicas=status.get("updatedReplicas") or 0,
        generation=generation,
        observed_generation=generation,  # LWS status has no observedGeneration
    )


def _status_patch(old: dict[str, Any], new: dict[str, Any]) -> dict[str, Any]:
    """A merge patch from ``old`` to ``new`` (keys that disappear are set to None)."""
    patch: dict[str, Any] = {k: v for k, v in new.items() if old.get(k) != v}
    patch.update({k: None for k in old if k not in new})
    return patch


def reconcile_model(rt: Runtime, namespace: str, name: str, logger: kopf.Logger) -> Outcome | None:
    """Observe, decide, act and write status for one QuantizedModel; None when it is gone."""
    with metrics.RECONCILE_SECONDS.time(), metrics.RECONCILE_ERRORS.count_exceptions():
        return _reconcile_model(rt, namespace, name, logger)


def _reconcile_model(rt: Runtime, namespace: str, name: str, logger: kopf.Logger) -> Outcome | None:
    with rt.lock(namespace, name):
        body = rt.kube.get_model(namespace, name)
        if body is None or body["metadata"].get("deletionTimestamp"):
            metrics.forget(namespace, name)
            return None
        validator = kernel_validator(rt.settings.vllm_image or DEFAULT_IMAGE)
        outcome = reconcile(observe(rt, body), rt.settings, validator=validator)
        for action in outcome.actions:
            if action.kind == "create_job":
                logger.info("creating Job %s", action.name)
                rt.kube.create_job(namespace, action.body)
            elif action.kind == "delete_job":
                logger.info("deleting Job %s", action.name)
                rt.kube.delete_job(namespace, action.name)
            elif action.kind == "apply":
                rt.kube.apply(action.body)
            elif action.kind == "delete":
                logger.info("deleting %s %s (the plan changed shape)", action.reason, action.name)
                rt.kube.delete(action.reason, namespace, action.name)
            elif action.kind == "event":
                # Through the seam, not kopf.event(): the drift-check thread has no Kopf context.
                rt.kube.create_event(
                    body,
                    "Warning" if action.warning else "Normal",
                    action.reason,
                    action.message,
                    _now(),
                )
        old = body.get("status") or {}
        new = outcome.status.to_api()
        patch = _status_patch(old, new)
        if patch:
            rt.kube.patch_model_status(namespace, name, patch)
        metrics.record_status(namespace, name, new)
        return outcome


def _runtime(memo: Any) -> Runtime:
    runtime: Runtime = memo.runtime
    return runtime


@kopf.on.resume(API_GROUP, API_VERSION, PLURAL, backoff=RETRY_BACKOFF_SECONDS)
@kopf.on.create(API_GROUP, API_VERSION, PLURAL, backoff=RETRY_BACKOFF_SECONDS)
@kopf.on.update(API_GROUP, API_VERSION, PLURAL, backoff=RETRY_BACKOFF_SECONDS)
def model_changed(
    namespace: str | None,
    name: str,
    memo: Any,
    logger: kopf.Logger,
    **kwargs: Any,
) -> None:
    """The QuantizedModel was created, changed, or found at start-up."""
    assert namespace is not None  # QuantizedModels are namespaced.
    runtime = _runtime(memo)
    runtime.gpu_nodes = kwargs.get("gpu_nodes")  # Kopf passes each index by its name
    runtime.remember(namespace, name)
    outcome = reconcile_model(runtime, namespace, name, logger)
    if outcome is not None and outcome.permanent_failure:
        # Nothing changes until the spec does: do not retry (kopf would, with backoff).
        message = next(
            (c.message for c in reversed(outcome.status.conditions or []) if c.status == "False"),
            "failed",
        )
        raise kopf.PermanentError(message)


def drift_loop(rt: Runtime, stop: threading.Event, logger: logging.Logger) -> None:
    """Every DRIFT_CHECK_SECONDS, reconcile every known model: hand edits are undone.

    A thread rather than a per-object Kopf timer, because Kopf puts a finalizer on objects with
    timers, and a finalizer blocks deletion while the operator is down.
    """
    while not stop.wait(DRIFT_CHECK_SECONDS):
        for namespace, name in rt.known_models():
            try:
                if reconcile_model(rt, namespace, name, logger) is None:
                    rt.forget(namespace, name)
            except Exception:  # Keep checking the others; the next round retries this one.
                logger.exception("drift check of %s/%s failed", namespace, name)


@kopf.index("", "v1", "nodes", labels={LABEL_PRODUCT: kopf.PRESENT})
def gpu_nodes(name: str, labels: kopf.Labels, **_: Any) -> dict[str, NodeGpus] | None:
    """Index the GPU nodes GPU Feature Discovery labelled (Kopf keeps it current)."""
    node = node_gpus(name, dict(labels))
    return {GPU_INDEX_KEY: node} if node is not None else None


def fingerprint(body: Any) -> str:
    """What reconcile reads of a Job or Deployment: a spec change (generation), the status.

    Changes elsewhere (managedFields, resourceVersion, labels edited by hand) do not trigger a
    reconcile here; the drift check still sees them.
    """
    meta = body.get("metadata") or {}
    essence = [meta.get("generation"), meta.get("deletionTimestamp"), body.get("status")]
    return json.dumps(essence, sort_keys=True, default=str)


def _owner(body: kopf.Body) -> str | None:
    for ref in body.metadata.get("ownerReferences") or []:
        if ref.get("kind") == "QuantizedModel" and str(ref.get("apiVersion", "")).startswith(
            API_GROUP
        ):
            return str(ref["name"])
    return None


@kopf.on.event("batch", "v1", "jobs", labels={LABEL_MANAGED_BY: "quantwise"})
@kopf.on.event("apps", "v1", "deployments", labels={LABEL_MANAGED_BY: "quantwise"})
# Kopf serves this only where the LeaderWorkerSet CRD is installed (else it warns and goes on;
# the drift check still follows the model).
@kopf.on.event(LWS_GROUP, LWS_VERSION, "leaderworkersets", labels={LABEL_MANAGED_BY: "quantwise"})
def child_changed(
    body: kopf.Body,
    event: kopf.RawEvent,
    namespace: str | None,
    memo: Any,
    logger: kopf.Logger,
    **_: Any,
) -> None:
    """A model's Job, Deployment or LeaderWorkerSet changed: reconcile the model that owns it.

    Jobs start, finish, fail or are deleted; Deployments and LeaderWorkerSets gain or lose
    ready replicas.
    """
    owner = _owner(body)
    if owner is None or namespace is None:
        return
    runtime = _runtime(memo)
    deleted = event.get("type") == "DELETED"
    version = None if deleted else fingerprint(body)
    kind = str(body.get("kind") or "")
    if not runtime.child_changed(kind, namespace, body.metadata.name or "", version):
        return
    if kind == "Job":
        metrics.record_job(dict(body))
    reconcile_model(runtime, namespace, owner, logger)
