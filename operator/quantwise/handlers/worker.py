"""The worker threads: observe a model from the caches, decide, write only what differs.

Each worker takes a model from the work queue, builds its Observation from the watch caches (no
API reads, but for a ready vLLM pod's start-up log, once, and the tail of a running Job pod's log
at most every ``settings.progress_interval_seconds``), calls the pure
:func:`~quantwise.reconcile.core.reconcile`, carries out its actions (an apply only when the
object differs from what quantwise last applied, or was edited since) and patches the status
when it changed. A reconcile that raises is retried with a doubling backoff; one that ends in a
permanent failure is not, until its model changes.
"""

from __future__ import annotations

import datetime
import logging
import threading
from typing import Any

import quantwise.metrics as metrics
from quantwise.api.spec import QuantizedModelSpec
from quantwise.handlers.cache import ModelKey, ModelView, model_view
from quantwise.handlers.queue import ShutDown
from quantwise.handlers.runtime import Runtime
from quantwise.handlers.writes import needs_apply
from quantwise.k8s import LogUnavailableError
from quantwise.reconcile.core import reconcile
from quantwise.reconcile.measured import LOG_LIMIT_BYTES, parse_vllm_log
from quantwise.reconcile.observe import (
    APPLIED_ANNOTATION,
    Applied,
    applied_view,
    desired_hash,
    job_state,
    pending_message,
    trim_job,
)
from quantwise.reconcile.state import (
    Apply,
    CreateJob,
    Delete,
    DeleteJob,
    Observation,
    Outcome,
    PostEvent,
    Scale,
)
from quantwise.reconcile.validation import kernel_validator
from quantwise.render.job import QUANTIZER_CONTAINER
from quantwise.render.names import FIELD_MANAGER, LABEL_ROLE, job_name
from quantwise.render.serving import LEADER_CONTAINER, VLLM_CONTAINER
from quantwise.vllm import DEFAULT_IMAGE

log = logging.getLogger("quantwise.worker")


def now() -> str:
    """The time, as conditions and Events carry it (RFC 3339, seconds)."""
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def observe(rt: Runtime, model: ModelView) -> tuple[Observation, str | None]:
    """What reconcile needs of ``model``, from the caches; and why the vLLM log was not read."""
    ns, name = model.namespace, model.name
    spec_body, status_body = model.spec, model.status  # each parsed once here
    try:
        spec: QuantizedModelSpec | None = QuantizedModelSpec.model_validate(spec_body)
    except ValueError:
        spec = None
    job, job_log = None, None
    if spec is not None:
        found = rt.job(ns, name, job_name(name, spec))
        if found is not None:
            pods = rt.job_pods(ns, found["metadata"]["name"])
            job = job_state(found, pods)
            if job.pod_running:
                job_log = read_job_log(rt, ns, pods[0])
    deployment = rt.applied("Deployment", ns, name)
    plan = status_body.get("plan") or {}
    across_nodes = (plan.get("pipelineParallelSize") or 1) > 1
    lws_installed: bool | None = None
    lws: Applied | None = None
    if across_nodes or (spec is not None and spec.serving.max_nodes > 1):
        lws_installed = rt.lws_installed()
        lws = rt.applied("LeaderWorkerSet", ns, name) if lws_installed else None
    serving = lws if across_nodes else deployment
    vllm_log, log_error = None, None
    ready = serving is not None and serving.workload and serving.workload.available_replicas
    if ready and plan and not plan.get("measured"):
        vllm_log, log_error = read_vllm_log(rt, ns, name, leaders=across_nodes)
    obs = Observation(
        name=name, namespace=ns, uid=model.uid, generation=model.generation, spec=spec_body,
        status=status_body, annotations=model.annotations, job=job,
        deployment=deployment.workload if deployment else None, now=now(),
        lws_installed=lws_installed, leader_worker_set=lws.workload if lws else None,
        inventory=(
            rt.inventory(spec.serving.node_selector)
            if spec is not None and spec.serving.gpu is None
            else None
        ),
        vllm_log=vllm_log, vllm_log_error=log_error, job_log=job_log,
        serving_pending=pending_message(rt.serving_pods(ns, name)),
    )  # fmt: skip
    return obs, log_error


