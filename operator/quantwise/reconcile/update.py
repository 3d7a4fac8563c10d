"""Updates: what the old server does while a new artifact is made, and how a rollout stands.

``spec.serving.updateStrategy`` decides. RollingUpdate (the default) never takes a serving model
down: the old artifact serves while the new one is made (the model is Ready, and Updating says
what happens) and while new replicas start beside the old ones; when the Job or a new replica
waits for a GPU, Updating and a Warning Event say so, with the numbers and the choice the user
has. Recreate stops the old server first: the update needs no GPU beyond what the model holds,
at the cost of downtime, which the Events record; if the new artifact cannot be made, the old
server is started again.
"""

from __future__ import annotations

from typing import Literal

from quantwise.api.spec import QuantizedModelSpec
from quantwise.api.status import ConditionType, Phase, PlanStatus, Reason
from quantwise.reconcile.artifact import Waiting
from quantwise.reconcile.observe import WorkloadState
from quantwise.reconcile.serving import readiness
from quantwise.reconcile.state import Decision, Outcome, Scale

UPDATING, READY = ConditionType.UPDATING, ConditionType.READY
RECREATE = "Set spec.serving.updateStrategy: Recreate"


def gpus_needed(spec: QuantizedModelSpec, plan: PlanStatus) -> tuple[int, int, int]:
    """GPUs at once: while serving, during a RollingUpdate's peak, during a Recreate's.

    A RollingUpdate serves ``replicas x TP x PP`` GPUs throughout and needs, besides them,
    the quantization Job's GPUs while a new artifact is made, then one more replica's while
    new replicas start; a Recreate needs the larger of the server's and the Job's.
    """
    replica = plan.tensor_parallel_size * plan.pipeline_parallel_size
    serving = replica * spec.serving.replicas
    job = spec.quantizer.gpus if spec.quantization.method != "none" else 0
    return serving, serving + max(job, replica), max(serving, job)


def update_reason(spec: QuantizedModelSpec, plan: PlanStatus) -> str:
    """A plan reason: the GPUs an update of this model needs, under each strategy."""
    serving, rolling, recreate = gpus_needed(spec, plan)
    return (
        f"updates: RollingUpdate (no downtime) needs up to {rolling} {plan.gpu} GPUs at once "
        f"({serving} serving + the quantization Job's or one more replica's); Recreate "
        f"(downtime) needs {recreate}: spec.serving.updateStrategy is "
        f"{spec.serving.update_strategy}"
    )


Kind = Literal["Deployment", "LeaderWorkerSet"]


def _old_server(d: Decision) -> tuple[Kind, WorkloadState] | None:
    """The workload that serves the previous artifact, if one does: its kind and state."""
    plan, artifact = d.current.plan, d.current.artifact
    if plan is None or artifact is None:
        return None
    lws = plan.pipeline_parallel_size > 1
    state = d.obs.leader_worker_set if lws else d.obs.deployment
    kind: Kind = "LeaderWorkerSet" if lws else "Deployment"
    return (kind, state) if state is not None else None


def while_making(d: Decision, spec: QuantizedModelSpec, waiting: Waiting) -> Outcome:
    """The new artifact is being made (or failed): the old server meanwhile, and the phase."""
    retry = waiting.retry
    old = _old_server(d)
    if old is None:  # nothing served yet: the first artifact
        return d.finish(waiting.phase, permanent=waiting.permanent, retry=retry)
    kind, server = old
    replicas = spec.serving.replicas
    recreate = spec.serving.update_strategy == "Recreate"
    stopped = server.desired_replicas == 0
    if waiting.permanent:
        if recreate and stopped and replicas:
            d.act(Scale(object_kind=kind, name=d.obs.name, replicas=replicas))
        d.set(UPDATING, False, Reason.UPDATE_FAILED,
              "the new artifact could not be made (see the Quantized condition); the previous "
              f"one ({_previous(d)}) serves on")  # fmt: skip
        _set_ready(d, server, replicas, restarting=recreate and stopped)
        return d.finish(Phase.FAILED, permanent=True, retry=retry)
    if recreate:
        if not stopped:
            d.act(Scale(object_kind=kind, name=d.obs.name, replicas=0))
        message = (
            f"{kind} {d.obs.name} is stopped while the new artifact is made "
            "(spec.serving.updateStrategy: Recreate): no service until the new one serves"
        )
        d.set(READY, False, Reason.RECREATING, message)
        d.set(UPDATING, True, Reason.RECREATING, message)
        return d.finish(waiting.phase, retry=retry)
    if waiting.job_pending and _short_of_gpus(waiting.job_pending):
        d.set(UPDATING, True, Reason.WAITING_FOR_GPU, _job_waits(d, spec, waiting.job_pending))
    else:
        d.set(
            UPDATING,
            True,
            Reason.NEW_ARTIFACT,
            f"making the new artifact while the previous one ({_previous(d)}) serves",
        )
    ready = _set_ready(d, server, replicas)
    return d.finish(Phase.READY if ready else waiting.phase, retry=retry)


def _previous(d: Decision) -> str:
    return d.current.artifact.path or "?" if d.current.artifact else "?"


def _set_ready(d: Decision, server: WorkloadState, replicas: int, restarting: bool = False) -> bool:
    """Ready from the old server (restarting: it was stopped for an update that failed)."""
    if restarting:
        d.set(READY, False, Reason.PROGRESSING, "restarting the previous server")
        return False
    ready, reason, message = readiness(server, replicas)
    d.set(READY, ready, reason, message)
    return ready


def _short_of_gpus(scheduler_message: str) -> bool:
    """Whether the scheduler waits for GPUs ("Insufficient nvidia.com/gpu", a MIG profile...)."""
    return "Insufficient nvidia.com/" in scheduler_message


def _job_waits(d: Decision, spec: QuantizedModelSpec, message: str) -> str:
    held = f"{d.current.plan.gpus_per_replica * spec.serving.replicas}" if d.current.plan else "its"
    return (
        f"the quantization Job waits for a free GPU ({message}) while this model's server holds "
        f"{held} GPUs: free {spec.quantizer.gpus} GPU(s), or {RECREATE} to stop the server while "
        "the new artifact is made (no service until it serves)"
    )


def rollout(
    d: Decision,
    spec: QuantizedModelSpec,
    plan: PlanStatus,
    workload: WorkloadState | None,
    ready: bool,
) -> None:
    """Updating: whether new replicas are still starting, and whether they wait for GPUs.

    The first rollout is no update: the condition appears once the model first serves.
    """
    if d.condition(UPDATING) is None and not ready:
        return
    replicas = spec.serving.replicas
    workload = workload or WorkloadState()
    behind = workload.observed_generation < workload.generation
    if not replicas or (not behind and workload.updated_replicas >= replicas):
        d.set(UPDATING, False, Reason.UP_TO_DATE, "every replica serves the current plan")
        return
    pending = d.obs.serving_pending
    if pending and _short_of_gpus(pending) and spec.serving.update_strategy == "RollingUpdate":
        d.set(UPDATING, True, Reason.ROLLOUT_WAITING_FOR_GPU,
              f"a new replica waits for {plan.gpus_per_replica} free GPU(s) ({pending}) while "
              f"the old ones serve: a rolling update needs one replica's GPUs more; free them, "
              f"or {RECREATE} to replace the replicas in place (no service meanwhile)")  # fmt: skip
        return
    d.set(UPDATING, True, Reason.ROLLING_OUT,
          f"rolling out: {workload.updated_replicas} of {replicas} replicas updated, "
          f"{workload.available_replicas} available")  # fmt: skip
