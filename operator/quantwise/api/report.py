"""The report a quantization or inspection Job writes to its termination message.

The Job's container writes one compact JSON object (at most 4096 bytes, the kubelet's limit for
a termination message) to ``/dev/termination-log``; the operator reads it from the Pod's
``status.containerStatuses[].state.terminated.message``. The same models write it (in the Job)
and read it (in the operator), so the two cannot drift apart.

A failed Job writes a ``QuantizeError`` instead: a reason (one CamelCase word) and a one-line
message that the operator shows in the Quantized condition.
"""

from __future__ import annotations

import json
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError
from pydantic.alias_generators import to_camel

from quantwise.planning.architecture import Architecture
from quantwise.planning.weights import WeightBreakdown

MAX_REPORT_BYTES = 4096
"""Kubernetes truncates a termination message beyond 4096 bytes (core/v1 Container docs)."""
REPORT_VERSION: Literal[1] = 1


class ReportError(ValueError):
    """A termination message that is not a valid report: missing, truncated, too big, malformed."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


class _ReportModel(BaseModel):
    # Reports come from our own images; unknown keys from a newer image are ignored rather
    # than failing an older operator.
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="ignore")


class WeightBytes(_ReportModel):
    """Weight bytes grouped by how vLLM places them (quantwise.planning.weights.WeightBreakdown)."""

    embedding: int = Field(ge=0)
    lm_head: int = Field(ge=0)
    layer_sharded: int = Field(ge=0)
    layer_kv: int = Field(ge=0)
    layer_experts: int = Field(ge=0)
    layer_replicated: int = Field(ge=0)
    other: int = Field(default=0, ge=0)

    @classmethod
    def from_breakdown(cls, b: WeightBreakdown) -> WeightBytes:
        """The report form of a breakdown."""
        return cls(
            embedding=b.embedding_bytes,
            lm_head=b.lm_head_bytes,
            layer_sharded=b.layer_sharded_bytes,
            layer_kv=b.layer_kv_bytes,
            layer_experts=b.layer_expert_bytes,
            layer_replicated=b.layer_replicated_bytes,
            other=b.other_replicated_bytes,
        )

    def to_breakdown(self) -> WeightBreakdown:
        """The planner's form (measured)."""
        return WeightBreakdown(
            embedding_bytes=self.embedding,
            lm_head_bytes=self.lm_head,
            layer_sharded_bytes=self.layer_sharded,
            layer_kv_bytes=self.layer_kv,
            layer_expert_bytes=self.layer_experts,
            layer_replicated_bytes=self.layer_replicated,
            other_replicated_bytes=self.other,
            measured=True,
        )


class ReportArtifact(_ReportModel):
    """The checkpoint the Job wrote or inspected."""

    path: str = Field(min_length=1, max_length=1024)
    weight_bytes: int = Field(ge=0, description="Sum of tensor bytes in the safetensors headers.")
    digest: str = Field(pattern=r"^sha256:[0-9a-f]{64}$", description="sha256 of the index.")
    files: int | None = Field(default=None, ge=0, description="Number of safetensors files.")
    breakdown: WeightBytes | None = Field(
        default=None, description="The same bytes, grouped by how vLLM places them."
    )


class ReportQuantization(_ReportModel):
    """The checkpoint's quantization, normalised (see quantwise.quantization.config)."""

    quant_method: str = Field(max_length=64)
    scheme: str | None = Field(default=None, max_length=64)
    format: str | None = Field(default=None, max_length=64)
    weight_bits: int = Field(ge=1, le=32)
    group_size: int | None = None
    symmetric: bool | None = None
    activation_bits: int = Field(default=16, ge=1, le=32)
    act_order: str | None = Field(default=None, max_length=16)
    kv_cache_scheme: str | None = Field(default=None, max_length=32)
    ignore: list[str] = Field(default_factory=list, max_length=64)
    ignore_count: int | None = Field(
        default=None, ge=0, description="Total ignored modules when the list was summarised."
    )


