"""Decide, from what was observed, what a QuantizedModel's status should be and what to do.

Level-triggered and pure: the handlers observe the QuantizedModel, its Job (and the Job's pods)
and its workload from their watch caches, call :func:`reconcile`, then carry out the actions it
returns (create or delete the Job, apply the workload and Service, post Events) and write the
status it returns. The same observation always gives the same decision, so a restart at any
point resumes where it left off: the Job's name comes from the hash of what determines the
artifact, and a finished Job's result is kept in ``status.artifact``.

One reconcile is a chain of stages, each a function that returns a value or ends the reconcile:
the spec, the artifact (:mod:`~quantwise.reconcile.artifact`, with the running Job's progress
from :mod:`~quantwise.reconcile.progress`), its quality (:mod:`~quantwise.reconcile.quality`),
the placement (:mod:`~quantwise.reconcile.placement`), serving
(:mod:`~quantwise.reconcile.serving`) and verification (:mod:`~quantwise.reconcile.verification`).
"""

from __future__ import annotations

from pydantic import ValidationError

from quantwise.api.sizing import gpu_from_spec
from quantwise.api.spec import QuantizedModelSpec
from quantwise.api.status import ConditionType, Phase, PlanStatus, Reason
from quantwise.reconcile.artifact import Waiting, artifact_stage, check_artifact_matches_spec
from quantwise.reconcile.placement import placement_stage
from quantwise.reconcile.quality import quality_stage
from quantwise.reconcile.serving import readiness, serving_stage, workload_of
from quantwise.reconcile.state import Decision, Observation, Outcome, Validator
from quantwise.reconcile.update import rollout, update_reason, while_making
from quantwise.reconcile.verification import measured, verify_kv
from quantwise.render.names import artifact_hash, selector_labels
from quantwise.render.serving import endpoint
from quantwise.settings import Settings


def reconcile(obs: Observation, settings: Settings, validator: Validator | None = None) -> Outcome:
    """Decide the status and actions for one QuantizedModel (see the module docstring)."""
    d = Decision(obs)
    spec = parse_spec(d)
    if spec is None:
        return d.finish(Phase.FAILED, permanent=True)
    gpu = gpu_from_spec(spec.serving.gpu) if spec.serving.gpu else None
    artifact = artifact_stage(d, spec, artifact_hash(spec), settings, validator, gpu)
    if isinstance(artifact, Waiting):
        return while_making(d, spec, artifact)
    if not quality_stage(d, spec, artifact):
        return d.finish(Phase.FAILED, permanent=True)
    d.update(artifact=artifact)
    if problems := check_artifact_matches_spec(spec, artifact):
        d.set(ConditionType.VALIDATED, False, Reason.MISMATCH, "; ".join(problems))
        return d.finish(Phase.FAILED, permanent=True)
    if artifact.architecture is None:
        d.set(ConditionType.PLANNED, False, Reason.NO_ARCHITECTURE,
              "the report carries no architecture")  # fmt: skip
        return d.finish(Phase.FAILED, permanent=True)
    placed = placement_stage(d, spec, artifact, validator, settings.vllm_image)
    if placed is None:
        return d.finish(Phase.FAILED, permanent=True)
    found = measured(d, placed.status)
    reasons = [*placed.status.reasons, update_reason(spec, placed.status)]
    plan = placed.status.model_copy(update={"measured": found, "reasons": reasons})
    d.update(plan=plan)
    d.set(ConditionType.PLANNED, True, Reason.PLANNED, planned_message(plan))
    if not serving_stage(d, spec, artifact, placed, settings):
        return d.finish(Phase.DEPLOYING, permanent=True)
    verify_kv(d, spec, plan, found)
    workload = workload_of(d, placed)
    ready, reason, message = readiness(workload, spec.serving.replicas)
    d.set(ConditionType.READY, ready, reason, message)
    rollout(d, spec, plan, workload, ready)
    return d.finish(
        Phase.READY if ready else Phase.DEPLOYING,
        endpoint=endpoint(obs.name, obs.namespace),
        replicas=workload.available_replicas if workload else 0,
        selector=",".join(f"{k}={v}" for k, v in selector_labels(obs.name).items()),
    )


def planned_message(plan: PlanStatus) -> str:
    """The Planned condition's message: where, how much memory, how many KV tokens."""
    how = f" ({plan.sharing_strategy})" if plan.sharing_strategy else ""
    shared = f" shared by {plan.shared_by} pods{how}" if plan.shared_by else ""
    budget = (
        f" (the budget asks {plan.kv_cache_budget_tokens})" if plan.kv_cache_budget_tokens else ""
    )
    policy = f", memory policy {plan.memory_policy}" if plan.memory_policy else ""
    return (
        f"TP={plan.tensor_parallel_size} PP={plan.pipeline_parallel_size} on {plan.gpu}{shared}, "
        f"gpu-memory-utilization {plan.gpu_memory_utilization:.2f}{policy}, "
        f"{plan.kv_cache_tokens} KV tokens{budget}"
    )


def parse_spec(d: Decision) -> QuantizedModelSpec | None:
    """The spec, or None when it is invalid (Ready False InvalidSpec, naming each field)."""
    try:
        return QuantizedModelSpec.model_validate(d.obs.spec)
    except ValidationError as exc:
        message = "; ".join(
            f"spec.{'.'.join(str(p) for p in e['loc'])}: {e['msg'].removeprefix('Value error, ')}"
            for e in exc.errors()
        )
        d.set(ConditionType.READY, False, Reason.INVALID_SPEC, f"the spec is invalid: {message}")
        return None
