"""``quantwise quantize`` and ``quantwise inspect``: the programs of the Job's container.

``quantize`` loads the base model (a Hugging Face repository, with ``HF_TOKEN`` from the
environment, or a mounted path), runs llm-compressor's ``oneshot`` with the recipe of
quantwise.quantization.recipe on calibration data from quantwise.jobs.calibration, saves the
compressed checkpoint and the tokenizer into a staging directory and publishes it atomically
(quantwise.jobs.artifact). ``inspect`` describes an existing checkpoint. Both end with one
report, written to the termination message path and printed to stdout; a failure is a
QuantizeError with a reason, and exit status 3 when retrying cannot help (the Job's pod failure
policy then fails at once), 1 when it can.
"""

from __future__ import annotations

import logging
import os
import random
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from quantwise import __version__
from quantwise.api.report import QuantizeError, QuantizeReport, ReportQuality, dump_report
from quantwise.jobs import artifact, evaluation
from quantwise.jobs.calibration import HeldOut, load_calibration, load_evaluation
from quantwise.jobs.checkpoint import (
    CheckpointFiles,
    HubCheckpoint,
    LocalCheckpoint,
    describe,
    hub_api,
)
from quantwise.jobs.download import watch_download
from quantwise.jobs.errors import JobError, classify
from quantwise.jobs.evaluation import EvaluationArgs
from quantwise.jobs.progress import Progress
from quantwise.quantization.methods import METHODS
from quantwise.quantization.quality import Asked
from quantwise.quantization.recipe import Modifier, QuantizeRequest, RecipeError, recipe_for

log = logging.getLogger("quantwise.jobs")

EXIT_OK = 0
EXIT_RETRY = 1
# Same value as quantwise.render.job.EXIT_PERMANENT (the pod failure policy's exit code); the
# jobs package does not import the renderer.
EXIT_PERMANENT = 3


@dataclass
class Stage:
    """What the Job is doing: failure messages name it, progress lines report it."""

    name: str = "starting"
    progress: Progress = field(default_factory=Progress)


def is_local(model: str) -> bool:
    """True when ``model`` names a directory rather than a Hugging Face repository."""
    return model.startswith(("/", ".")) or Path(model).exists()


def configure_logging() -> None:
    """One line per event on stderr: the Job's log is its progress report."""
    logging.basicConfig(
        level=logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
        force=True,
    )


def emit(report: QuantizeReport | QuantizeError, report_path: str | None) -> None:
    """Write the report to the termination message path and print it to stdout."""
    text = dump_report(report)
    print(text, flush=True)
    if not report_path:
        return
    try:
        Path(report_path).write_text(text)
    except OSError as exc:
        # Outside a pod /dev/termination-log does not exist; stdout still has the report.
        log.warning("could not write the report to %s: %s", report_path, exc)


def run_job(work: Callable[[Stage], QuantizeReport], model: str, report_path: str | None) -> int:
    """Run ``work``, report its result or failure, and return the exit status."""
    stage = Stage()
    try:
        report = work(stage)
    except Exception as exc:
        failure = classify(exc, model, stage.name)
        log.error("failed: %s", failure, exc_info=not isinstance(exc, JobError))
        error = QuantizeError(reason=failure.reason, message=failure.message[:2048],
                              quality=failure.quality)  # fmt: skip
        emit(error, report_path)
        return EXIT_PERMANENT if failure.permanent else EXIT_RETRY
    stage.progress.done()
    emit(report, report_path)
    return EXIT_OK


# ----- inspect -----


@dataclass(frozen=True)
class BaseModel:
    """The unquantized model a pre-quantized checkpoint is compared with (``--base-model``)."""

    model: str
    revision: str = "main"


