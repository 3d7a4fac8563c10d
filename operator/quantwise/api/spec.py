"""The QuantizedModel spec: what the user asks for.

These models are the one source of truth for the CRD (``quantwise crd`` generates
``crds/quantizedmodels.quantwise.dev.yaml`` from them) and for the operator and CLI, which parse
manifests with them. Rules that the API server can check at admission are written twice on
purpose: as CEL (``x-kubernetes-validations``) for ``kubectl apply``, and as pydantic validators
for the CLI and for objects that reached the cluster before a rule existed. The CRD tests check
that both agree.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Annotated, Literal

from pydantic import AfterValidator, Field, model_validator

from quantwise.api.base import ApiModel, cel, cel_rules, with_cel_rules
from quantwise.planning.gpus import ALL_GPUS, GPU_NAMES, mig_catalog_text
from quantwise.planning.kvcache import KVCacheDtype
from quantwise.planning.planner import MemoryPolicy
from quantwise.quantization.methods import (
    DEFAULT_CALIBRATION_DATASET,
    DEFAULT_CALIBRATION_SAMPLES,
    DEFAULT_CALIBRATION_SEQUENCE_LENGTH,
    DEFAULT_GROUP_SIZE,
    DEFAULT_IGNORE,
    NONE,
)
from quantwise.quantization.methods import METHODS as TABLE
from quantwise.quantization.quality import (
    DEFAULT_EVALUATION_SAMPLES,
    DEFAULT_EVALUATION_SEQUENCE_LENGTH,
    DEFAULT_MAX_PERPLEXITY_INCREASE_PERCENT,
)
from quantwise.quantization.recipe import QuantizeRequest
from quantwise.vllm import SHORT_ALIASES, Flag, planned_flag, planned_flag_pattern

Method = Literal["awq", "gptq", "w8a8-int8", "fp8", "fp8-dynamic", "none"]
"""The names of quantwise.quantization.methods.METHODS (a test holds the two equal)."""
METHODS: tuple[str, ...] = tuple(TABLE)
GROUPED_METHODS: tuple[str, ...] = tuple(m for m, f in TABLE.items() if f.grouped)
SYMMETRY_METHODS: tuple[str, ...] = tuple(m for m, f in TABLE.items() if f.symmetric is not None)

# Kubernetes names: the model's Service is named after it, so it must be a DNS-1035 label, and
# the quantization Job "<name>-quantize-<hash8>" must stay within 63 characters.
MAX_NAME_LENGTH = 45
NAME_PATTERN = r"^[a-z]([-a-z0-9]*[a-z0-9])?$"
K8S_NAME_PATTERN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
# A relative path inside a volume: no leading slash, no "..", no empty segments.
REL_PATH_PATTERN = r"^[A-Za-z0-9_.-]+(/[A-Za-z0-9_.-]+)*$"
HF_REPO_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]*/[A-Za-z0-9][A-Za-z0-9_.-]*$"
QUANTITY_PATTERN = r"^[0-9]+(\.[0-9]+)?(m|k|Ki|Mi|Gi|Ti|Pi|Ei|M|G|T|P|E)?$"
MAX_CONTEXT_TOKENS = 10_485_760  # 10 Mi tokens: the longest context any public model claims.

K8sName = Annotated[str, Field(min_length=1, max_length=253, pattern=K8S_NAME_PATTERN)]


def _no_dot_segments(value: str) -> str:
    if any(part in (".", "..") for part in value.split("/")):
        raise ValueError(f"path {value!r} must not contain '.' or '..' segments")
    return value


RelPath = Annotated[
    str,
    Field(
        min_length=1,
        max_length=1024,
        pattern=REL_PATH_PATTERN,
        json_schema_extra=cel_rules(
            cel("!self.matches('(^|/)[.][.]?(/|$)')", "must not contain '.' or '..' segments")
        ),
    ),
    AfterValidator(_no_dot_segments),
]
Quantity = Annotated[int | str, Field(json_schema_extra={"x-kubernetes-int-or-string": True})]


class SecretKeyRef(ApiModel):
    """A key in a Secret in the QuantizedModel's namespace."""

    name: K8sName = Field(description="Name of the Secret.")
    key: str = Field(min_length=1, max_length=253, description="Key in the Secret's data.")


