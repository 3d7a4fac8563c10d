"""Decide, from what was observed, what a QuantizedModel's status should be and what to do.

Level-triggered and pure: the handlers observe the QuantizedModel, its Job (and the Job's pod
termination message) and its Deployment, call :func:`reconcile`, then carry out the actions it
returns (create or delete the Job, server-side apply the Deployment and Service, post Events) and
write the status it returns. The same observation always gives the same decision, so a restart
at any point resumes where it left off: the Job's name comes from the hash of what determines
the artifact, and a finished Job's result is kept in ``status.artifact``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any, Literal

from pydantic import ValidationError

from quantwise.api.report import QuantizeError, QuantizeReport, ReportError, parse_report
from quantwise.api.spec import QuantizedModelSpec
from quantwise.api.status import (
    ArtifactStatus,
    Condition,
    MeasuredStatus,
    PlanStatus,
    QuantizedModelStatus,
)
from quantwise.planning.for_spec import budget_from_serving, gpu_from_spec, plan_spec
from quantwise.planning.gpus import GPU
from quantwise.planning.inventory import LABEL_PRODUCT, GpuPool
from quantwise.planning.planner import Budget, Plan, PlanError, TPFilter
from quantwise.planning.planner import plan as plan_with
from quantwise.planning.weights import WeightFormat, estimate_weights
from quantwise.reconcile.conditions import get_condition, set_condition
from quantwise.reconcile.measured import parse_vllm_log
from quantwise.render.job import quantization_job
from quantwise.render.names import artifact_dir, artifact_hash, job_name, selector_labels
from quantwise.render.serving import endpoint, serving_objects

RETRY_ANNOTATION = "quantwise.dev/retry"
"""Set (to any new value) on a Failed QuantizedModel to run its failed Job again."""


@dataclass(frozen=True)
class JobState:
    """What the operator saw of the artifact's Job."""

    name: str
    active: bool = False
    succeeded: bool = False
    failed: bool = False
    failure_reason: str | None = None
    failure_message: str | None = None
    termination_message: str | None = None
    pod_pending: bool = False
    pod_pending_message: str | None = None
    oom_killed: bool = False


@dataclass(frozen=True)
class DeploymentState:
    """What the operator saw of the vLLM Deployment."""

    replicas: int = 0
    available_replicas: int = 0
    updated_replicas: int = 0
    generation: int = 0
    observed_generation: int = 0


@dataclass(frozen=True)
class Observation:
    """Everything reconcile needs to know about one QuantizedModel."""

    name: str
    namespace: str
    uid: str
    generation: int
    spec: dict[str, Any]
    status: dict[str, Any]
    annotations: dict[str, str]
    job: JobState | None
    deployment: DeploymentState | None
    now: str
    # A plan across nodes is served by a LeaderWorkerSet: whether its CRD is installed (None:
    # not known, assumed so), and the one this model has (observed when the last plan spanned
    # nodes, so that it can be followed, or removed when the plan no longer does).
    lws_installed: bool | None = None
    leader_worker_set: DeploymentState | None = None
    # GPU pools found on the cluster's nodes, for a spec that names no GPU.
    inventory: tuple[GpuPool, ...] | None = None
    # (pod name, the start of its log) of a ready serving pod (the leader), when read.
    vllm_log: tuple[str, str] | None = None
    # Why a ready serving pod's log could not be read (it is tried again later).
    vllm_log_error: str | None = None


@dataclass(frozen=True)
class Settings:
    """Operator-wide defaults."""

    quantizer_image: str | None = None
    vllm_image: str | None = None


@dataclass(frozen=True)
class Action:
    """Something to do against the API."""

    kind: Literal["create_job", "delete_job", "apply", "delete", "event"]
    body: dict[str, Any] = field(default_factory=dict)
    name: str = ""
    reason: str = ""
    message: str = ""
    warning: bool = False


@dataclass
class Outcome:
    """What reconcile decided: the status to write and the actions to carry out."""

    status: QuantizedModelStatus
    actions: list[Action] = field(default_factory=list)
    # True when nothing will change until the spec (or the retry annotation) does: the handler
    # stops retrying instead of looping.
    permanent_failure: bool = False
    requeue_seconds: float | None = None


