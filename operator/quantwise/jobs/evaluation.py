"""The quality gate inside the Job: perplexity of the base and the quantized model, same tokens.

Perplexity is ``exp`` of the mean negative log-likelihood of each token given the ones before it
(the next-token cross-entropy a causal language model is trained on), over every predicted token
of every evaluation sample: the definition WikiText-2 perplexity tables use, here on held-out
samples of the calibration data (or the data the spec names). The loop is small and computed
here because the models are already in memory (the base one before ``oneshot`` changes it in
place, the quantized one after) and no library takes a loaded model and token ids: lm-eval and
``evaluate``'s perplexity load models and data sets of their own. It runs batched on the Job's
GPU (the model dispatched across the accelerators, as llm-compressor's examples do before they
generate), on the CPU where there is none.
"""

from __future__ import annotations

import gc
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from quantwise.api.report import ReportQuality
from quantwise.jobs.errors import JobError
from quantwise.jobs.progress import Progress
from quantwise.quantization.quality import Asked, gate_message, judge

log = logging.getLogger("quantwise.jobs")

# Tokens per forward pass. The logits of a batch are batch x length x vocabulary: 4096 tokens of
# a 128 256-token vocabulary (Llama 3) are 1 GiB in bf16 and 2 GiB as float32 for the loss.
EVAL_BATCH_TOKENS = 4096
# exp() of a mean NLL above this overflows a float: the perplexity is infinite.
MAX_MEAN_NLL = 700.0


@dataclass(frozen=True)
class EvaluationArgs:
    """The evaluation flags of ``quantwise quantize`` / ``inspect``."""

    dataset: str | None
    """A dataset name or a file; None: nothing to evaluate on (not measured)."""
    split: str
    samples: int
    sequence_length: int
    limit_percent: float
    held_out: bool
    """``dataset`` is the calibration data: evaluate only on what calibration does not read."""

    def inputs(self) -> dict[str, Any]:
        """What determines the figures (not the limit), recorded next to the artifact."""
        return {
            "dataset": self.dataset,
            "split": self.split,
            "samples": self.samples,
            "sequenceLength": self.sequence_length,
            "heldOut": self.held_out,
        }


@dataclass(frozen=True)
class Measured:
    """One model's perplexity on the evaluation samples."""

    perplexity: float
    """May be ``inf`` or ``nan`` for a broken model."""
    tokens: int
    """Tokens predicted (each sample's tokens but its first)."""
    seconds: float


def _input_device(model: Any) -> Any:
    """Where inputs go: the execution device of a dispatched model, else its parameters'."""
    try:
        from compressed_tensors.offload import get_execution_device

        device = get_execution_device(model)
        if device != "disk":
            return device
    except ImportError:
        pass
    return next(model.parameters()).device


def _batches(samples: list[list[int]], batch_tokens: int) -> list[list[list[int]]]:
    """Samples grouped, longest first, so that each batch's padded size stays near the budget."""
    ordered = sorted(samples, key=len, reverse=True)
    batches: list[list[list[int]]] = []
    for sample in ordered:
        if batches and (len(batches[-1]) + 1) * len(batches[-1][0]) <= batch_tokens:
            batches[-1].append(sample)
        else:
            batches.append([sample])
    return batches


def perplexity(
    model: Any,
    samples: list[list[int]],
    on_batch: Callable[[int, int], None] | None = None,
    batch_tokens: int = EVAL_BATCH_TOKENS,
) -> Measured:
    """The perplexity of ``model`` on ``samples`` (token ids), batched and right-padded.

    ``model(input_ids=..., attention_mask=...)`` returns an object with ``logits``; padding is
    masked out of attention and of the loss. ``on_batch(done, total)`` after each batch.
    """
    import torch

    started = time.monotonic()
    device = _input_device(model)
    batches = _batches([s for s in samples if len(s) >= 2], batch_tokens)
    nll, tokens = 0.0, 0
    with torch.inference_mode():
        for index, batch in enumerate(batches):
            width = max(len(s) for s in batch)
            ids = torch.zeros((len(batch), width), dtype=torch.long)
            mask = torch.zeros((len(batch), width), dtype=torch.long)
            for row, sample in enumerate(batch):
                ids[row, : len(sample)] = torch.tensor(sample, dtype=torch.long)
                mask[row, : len(sample)] = 1
            out = model(input_ids=ids.to(device), attention_mask=mask.to(device), use_cache=False)
            logits = out.logits[:, :-1, :].float()
            labels = ids[:, 1:].masked_fill(mask[:, 1:] == 0, -100).to(logits.device)
            loss = torch.nn.functional.cross_entropy(
                logits.reshape(-1, logits.shape[-1]), labels.reshape(-1),
                ignore_index=-100, reduction="sum",
            )  # fmt: skip
            nll += float(loss)
            tokens += int((labels != -100).sum())
            if on_batch is not None:
                on_batch(index + 1, len(batches))
    mean = nll / tokens if tokens else math.nan
    value = math.inf if mean > MAX_MEAN_NLL else math.exp(mean)
    return Measured(perplexity=value, tokens=tokens, seconds=time.monotonic() - started)