class HuggingFaceSource(ApiModel):
    """A model on the Hugging Face Hub, downloaded by the quantization Job (never the operator)."""

    repo: str = Field(
        max_length=200,
        pattern=HF_REPO_PATTERN,
        description="Repository id, ORG/NAME, e.g. meta-llama/Llama-3.1-8B-Instruct.",
    )
    revision: str = Field(
        default="main",
        min_length=1,
        max_length=255,
        pattern=r"^[A-Za-z0-9_./-]+$",
        description="Branch, tag or commit of the repository.",
    )
    token_secret_ref: SecretKeyRef | None = Field(
        default=None,
        description="Secret key holding a Hugging Face token, for gated models. Passed to the "
        "Job's container as HF_TOKEN; the operator never reads it.",
    )


class PvcLocation(ApiModel):
    """A directory on a PersistentVolumeClaim in the QuantizedModel's namespace."""

    claim_name: K8sName = Field(description="Name of the PersistentVolumeClaim.")
    path: RelPath = Field(description="Directory inside the volume, relative to its root.")


class Source(ApiModel):
    """Where the base (or already quantized) model comes from: exactly one of its fields."""

    model_config = with_cel_rules(
        cel(
            "(has(self.huggingFace) ? 1 : 0) + (has(self.pvc) ? 1 : 0) == 1",
            "exactly one of spec.source.huggingFace or spec.source.pvc must be set",
        )
    )

    hugging_face: HuggingFaceSource | None = Field(
        default=None, description="A Hugging Face Hub repository."
    )
    pvc: PvcLocation | None = Field(
        default=None, description="A model directory on a PersistentVolumeClaim."
    )

    @model_validator(mode="after")
    def _exactly_one(self) -> Source:
        if (self.hugging_face is None) == (self.pvc is None):
            raise ValueError(
                "exactly one of spec.source.huggingFace or spec.source.pvc must be set"
            )
        return self


class Calibration(ApiModel):
    """Calibration data for the methods that need it (all but fp8-dynamic and none)."""

    dataset: str = Field(
        default=DEFAULT_CALIBRATION_DATASET,
        max_length=200,
        pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*(/[A-Za-z0-9][A-Za-z0-9_.-]*)?$",
        description="A Hugging Face dataset id. Ignored when pvc is set.",
    )
    split: str | None = Field(
        default=None,
        max_length=64,
        pattern=r"^[A-Za-z0-9_.:\[\]%-]+$",
        description="Dataset split. Default: the dataset's training split (train_sft for "
        "ultrachat_200k, train otherwise).",
    )
    pvc: PvcLocation | None = Field(
        default=None,
        description='A JSONL (one {"text": ...} or {"messages": [...]} per line) or plain '
        "text file on a PersistentVolumeClaim, for clusters without internet access.",
    )
    samples: int = Field(
        default=DEFAULT_CALIBRATION_SAMPLES, ge=1, le=65536, description="Calibration samples."
    )
    sequence_length: int = Field(
        default=DEFAULT_CALIBRATION_SEQUENCE_LENGTH,
        ge=16,
        le=32768,
        description="Tokens per calibration sample.",
    )


class BaseModelSource(ApiModel):
    """The unquantized model a pre-quantized checkpoint is compared with: exactly one field."""

    model_config = with_cel_rules(
        cel(
            "(has(self.huggingFace) ? 1 : 0) + (has(self.pvc) ? 1 : 0) == 1",
            "exactly one of spec.quantization.evaluation.baseModel.huggingFace or .pvc must be set",
        )
    )

    hugging_face: HuggingFaceSource | None = Field(
        default=None, description="A Hugging Face Hub repository."
    )
    pvc: PvcLocation | None = Field(
        default=None, description="A model directory on a PersistentVolumeClaim."
    )

    @model_validator(mode="after")
    def _exactly_one(self) -> BaseModelSource:
        if (self.hugging_face is None) == (self.pvc is None):
            raise ValueError(
                "exactly one of spec.quantization.evaluation.baseModel.huggingFace or .pvc "
                "must be set"
            )
        return self