def inspect_checkpoint(
    model: str,
    revision: str,
    stage: Stage,
    base: BaseModel | None = None,
    evaluate: EvaluationArgs | None = None,
) -> QuantizeReport:
    """Describe the checkpoint at ``model`` (a directory, or a Hugging Face repository).

    With ``base`` and ``evaluate``, also compare its perplexity with the base model's and fail
    the quality gate when it is over the limit.
    """
    started = time.monotonic()
    files: CheckpointFiles
    if is_local(model):
        if not Path(model).is_dir():
            raise JobError(
                "ModelNotFound", f"{model} is not a directory: check spec.source.pvc.path"
            )
        files = LocalCheckpoint(Path(model))
    else:
        stage.name = "checking access to the model"
        _check_hub_access(model)
        files = HubCheckpoint(model, revision)
    stage.name = "reading the checkpoint"
    stage.progress.begin("reading")
    report = describe(files, "InspectReport", time.monotonic() - started)
    if base is None or evaluate is None:
        return report
    quality = _compare_saved(base.model, base.revision, model, revision, evaluate, stage)
    q = report.quantization
    asked = Asked("none", q.weight_bits, q.group_size, None, tuple(q.ignore))
    report = report.model_copy(
        update={"quality": quality, "duration_seconds": round(time.monotonic() - started, 1)}
    )
    evaluation.check_gate(quality, asked)
    return report


def _hub_kwargs(model: str, revision: str) -> dict[str, Any]:
    token = os.environ.get("HF_TOKEN") or None
    return {} if is_local(model) else {"revision": revision, "token": token}


def _compare_saved(
    base: str,
    base_revision: str,
    checkpoint: str,
    revision: str,
    evaluate: EvaluationArgs,
    stage: Stage,
    held_out: HeldOut | None = None,
    seed: int = 0,
) -> ReportQuality:
    """Perplexity of the base model and of a saved checkpoint, loaded one after the other."""
    from transformers import AutoTokenizer

    stage.name = "loading the tokenizer"
    tokenizer = AutoTokenizer.from_pretrained(base, **_hub_kwargs(base, base_revision))
    samples = _evaluation_samples(evaluate, tokenizer, stage, held_out, seed)
    if not samples:
        return evaluation.not_measured(_no_samples(evaluate))
    stage.name = "evaluating the base model"
    before = evaluation.measure_saved(
        base, samples, stage.progress, "base", **_hub_kwargs(base, base_revision)
    )
    stage.name = "evaluating the quantized model"
    after = evaluation.measure_saved(
        checkpoint, samples, stage.progress, "quantized", **_hub_kwargs(checkpoint, revision)
    )
    return evaluation.record(before, after, len(samples), evaluate.limit_percent)


# ----- quantize -----


def _check_hub_access(repo: str) -> None:
    """Fail early, and clearly, on a gated or missing repository (before any download).

    Skipped in offline mode (``HF_HUB_OFFLINE=1``: the model must be in the cache). The
    endpoint is read from ``HF_ENDPOINT`` at call time, so a mirror works too.
    """
    if os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes", "on"):
        return
    hub_api().auth_check(repo)


def _allow_cpu_only() -> None:
    """Let llm-compressor calibrate on a machine without an accelerator (tests, CPU nodes).

    llm-compressor 0.14's AWQ pins its cached activations to page-locked memory before each
    smoothing step (pipelines/cache.py ``IntermediatesCache.pin_memory``), which raises
    "Cannot access accelerator device when none is available" without a GPU. Pinning only
    speeds up host-to-device copies, so without a device it is skipped.
    """
    import torch

    if torch.accelerator.is_available():
        return
    from llmcompressor.pipelines.cache import IntermediatesCache

    def _no_pinning(self: Any, *args: Any, **kwargs: Any) -> None:
        return None

    IntermediatesCache.pin_memory = _no_pinning


def _decoder_layers(model: Any) -> list[Any]:
    import torch

    for name, module in model.named_modules():
        if isinstance(module, torch.nn.ModuleList) and name.split(".")[-1] in (
            "layers",
            "h",
            "blocks",
        ):
            return list(module)
    return []


