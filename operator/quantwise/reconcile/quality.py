"""The QualityVerified condition: what quantization cost, as the Job measured it (pure).

The Job decides the gate (quantwise.jobs.evaluation): a quantized model over the limit fails
the Job permanently with QualityGateFailed, the figures and the advice in its report, so nothing
is rolled out and a Deployment serving an older artifact keeps serving it. A passing Job's
figures reach ``status.artifact.quality``; this module turns either into the condition.
"""

from __future__ import annotations

from quantwise.api.report import ReportQuality
from quantwise.api.spec import QuantizedModelSpec
from quantwise.api.status import ArtifactStatus, ConditionType, Reason
from quantwise.reconcile.state import Decision

QUALITY = ConditionType.QUALITY_VERIFIED
RETRY_HINT = (
    " The checkpoint is kept: after changing spec.quantization.evaluation, set the annotation "
    "quantwise.dev/retry to any new value to judge it again without quantizing again."
)


def figures(quality: ReportQuality) -> str:
    """``perplexity 6.32 vs 6.14 for the base model (+2.9 %, limit 15 %) on 128 samples ...``."""
    after = f"{quality.perplexity:.4g}" if quality.perplexity is not None else "not a number"
    before = (
        f"{quality.baseline_perplexity:.4g}"
        if quality.baseline_perplexity is not None
        else "not a number"
    )
    increase = (
        f"{quality.increase_percent:+.1f} %" if quality.increase_percent is not None else "n/a"
    )
    limit = f", limit {quality.limit_percent:g} %" if quality.limit_percent is not None else ""
    return (
        f"perplexity {after} vs {before} for the base model ({increase}{limit}) on "
        f"{quality.samples} held-out samples, {quality.tokens:,} tokens"
    )


def quality_stage(d: Decision, spec: QuantizedModelSpec, artifact: ArtifactStatus) -> bool:
    """Set QualityVerified for the artifact about to be served; False when it must not be."""
    q = spec.quantization
    quality = artifact.quality
    if not q.evaluation.enabled:
        d.set(QUALITY, None, Reason.NOT_MEASURED,
              "not measured: spec.quantization.evaluation.enabled is false")  # fmt: skip
    elif q.method == "none" and q.evaluation.base_model is None:
        d.set(QUALITY, None, Reason.NOT_MEASURED,
              "not measured: a pre-quantized checkpoint is compared only with a base model: "
              "set spec.quantization.evaluation.baseModel")  # fmt: skip
    elif quality is None:
        d.set(QUALITY, None, Reason.NOT_MEASURED,
              "not measured: the Job reported no quality figures (an artifact made before the "
              "quality gate, or a quantizer image without it)")  # fmt: skip
    elif quality.not_measured is not None:
        d.set(QUALITY, None, Reason.NOT_MEASURED, f"not measured: {quality.not_measured}")
    elif quality.passed is False:  # a Job reports this as a failure; never serve it anyway
        gate_failed(d, f"{figures(quality)}: over the limit")
        return False
    else:
        d.set(QUALITY, True, Reason.WITHIN_LIMIT, figures(quality))
    return True


def gate_failed(d: Decision, message: str) -> None:
    """The quality gate failed: QualityVerified says so (one Event); Quantized too, quietly."""
    d.set(QUALITY, False, Reason.QUALITY_GATE_FAILED, message + RETRY_HINT)
    d.set(ConditionType.QUANTIZED, False, Reason.QUALITY_GATE_FAILED, message, quiet=True)