class Evaluation(ApiModel):
    """The quality gate: perplexity before and after quantization, on the same held-out tokens.

    The Job measures the base model (before quantizing it) and the quantized model on tokens
    never used for calibration; a quantized model whose perplexity is more than
    maxPerplexityIncreasePercent higher fails the model (QualityGateFailed) and is not served.
    """

    enabled: bool = Field(
        default=True,
        description="Measure and gate. false skips the evaluation (saves loading and running "
        "the model twice, e.g. for fp8-dynamic, which needs no calibration pass).",
    )
    dataset: str | None = Field(
        default=None,
        max_length=200,
        pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*(/[A-Za-z0-9][A-Za-z0-9_.-]*)?$",
        description="A Hugging Face dataset id to evaluate on. Default: a held-out slice of the "
        "calibration data (records the calibration never reads). Ignored when pvc is set.",
    )
    split: str | None = Field(
        default=None,
        max_length=64,
        pattern=r"^[A-Za-z0-9_.:\[\]%-]+$",
        description="Split of dataset. Default: the calibration split.",
    )
    pvc: PvcLocation | None = Field(
        default=None,
        description="A JSONL, JSON, Parquet or plain text file on a PersistentVolumeClaim to "
        "evaluate on (clusters without internet access).",
    )
    samples: int = Field(
        default=DEFAULT_EVALUATION_SAMPLES, ge=1, le=65536, description="Evaluation samples."
    )
    sequence_length: int = Field(
        default=DEFAULT_EVALUATION_SEQUENCE_LENGTH,
        ge=16,
        le=32768,
        description="Tokens per evaluation sample.",
    )
    max_perplexity_increase_percent: float = Field(
        default=DEFAULT_MAX_PERPLEXITY_INCREASE_PERCENT,
        ge=0,
        le=100000,
        description="The gate: the most the quantized model's perplexity may exceed the base "
        "model's, in percent. The default, 15, passes the usual cost of 4-bit weights (+3 % "
        "AWQ, +5.5 to 6.3 % GPTQ on Llama 3 8B and Mistral 7B, WikiText-2) with room to spare; "
        "a broken checkpoint costs far more.",
    )
    base_model: BaseModelSource | None = Field(
        default=None,
        description="method none only: the unquantized model to compare the checkpoint with. "
        "Without it a pre-quantized checkpoint is not evaluated.",
    )


def _names(methods: Iterable[str]) -> str:
    return ", ".join(f"'{m}'" for m in methods)


def _bits_rule() -> dict[str, str]:
    clauses = " || ".join(
        f"(self.method == '{m}' && self.bits in [{', '.join(str(b) for b in f.bits)}])"
        for m, f in TABLE.items()
    )
    allowed = "; ".join(f"{m}: {', '.join(str(b) for b in f.bits)}" for m, f in TABLE.items())
    return cel(
        f"!has(self.bits) || {clauses}",
        f"spec.quantization.bits is not allowed for this method (allowed: {allowed})",
        ".bits",
    )


