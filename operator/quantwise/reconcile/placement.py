"""The placement stage: which GPU serves the artifact, whether vLLM runs it fast there, the plan.

The GPU is ``spec.serving.gpu`` or, when the spec names none, the smallest GPU pool of the
cluster (GPU Feature Discovery labels, on the nodes ``spec.serving.nodeSelector`` selects) on
which the checkpoint loads and the plan fits: a MIG slice, a GPU shared by time-slicing or MPS,
or whole GPUs. The kernel check (:data:`~quantwise.reconcile.state.Validator`) may rule out
tensor-parallel sizes; the planner does the rest.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from quantwise.api.sizing import budget_from_serving, gpu_from_spec
from quantwise.api.spec import QuantizedModelSpec
from quantwise.api.status import ArtifactStatus, ConditionType, PlanStatus, Reason
from quantwise.planning.gpus import GPU
from quantwise.planning.inventory import GpuPool
from quantwise.planning.planner import Budget, Plan, PlanError, plan
from quantwise.planning.weights import WeightBreakdown, WeightFormat, estimate_weights
from quantwise.quantization.config import weight_format_of
from quantwise.reconcile.state import Decision, Validation, Validator
from quantwise.reconcile.validation import checkpoint_from_artifact

PLANNED, VALIDATED = ConditionType.PLANNED, ConditionType.VALIDATED


@dataclass(frozen=True)
class Placement:
    """Where and how the artifact is served: the plan, as status, and the node selector."""

    plan: Plan
    status: PlanStatus
    node_selector: dict[str, str] | None = None


@dataclass(frozen=True)
class _Attempt:
    """One GPU tried: the kernel check, the plan (None: refused) and why not."""

    checked: Validation | None
    plan: Plan | None
    why: str = ""


@dataclass(frozen=True)
class _Sizer:
    """Validates and plans one artifact on a GPU."""

    spec: QuantizedModelSpec
    artifact: ArtifactStatus
    validator: Validator | None
    default_image: str | None

    def attempt(self, gpu: GPU, budget: Budget) -> _Attempt:
        checked = self.validator(self.spec, self.artifact, gpu) if self.validator else None
        if checked is not None and checked.verdict == "unsupported":
            return _Attempt(checked, None, "; ".join(checked.messages))
        arch = self.artifact.architecture
        assert arch is not None  # the stage before refuses an artifact without one
        fmt = weight_format(self.artifact)
        tp_filter = checked.tp_filter if checked else None
        try:
            return _Attempt(checked, plan(arch, weights_of(self.artifact), gpu, budget, fmt,
                                          tp_filter))  # fmt: skip
        except (PlanError, ValueError) as exc:
            return _Attempt(checked, None, str(exc))


def placement_stage(
    d: Decision,
    spec: QuantizedModelSpec,
    artifact: ArtifactStatus,
    validator: Validator | None,
    default_image: str | None,
) -> Placement | None:
    """The placement, or None when there is none (a condition says why).

    ``default_image`` serves a spec that names no image: its vLLM release decides the sizing.
    """
    sizer = _Sizer(spec, artifact, validator, default_image)
    if spec.serving.gpu is None:
        return _from_inventory(d, sizer)
    budget = budget_from_serving(spec.serving, default_image)
    tried = sizer.attempt(gpu_from_spec(spec.serving.gpu), budget)
    if tried.checked is not None and tried.checked.verdict == "unsupported":
        d.set(VALIDATED, False, Reason.UNSUPPORTED, tried.why)
        return None
    set_validated(d, tried.checked)
    if tried.plan is None:
        d.set(PLANNED, False, Reason.DOES_NOT_FIT, tried.why)
        return None
    status = PlanStatus.from_plan(tried.plan).model_copy(update={"gpu_source": "spec"})
    return Placement(tried.plan, status)


def _from_inventory(d: Decision, sizer: _Sizer) -> Placement | None:
    """The smallest GPU pool of the cluster that runs and fits the model."""
    inventory = d.obs.inventory or ()
    if not inventory:
        d.set(PLANNED, False, Reason.NO_GPU,
              "spec.serving.gpu is not set and no node carries the nvidia.com/gpu.product label "
              "of NVIDIA GPU Feature Discovery: name the GPU in spec.serving.gpu, or install GPU "
              "Feature Discovery (part of the NVIDIA GPU Operator)")  # fmt: skip
        return None
    serving = sizer.spec.serving
    skipped: list[str] = []
    for pool in inventory:
        budget = replace(
            budget_from_serving(serving, sizer.default_image),
            gpus_per_node=min(serving.gpus_per_node, pool.gpus_per_node),
            max_nodes=min(serving.max_nodes, pool.nodes),
        )
        tried = sizer.attempt(pool.gpu, budget)
        if tried.plan is None:
            skipped.append(f"{pool.product} ({pool.describe}): {tried.why}")
            continue
        set_validated(d, tried.checked)
        return _placed_on(pool, tried.plan, len(inventory), skipped)
    d.set(PLANNED, False, Reason.DOES_NOT_FIT, "no GPU in the cluster fits: " + " | ".join(skipped))
    return None


def _placed_on(pool: GpuPool, chosen: Plan, types: int, skipped: list[str]) -> Placement:
    choice = (
        f"{pool.product}: the smallest of the cluster's GPUs ({types} kinds, from GPU Feature "
        f"Discovery labels) that fits, on {pool.describe}, requested as {pool.gpu.resource}"
        + (" (skipped: " + " | ".join(skipped) + ")" if skipped else "")
    )
    status = PlanStatus.from_plan(chosen)
    status = status.model_copy(update={
        "gpu_product": pool.product, "gpu_source": "inventory",
        "reasons": [choice, *status.reasons],
    })  # fmt: skip
    return Placement(chosen, status, pool.node_selector)


def set_validated(d: Decision, checked: Validation | None) -> None:
    """The Validated condition from the kernel check (True: it loads, fast or slow)."""
    if checked is None:
        d.set(VALIDATED, True, Reason.SUPPORTED, "the checkpoint matches the spec")
    elif checked.verdict == "slow":
        slow = "; ".join(checked.messages)
        d.set(
            VALIDATED, True, Reason.SLOW_KERNEL, f"loads on {checked.kernel}, a slow path: {slow}"
        )
    else:
        d.set(VALIDATED, True, Reason.FAST_KERNEL, f"loads on {checked.kernel}")


def weight_format(artifact: ArtifactStatus) -> WeightFormat:
    """How the artifact stores its weights, as the planner sizes them (layout included)."""
    return weight_format_of(checkpoint_from_artifact(artifact))


def weights_of(artifact: ArtifactStatus) -> WeightBreakdown:
    """The artifact's weights: measured by its Job, else estimated from its shape."""
    assert artifact.architecture is not None
    if artifact.weight_breakdown is not None:
        return artifact.weight_breakdown.to_breakdown()
    return estimate_weights(artifact.architecture, weight_format(artifact))
