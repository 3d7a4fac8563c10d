"""What reconcile needs of the objects it watches, read from their API bodies (pure).

:func:`job_state` and :func:`workload_state` turn a Job (with its pods) and a Deployment or
LeaderWorkerSet into the small states reconcile decides on. The ``trim_*`` projections keep of an
object only the fields those parsers read, in the API's own shape, so the operator's watch caches
hold a few hundred bytes per object instead of whole objects with their managedFields, and the
same parsers read a trimmed body and a full one alike.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any

ANNOTATION_PREFIX = "quantwise.dev/"
APPLIED_ANNOTATION = f"{ANNOTATION_PREFIX}applied"
"""On every object quantwise applies: a hash of the body it applied (see :func:`desired_hash`)."""


@dataclass(frozen=True)
class JobState:
    """What the operator saw of the artifact's Job."""

    name: str
    succeeded: bool = False
    failed: bool = False
    failure_reason: str | None = None
    failure_message: str | None = None
    termination_message: str | None = None
    pod_pending: bool = False
    pod_pending_message: str | None = None
    oom_killed: bool = False
    pod: str | None = None
    """The newest pod's name."""
    pod_running: bool = False
    """The newest pod's container runs now (its log shows the Job's progress)."""
    pod_started_at: str | None = None
    """When it started running (RFC 3339), if the kubelet said."""


@dataclass(frozen=True)
class WorkloadState:
    """A Deployment's or LeaderWorkerSet's progress (a LeaderWorkerSet's groups are replicas)."""

    available_replicas: int = 0
    updated_replicas: int = 0
    generation: int = 0
    observed_generation: int = 0
    desired_replicas: int | None = None
    """``spec.replicas`` as the object is now (0 while stopped for an update)."""
    progressing: bool = False
    """Its controller reports a rollout under way (pods created, not all available yet)."""


def job_state(job: dict[str, Any], pods: list[dict[str, Any]]) -> JobState:
    """What reconcile needs of a Job: done or not, why it failed, its pod's last words.

    ``pods`` are the Job's pods, newest first.
    """
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
    running, started_at = False, None
    if pods and not succeeded and not failed:
        newest = pods[0].get("status") or {}
        running, started_at = _running_since(newest)
        if newest.get("phase") == "Pending":
            pending = True
            for cond in newest.get("conditions") or []:
                if cond.get("type") == "PodScheduled" and cond.get("status") == "False":
                    pending_message = cond.get("message")
    return JobState(
        name=job["metadata"]["name"],
        succeeded=bool(succeeded) and not failed,
        failed=failed is not None,
        failure_reason=failed.get("reason") if failed else None,
        failure_message=failed.get("message") if failed else None,
        termination_message=message,
        pod_pending=pending,
        pod_pending_message=pending_message,
        oom_killed=oom_killed,
        pod=str((pods[0].get("metadata") or {}).get("name")) if pods else None,
        pod_running=running,
        pod_started_at=started_at,
    )


def pending_message(pods: list[dict[str, Any]]) -> str | None:
    """The scheduler's message on the first of ``pods`` that waits for a node (None: none)."""
    for pod in pods:
        status = pod.get("status") or {}
        if status.get("phase") != "Pending":
            continue
        for cond in status.get("conditions") or []:
            if cond.get("type") == "PodScheduled" and cond.get("status") == "False":
                return str(cond.get("message") or "unschedulable")
    return None


# A Deployment's Progressing condition while its controller is still rolling pods out; once the
# new ReplicaSet is available the reason becomes NewReplicaSetAvailable, and stays so when a pod
# is lost later (kubernetes pkg/controller/deployment/util/deployment_util.go).
DEPLOYMENT_ROLLING = frozenset({"NewReplicaSetCreated", "FoundNewReplicaSet", "ReplicaSetUpdated"})


def _rolling_out(status: dict[str, Any], lws: bool) -> bool:
    """Whether the workload's controller reports a rollout under way, not a lost replica.

    A LeaderWorkerSet is Progressing whenever a group is not ready, and UpdateInProgress while
    groups are updated; Available appears once all were ready and turns False, not away, when
    one is lost (lws pkg/controllers/leaderworkerset_controller.go, updateConditions): so a
    rollout is UpdateInProgress, or Progressing before it was ever Available.
    """
    conditions = {c.get("type"): c for c in status.get("conditions") or []}
    if not lws:
        progressing = conditions.get("Progressing") or {}
        return (
            progressing.get("status") == "True" and progressing.get("reason") in DEPLOYMENT_ROLLING
        )
    if (conditions.get("UpdateInProgress") or {}).get("status") == "True":
        return True
    return (conditions.get("Progressing") or {}).get(
        "status"
    ) == "True" and "Available" not in conditions


def _running_since(pod_status: dict[str, Any]) -> tuple[bool, str | None]:
    """Whether the pod's container runs, and since when (None: the kubelet did not say)."""
    if pod_status.get("phase") != "Running":
        return False, None
    for container in pod_status.get("containerStatuses") or []:
        running = (container.get("state") or {}).get("running")
        if running is not None:
            return True, str(running.get("startedAt") or "") or None
    return True, None