class Quantization(ApiModel):
    """How to quantize the model, or ``method: none`` to validate and serve it as it is."""

    model_config = with_cel_rules(
        _bits_rule(),
        cel(
            f"!has(self.groupSize) || self.method in [{_names(GROUPED_METHODS)}]",
            f"spec.quantization.groupSize applies only to {', '.join(GROUPED_METHODS)}; "
            "w8a8-int8 and fp8 quantize per channel or per tensor",
            ".groupSize",
        ),
        cel(
            "!has(self.evaluation) || !has(self.evaluation.baseModel) || self.method == 'none'",
            "spec.quantization.evaluation.baseModel applies only to method none: a method that "
            "quantizes compares with the source model itself",
            ".evaluation.baseModel",
        ),
        cel(
            f"!has(self.symmetric) || self.method in [{_names(SYMMETRY_METHODS)}]",
            f"spec.quantization.symmetric applies only to {', '.join(SYMMETRY_METHODS)}; "
            "fp8 is always symmetric",
            ".symmetric",
        ),
    )

    method: Method = Field(
        description="awq and gptq: 4-bit (gptq also 8-bit) weights, 16-bit activations; "
        "w8a8-int8: SmoothQuant + GPTQ INT8 weights and activations; fp8: FP8 weights and "
        "activations with calibrated scales (compute capability 8.9+ for the fast path); "
        "fp8-dynamic: FP8 weights, dynamic activation scales, no calibration; none: the source "
        "is already quantized (or is to be served as it is): validate and serve it."
    )
    bits: Literal[2, 3, 4, 8, 16] | None = Field(
        default=None,
        description="Weight bits. Default: 4 for awq and gptq, 8 for w8a8-int8 and fp8. With "
        "method none, the bits the checkpoint is expected to hold.",
    )
    group_size: Literal[-1, 32, 64, 128] | None = Field(
        default=None,
        description="Weights per quantization group (awq, gptq); -1 for one group per output "
        "channel. Default 128. Marlin kernels accept -1, 32, 64 and 128.",
    )
    symmetric: bool | None = Field(
        default=None,
        description="Symmetric quantization (no zero point). Default: false for awq, true "
        "otherwise.",
    )
    calibration: Calibration = Field(
        default_factory=Calibration,
        description="Calibration data (ignored by fp8-dynamic and none).",
    )
    ignore: list[Annotated[str, Field(min_length=1, max_length=256)]] = Field(
        default_factory=lambda: list(DEFAULT_IGNORE),
        max_length=256,
        description="Modules left unquantized: names or 're:' regular expressions.",
    )
    evaluation: Evaluation = Field(
        default_factory=Evaluation,
        description="The quality gate: perplexity before and after quantization. It judges the "
        "artifact but does not change it (not part of the artifact's hash).",
    )

    @model_validator(mode="after")
    def _cross_field(self) -> Quantization:
        facts = TABLE[self.method]
        if self.bits is not None and self.bits not in facts.bits:
            allowed = ", ".join(str(b) for b in facts.bits)
            raise ValueError(
                f"spec.quantization.bits {self.bits} is not allowed for method {self.method} "
                f"(allowed: {allowed})"
            )
        if self.group_size is not None and not facts.grouped:
            raise ValueError(
                f"spec.quantization.groupSize applies only to {', '.join(GROUPED_METHODS)}, not "
                f"{self.method}: remove it"
            )
        if self.symmetric is not None and facts.symmetric is None:
            raise ValueError(
                f"spec.quantization.symmetric does not apply to {self.method}: remove it"
            )
        if self.evaluation.base_model is not None and self.method != NONE:
            raise ValueError(
                "spec.quantization.evaluation.baseModel applies only to method none: a method "
                "that quantizes compares with the source model itself"
            )
        return self

    @property
    def evaluated(self) -> bool:
        """Whether the Job measures perplexity: enabled, and for method none a base model."""
        e = self.evaluation
        return e.enabled and (self.method != NONE or e.base_model is not None)

    @property
    def effective_bits(self) -> int | None:
        """Weight bits after defaults; None for method none without bits."""
        if self.bits is not None or self.method == NONE:
            return self.bits
        return TABLE[self.method].bits[0]

    @property
    def effective_group_size(self) -> int | None:
        """Group size after defaults; None where the method does not group."""
        if self.group_size is not None:
            return self.group_size
        grouped = TABLE[self.method].grouped and self.method != NONE
        return DEFAULT_GROUP_SIZE if grouped else None

    @property
    def effective_symmetric(self) -> bool:
        """Symmetry after defaults (AWQ defaults to asymmetric, as AutoAWQ does)."""
        if self.symmetric is not None:
            return self.symmetric
        return TABLE[self.method].symmetric is not False

    def request(self, kv_cache_fp8: bool) -> QuantizeRequest:
        """What the quantization Job is asked to produce (``quantwise quantize``'s flags)."""
        return QuantizeRequest(
            method=self.method,
            bits=self.effective_bits or 16,
            group_size=self.effective_group_size,
            symmetric=self.effective_symmetric,
            kv_cache_fp8=kv_cache_fp8,
            ignore=tuple(self.ignore),
            calibrated=TABLE[self.method].calibrated,
        )