def _dispatch(model: Any) -> None:
    """Put the model on the accelerators (what does not fit stays offloaded to the CPU)."""
    from compressed_tensors.offload import dispatch_model

    dispatch_model(model)


def measure(model: Any, samples: list[list[int]], progress: Progress, which: str) -> Measured:
    """The perplexity of ``model`` (dispatched to the GPU), the progress shown per batch."""
    _dispatch(model)
    progress.begin("evaluating", len(_batches(samples, EVAL_BATCH_TOKENS)))
    result = perplexity(model, samples, on_batch=progress.step)
    log.info("evaluation: perplexity of the %s model %.4g on %d tokens (%.0f s)", which,
             result.perplexity, result.tokens, result.seconds)  # fmt: skip
    return result


def undispatch(model: Any) -> None:
    """Bring a dispatched model back to the CPU, where ``from_pretrained`` put it for oneshot."""
    from compressed_tensors.offload import remove_dispatch

    remove_dispatch(model)
    model.to("cpu")


def measure_saved(
    location: Path | str,
    samples: list[list[int]],
    progress: Progress,
    which: str,
    **hub: Any,
) -> Measured:
    """The perplexity of the checkpoint at ``location``: loaded, measured, released.

    ``location`` is a directory, or a Hugging Face repository (``hub``: revision and token).
    """
    from transformers import AutoModelForCausalLM

    progress.begin("loading")
    model = AutoModelForCausalLM.from_pretrained(str(location), dtype="auto", **hub)
    try:
        return measure(model, samples, progress, which)
    finally:
        del model
        release()


def release() -> None:
    """Free the memory of a model that is gone (host and accelerator)."""
    import torch

    gc.collect()
    if torch.accelerator.is_available():
        torch.accelerator.empty_cache()


def _finite(value: float) -> float | None:
    return round(value, 4) if math.isfinite(value) else None


def record(
    base: Measured, quantized: Measured, samples: int, limit_percent: float
) -> ReportQuality:
    """The report's quality record: both perplexities, the increase and the verdict."""
    verdict = judge(base.perplexity, quantized.perplexity, limit_percent)
    increase = verdict.increase_percent
    return ReportQuality(
        baseline_perplexity=_finite(base.perplexity),
        perplexity=_finite(quantized.perplexity),
        increase_percent=round(increase, 2) if increase is not None else None,
        limit_percent=limit_percent,
        samples=samples,
        tokens=quantized.tokens,
        passed=verdict.passed,
        duration_seconds=round(base.seconds + quantized.seconds, 1),
    )


def rejudge(quality: ReportQuality, limit_percent: float) -> ReportQuality:
    """A recorded measurement judged against another limit (an artifact found again)."""
    if quality.not_measured is not None:
        return quality
    verdict = judge(quality.baseline_perplexity, quality.perplexity, limit_percent)
    return quality.model_copy(update={"limit_percent": limit_percent, "passed": verdict.passed})


def check_gate(quality: ReportQuality | None, asked: Asked) -> None:
    """Raise QualityGateFailed (permanent, with the figures) when the quality did not pass."""
    if quality is None or quality.passed is not False:
        return
    limit = quality.limit_percent or 0.0
    verdict = judge(quality.baseline_perplexity, quality.perplexity, limit)
    message = gate_message(quality.baseline_perplexity, quality.perplexity, verdict, limit, asked)
    raise JobError("QualityGateFailed", message, permanent=True, quality=quality)


def not_measured(why: str) -> ReportQuality:
    """The quality record of an evaluation that could not be made, saying why."""
    log.warning("evaluation: not measured: %s", why)
    return ReportQuality(not_measured=why[:512])


def describe(quality: ReportQuality) -> str:
    """One line for people: ``perplexity 6.32 vs 6.14 (+2.9 %, limit 15 %): passed``."""
    if quality.not_measured is not None:
        return f"quality not measured: {quality.not_measured}"
    base = quality.baseline_perplexity
    after = quality.perplexity
    increase = quality.increase_percent
    return (
        f"perplexity {after if after is not None else 'nan'} vs "
        f"{base if base is not None else 'nan'} for the base model "
        f"({'n/a' if increase is None else f'{increase:+.2f} %'}, limit "
        f"{quality.limit_percent:g} %) on {quality.samples} samples, {quality.tokens} tokens: "
        f"{'passed' if quality.passed else 'FAILED'}"
    )
