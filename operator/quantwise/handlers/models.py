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
from collections import defaultdict
from typing import Any

import kopf

import quantwise.metrics as metrics
from quantwise import API_GROUP, API_VERSION, PLURAL
from quantwise.api.spec import QuantizedModelSpec
from quantwise.k8s import Kube
from quantwise.reconcile.core import (
    DeploymentState,
    JobState,
    Observation,
    Outcome,
    Settings,
    reconcile,
)
from quantwise.reconcile.validation import kernel_validator
from quantwise.render.names import LABEL_MANAGED_BY, job_name
from quantwise.render.serving import DEFAULT_VLLM_IMAGE

# How often every known model is reconciled even when nothing changed: a Deployment edited or
# deleted by hand is restored within this time.
DRIFT_CHECK_SECONDS = float(os.environ.get("QUANTWISE_DRIFT_CHECK_SECONDS", "120"))
# Seconds before Kopf retries a handler that raised (the API seam has already retried 429/5xx
# answers and timeouts with backoff; this is what is left: an API server down for longer).
RETRY_BACKOFF_SECONDS = float(os.environ.get("QUANTWISE_RETRY_BACKOFF_SECONDS", "15"))


class Runtime:
    """What the handlers share: the API seam, operator settings, one lock per model."""

    def __init__(self, kube: Kube, settings: Settings) -> None:
        self.kube = kube
        self.settings = settings
        self._locks: defaultdict[tuple[str, str], threading.Lock] = defaultdict(threading.Lock)
        self._guard = threading.Lock()
        self._known: set[tuple[str, str]] = set()
        self._children: dict[tuple[str, str, str], str] = {}

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


def observe(kube: Kube, body: dict[str, Any]) -> Observation:
    """Read the Job and Deployment of a QuantizedModel."""
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
        validator = kernel_validator(rt.settings.vllm_image or DEFAULT_VLLM_IMAGE)
        outcome = reconcile(observe(rt.kube, body), rt.settings, validator=validator)
        for action in outcome.actions:
            if action.kind == "create_job":
                logger.info("creating Job %s", action.name)
                rt.kube.create_job(namespace, action.body)
            elif action.kind == "delete_job":
                logger.info("deleting Job %s", action.name)
                rt.kube.delete_job(namespace, action.name)
            elif action.kind == "apply":
                rt.kube.apply(action.body)
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
    namespace: str | None, name: str, memo: Any, logger: kopf.Logger, **_: Any
) -> None:
    """The QuantizedModel was created, changed, or found at start-up."""
    assert namespace is not None  # QuantizedModels are namespaced.
    runtime = _runtime(memo)
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
def child_changed(
    body: kopf.Body,
    event: kopf.RawEvent,
    namespace: str | None,
    memo: Any,
    logger: kopf.Logger,
    **_: Any,
) -> None:
    """A model's Job or Deployment changed: reconcile the model that owns it.

    Jobs start, finish, fail or are deleted; Deployments gain or lose available replicas.
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