class Storage(ApiModel):
    """Where quantized artifacts are written."""

    pvc: PvcLocation = Field(
        description="Directory on a PersistentVolumeClaim; each artifact goes into a "
        "sub-directory named after the hash of what determines it."
    )


class Toleration(ApiModel):
    """A Kubernetes toleration (core/v1 Toleration)."""

    key: str | None = Field(default=None, max_length=316, description="Taint key.")
    operator: Literal["Exists", "Equal"] | None = Field(default=None, description="Operator.")
    value: str | None = Field(default=None, max_length=63, description="Taint value.")
    effect: Literal["NoSchedule", "PreferNoSchedule", "NoExecute"] | None = Field(
        default=None, description="Taint effect; empty matches all effects."
    )
    toleration_seconds: int | None = Field(
        default=None, description="How long a NoExecute taint is tolerated."
    )


class Resources(ApiModel):
    """Compute resources (core/v1 ResourceRequirements limits and requests)."""

    limits: dict[str, Quantity] | None = Field(default=None, description="Resource limits.")
    requests: dict[str, Quantity] | None = Field(default=None, description="Resource requests.")


class Quantizer(ApiModel):
    """The quantization (or inspection) Job."""

    image: str | None = Field(
        default=None,
        min_length=1,
        max_length=512,
        description="Quantizer image. Default: the operator's --quantizer-image.",
    )
    gpus: int = Field(default=1, ge=0, le=16, description="GPUs for the Job's pod.")
    resources: Resources | None = Field(
        default=None, description="CPU and memory for the Job's pod (GPUs come from gpus)."
    )
    node_selector: dict[str, str] | None = Field(
        default=None, description="Node selector for the Job's pod."
    )
    tolerations: list[Toleration] | None = Field(
        default=None, max_length=64, description="Tolerations for the Job's pod."
    )
    active_deadline_seconds: int = Field(
        default=86400,
        ge=60,
        le=30 * 86400,
        description="The Job fails when it runs longer than this many seconds.",
    )
    backoff_limit: int = Field(
        default=1, ge=0, le=10, description="Retries of the Job's pod before it fails."
    )


_PRODUCT_PATTERN = "^(?i)(" + "|".join(g.name.lower().replace(".", "[.]") for g in ALL_GPUS) + ")$"
_NOT_IN_CATALOG = (
    f"is not in the catalog ({', '.join(GPU_NAMES)}; MIG slices {mig_catalog_text()}); describe "
    "other GPUs with memoryGiB, bandwidthGBps and computeCapability"
)
_ALL_KEYS = frozenset(g.name.lower() for g in ALL_GPUS)
# MPS allows at most 48 clients a GPU on Volta and newer (NVIDIA GPU Operator, "Multi-Process
# Service", Limitations); time-slicing has no limit of its own: 64 is beyond any real setup.
MAX_SHARED_BY = 64


