"""The QuantizedModel status: what the operator observed and decided.

``status.plan`` is written by the operator and printed by ``quantwise plan --output json`` from
the same model, so the CLI shows exactly what the cluster will show.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Literal

from pydantic import Field

from quantwise.api.base import ApiModel
from quantwise.api.report import ReportQuality, WeightBytes
from quantwise.planning.architecture import Architecture
from quantwise.planning.planner import Plan


class Phase(StrEnum):
    """``status.phase``: a one-word summary of the conditions, for printer columns and people."""

    PENDING = "Pending"
    QUANTIZING = "Quantizing"
    VALIDATING = "Validating"
    DEPLOYING = "Deploying"
    READY = "Ready"
    FAILED = "Failed"


class ConditionType(StrEnum):
    """The conditions of a QuantizedModel, in the order the loop reaches them."""

    QUANTIZED = "Quantized"
    QUALITY_VERIFIED = "QualityVerified"
    VALIDATED = "Validated"
    PLANNED = "Planned"
    DEPLOYED = "Deployed"
    KV_CACHE_VERIFIED = "KVCacheVerified"
    READY = "Ready"
    UPDATING = "Updating"


class Reason(StrEnum):
    """The reasons quantwise itself sets (a Job's own reasons, e.g. GatedModel, pass through)."""

    # Quantized
    JOB_CREATED = "JobCreated"
    JOB_PENDING = "JobPending"
    JOB_RUNNING = "JobRunning"
    JOB_RETRYING = "JobRetrying"
    JOB_DELETED = "JobDeleted"
    JOB_FAILED = "JobFailed"
    OUT_OF_MEMORY = "OutOfMemory"
    QUANTIZED = "Quantized"
    INSPECTED = "Inspected"
    NO_PROGRESS = "NoProgress"
    # QualityVerified
    WITHIN_LIMIT = "WithinLimit"
    QUALITY_GATE_FAILED = "QualityGateFailed"
    NOT_MEASURED = "NotMeasured"
    # Validated
    SUPPORTED = "Supported"
    FAST_KERNEL = "FastKernel"
    SLOW_KERNEL = "SlowKernel"
    UNSUPPORTED = "Unsupported"
    MISMATCH = "Mismatch"
    # Planned
    PLANNED = "Planned"
    DOES_NOT_FIT = "DoesNotFit"
    NO_GPU = "NoGPU"
    NO_ARCHITECTURE = "NoArchitecture"
    # Deployed
    APPLIED = "Applied"
    LEADER_WORKER_SET_MISSING = "LeaderWorkerSetMissing"
    # KVCacheVerified
    AS_PLANNED = "AsPlanned"
    BELOW_BUDGET = "BelowBudget"
    LOG_UNAVAILABLE = "LogUnavailable"
    # Ready
    AVAILABLE = "Available"
    PROGRESSING = "Progressing"
    UNAVAILABLE = "Unavailable"
    SCALED_TO_ZERO = "ScaledToZero"
    INVALID_SPEC = "InvalidSpec"
    # Updating (and Ready, under Recreate)
    NEW_ARTIFACT = "NewArtifact"
    WAITING_FOR_GPU = "WaitingForGPU"
    ROLLING_OUT = "RollingOut"
    ROLLOUT_WAITING_FOR_GPU = "RolloutWaitingForGPU"
    RECREATING = "Recreating"
    UPDATE_FAILED = "UpdateFailed"
    UP_TO_DATE = "UpToDate"

    @classmethod
    def of(cls, text: str) -> Reason | None:
        """The member spelled ``text`` (None for a reason from elsewhere, e.g. a Job's own)."""
        return _BY_VALUE.get(text)

    @property
    def in_progress(self) -> bool:
        """A False condition with this reason means "not yet", not "wrong" (no Warning)."""
        return self in _IN_PROGRESS

    @property
    def warns(self) -> bool:
        """Posted as a Warning even on a True condition: something waits for the user."""
        return self in _WARNS

    @property
    def announced(self) -> bool:
        """Whether a change to this reason is posted as an Event.

        Steps a person follows are (JobCreated, Quantized, Applied, Available, every failure);
        the ones in between are only in the conditions, so that a fleet's Events stay few (a
        JobRunning, a Progressing, a FastKernel, a Planned says nothing the next Event does not:
        Applied names the shape the plan chose, status.plan holds the rest; every Job's pod is
        pending a moment, so JobPending is in the condition only, quoting the scheduler).
        """
        return self not in _QUIET


_BY_VALUE: dict[str, Reason] = {r.value: r for r in Reason}
_IN_PROGRESS = frozenset(
    {Reason.JOB_CREATED, Reason.JOB_PENDING, Reason.JOB_RUNNING, Reason.JOB_RETRYING,
     Reason.PROGRESSING, Reason.SCALED_TO_ZERO, Reason.RECREATING, Reason.UP_TO_DATE}
)  # fmt: skip
_WARNS = frozenset({Reason.WAITING_FOR_GPU, Reason.ROLLOUT_WAITING_FOR_GPU})
_QUIET = frozenset(
    {Reason.JOB_PENDING, Reason.JOB_RUNNING, Reason.PROGRESSING, Reason.SUPPORTED,
     Reason.FAST_KERNEL, Reason.PLANNED, Reason.LOG_UNAVAILABLE, Reason.ROLLING_OUT,
     Reason.UP_TO_DATE, Reason.WITHIN_LIMIT, Reason.NOT_MEASURED}
)  # fmt: skip


class Condition(ApiModel):
    """A standard Kubernetes condition (metav1.Condition)."""

    type: str = Field(max_length=316, description="Condition type: " + ", ".join(ConditionType))
    status: Literal["True", "False", "Unknown"] = Field(description="True, False or Unknown.")
    reason: str = Field(
        max_length=1024,
        pattern=r"^[A-Za-z]([A-Za-z0-9_,:]*[A-Za-z0-9_])?$",
        description="One CamelCase word saying why.",
    )
    message: str = Field(default="", max_length=32768, description="What happened, for humans.")
    observed_generation: int | None = Field(
        default=None, ge=0, description="The .metadata.generation this condition reflects."
    )
    last_transition_time: str = Field(
        description="When the status last changed (RFC 3339).",
        json_schema_extra={"format": "date-time"},
    )


class ArtifactStatus(ApiModel):
    """The checkpoint that is served."""

    path: str | None = Field(
        default=None, description="Where the artifact is (volume path or repo)."
    )
    digest: str | None = Field(default=None, description="sha256 of the artifact's index.")
    method: str | None = Field(default=None, description="Quantization method.")
    bits: int | None = Field(default=None, description="Weight bits.")
    group_size: int | None = Field(default=None, description="Quantization group size.")
    weight_bytes: int | None = Field(
        default=None, ge=0, description="Bytes of all weights, measured from safetensors headers."
    )
    format: str | None = Field(default=None, description="Checkpoint format, e.g. pack-quantized.")
    hash: str | None = Field(
        default=None, description="Hash of the source and quantization spec it was made from."
    )
    job_name: str | None = Field(default=None, description="The Job that made or inspected it.")
    scheme: str | None = Field(default=None, description="Normalised scheme, e.g. wna16.")
    symmetric: bool | None = Field(default=None, description="Symmetric quantization.")
    activation_bits: int | None = Field(default=None, description="Activation bits.")
    act_order: str | None = Field(default=None, description="Act-order (desc_act) of the weights.")
    kv_cache_scheme: str | None = Field(
        default=None, description="KV-cache quantization the checkpoint carries scales for."
    )
    weight_breakdown: WeightBytes | None = Field(
        default=None, description="Weight bytes grouped by how vLLM places them."
    )
    architecture: Architecture | None = Field(
        default=None, description="The model's shape, as the Job read it from config.json."
    )
    quality: ReportQuality | None = Field(
        default=None,
        description="Perplexity of the base and the quantized model on the same held-out "
        "tokens, as the Job measured them (the quality gate's figures).",
    )


class ProgressStatus(ApiModel):
    """What a running Job is doing, from the progress lines at the tail of its pod's log."""

    stage: str = Field(
        max_length=64,
        description="downloading, loading, evaluating, calibrating, saving, done (inspection: "
        "reading).",
    )
    step: int | None = Field(default=None, ge=0, description="Steps of the stage done.")
    steps: int | None = Field(
        default=None,
        ge=0,
        description="Steps in the stage: decoder layers while calibrating, batches while "
        "evaluating, bytes while downloading.",
    )
    percent: int | None = Field(default=None, ge=0, le=100, description="Of the stage, whole.")
    eta_seconds: int | None = Field(
        default=None,
        ge=0,
        description="Estimated time left in the stage at the stage's rate so far (rounded).",
    )
    last_progress_time: str | None = Field(
        default=None,
        description="When the Job wrote the progress line these figures come from.",
        json_schema_extra={"format": "date-time"},
    )
    stalled_seconds: int | None = Field(
        default=None,
        ge=0,
        description="Set when no progress line came for a long time: how long (rounded).",
    )
    message: str = Field(
        default="",
        max_length=256,
        description="What the Progress printer column shows, e.g. 'calibrating 45% ~38m left'.",
    )


class MeasuredStatus(ApiModel):
    """The KV cache vLLM allocated, read from a serving pod's start-up log."""

    pod: str = Field(description="The pod whose log was read.")
    kv_cache_tokens: int = Field(ge=0, description="vLLM's 'GPU KV cache size: N tokens'.")
    kv_cache_gib: float | None = Field(
        default=None, ge=0, description="vLLM's 'Available KV cache memory: X GiB' (per GPU)."
    )
    max_concurrency: float | None = Field(
        default=None,
        ge=0,
        description="vLLM's 'Maximum concurrency for L tokens per request: Cx'.",
    )
    predicted_kv_cache_tokens: int = Field(ge=0, description="status.plan.kvCacheTokens then.")
    error_percent: float = Field(
        description="(measured - predicted) / predicted x 100 of the KV cache tokens."
    )


class PlanStatus(ApiModel):
    """The serving plan: parallelism, memory and the budget it was sized for."""

    gpu: str = Field(description="The GPU type planned for.")
    tensor_parallel_size: int = Field(ge=1, description="vLLM --tensor-parallel-size.")
    pipeline_parallel_size: int = Field(
        ge=1, description="vLLM --pipeline-parallel-size (nodes per replica)."
    )
    gpus_per_replica: int = Field(ge=1, description="GPUs one replica uses.")
    gpu_memory_utilization: float = Field(gt=0, le=1, description="vLLM --gpu-memory-utilization.")
    max_model_len: int = Field(ge=1, description="vLLM --max-model-len.")
    max_num_seqs: int = Field(ge=1, description="vLLM --max-num-seqs.")
    max_num_batched_tokens: int = Field(ge=1, description="vLLM --max-num-batched-tokens.")
    kv_cache_dtype: str = Field(description="vLLM --kv-cache-dtype.")
    weight_bytes: int = Field(ge=0, description="Bytes of all weights.")
    weight_bytes_source: Literal["measured", "estimated"] = Field(
        description="measured from safetensors headers, or estimated from the architecture."
    )
    weight_bytes_per_gpu: int = Field(ge=0, description="Weight bytes on the fullest GPU.")
    kv_cache_bytes_per_token: int = Field(
        ge=0, description="KV-cache bytes one token takes on one GPU, across its layers."
    )
    kv_cache_budget_bytes: int = Field(
        ge=0, description="KV-cache bytes per GPU the budget needs (concurrency x maxModelLen)."
    )
    kv_cache_tokens: int = Field(
        ge=0,
        description="Tokens the KV cache holds at this utilization: vLLM's KV cache size. With "
        "memoryPolicy fill more than the budget (the budget is a floor).",
    )
    kv_cache_budget_tokens: int | None = Field(
        default=None, ge=0, description="Tokens the budget asks for: concurrency x maxModelLen."
    )
    memory_policy: Literal["fill", "budget"] | None = Field(
        default=None,
        description="fill: vLLM gets maxGpuMemoryUtilization of a GPU (or MIG slice) the pod "
        "owns; budget: what the KV budget needs, on a GPU shared with other pods.",
    )
    overhead_bytes_per_gpu: int = Field(
        ge=0, description="Activation peak, CUDA graphs and non-torch memory per GPU (estimate)."
    )
    required_bytes_per_gpu: int = Field(
        ge=0, description="Weights + KV budget + overhead on the fullest GPU."
    )
    gpu_memory_bytes: int = Field(ge=0, description="Total memory of one GPU.")
    estimated_decode_tokens_per_second: float = Field(
        ge=0,
        description="Upper bound of single-stream decode speed: bandwidth x TP / weight bytes "
        "read per token. Real speed is lower.",
    )
    reasons: list[str] = Field(default_factory=list, description="Why this plan.")
    gpu_source: Literal["spec", "inventory"] | None = Field(
        default=None,
        description="Where the GPU came from: spec.serving.gpu, or the cluster's nodes (GPU "
        "Feature Discovery labels), the smallest that fits.",
    )
    gpu_product: str | None = Field(
        default=None,
        description="The nvidia.com/gpu.product label the pods are pinned to (inventory).",
    )
    gpu_resource: str | None = Field(
        default=None,
        description="The extended resource each pod requests tensorParallelSize of: "
        "nvidia.com/gpu, a MIG slice (nvidia.com/mig-3g.40gb), nvidia.com/gpu.shared. "
        "Empty: nvidia.com/gpu.",
    )
    mig_profile: str | None = Field(
        default=None, description="The MIG profile (e.g. 3g.40gb) when the plan is on a slice."
    )
    shared_by: int | None = Field(
        default=None,
        ge=1,
        description="Pods sharing the GPU by time-slicing or MPS (nvidia.com/gpu.replicas); "
        "each may use 1/sharedBy of its memory. Empty: the pod owns its GPUs.",
    )
    sharing_strategy: str | None = Field(
        default=None,
        description="How the GPU is shared: time-slicing or mps (nvidia.com/gpu.sharing-strategy).",
    )
    measured: MeasuredStatus | None = Field(
        default=None,
        description="What vLLM reported at start-up (leader pod's log), next to the plan.",
    )

    @classmethod
    def from_plan(cls, plan: Plan) -> PlanStatus:
        """The planner's plan as ``status.plan`` (what ``quantwise plan -o json`` prints)."""
        return cls(
            gpu=plan.gpu.name,
            tensor_parallel_size=plan.tensor_parallel_size,
            pipeline_parallel_size=plan.pipeline_parallel_size,
            gpus_per_replica=plan.gpus_per_replica,
            gpu_memory_utilization=plan.gpu_memory_utilization,
            max_model_len=plan.max_model_len,
            max_num_seqs=plan.max_num_seqs,
            max_num_batched_tokens=plan.max_num_batched_tokens,
            kv_cache_dtype=plan.kv_cache_dtype,
            weight_bytes=plan.weight_bytes,
            weight_bytes_source="measured" if plan.weights_measured else "estimated",
            weight_bytes_per_gpu=plan.sizing.weight_bytes,
            kv_cache_bytes_per_token=plan.kv_cache_bytes_per_token,
            kv_cache_budget_bytes=plan.sizing.kv_budget_bytes,
            kv_cache_tokens=plan.kv_cache_tokens,
            overhead_bytes_per_gpu=plan.sizing.overhead.total_bytes,
            required_bytes_per_gpu=plan.sizing.required_bytes,
            gpu_memory_bytes=plan.gpu.memory_bytes,
            estimated_decode_tokens_per_second=plan.estimated_decode_tokens_per_second,
            reasons=list(plan.reasons),
            kv_cache_budget_tokens=plan.kv_cache_budget_tokens,
            memory_policy=plan.memory_policy,
            gpu_resource=plan.gpu.resource,
            mig_profile=plan.gpu.mig_profile,
            shared_by=plan.gpu.shared_by if plan.gpu.shared else None,
            sharing_strategy=plan.gpu.sharing if plan.gpu.shared else None,
        )


class QuantizedModelStatus(ApiModel):
    """What the operator observed and decided."""

    phase: Phase | None = Field(default=None, description="Summary of the conditions.")
    observed_generation: int | None = Field(
        default=None, description="The .metadata.generation the status reflects."
    )
    conditions: list[Condition] | None = Field(
        default=None,
        description=", ".join(ConditionType) + ".",
        json_schema_extra={"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["type"]},
    )
    artifact: ArtifactStatus | None = Field(default=None, description="The artifact served.")
    progress: ProgressStatus | None = Field(
        default=None, description="What the quantization or inspection Job is doing, while it runs."
    )
    plan: PlanStatus | None = Field(default=None, description="The serving plan.")
    endpoint: str | None = Field(
        default=None, description="OpenAI-compatible base URL inside the cluster."
    )
    replicas: int | None = Field(
        default=None, description="Ready vLLM replicas (scale subresource)."
    )
    selector: str | None = Field(
        default=None, description="Label selector of the vLLM pods (scale subresource)."
    )
    retry: str | None = Field(
        default=None,
        description="The value of the quantwise.dev/retry annotation last acted on.",
    )
