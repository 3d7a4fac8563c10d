"""The quality gate: how much perplexity quantization may cost, and what to do when it costs more.

The quantization Job measures the perplexity of the base model and of the quantized one on the
same held-out tokens (quantwise.jobs.evaluation); :func:`judge` compares the increase with the
spec's limit and :func:`advice` says, from the request, what usually brings it down.

The default limit comes from the guide quantwise started from (its WikiText-2 table): 4-bit
weights normally cost Llama 3 8B +2.9 % (AWQ, 6.14 -> 6.32) and +5.5 % (GPTQ, 6.14 -> 6.48),
Mistral 7B +3.0 % (AWQ, 5.25 -> 5.41) and +6.3 % (GPTQ, 5.25 -> 5.58), Llama 3 70B +3.0 % (AWQ,
3.32 -> 3.42). 15 % passes the dearest of these (+6.3 %) with more than twice its cost to spare,
for a held-out slice of chat data rather than WikiText-2, a few hundred samples rather than the
whole test set, and smaller models, which lose more at 4 bits. A broken checkpoint (a bad
calibration set, a tokenizer that does not match, a layer that had to stay in 16 bits) is off by
far more: it talks nonsense, whose perplexity is a multiple of the base model's.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

DEFAULT_MAX_PERPLEXITY_INCREASE_PERCENT = 15.0
"""The gate's default limit (see the module docstring for why)."""
DEFAULT_EVALUATION_SAMPLES = 128
"""Held-out samples the perplexity is measured on (x 512 tokens: about 65 000 tokens)."""
DEFAULT_EVALUATION_SEQUENCE_LENGTH = 512
"""Tokens per evaluation sample (the calibration default, so both see text of one length)."""
# More calibration samples than this rarely help (llm-compressor's examples use 256 to 512).
ENOUGH_CALIBRATION_SAMPLES = 512
# An increase this large is not the usual cost of fewer bits: something is broken.
BROKEN_INCREASE_PERCENT = 100.0


@dataclass(frozen=True)
class Verdict:
    """The gate's judgement of two perplexities."""

    increase_percent: float | None
    """(quantized - baseline) / baseline x 100; None when either is not a finite number."""
    passed: bool


def increase_percent(baseline: float | None, quantized: float | None) -> float | None:
    """How much higher the quantized model's perplexity is, in percent of the base model's.

    None when either perplexity is missing or not finite (a model that gives NaN logits).
    """
    if baseline is None or quantized is None:
        return None
    if not (math.isfinite(baseline) and math.isfinite(quantized)) or baseline <= 0:
        return None
    return (quantized - baseline) / baseline * 100


def judge(baseline: float | None, quantized: float | None, limit_percent: float) -> Verdict:
    """Whether the increase is within ``limit_percent`` (an unmeasurable one is not)."""
    increase = increase_percent(baseline, quantized)
    return Verdict(increase, increase is not None and increase <= limit_percent)


@dataclass(frozen=True)
class Asked:
    """What the quantization was asked for: the facts the advice follows from."""

    method: str
    bits: int
    group_size: int | None
    calibration_samples: int | None
    """None for a method that does not calibrate."""
    ignore: tuple[str, ...]


def advice(asked: Asked, increase: float | None) -> list[str]:
    """What to change in spec.quantization to lose less, most effective first."""
    steps: list[str] = []
    if increase is None or increase > BROKEN_INCREASE_PERCENT:
        steps.append(
            "check the checkpoint: an increase this large (or a perplexity that is not a "
            "number) means broken output, e.g. a tokenizer that does not belong to the model"
        )
    if asked.method == "none":
        steps.append(
            "this pre-quantized checkpoint loses more than the limit allows: quantize the base "
            "model with quantwise instead (spec.source: the base model, spec.quantization.method: "
            "awq, or gptq with bits: 8), or serve another checkpoint"
        )
        return steps
    samples = asked.calibration_samples
    if samples is not None:
        hint = ""
        if samples < ENOUGH_CALIBRATION_SAMPLES:
            more = min(max(samples * 2, 256), ENOUGH_CALIBRATION_SAMPLES)
            hint = f"more calibration samples (spec.quantization.calibration.samples: {more}), "
        steps.append(
            f"{hint}calibration data like the model's own traffic "
            "(spec.quantization.calibration.dataset or .pvc)"
        )
    if asked.group_size is not None and (asked.group_size == -1 or asked.group_size > 64):
        steps.append("smaller groups: spec.quantization.groupSize: 64")
    if asked.method == "gptq" and asked.bits < 8:
        # The guide's table: AWQ +2.9 % / +3.0 %, GPTQ +5.5 % / +6.3 % (Llama 3 8B / Mistral 7B).
        steps.append("AWQ instead of GPTQ (spec.quantization.method: awq), which lost about "
                     "half as much at 4 bits on Llama 3 8B and Mistral 7B")  # fmt: skip
    if asked.bits < 8:
        steps.append("8 bits (method: gptq with bits: 8, or w8a8-int8 / fp8)")
    if "lm_head" not in asked.ignore:
        steps.append("leave lm_head in 16 bits (spec.quantization.ignore: [lm_head])")
    steps.append(
        "leave a sensitive module in 16 bits, e.g. the first layer's mlp.down_proj "
        "(spec.quantization.ignore: [lm_head, 're:.*layers[.]0[.]mlp[.]down_proj'])"
    )
    return steps


def gate_message(
    baseline: float | None,
    quantized: float | None,
    verdict: Verdict,
    limit_percent: float,
    asked: Asked,
) -> str:
    """The one-line failure a condition shows: both perplexities, the increase and the advice."""
    increase = (
        f"+{verdict.increase_percent:.1f} %" if verdict.increase_percent is not None else "n/a"
    )
    steps = "; ".join(advice(asked, verdict.increase_percent))
    return (
        f"perplexity {_number(quantized)} after quantization vs {_number(baseline)} for the base "
        f"model ({increase}), over the limit of {limit_percent:g} % "
        f"(spec.quantization.evaluation.maxPerplexityIncreasePercent). To lose less: {steps}"
    )


def _number(value: float | None) -> str:
    return f"{value:.4g}" if value is not None and math.isfinite(value) else "not a number"
