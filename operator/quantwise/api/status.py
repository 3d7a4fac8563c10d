"""The QuantizedModel status: what the operator observed and decided.

``status.plan`` is written by the operator and printed by ``quantwise plan --output json`` from
the same model, so the CLI shows exactly what the cluster will show.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from quantwise.api.base import ApiModel
from quantwise.api.report import WeightBytes
from quantwise.planning.architecture import Architecture

Phase = Literal["Pending", "Quantizing", "Validating", "Deploying", "Ready", "Failed"]
ConditionType = Literal["Quantized", "Validated", "Planned", "Deployed", "Ready"]
CONDITION_TYPES: tuple[str, ...] = ("Quantized", "Validated", "Planned", "Deployed", "Ready")


class Condition(ApiModel):
    """A standard Kubernetes condition (metav1.Condition)."""

    type: str = Field(max_length=316, description="Condition type: " + ", ".join(CONDITION_TYPES))
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
        ge=0, description="Tokens the KV cache holds at this utilization (vLLM's KV cache size)."
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
    measured: MeasuredStatus | None = Field(
        default=None,
        description="What vLLM reported at start-up (leader pod's log), next to the plan.",
    )


class QuantizedModelStatus(ApiModel):
    """What the operator observed and decided."""

    phase: Phase | None = Field(default=None, description="Summary of the conditions.")
    observed_generation: int | None = Field(
        default=None, description="The .metadata.generation the status reflects."
    )
    conditions: list[Condition] | None = Field(
        default=None,
        description="Quantized, Validated, Planned, Deployed, Ready.",
        json_schema_extra={"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["type"]},
    )
    artifact: ArtifactStatus | None = Field(default=None, description="The artifact served.")
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
