"""The values reconcile works with: what was observed, what to do, and the status being built.

:class:`Observation` is everything reconcile knows of one QuantizedModel and its children;
:data:`Action` is one thing to do against the API (a tagged union); :class:`Decision` collects
the conditions, Events and actions of one reconcile and ends it as an :class:`Outcome`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

from pydantic import ValidationError

from quantwise import API_GROUP_VERSION, KIND
from quantwise.api.spec import QuantizedModelSpec
from quantwise.api.status import (
    ArtifactStatus,
    Condition,
    ConditionType,
    Phase,
    QuantizedModelStatus,
    Reason,
)
from quantwise.planning.gpus import GPU
from quantwise.planning.inventory import GpuPool
from quantwise.planning.planner import TPFilter
from quantwise.reconcile.conditions import set_condition
from quantwise.reconcile.observe import JobState, WorkloadState


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
    deployment: WorkloadState | None
    now: str
    # A plan across nodes is served by a LeaderWorkerSet: whether its CRD is installed (None:
    # not known, assumed so), and the one this model has.
    lws_installed: bool | None = None
    leader_worker_set: WorkloadState | None = None
    # GPU pools found on the cluster's nodes, for a spec that names no GPU.
    inventory: tuple[GpuPool, ...] | None = None
    # (pod name, the start of its log) of a ready serving pod (the leader), when read.
    vllm_log: tuple[str, str] | None = None
    # Why a ready serving pod's log could not be read (it is tried again later).
    vllm_log_error: str | None = None
    # The scheduler's word on a serving pod that waits for a node (a new replica in a rollout).
    serving_pending: str | None = None
    # The tail of the running Job pod's log, when it was read now (its progress lines).
    job_log: str | None = None


# ----- actions -----


@dataclass(frozen=True)
class CreateJob:
    """Create the artifact's quantization or inspection Job."""

    kind: ClassVar[str] = "create_job"
    name: str
    body: dict[str, Any]


@dataclass(frozen=True)
class DeleteJob:
    """Delete a failed Job (to run it again)."""

    kind: ClassVar[str] = "delete_job"
    name: str


@dataclass(frozen=True)
class Apply:
    """Server-side apply a Deployment, LeaderWorkerSet or Service."""

    kind: ClassVar[str] = "apply"
    body: dict[str, Any]


@dataclass(frozen=True)
class Delete:
    """Delete a workload of the other kind, left from a plan of another shape."""

    kind: ClassVar[str] = "delete"
    object_kind: Literal["Deployment", "LeaderWorkerSet"]
    name: str


@dataclass(frozen=True)
class Scale:
    """Set a workload's replicas (its scale subresource): to stop or restart it for an update."""

    kind: ClassVar[str] = "scale"
    object_kind: Literal["Deployment", "LeaderWorkerSet"]
    name: str
    replicas: int


@dataclass(frozen=True)
class PostEvent:
    """Post an Event about the QuantizedModel."""

    kind: ClassVar[str] = "event"
    reason: str
    message: str
    warning: bool = False


Action = CreateJob | DeleteJob | Apply | Delete | Scale | PostEvent


@dataclass
class Outcome:
    """What reconcile decided: the status to write and the actions to carry out."""

    status: QuantizedModelStatus
    actions: list[Action] = field(default_factory=list)
    # True when nothing will change until the spec (or the retry annotation) does: the handler
    # stops retrying instead of looping.
    permanent_failure: bool = False


# ----- the kernel check -----


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


# ----- the decision in progress -----


class Decision:
    """One reconcile's status, conditions, Events and actions, as they are decided."""

    def __init__(self, obs: Observation) -> None:
        self.obs = obs
        try:
            current = QuantizedModelStatus.model_validate(obs.status or {})
        except ValidationError:
            current = QuantizedModelStatus()  # A status from an older operator: rebuild it.
        self.current = current
        # status.progress is shown only while a Job runs: the artifact stage sets it then.
        self.status = current.model_copy(
            update={"observed_generation": obs.generation, "progress": None}
        )
        self.conditions: list[Condition] = list(current.conditions or [])
        self.actions: list[Action] = []
        self.events: list[Action] = []

    def set(
        self, type_: ConditionType, ok: bool | None, reason: str, message: str, quiet: bool = False
    ) -> None:
        """Set a condition; a change of its status or reason is announced as an Event.

        ``quiet``: not announced (another condition's Event says the same).
        """
        status = "Unknown" if ok is None else ("True" if ok else "False")
        self.conditions, changed = set_condition(
            self.conditions, type_, status, reason, message, self.obs.generation, self.obs.now
        )
        known = Reason.of(reason)
        if changed and not quiet and (known is None or known.announced):
            wrong = ok is False and not (known is not None and known.in_progress)
            warning = wrong or (known is not None and known.warns)
            self.events.append(PostEvent(reason=reason, message=message, warning=warning))

    def condition(self, type_: ConditionType) -> Condition | None:
        """The condition of ``type_`` as it stands now."""
        return next((c for c in self.conditions if c.type == type_), None)

    def act(self, *actions: Action) -> None:
        """Do these (in order), before the Events."""
        self.actions.extend(actions)

    def update(self, **fields: Any) -> None:
        """Set status fields (artifact, plan...) of the status being built."""
        self.status = self.status.model_copy(update=fields)

    def finish(
        self, phase: Phase, permanent: bool = False, retry: str | None = None, **fields: Any
    ) -> Outcome:
        """End the reconcile: the status with ``phase``, the actions, then the Events.

        ``retry``: the value of the retry annotation acted on (None: unchanged).
        """
        if retry is not None:
            fields["retry"] = retry
        status = self.status.model_copy(
            update={"phase": phase, "conditions": self.conditions, **fields}
        )
        return Outcome(status=status, actions=[*self.actions, *self.events],
                       permanent_failure=permanent)  # fmt: skip


def owner_reference(obs: Observation) -> dict[str, Any]:
    """The ownerReference children carry, so deleting the QuantizedModel deletes them."""
    return {
        "apiVersion": API_GROUP_VERSION,
        "kind": KIND,
        "name": obs.name,
        "uid": obs.uid,
        "controller": True,
        "blockOwnerDeletion": True,
    }