def workload_state(body: dict[str, Any]) -> WorkloadState:
    """A Deployment's or LeaderWorkerSet's replicas: updated, available (LWS: ready groups).

    A LeaderWorkerSet's status has no observedGeneration: its generation stands in for it.
    """
    status = body.get("status") or {}
    generation = (body.get("metadata") or {}).get("generation") or 0
    lws = body.get("kind") == "LeaderWorkerSet"
    return WorkloadState(
        available_replicas=status.get("readyReplicas" if lws else "availableReplicas") or 0,
        updated_replicas=status.get("updatedReplicas") or 0,
        generation=generation,
        observed_generation=generation if lws else status.get("observedGeneration") or 0,
        desired_replicas=(body.get("spec") or {}).get("replicas"),
        progressing=_rolling_out(status, lws),
    )


# ----- projections for the watch caches -----


def _pick(source: dict[str, Any] | None, *keys: str) -> dict[str, Any]:
    return {k: source[k] for k in keys if source and source.get(k) is not None}


def trim_job(body: dict[str, Any]) -> dict[str, Any]:
    """A Job as :func:`job_state` reads it: its name and its status."""
    meta = body.get("metadata") or {}
    return {
        "metadata": _pick(meta, "name", "namespace", "uid", "resourceVersion"),
        "status": _pick(
            body.get("status"), "succeeded", "failed", "active", "conditions", "startTime",
            "completionTime",
        ),
    }  # fmt: skip


def trim_pod(body: dict[str, Any]) -> dict[str, Any]:
    """A pod as :func:`job_state` and the log reader read it: phase, scheduling, containers."""
    meta = body.get("metadata") or {}
    status = body.get("status") or {}
    containers = [
        {
            "name": c.get("name"),
            "ready": bool(c.get("ready")),
            "state": {
                k: _pick(v, "reason", "message", "exitCode", "startedAt")
                for k, v in (c.get("state") or {}).items()
                if k in ("terminated", "waiting", "running")
            },
        }
        for c in status.get("containerStatuses") or []
    ]
    return {
        "metadata": _pick(meta, "name", "namespace", "uid", "creationTimestamp", "labels"),
        "status": {
            "phase": status.get("phase"),
            "conditions": [
                _pick(c, "type", "status", "message")
                for c in status.get("conditions") or []
                if c.get("type") == "PodScheduled"
            ],
            "containerStatuses": containers,
        },
    }


def live_digest(body: dict[str, Any]) -> str:
    """A short hash of what quantwise applies in an object, as the object is now.

    Its spec, labels, owners and quantwise's own annotations: a hand edit of any of them changes
    it; a status update, or an annotation a controller adds (``deployment.kubernetes.io/
    revision``), does not.
    """
    meta = body.get("metadata") or {}
    ours = {
        k: v for k, v in (meta.get("annotations") or {}).items() if k.startswith(ANNOTATION_PREFIX)
    }
    return _hash([body.get("spec"), meta.get("labels"), ours, meta.get("ownerReferences")])


def edited_after_apply(body: dict[str, Any], manager: str) -> bool:
    """Whether another field manager wrote the object after ``manager`` last applied it.

    From ``metadata.managedFields`` (one entry per manager and operation, with the time of its
    last write; status writes by controllers are their own ``status`` entries and do not count):
    it tells a hand edit made while the operator was not running. Times have one-second
    resolution, so an edit in the second of the apply is not seen here.
    """
    entries = (body.get("metadata") or {}).get("managedFields") or []
    ours = [e.get("time") or "" for e in entries if e.get("manager") == manager]
    if not ours:
        return False
    applied = max(ours)
    return any(
        e.get("manager") != manager
        and e.get("subresource") != "status"
        and (e.get("time") or "") > applied
        for e in entries
    )


def desired_hash(body: dict[str, Any]) -> str:
    """A short hash of a body quantwise applies (before the annotation that carries it)."""
    return _hash(body)


def _hash(value: Any) -> str:
    text = json.dumps(value, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


@dataclass(frozen=True)
class Applied:
    """What the cache keeps of an object quantwise applies (a Deployment, LWS or Service)."""

    kind: str
    """Deployment, LeaderWorkerSet or Service."""
    name: str
    namespace: str
    resource_version: str
    applied: str | None
    """The hash quantwise applied, from the object's annotation (None: not applied by us)."""
    digest: str
    """:func:`live_digest` of the object as it is."""
    edited: bool
    """:func:`edited_after_apply`: another manager wrote it after quantwise's last apply."""
    workload: WorkloadState | None = None


def applied_view(body: dict[str, Any], manager: str) -> Applied:
    """An object quantwise applies (as field manager ``manager``), as the cache keeps it."""
    meta = body.get("metadata") or {}
    kind = str(body.get("kind") or "Service")
    return Applied(
        kind=kind,
        name=str(meta.get("name")),
        namespace=str(meta.get("namespace")),
        resource_version=str(meta.get("resourceVersion") or ""),
        applied=(meta.get("annotations") or {}).get(APPLIED_ANNOTATION),
        digest=live_digest(body),
        edited=edited_after_apply(body, manager),
        workload=workload_state(body) if kind != "Service" else None,
    )