def _progress_hooks(model: Any, samples: int, progress: Progress) -> list[Any]:
    """Log each decoder layer (a progress step) once the calibration samples passed through it."""
    layers = _decoder_layers(model)
    progress.begin("calibrating", len(layers) or None)
    handles = []
    for index, layer in enumerate(layers):
        seen = [0]

        def hook(*_: Any, index: int = index, seen: list[int] = seen) -> None:
            seen[0] += 1
            if seen[0] == samples:
                log.info("calibration: layer %d/%d done (%d samples)", index + 1, len(layers),
                         samples)  # fmt: skip
                progress.step(index + 1, len(layers))

        handles.append(layer.register_forward_hook(hook))
    return handles


@dataclass(frozen=True)
class QuantizeArgs:
    """The flags of ``quantwise quantize``."""

    model: str
    revision: str
    request: QuantizeRequest
    output: Path
    calibration: str | None
    split: str
    samples: int
    sequence_length: int
    seed: int
    evaluate: EvaluationArgs | None = None
    """The quality gate's evaluation; None: not evaluated (``--no-eval``)."""

    def asked(self) -> Asked:
        """What the advice of a failed quality gate follows from."""
        r = self.request
        samples = self.samples if r.needs_calibration else None
        return Asked(r.method, r.bits, r.group_size, samples, tuple(r.ignore))

    def held_out(self) -> HeldOut | None:
        """The calibration that evaluation on the same data must not overlap (or None)."""
        e = self.evaluate
        calibrated = self.request.needs_calibration and self.calibration is not None
        if e is None or not e.held_out or not calibrated:
            return None
        return HeldOut(samples=self.samples, sequence_length=self.sequence_length)

    def inputs(self) -> dict[str, Any]:
        """What determines the artifact, recorded in its quantwise.json."""
        r = self.request
        calibrated = r.needs_calibration
        return {
            "model": self.model,
            "revision": None if is_local(self.model) else self.revision,
            "method": r.method,
            "bits": r.bits,
            "groupSize": r.group_size,
            "symmetric": r.symmetric if METHODS[r.method].symmetric is not None else None,
            "kvCacheDtype": "fp8" if r.kv_cache_fp8 else "auto",
            "ignore": list(r.ignore),
            "calibration": self.calibration if calibrated else None,
            "split": self.split if calibrated else None,
            "samples": self.samples if calibrated else None,
            "sequenceLength": self.sequence_length if calibrated else None,
            "seed": self.seed if calibrated else None,
        }


def quantize_model(args: QuantizeArgs, stage: Stage) -> QuantizeReport:
    """Quantize (or find already quantized) the model; return the report of the artifact.

    With ``args.evaluate``, the base model's perplexity is measured before ``oneshot`` and the
    quantized model's after it, on the same held-out tokens; over the limit, the artifact is
    still published (a retry with a new limit judges it again without quantizing) and a
    permanent QualityGateFailed failure carries both figures.
    """
    started = time.monotonic()
    stage.name = "checking the output directory"
    inputs = args.inputs()
    try:
        modifiers = recipe_for(args.request)
    except RecipeError as exc:
        raise JobError("InvalidRequest", str(exc)) from exc
    if args.request.needs_calibration and not args.calibration:
        raise JobError(
            "DatasetNotFound",
            f"method {args.request.method} needs calibration data: set "
            "spec.quantization.calibration.dataset or .pvc",
        )
    existing = artifact.find_complete(args.output, inputs)
    if existing is not None:
        log.info("%s is complete (made from the same inputs): nothing to do", args.output)
        return _reused(args, existing, stage)
    model, tokenizer = _load(args, stage)
    dataset = _calibration_data(args, tokenizer, stage)
    samples = _evaluation_samples(args.evaluate, tokenizer, stage, args.held_out(), args.seed)
    before = _measure(model, samples, stage, "base")
    _quantize(model, modifiers, dataset, args.sequence_length, stage)
    after = _measure(model, samples, stage, "quantized")
    quality = _quality(args.evaluate, samples, before, after)
    stage.name = "saving the checkpoint"
    stage.progress.begin("saving")
    with artifact.staging(args.output) as staged:
        model.save_pretrained(str(staged), save_compressed=True)
        tokenizer.save_pretrained(str(staged))
        stage.name = "measuring the checkpoint"
        report = describe(
            LocalCheckpoint(staged),
            "QuantizeReport",
            time.monotonic() - started,
            path=str(args.output),
        ).model_copy(update={"quality": quality})
        evaluated = args.evaluate.inputs() if args.evaluate else None
        artifact.publish(staged, args.output, inputs, report, evaluation=evaluated)
    log.info(
        "done in %.0f s: %s, %.3f GB of weights (quantwise %s)",
        report.duration_seconds,
        args.output,
        report.artifact.weight_bytes / 1e9,
        __version__,
    )
    _print_quality(quality)
    evaluation.check_gate(quality, args.asked())
    return report