class GpuSpec(ApiModel):
    """The serving GPU: a catalog name (a whole GPU or a MIG slice), or a GPU's numbers.

    ``sharedBy`` says that other pods share it by time-slicing or MPS.
    """

    model_config = with_cel_rules(
        cel(
            "has(self.product) ? !(has(self.memoryGiB) || has(self.bandwidthGBps) || "
            "has(self.computeCapability)) : (has(self.memoryGiB) && "
            "has(self.bandwidthGBps) && has(self.computeCapability))",
            "spec.serving.gpu: set either product, or all of memoryGiB, bandwidthGBps "
            "and computeCapability",
        ),
        cel(
            f"!has(self.product) || self.product.matches('{_PRODUCT_PATTERN}')",
            f"spec.serving.gpu.product {_NOT_IN_CATALOG}",
            ".product",
        ),
    )

    product: str | None = Field(
        default=None,
        max_length=64,
        description="A GPU from the catalog (case-insensitive): " + ", ".join(GPU_NAMES)
        + "; or a MIG slice of one, <GPU>-MIG-<profile> (" + mig_catalog_text() + "), served "
        "at TP 1 and requested as nvidia.com/mig-<profile> (the device plugin's mixed MIG "
        "strategy).",
    )  # fmt: skip
    name: str | None = Field(
        default=None,
        max_length=63,
        pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$",
        description="A name for a custom GPU, shown in status.",
    )
    memory_gib: float | None = Field(
        default=None,
        alias="memoryGiB",
        gt=0,
        le=4096,
        description="Custom GPU: total memory in GiB as CUDA reports it.",
    )
    bandwidth_gbps: float | None = Field(
        default=None,
        alias="bandwidthGBps",
        gt=0,
        le=100000,
        description="Custom GPU: memory bandwidth in GB/s.",
    )
    compute_capability: str | None = Field(
        default=None,
        pattern=r"^[0-9]{1,2}\.[0-9]{1,2}$",
        description="Custom GPU: CUDA compute capability, e.g. 8.9.",
    )
    shared_by: int | None = Field(
        default=None,
        ge=1,
        le=MAX_SHARED_BY,
        description="The GPU is shared by this many pods (time-slicing or MPS replicas, "
        "nvidia.com/gpu.replicas): planned at TP 1 with memoryPolicy budget, within "
        "1/sharedBy of its memory.",
    )

    @model_validator(mode="after")
    def _one_kind(self) -> GpuSpec:
        custom = (self.memory_gib, self.bandwidth_gbps, self.compute_capability)
        if (self.product is not None and any(v is not None for v in custom)) or (
            self.product is None and not all(v is not None for v in custom)
        ):
            raise ValueError(
                "spec.serving.gpu: set either product, or all of memoryGiB, bandwidthGBps and "
                "computeCapability"
            )
        if self.product is not None and self.product.lower() not in _ALL_KEYS:
            raise ValueError(f"spec.serving.gpu.product {self.product!r} {_NOT_IN_CATALOG}")
        return self


def _extra_args_rule() -> dict[str, str]:
    return cel(
        f"self.all(a, !a.matches({json.dumps(planned_flag_pattern())}))",
        "spec.serving.extraArgs must not set flags that quantwise plans ("
        + ", ".join(Flag)
        + ", in any spelling vLLM accepts: --flag=value, underscores, abbreviations, "
        + ", ".join(SHORT_ALIASES)
        + "): change the matching spec field instead",
    )