# The tail of a Job pod's log that is read for its progress: the quantizer prints a progress line
# per decoder layer, between which llm-compressor logs about 4 lines per quantized module (7 per
# Llama layer); 500 lines hold several progress lines, 256 KiB caps an odd long line.
PROGRESS_TAIL_LINES = 500
PROGRESS_TAIL_BYTES = 256 * 1024


def read_job_log(rt: Runtime, namespace: str, pod: dict[str, Any]) -> str | None:
    """The tail of a running Job pod's log, when a read is due (None: not read now).

    Best effort, as the vLLM log: a read that fails (no permission for pods/log, the kubelet
    cannot be reached, the pod is gone) is logged and leaves the last known progress in place;
    either way the next read is ``settings.progress_interval_seconds`` away.
    """
    meta = pod["metadata"]
    uid = str(meta.get("uid") or meta.get("name"))
    if not rt.progress_due(uid):
        return None
    rt.progress_read(uid)
    try:
        return rt.kube.pod_log(namespace, meta["name"], QUANTIZER_CONTAINER, PROGRESS_TAIL_BYTES,
                               tail_lines=PROGRESS_TAIL_LINES)  # fmt: skip
    except LogUnavailableError as exc:
        log.info("%s/%s: no progress: could not read the log of pod %s (%s)", namespace,
                 meta.get("name"), meta.get("name"), exc)  # fmt: skip
        return None


def read_vllm_log(
    rt: Runtime, namespace: str, name: str, leaders: bool
) -> tuple[tuple[str, str] | None, str | None]:
    """The start of a ready serving pod's log (a leader's, for a LeaderWorkerSet), and why not.

    Read once per pod: a pod whose log had no KV-cache line is not read again (its log will not
    grow one). The log is optional: a read that fails (no permission for pods/log, a kubelet that
    cannot be reached, a pod gone) is returned as a message, never raised, and tried again after
    ``settings.log_retry_seconds``.
    """
    for pod in rt.serving_pods(namespace, name):
        meta, status = pod["metadata"], pod["status"]
        if leaders and (meta.get("labels") or {}).get(LABEL_ROLE) != "leader":
            continue
        if status.get("phase") != "Running" or not any(
            c.get("ready") for c in status.get("containerStatuses") or []
        ):
            continue
        uid = str(meta.get("uid") or meta.get("name"))
        if not rt.log_due(uid):
            continue
        container = LEADER_CONTAINER if leaders else VLLM_CONTAINER
        try:
            text = rt.kube.pod_log(namespace, meta["name"], container, LOG_LIMIT_BYTES)
        except LogUnavailableError as exc:
            rt.log_read(uid, ok=False)
            return None, (
                f"could not read the log of pod {meta['name']} ({exc}); trying again in "
                f"{rt.settings.log_retry_seconds:.0f} s"
            )
        rt.log_read(uid, ok=True)
        if parse_vllm_log(text) is None:
            return None, None
        return (str(meta["name"]), text), None
    return None, None


def execute(rt: Runtime, model: ModelView, outcome: Outcome) -> None:
    """Carry out the actions: each write only when it changes something."""
    ns = model.namespace
    for action in outcome.actions:
        if isinstance(action, CreateJob):
            log.info("%s/%s: creating Job %s", ns, model.name, action.name)
            created = rt.kube.create_job(ns, action.body)
            if created is not None:
                view = trim_job(created)
                rt.ledger.wrote(("Job", ns, action.name),
                                view["metadata"].get("resourceVersion"), view)  # fmt: skip
        elif isinstance(action, DeleteJob):
            log.info("%s/%s: deleting Job %s", ns, model.name, action.name)
            cached = rt.job(ns, model.name, action.name)
            rt.kube.delete_job(ns, action.name)
            _gone(rt, ("Job", ns, action.name), (cached or {}).get("metadata", {}).get(
                "resourceVersion"))  # fmt: skip
        elif isinstance(action, Apply):
            apply(rt, action.body)
        elif isinstance(action, Delete):
            live = rt.applied(action.object_kind, ns, action.name)
            if live is None:
                continue
            log.info("%s/%s: deleting %s (the plan changed shape)", ns, model.name,
                     action.object_kind)  # fmt: skip
            rt.kube.delete(action.object_kind, ns, action.name)
            _gone(rt, (action.object_kind, ns, action.name), live.resource_version)
        elif isinstance(action, Scale):
            log.info("%s/%s: scaling %s to %d", ns, model.name, action.object_kind,
                     action.replicas)  # fmt: skip
            rt.kube.scale(action.object_kind, ns, action.name, action.replicas)
        elif isinstance(action, PostEvent):
            # Through the seam, not kopf.event(): worker threads have no Kopf context.
            rt.kube.create_event(model.body, "Warning" if action.warning else "Normal",
                                 action.reason, action.message, now())  # fmt: skip