class ReportQuality(_ReportModel):
    """What quantization cost: perplexity of the base and the quantized model on the same tokens.

    ``baselinePerplexity`` / ``perplexity`` are None when the model gave no finite number (NaN
    logits: a broken checkpoint); ``notMeasured`` says why there are no figures at all (no
    held-out evaluation data).
    """

    baseline_perplexity: float | None = Field(default=None, ge=0)
    perplexity: float | None = Field(default=None, ge=0)
    increase_percent: float | None = Field(
        default=None, description="(perplexity - baseline) / baseline x 100."
    )
    limit_percent: float | None = Field(default=None, ge=0, description="The gate's limit.")
    samples: int = Field(default=0, ge=0, description="Evaluation samples.")
    tokens: int = Field(default=0, ge=0, description="Tokens whose perplexity was measured.")
    passed: bool | None = Field(default=None, description="Within the limit (None: not judged).")
    duration_seconds: float | None = Field(default=None, ge=0, description="Time it took.")
    not_measured: str | None = Field(default=None, max_length=512)


class QuantizeReport(_ReportModel):
    """A Job's successful result."""

    version: Literal[1] = REPORT_VERSION
    kind: Literal["QuantizeReport", "InspectReport"] = "QuantizeReport"
    artifact: ReportArtifact
    quantization: ReportQuantization
    architecture: Architecture
    duration_seconds: float = Field(ge=0)
    reused: bool = Field(default=False, description="A complete artifact was found; no work done.")
    quality: ReportQuality | None = Field(
        default=None, description="The quality gate's figures (None: not evaluated)."
    )


class QuantizeError(_ReportModel):
    """A Job's failure, in one line."""

    version: Literal[1] = REPORT_VERSION
    kind: Literal["QuantizeError"] = "QuantizeError"
    reason: str = Field(pattern=r"^[A-Z][A-Za-z0-9]*$", max_length=64)
    message: str = Field(max_length=2048)
    quality: ReportQuality | None = Field(
        default=None, description="The figures of a Job that failed the quality gate."
    )


Report = Annotated[QuantizeReport | QuantizeError, Field(discriminator="kind")]


class _Envelope(BaseModel):
    report: Report


def dump_report(report: QuantizeReport | QuantizeError) -> str:
    """Serialise a report as compact JSON, summarising long lists to stay within 4096 bytes."""
    data = report.model_dump(by_alias=True, exclude_none=True, mode="json")
    text = json.dumps(data, separators=(",", ":"))
    if len(text.encode()) > MAX_REPORT_BYTES and isinstance(report, QuantizeReport):
        ignore = data["quantization"].get("ignore", [])
        data["quantization"].setdefault("ignoreCount", len(ignore))
        while ignore and len(json.dumps(data, separators=(",", ":")).encode()) > MAX_REPORT_BYTES:
            ignore.pop()
        text = json.dumps(data, separators=(",", ":"))
    if len(text.encode()) > MAX_REPORT_BYTES:
        raise ReportError("ReportTooLarge", f"report is {len(text.encode())} bytes, over 4096")
    return text


def parse_report(message: str | None) -> QuantizeReport | QuantizeError:
    """Parse a termination message into a report; raise ReportError saying what is wrong."""
    if message is None or not message.strip():
        raise ReportError("ReportMissing", "the Job's pod left no termination message")
    size = len(message.encode())
    if size > MAX_REPORT_BYTES:
        raise ReportError(
            "ReportTooLarge", f"the termination message is {size} bytes, over the 4096-byte limit"
        )
    try:
        data: Any = json.loads(message)
    except json.JSONDecodeError as exc:
        # JSON that ends early (the kubelet cut it, or the writer died) fails at its very end.
        ended_early = exc.pos >= len(message.rstrip()) - 1 or exc.msg.startswith("Unterminated")
        reason = "ReportTruncated" if ended_early else "ReportMalformed"
        raise ReportError(
            reason, f"the termination message is not JSON: {exc.msg} at character {exc.pos}"
        ) from exc
    try:
        return _Envelope.model_validate({"report": data}).report
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"][1:]) or "report"
        raise ReportError(
            "ReportInvalid", f"the report does not match the schema: {where}: {first['msg']}"
        ) from exc