class Serving(ApiModel):
    """The vLLM deployment: GPU, context and concurrency budget, replicas."""

    image: str | None = Field(
        default=None,
        min_length=1,
        max_length=512,
        description="vLLM OpenAI server image. Default: the operator's --vllm-image.",
    )
    vllm_version: str | None = Field(
        default=None,
        pattern=r"^[0-9]+\.[0-9]+(\.[0-9]+)?$",
        description="vLLM version of the image, when its tag does not say (e.g. 0.33).",
    )
    gpu: GpuSpec | None = Field(
        default=None,
        description="The serving GPU. When omitted, the operator plans for the GPU nodes "
        "labelled by NVIDIA GPU Feature Discovery.",
    )
    gpus_per_node: int = Field(
        default=8, ge=1, le=64, description="GPUs on one node; tensor parallelism stays within it."
    )
    max_nodes: int = Field(
        default=1,
        ge=1,
        le=64,
        description="Nodes one replica may span with pipeline parallelism (needs "
        "LeaderWorkerSet when above 1).",
    )
    max_model_len: int | None = Field(
        default=None,
        ge=16,
        le=MAX_CONTEXT_TOKENS,
        description="Context length in tokens (prompt + output). Default: the model's own "
        "maximum, capped at 8192.",
    )
    concurrency: int = Field(
        default=16,
        ge=1,
        le=4096,
        description="KV-cache budget: this many sequences of maxModelLen tokens at once.",
    )
    max_num_seqs: int | None = Field(
        default=None,
        ge=1,
        le=8192,
        description="Most sequences vLLM batches at once. Default: max(concurrency, 256).",
    )
    kv_cache_dtype: KVCacheDtype = Field(
        default="auto",
        description="KV-cache data type (vLLM --kv-cache-dtype); auto is the model's dtype.",
    )
    max_gpu_memory_utilization: float = Field(
        default=0.9,
        gt=0,
        le=1,
        description="Cap on vLLM's --gpu-memory-utilization: what memoryPolicy fill gives vLLM, "
        "and the most memoryPolicy budget may take.",
    )
    memory_policy: MemoryPolicy | None = Field(
        default=None,
        description="fill: vLLM gets maxGpuMemoryUtilization of the GPUs (or MIG slice) the pod "
        "owns, the KV budget (concurrency x maxModelLen) is a floor and the rest becomes more KV "
        "cache; budget: exactly what the budget needs, for GPUs shared with other work. Default: "
        "fill, and budget on a GPU shared by time-slicing or MPS.",
    )
    replicas: int = Field(default=1, ge=0, le=1000, description="vLLM replicas.")
    update_strategy: Literal["RollingUpdate", "Recreate"] = Field(
        default="RollingUpdate",
        description="How an update reaches the GPUs. RollingUpdate: no downtime; the old "
        "server keeps serving while a new artifact is made (its Job needs spec.quantizer.gpus "
        "more GPUs) and while new replicas start one at a time (one replica's GPUs more); when "
        "no GPU is free, the Updating condition and an Event say so and what to do. Recreate: "
        "the old server is stopped first (downtime until the new one serves), so an update "
        "needs no GPU beyond what the model holds: for a cluster without spare GPUs.",
    )
    served_model_name: str | None = Field(
        default=None,
        min_length=1,
        max_length=256,
        description="Model name clients send. Default: the QuantizedModel's name.",
    )
    extra_args: list[Annotated[str, Field(max_length=1024)]] | None = Field(
        default=None,
        max_length=64,
        description="Extra vLLM arguments, passed as they are (never through a shell).",
        json_schema_extra=cel_rules(_extra_args_rule()),
    )
    shm_size: str = Field(
        default="8Gi",
        pattern=QUANTITY_PATTERN,
        description="Size of the memory-backed /dev/shm (NCCL needs it for tensor parallelism).",
    )
    resources: Resources | None = Field(
        default=None, description="CPU and memory for the vLLM container (GPUs are planned)."
    )
    node_selector: dict[str, str] | None = Field(
        default=None, description="Node selector for the vLLM pods."
    )
    tolerations: list[Toleration] | None = Field(
        default=None, max_length=64, description="Tolerations for the vLLM pods."
    )

    @model_validator(mode="after")
    def _extra_args(self) -> Serving:
        for index, arg in enumerate(self.extra_args or ()):
            if (flag := planned_flag(arg)) is not None:
                raise ValueError(
                    f"spec.serving.extraArgs[{index}] {arg!r} sets {flag}, which quantwise "
                    "plans: change the matching spec field instead"
                )
        return self


class QuantizedModelSpec(ApiModel):
    """A model to quantize, validate, size and serve with vLLM."""

    model_config = with_cel_rules(
        cel(
            "self.quantization.method == 'none' || has(self.storage)",
            "spec.storage is required when spec.quantization.method is not none: "
            "quantized artifacts are written there",
        ),
    )

    source: Source = Field(description="Where the model comes from.")
    quantization: Quantization = Field(description="How to quantize it.")
    storage: Storage | None = Field(
        default=None, description="Where quantized artifacts are written."
    )
    quantizer: Quantizer = Field(
        default_factory=Quantizer, description="The quantization or inspection Job."
    )
    serving: Serving = Field(default_factory=Serving, description="The vLLM deployment.")

    @model_validator(mode="after")
    def _storage(self) -> QuantizedModelSpec:
        if self.quantization.method != "none" and self.storage is None:
            raise ValueError(
                "spec.storage is required when spec.quantization.method is not none: "
                "quantized artifacts are written there"
            )
        return self