@dataclass(frozen=True)
class Validation:
    """What the kernel check said: the verdict, the kernel, and messages (errors or warnings)."""

    verdict: Literal["fast", "slow", "unsupported"]
    kernel: str | None
    messages: tuple[str, ...] = ()
    # Tensor-parallel sizes the kernel cannot run the checkpoint at (Marlin's shard shapes).
    tp_filter: TPFilter | None = None


Validator = Callable[[QuantizedModelSpec, ArtifactStatus | None, GPU | None], Validation | None]
"""Checks that vLLM loads the artifact on the GPU (None: nothing to check against); without an
artifact, what the quantization Job would write."""


def owner_reference(obs: Observation) -> dict[str, Any]:
    """The ownerReference children carry, so deleting the QuantizedModel deletes them."""
    return {
        "apiVersion": "quantwise.dev/v1alpha1",
        "kind": "QuantizedModel",
        "name": obs.name,
        "uid": obs.uid,
        "controller": True,
        "blockOwnerDeletion": True,
    }


class _Status:
    """Builds the new status: conditions set once each, Events for the ones that change."""

    def __init__(self, obs: Observation, current: QuantizedModelStatus) -> None:
        self.obs = obs
        self.conditions: list[Condition] = list(current.conditions or [])
        self.events: list[Action] = []

    def set(
        self, type_: str, ok: bool | None, reason: str, message: str, event: bool = True
    ) -> None:
        status = "Unknown" if ok is None else ("True" if ok else "False")
        self.conditions, changed = set_condition(
            self.conditions, type_, status, reason, message, self.obs.generation, self.obs.now
        )
        if changed and event:
            warning = ok is False and reason not in _PROGRESS_REASONS
            self.events.append(
                Action(kind="event", reason=reason, message=message, warning=warning)
            )


# Reasons of a False condition that mean "in progress", not "wrong".
_PROGRESS_REASONS = frozenset(
    {"JobCreated", "JobRunning", "JobPending", "JobRetrying", "Progressing", "ScaledToZero",
     "WaitingForArtifact", "Rollover"}
)  # fmt: skip


def check_artifact_matches_spec(spec: QuantizedModelSpec, artifact: ArtifactStatus) -> list[str]:
    """Reasons the reported checkpoint is not what the spec asked for (empty: it is)."""
    q = spec.quantization
    problems: list[str] = []
    if q.method == "none":
        if q.bits is not None and artifact.bits is not None and artifact.bits != q.bits:
            problems.append(
                f"spec.quantization.bits is {q.bits} but the checkpoint holds {artifact.bits}-bit "
                "weights"
            )
        if (
            q.group_size is not None
            and artifact.group_size is not None
            and artifact.group_size != q.group_size
        ):
            problems.append(
                f"spec.quantization.groupSize is {q.group_size} but the checkpoint uses "
                f"{artifact.group_size}"
            )
        return problems
    if artifact.bits is not None and artifact.bits != q.effective_bits:
        problems.append(
            f"the Job reported {artifact.bits}-bit weights but spec.quantization asks for "
            f"{q.effective_bits}"
        )
    group = q.effective_group_size
    if group is not None and artifact.group_size is not None and artifact.group_size != group:
        problems.append(
            f"the Job reported group size {artifact.group_size} but spec.quantization asks for "
            f"{group}"
        )
    return problems


def _artifact_from_report(
    report: QuantizeReport, hash_: str, job: str, method: str, location: str
) -> ArtifactStatus:
    q = report.quantization
    return ArtifactStatus(
        path=location,
        digest=report.artifact.digest,
        method=method,
        bits=q.weight_bits,
        group_size=q.group_size,
        weight_bytes=report.artifact.weight_bytes,
        format=q.format,
        hash=hash_,
        job_name=job,
        scheme=q.scheme,
        symmetric=q.symmetric,
        activation_bits=q.activation_bits,
        act_order=q.act_order,
        kv_cache_scheme=q.kv_cache_scheme,
        weight_breakdown=report.artifact.breakdown,
        architecture=report.architecture,
    )


def _weight_format(artifact: ArtifactStatus) -> WeightFormat:
    bits = artifact.bits or 16
    return WeightFormat(
        bits=bits,
        group_size=artifact.group_size if bits < 8 or (artifact.group_size or 0) > 0 else None,
        symmetric=artifact.symmetric if artifact.symmetric is not None else True,
    )