def _gone(rt: Runtime, key: tuple[str, str, str], version: str | None) -> None:
    """Record a delete: the cache's view at ``version`` (or older) is gone."""
    if version is not None and str(version).isdigit():
        rt.ledger.wrote(key, str(int(version) + 1), None)


def apply(rt: Runtime, body: dict[str, Any]) -> None:
    """Server-side apply ``body`` unless the object is already what it says (and unedited)."""
    meta = body["metadata"]
    key = (body["kind"], meta["namespace"], meta["name"])
    desired = desired_hash(body)
    if not needs_apply(desired, rt.applied(*key), rt.ledger, key):
        return
    annotations = {**(meta.get("annotations") or {}), APPLIED_ANNOTATION: desired}
    result = rt.kube.apply({**body, "metadata": {**meta, "annotations": annotations}})
    view = applied_view({**result, "kind": body["kind"]}, FIELD_MANAGER)
    rt.ledger.wrote(key, view.resource_version, view)
    rt.ledger.remember_apply(key, desired, view.digest)


def status_patch(old: dict[str, Any], new: dict[str, Any]) -> dict[str, Any]:
    """A merge patch from ``old`` to ``new`` (keys that disappear are set to None)."""
    patch: dict[str, Any] = {k: v for k, v in new.items() if old.get(k) != v}
    patch.update({k: None for k in old if k not in new})
    return patch


def reconcile_model(rt: Runtime, key: ModelKey) -> Outcome | None:
    """Observe, decide, act and write status for one model; None when it is gone."""
    model = rt.model(key)
    if model is None or model.deleting:
        metrics.forget(*key)
        rt.forget(key)
        return None
    with metrics.RECONCILE_SECONDS.time(), metrics.RECONCILE_ERRORS.count_exceptions():
        obs, log_error = observe(rt, model)
        validator = kernel_validator(rt.settings.vllm_image or DEFAULT_IMAGE)
        outcome = reconcile(obs, rt.settings, validator=validator)
        execute(rt, model, outcome)
        new = outcome.status.to_api()
        patch = status_patch(obs.status, new)  # the status observe() parsed
        if patch:
            written = rt.kube.patch_model_status(model.namespace, model.name, patch)
            if written is not None:
                view = model_view(written)
                rt.ledger.wrote(("QuantizedModel", *key), view.resource_version, view)
        metrics.record_status(model.namespace, model.name, new)
    if log_error is not None:
        rt.queue.add_after(key, rt.settings.log_retry_seconds)
    if obs.job is not None and obs.job.pod_running:  # come back for the Job's next progress
        rt.queue.add_after(key, rt.settings.progress_interval_seconds)
    return outcome


def work(rt: Runtime) -> None:
    """A worker thread: reconcile models from the queue until it shuts down."""
    rt.wait_attached()
    while True:
        try:
            key = rt.queue.get()
        except ShutDown:
            return
        try:
            if rt.active():
                reconcile_model(rt, key)
            rt.succeeded(key)
        except Exception:  # retried with backoff; the other models go on
            delay = rt.failed(key)
            log.exception("reconcile of %s/%s failed; again in %.0f s", *key, delay)
            rt.queue.add_after(key, delay)
        finally:
            rt.queue.done(key)


def resync(rt: Runtime, stop: threading.Event) -> None:
    """Every ``settings.resync_seconds``, reconcile every model from the caches.

    A safety net: hand edits and deletions arrive as watch events and are undone from there;
    this reads nothing from the API server and writes only what differs.
    """
    rt.wait_attached()
    while not stop.wait(rt.settings.resync_seconds):
        rt.wake_all()