def _reused(args: QuantizeArgs, existing: QuantizeReport, stage: Stage) -> QuantizeReport:
    """A complete artifact found again, its quality judged by this run's evaluation."""
    quality: ReportQuality | None = None
    if args.evaluate is not None:
        marker = artifact.read_marker(args.output) or {}
        recorded = existing.quality
        if recorded is not None and marker.get("evaluation") == args.evaluate.inputs():
            quality = evaluation.rejudge(recorded, args.evaluate.limit_percent)
        else:  # made without evaluation, or measured on other data: measure it now
            quality = _compare_saved(args.model, args.revision, str(args.output), "main",
                                     args.evaluate, stage, args.held_out(), args.seed)  # fmt: skip
    report = existing.model_copy(update={"reused": True, "quality": quality})
    _print_quality(quality)
    evaluation.check_gate(quality, args.asked())
    return report


def _no_samples(evaluate: EvaluationArgs) -> str:
    if evaluate.dataset is None:
        return "no evaluation data: name it with --eval-dataset (spec.quantization.evaluation)"
    where = "left after the calibration samples " if evaluate.held_out else ""
    return (
        f"{evaluate.dataset} has no evaluation samples {where}(records with text of 2 tokens "
        "or more): set spec.quantization.evaluation.dataset or .pvc, or fewer calibration "
        "samples"
    )


def _evaluation_samples(
    evaluate: EvaluationArgs | None,
    tokenizer: Any,
    stage: Stage,
    held_out: HeldOut | None,
    seed: int,
) -> list[list[int]] | None:
    """The evaluation's token ids: None when not evaluated, [] when there is no data."""
    if evaluate is None:
        return None
    if evaluate.dataset is None:
        return []
    stage.name = "loading evaluation data"
    return load_evaluation(evaluate.dataset, tokenizer, evaluate.samples,
                           evaluate.sequence_length, split=evaluate.split, seed=seed,
                           held_out=held_out)  # fmt: skip


def _measure(
    model: Any, samples: list[list[int]] | None, stage: Stage, which: str
) -> evaluation.Measured | None:
    """The perplexity of the model in memory (None when there is nothing to measure on).

    The base model goes back to the CPU afterwards, where oneshot expects it.
    """
    if not samples:
        return None
    stage.name = f"evaluating the {which} model"
    measured = evaluation.measure(model, samples, stage.progress, which)
    if which == "base":
        evaluation.undispatch(model)
    return measured


def _quality(
    evaluate: EvaluationArgs | None,
    samples: list[list[int]] | None,
    before: evaluation.Measured | None,
    after: evaluation.Measured | None,
) -> ReportQuality | None:
    if evaluate is None or samples is None:
        return None
    if before is None or after is None:
        return evaluation.not_measured(_no_samples(evaluate))
    return evaluation.record(before, after, len(samples), evaluate.limit_percent)


def _print_quality(quality: ReportQuality | None) -> None:
    if quality is not None:
        log.info("quality gate: %s", evaluation.describe(quality))