def reconcile(
    obs: Observation,
    settings: Settings,
    gpu: GPU | None = None,
    validator: Validator | None = None,
) -> Outcome:
    """Decide the status and actions for one QuantizedModel (see the module docstring)."""
    try:
        current = QuantizedModelStatus.model_validate(obs.status or {})
    except ValidationError:
        current = QuantizedModelStatus()  # A status from an older operator: rebuild it.
    st = _Status(obs, current)
    base = current.model_copy(update={"observed_generation": obs.generation})

    def finish(phase: str, permanent: bool = False, **updates: Any) -> Outcome:
        status = base.model_copy(update={"phase": phase, "conditions": st.conditions, **updates})
        return Outcome(status=status, actions=actions + st.events, permanent_failure=permanent)

    actions: list[Action] = []
    try:
        spec = QuantizedModelSpec.model_validate(obs.spec)
    except ValidationError as exc:
        message = "; ".join(
            f"spec.{'.'.join(str(p) for p in e['loc'])}: {e['msg'].removeprefix('Value error, ')}"
            for e in exc.errors()
        )
        st.set("Ready", False, "InvalidSpec", f"the spec is invalid: {message}")
        return finish("Failed", permanent=True)

    hash_ = artifact_hash(spec)
    job = job_name(obs.name, spec)
    owner = owner_reference(obs)
    artifact = current.artifact if current.artifact and current.artifact.hash == hash_ else None

    if artifact is None:
        quantized = get_condition(st.conditions, "Quantized")
        retry = obs.annotations.get(RETRY_ANNOTATION)
        retry_requested = retry is not None and retry != current.retry
        verb = "inspect" if spec.quantization.method == "none" else "quantize"
        # An inspection Job validates a checkpoint that exists; a quantization Job makes one.
        working = "Validating" if spec.quantization.method == "none" else "Quantizing"
        state = obs.job
        if state is not None and state.failed and retry_requested:
            actions.append(Action(kind="delete_job", name=job))
            st.set("Quantized", False, "JobRetrying", f"deleting failed Job {job} to run it again")
            return finish(working, retry=retry)
        if state is None:
            # The Job was there (or already found gone) and nobody asked to run it again.
            deleted = (
                quantized is not None
                and quantized.reason in ("JobCreated", "JobRunning", "JobPending", "JobDeleted")
                and job in quantized.message
            )
            if deleted and not retry_requested:
                st.set(
                    "Quantized",
                    False,
                    "JobDeleted",
                    f"Job {job} was deleted before it finished; set the annotation "
                    f"{RETRY_ANNOTATION} to any new value to run it again",
                )
                return finish("Failed", permanent=True)
            target = gpu or (gpu_from_spec(spec.serving.gpu) if spec.serving.gpu else None)
            preflight = validator(spec, None, target) if validator is not None else None
            if preflight is not None and preflight.verdict == "unsupported":
                st.set(
                    "Validated",
                    False,
                    "Unsupported",
                    "not quantized: the serving vLLM could not load the result; "
                    + "; ".join(preflight.messages),
                )
                return finish("Failed", permanent=True)
            body = quantization_job(obs.name, obs.namespace, spec, settings.quantizer_image, owner)
            actions.append(Action(kind="create_job", body=body, name=job))
            st.set("Quantized", False, "JobCreated", f"created Job {job} to {verb} the model")
            if retry_requested:
                return finish(working, retry=retry)
            return finish(working)
        if state.failed:
            reason, message = _job_failure(state)
            st.set("Quantized", False, reason, message)
            return finish("Failed", permanent=True)
        if not state.succeeded:
            if state.pod_pending:
                st.set(
                    "Quantized",
                    False,
                    "JobPending",
                    f"Job {job} is waiting for its pod to start"
                    + (f": {state.pod_pending_message}" if state.pod_pending_message else ""),
                )
                return finish("Pending")
            st.set("Quantized", False, "JobRunning", f"Job {job} is running ({verb})")
            return finish(working)
        try:
            report = parse_report(state.termination_message)
        except ReportError as exc:
            st.set(
                "Quantized", False, exc.reason, f"Job {job} succeeded but its report is bad: {exc}"
            )
            return finish("Failed", permanent=True)
        if isinstance(report, QuantizeError):
            st.set("Quantized", False, report.reason, report.message)
            return finish("Failed", permanent=True)
        artifact = _artifact_from_report(
            report, hash_, job, spec.quantization.method, _artifact_location(obs.name, spec)
        )
        gigabytes = report.artifact.weight_bytes / 1e9
        st.set(
            "Quantized",
            True,
            "Inspected" if spec.quantization.method == "none" else "Quantized",
            f"{gigabytes:.2f} GB of weights at {artifact.path}"
            + ("" if report.reused else f" in {report.duration_seconds:.0f} s"),
        )

    else:
        # The artifact for this spec is known: the Quantized condition holds for this generation.
        done = get_condition(st.conditions, "Quantized")
        st.set(
            "Quantized",
            True,
            done.reason if done and done.status == "True" else "Quantized",
            done.message if done and done.status == "True" else f"artifact at {artifact.path}",
        )

    base = base.model_copy(update={"artifact": artifact})
    problems = check_artifact_matches_spec(spec, artifact)
    if problems:
        st.set("Validated", False, "Mismatch", "; ".join(problems))
        return finish("Failed", permanent=True)
    if artifact.architecture is None:
        st.set("Planned", False, "NoArchitecture", "the report carries no architecture")
        return finish("Failed", permanent=True)
    arch = artifact.architecture
    fmt = _weight_format(artifact)
    if artifact.weight_breakdown is not None:
        weights = artifact.weight_breakdown.to_breakdown()
    else:
        weights = estimate_weights(arch, fmt)

    def attempt(
        target: GPU | None, budget: Budget | None = None
    ) -> tuple[Validation | None, Plan | None, str]:
        """Validate and plan on ``target``: the check, the plan (None: refused), why not."""
        checked = validator(spec, artifact, target) if validator is not None else None
        if checked is not None and checked.verdict == "unsupported":
            return checked, None, "; ".join(checked.messages)
        tp_filter = checked.tp_filter if checked else None
        try:
            if budget is not None and target is not None:
                return checked, plan_with(arch, weights, target, budget, fmt, tp_filter), ""
            return checked, plan_spec(spec, arch, weights, fmt, target, tp_filter), ""
        except (PlanError, ValueError) as exc:
            return checked, None, str(exc)

    node_selector: dict[str, str] | None = None
    gpu_choice: str | None = None
    inventory = obs.inventory or ()
    if gpu is None and spec.serving.gpu is None:
        if not inventory:
            st.set(
                "Planned",
                False,
                "NoGPU",
                "spec.serving.gpu is not set and no node carries the nvidia.com/gpu.product "
                "label of NVIDIA GPU Feature Discovery: name the GPU in spec.serving.gpu, or "
                "install GPU Feature Discovery (part of the NVIDIA GPU Operator)",
            )
            return finish("Failed", permanent=True)
        notes: list[str] = []
        chosen: tuple[GpuPool, Validation | None, Plan] | None = None
        for pool in inventory:
            budget = replace(
                budget_from_serving(spec.serving),
                gpus_per_node=min(spec.serving.gpus_per_node, pool.gpus_per_node),
                max_nodes=min(spec.serving.max_nodes, pool.nodes),
            )
            checked, planned, why = attempt(pool.gpu, budget)
            if planned is None:
                notes.append(f"{pool.product} ({pool.nodes} nodes x {pool.gpus_per_node}): {why}")
                continue
            chosen = (pool, checked, planned)
            break
        if chosen is None:
            st.set(
                "Planned",
                False,
                "DoesNotFit",
                "no GPU in the cluster fits: " + " | ".join(notes),
            )
            return finish("Failed", permanent=True)
        pool, checked, plan = chosen
        node_selector = {LABEL_PRODUCT: pool.product}
        gpu_choice = (
            f"{pool.product}: the smallest of the cluster's GPUs ({len(inventory)} types, from "
            f"GPU Feature Discovery labels) that fits, on {pool.nodes} nodes x "
            f"{pool.gpus_per_node}" + (" (skipped: " + " | ".join(notes) + ")" if notes else "")
        )
    else:
        target = gpu or (gpu_from_spec(spec.serving.gpu) if spec.serving.gpu else None)
        checked, planned, why = attempt(target)
        if checked is not None and checked.verdict == "unsupported":
            st.set("Validated", False, "Unsupported", why)
            return finish("Failed", permanent=True)
        if planned is None:
            _set_validated(st, checked)
            st.set("Planned", False, "DoesNotFit", why)
            return finish("Failed", permanent=True)
        plan = planned
    _set_validated(st, checked)
    plan_status = plan.to_status()
    if gpu_choice is not None:
        plan_status = plan_status.model_copy(
            update={"gpu_product": node_selector[LABEL_PRODUCT] if node_selector else None,
                    "gpu_source": "inventory", "reasons": [gpu_choice, *plan_status.reasons]}
        )  # fmt: skip
    else:
        plan_status = plan_status.model_copy(update={"gpu_source": "spec"})
    measured = _measured(obs, current, plan_status)
    if measured is not None:
        plan_status = plan_status.model_copy(update={"measured": measured})
    st.set(
        "Planned",
        True,
        "Planned",
        f"TP={plan.tensor_parallel_size} PP={plan.pipeline_parallel_size} on {plan.gpu.name}, "
        f"gpu-memory-utilization {plan.gpu_memory_utilization:.2f}, "
        f"{plan.kv_cache_tokens} KV tokens",
    )
    base = base.model_copy(update={"plan": plan_status})
    multi_node = plan.pipeline_parallel_size > 1
    tp, pp = plan.tensor_parallel_size, plan.pipeline_parallel_size
    if multi_node and obs.lws_installed is False:
        st.set(
            "Deployed",
            False,
            "LeaderWorkerSetMissing",
            f"the plan spans {pp} nodes of {tp} {plan.gpu.name} GPUs, which quantwise serves with "
            "a LeaderWorkerSet, but its CRD (leaderworkersets.leaderworkerset.x-k8s.io) is not "
            "installed: install LeaderWorkerSet (https://lws.sigs.k8s.io/docs/installation/) "
            "and the model deploys at the next check, or set spec.serving.maxNodes to 1 with a "
            "smaller budget or bigger GPUs",
        )
        return finish("Deploying", permanent=True)

    workload, svc = serving_objects(
        obs.name, obs.namespace, spec, plan_status, settings.vllm_image, owner, node_selector
    )
    # The other kind of workload, left from a plan that did (or did not) span nodes, goes once
    # the new one is applied (its pods hold GPUs the new one may need).
    stale = obs.deployment if multi_node else obs.leader_worker_set
    actions += [Action(kind="apply", body=workload), Action(kind="apply", body=svc)]
    if stale is not None:
        kind = "Deployment" if multi_node else "LeaderWorkerSet"
        actions.append(Action(kind="delete", name=obs.name, reason=kind))
    kind = workload["kind"]
    shape = f"{pp} x {tp} GPUs (TP={tp}, PP={pp})" if multi_node else f"TP={tp}"
    st.set("Deployed", True, "Applied", f"{kind} {obs.name} serves {artifact.path} with {shape}")

    if measured is None and obs.vllm_log_error is not None:
        # The measurement is optional: say why it is missing, and serve on.
        st.set(
            "KVCacheVerified",
            None,
            "LogUnavailable",
            f"vLLM's start-up log was not read: {obs.vllm_log_error}",
            event=False,
        )
    if measured is not None:
        budget_tokens = (
            plan_status.kv_cache_budget_bytes // plan_status.kv_cache_bytes_per_token
            if plan_status.kv_cache_bytes_per_token
            else 0
        )
        numbers = (
            f"vLLM allocated {measured.kv_cache_tokens:,} KV-cache tokens on pod "
            f"{measured.pod}; the plan predicted {measured.predicted_kv_cache_tokens:,} "
            f"({measured.error_percent:+.1f}%); the budget (concurrency {spec.serving.concurrency}"
            f" x maxModelLen {plan_status.max_model_len:,}) needs {budget_tokens:,}"
        )
        if measured.max_concurrency is not None:
            # vLLM's own verdict: whole sequences of maxModelLen its KV cache holds at once
            # (printed with two decimals). It also covers sliding-window and hybrid models,
            # whose token count vLLM 0.33 derives from it (kv_cache_utils.py).
            numbers += f"; vLLM holds {measured.max_concurrency:g} sequences of that length"
            enough = measured.max_concurrency + 0.005 >= spec.serving.concurrency
        else:
            enough = measured.kv_cache_tokens >= budget_tokens
        if enough:
            st.set("KVCacheVerified", True, "AsPlanned", numbers)
        else:
            st.set(
                "KVCacheVerified",
                False,
                "BelowBudget",
                numbers + ": lower spec.serving.concurrency or maxModelLen, or raise "
                "maxGpuMemoryUtilization",
            )

    observed = obs.leader_worker_set if multi_node else obs.deployment
    ready, reason, message = _readiness(observed, spec.serving.replicas)
    st.set("Ready", ready, reason, message)
    available = observed.available_replicas if observed else 0
    selector = ",".join(f"{k}={v}" for k, v in selector_labels(obs.name).items())
    return finish(
        "Ready" if ready else "Deploying",
        endpoint=endpoint(obs.name, obs.namespace),
        replicas=available,
        selector=selector,
    )


