"""The serving stage: the workload and Service to apply, and whether they serve.

A plan on one node is served by a Deployment, one across nodes by a LeaderWorkerSet (whose CRD
must be installed); a workload of the other kind, left from a plan of another shape, is deleted
once the new one is applied. Readiness and ``status.replicas`` come from the one workload that
serves the plan.
"""

from __future__ import annotations

from quantwise.api.spec import QuantizedModelSpec
from quantwise.api.status import ArtifactStatus, ConditionType, Reason
from quantwise.reconcile.observe import WorkloadState
from quantwise.reconcile.placement import Placement
from quantwise.reconcile.state import Apply, Decision, Delete, owner_reference
from quantwise.render.names import LWS_GROUP, LWS_PLURAL
from quantwise.render.serving import serving_objects
from quantwise.settings import Settings

LWS_INSTALL = "https://lws.sigs.k8s.io/docs/installation/"


def serving_stage(
    d: Decision,
    spec: QuantizedModelSpec,
    artifact: ArtifactStatus,
    placed: Placement,
    settings: Settings,
) -> bool:
    """Apply the workload and Service; False when the plan cannot be served yet (see why)."""
    obs, plan = d.obs, placed.status
    tp, pp = plan.tensor_parallel_size, plan.pipeline_parallel_size
    across_nodes = pp > 1
    if across_nodes and obs.lws_installed is False:
        d.set(ConditionType.DEPLOYED, False, Reason.LEADER_WORKER_SET_MISSING,
              f"the plan spans {pp} nodes of {tp} {plan.gpu} GPUs, which quantwise serves with a "
              f"LeaderWorkerSet, but its CRD ({LWS_PLURAL}.{LWS_GROUP}) is not "
              f"installed: install LeaderWorkerSet ({LWS_INSTALL}) and the model deploys at the "
              "next check, or set spec.serving.maxNodes to 1 with a smaller budget or bigger "
              "GPUs")  # fmt: skip
        return False
    workload, service = serving_objects(
        obs.name, obs.namespace, spec, plan, settings.vllm_image, owner_reference(obs),
        placed.node_selector,
    )  # fmt: skip
    d.act(Apply(workload), Apply(service))
    # The other kind of workload goes once the new one is applied (its pods hold GPUs).
    if across_nodes and obs.deployment is not None:
        d.act(Delete(object_kind="Deployment", name=obs.name))
    if not across_nodes and obs.leader_worker_set is not None:
        d.act(Delete(object_kind="LeaderWorkerSet", name=obs.name))
    shape = f"{pp} x {tp} GPUs (TP={tp}, PP={pp})" if across_nodes else f"TP={tp}"
    d.set(ConditionType.DEPLOYED, True, Reason.APPLIED,
          f"{workload['kind']} {obs.name} serves {artifact.path} with {shape}")  # fmt: skip
    return True


def workload_of(d: Decision, placed: Placement) -> WorkloadState | None:
    """The observed workload that serves the plan (None: not there yet).

    Its LeaderWorkerSet for a plan across nodes, else its Deployment.
    """
    across_nodes = placed.status.pipeline_parallel_size > 1
    return d.obs.leader_worker_set if across_nodes else d.obs.deployment


def readiness(workload: WorkloadState | None, replicas: int) -> tuple[bool, Reason, str]:
    """Whether the workload serves ``replicas`` replicas, why not, in words.

    Ready means serving: enough replicas available, whether or not a rollout of a newer plan is
    still under way (the Updating condition says that).
    """
    if replicas == 0:
        return False, Reason.SCALED_TO_ZERO, "spec.serving.replicas is 0"
    # Not there yet reads as a rollout with nothing up: the same words the workload's first
    # status gives, so that its arrival changes nothing in the status (no write).
    workload = workload or WorkloadState()
    if workload.available_replicas >= replicas:
        return (
            True,
            Reason.AVAILABLE,
            (f"{workload.available_replicas} of {replicas} replicas available"),
        )
    behind = workload.observed_generation < workload.generation
    if behind or workload.updated_replicas < replicas or workload.progressing:
        return (
            False,
            Reason.PROGRESSING,
            (
                f"rolling out: {workload.updated_replicas} of {replicas} replicas updated, "
                f"{workload.available_replicas} available"
            ),
        )
    return (
        False,
        Reason.UNAVAILABLE,
        (f"{workload.available_replicas} of {replicas} replicas available"),
    )