def _load(args: QuantizeArgs, stage: Stage) -> tuple[Any, Any]:
    """The base model and its tokenizer, from a directory or the Hugging Face Hub."""
    if is_local(args.model):
        if not (Path(args.model) / "config.json").is_file():
            raise JobError(
                "ModelNotFound",
                f"{args.model} holds no config.json: check spec.source.pvc.path",
            )
    else:
        stage.name = "checking access to the model"
        _check_hub_access(args.model)
    random.seed(args.seed)
    import torch

    torch.manual_seed(args.seed)
    from transformers import AutoModelForCausalLM, AutoTokenizer

    hub = _hub_kwargs(args.model, args.revision)
    stage.name = "loading the tokenizer"
    tokenizer = AutoTokenizer.from_pretrained(args.model, **hub)
    stage.name = "loading the model"
    log.info("loading %s", args.model)
    with watch_download(args.model, args.revision, stage.progress, is_local(args.model)):
        model = AutoModelForCausalLM.from_pretrained(args.model, dtype="auto", **hub)
    log.info("loaded %s (%s, %d parameters)", args.model, model.dtype, model.num_parameters())
    return model, tokenizer


def _calibration_data(args: QuantizeArgs, tokenizer: Any, stage: Stage) -> Any | None:
    """The tokenized calibration samples (None when the recipe needs none)."""
    if not args.request.needs_calibration:
        if args.request.kv_cache_fp8:
            log.warning(
                "fp8-dynamic without calibration data: no KV-cache scales are written; vLLM "
                "uses scale 1.0 for --kv-cache-dtype fp8"
            )
        return None
    stage.name = "loading calibration data"
    assert args.calibration is not None
    return load_calibration(
        args.calibration,
        tokenizer,
        args.samples,
        args.sequence_length,
        split=args.split,
        seed=args.seed,
    )


def _quantize(
    model: Any, modifiers: list[Modifier], dataset: Any | None, sequence_length: int, stage: Stage
) -> None:
    """Run llm-compressor's oneshot on ``model`` in place, logging each calibrated layer."""
    _allow_cpu_only()
    from llmcompressor import oneshot

    stage.name = "quantizing"
    log.info("quantizing: %s", ", ".join(m.kind for m in modifiers))
    if dataset is not None:
        hooks = _progress_hooks(model, len(dataset), stage.progress)
    else:
        hooks = []
        stage.progress.begin("quantizing")
    calibration: dict[str, Any] = {}
    if dataset is not None:
        calibration = {
            "dataset": dataset,
            "num_calibration_samples": len(dataset),
            "max_seq_length": sequence_length,
            "shuffle_calibration_samples": False,
        }
    oneshot(model=model, recipe=build_modifiers(modifiers), **calibration)
    for handle in hooks:
        handle.remove()


def build_modifiers(modifiers: list[Modifier]) -> list[Any]:
    """Instantiate the modifiers with llm-compressor (imported here: the Job image has it)."""
    from compressed_tensors.quantization import QuantizationArgs, QuantizationScheme
    from llmcompressor.modifiers.quantization import GPTQModifier, QuantizationModifier
    from llmcompressor.modifiers.transform import AWQModifier, SmoothQuantModifier

    classes: dict[str, Any] = {
        "AWQModifier": AWQModifier,
        "GPTQModifier": GPTQModifier,
        "QuantizationModifier": QuantizationModifier,
        "SmoothQuantModifier": SmoothQuantModifier,
    }
    built: list[Any] = []
    for modifier in modifiers:
        kwargs = dict(modifier.kwargs)
        if "config_groups" in kwargs:
            kwargs["config_groups"] = {
                name: QuantizationScheme(
                    targets=group["targets"],
                    weights=QuantizationArgs(**group["weights"]),
                    input_activations=(
                        QuantizationArgs(**group["input_activations"])
                        if "input_activations" in group
                        else None
                    ),
                )
                for name, group in kwargs["config_groups"].items()
            }
        if "kv_cache_scheme" in kwargs:
            kwargs["kv_cache_scheme"] = QuantizationArgs(**kwargs["kv_cache_scheme"])
        built.append(classes[modifier.kind](**kwargs))
    return built