def _measured(
    obs: Observation, current: QuantizedModelStatus, plan: PlanStatus
) -> MeasuredStatus | None:
    """What vLLM reported, from the log just read, or kept from before for the same plan."""
    if obs.vllm_log is not None:
        pod, text = obs.vllm_log
        kv = parse_vllm_log(text)
        if kv is not None:
            predicted = plan.kv_cache_tokens
            error = (kv.kv_cache_tokens - predicted) / predicted * 100 if predicted else 0.0
            return MeasuredStatus(
                pod=pod,
                kv_cache_tokens=kv.kv_cache_tokens,
                kv_cache_gib=kv.kv_cache_gib,
                max_concurrency=kv.max_concurrency,
                predicted_kv_cache_tokens=predicted,
                error_percent=round(error, 2),
            )
    before = current.plan.measured if current.plan else None
    if before is not None and before.predicted_kv_cache_tokens == plan.kv_cache_tokens:
        return before
    return None


def _set_validated(st: _Status, checked: Validation | None) -> None:
    if checked is None:
        st.set("Validated", True, "Supported", "the checkpoint matches the spec")
    elif checked.verdict == "slow":
        st.set(
            "Validated",
            True,
            "SlowKernel",
            f"loads on {checked.kernel}, a slow path: " + "; ".join(checked.messages),
        )
    else:
        st.set("Validated", True, "FastKernel", f"loads on {checked.kernel}")


def _artifact_location(name: str, spec: QuantizedModelSpec) -> str:
    """Where the served checkpoint lives, in the user's terms (pvc://CLAIM/PATH or hf://REPO)."""
    if spec.quantization.method != "none" and spec.storage is not None:
        pvc = spec.storage.pvc
        return f"pvc://{pvc.claim_name}/{pvc.path}/{artifact_dir(name, spec)}"
    if spec.source.pvc is not None:
        return f"pvc://{spec.source.pvc.claim_name}/{spec.source.pvc.path}"
    assert spec.source.hugging_face is not None
    hf = spec.source.hugging_face
    return f"hf://{hf.repo}@{hf.revision}"


def _readiness(dep: DeploymentState | None, replicas: int) -> tuple[bool, str, str]:
    if replicas == 0:
        return False, "ScaledToZero", "spec.serving.replicas is 0"
    if dep is None:
        return False, "Progressing", "the Deployment is being created"
    if dep.observed_generation < dep.generation or dep.updated_replicas < replicas:
        return (
            False,
            "Progressing",
            (
                f"rolling out: {dep.updated_replicas} of {replicas} replicas updated, "
                f"{dep.available_replicas} available"
            ),
        )
    if dep.available_replicas < replicas:
        return False, "Unavailable", f"{dep.available_replicas} of {replicas} replicas available"
    return True, "Available", f"{dep.available_replicas} of {replicas} replicas available"


def _job_failure(state: JobState) -> tuple[str, str]:
    """Reason and message of a failed Job, preferring the pod's own QuantizeError."""
    if state.termination_message:
        try:
            report = parse_report(state.termination_message)
        except ReportError:
            report = None
        if isinstance(report, QuantizeError):
            return report.reason, report.message
    if state.oom_killed:
        # The kernel killed the container before it could write a report.
        return "OutOfMemory", (
            f"Job {state.name}: the quantizer was killed for using more host memory than its "
            "limit (OOMKilled): raise spec.quantizer.resources.limits.memory (the base model is "
            "loaded into host memory first), or lower spec.quantization.calibration.samples"
        )
    reason = state.failure_reason or "JobFailed"
    detail = state.failure_message or "the Job failed"
    tail = ""
    if state.termination_message and not state.termination_message.lstrip().startswith("{"):
        tail = f"; last output: {state.termination_message.strip()[-300:]}"
    return reason, f"Job {state.name}: {detail}{tail}"
