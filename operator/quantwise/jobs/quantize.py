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
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from quantwise import __version__
from quantwise.api.report import QuantizeError, QuantizeReport, dump_report
from quantwise.jobs import artifact
from quantwise.jobs.checkpoint import (
    CheckpointFiles,
    HubCheckpoint,
    LocalCheckpoint,
    describe,
    hub_api,
)
from quantwise.jobs.errors import JobError, classify
from quantwise.quantization.methods import METHODS
from quantwise.quantization.recipe import Modifier, QuantizeRequest, RecipeError, recipe_for

log = logging.getLogger("quantwise.jobs")

EXIT_OK = 0
EXIT_RETRY = 1
# Same value as quantwise.render.job.EXIT_PERMANENT (the pod failure policy's exit code); the
# jobs package does not import the renderer.
EXIT_PERMANENT = 3


@dataclass
class Stage:
    """What the Job is doing, for failure messages ("out of memory while calibrating")."""

    name: str = "starting"


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
        emit(QuantizeError(reason=failure.reason, message=failure.message), report_path)
        return EXIT_PERMANENT if failure.permanent else EXIT_RETRY
    emit(report, report_path)
    return EXIT_OK


# ----- inspect -----


def inspect_checkpoint(model: str, revision: str, stage: Stage) -> QuantizeReport:
    """Describe the checkpoint at ``model`` (a directory, or a Hugging Face repository)."""
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
    return describe(files, "InspectReport", time.monotonic() - started)


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


def _progress_hooks(model: Any, samples: int) -> list[Any]:
    """Log each decoder layer as the calibration samples have passed through it."""
    layers = _decoder_layers(model)
    handles = []
    for index, layer in enumerate(layers):
        seen = [0]

        def hook(*_: Any, index: int = index, seen: list[int] = seen) -> None:
            seen[0] += 1
            if seen[0] == samples:
                log.info("calibration: layer %d/%d done (%d samples)", index + 1, len(layers),
                         samples)  # fmt: skip

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
    """Quantize (or find already quantized) the model; return the report of the artifact."""
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
        return existing.model_copy(update={"reused": True})
    model, tokenizer = _load(args, stage)
    dataset = _calibration_data(args, tokenizer, stage)
    _quantize(model, modifiers, dataset, args.sequence_length, stage)
    stage.name = "saving the checkpoint"
    with artifact.staging(args.output) as staged:
        model.save_pretrained(str(staged), save_compressed=True)
        tokenizer.save_pretrained(str(staged))
        stage.name = "measuring the checkpoint"
        report = describe(
            LocalCheckpoint(staged),
            "QuantizeReport",
            time.monotonic() - started,
            path=str(args.output),
        )
        artifact.publish(staged, args.output, inputs, report)
    log.info(
        "done in %.0f s: %s, %.3f GB of weights (quantwise %s)",
        report.duration_seconds,
        args.output,
        report.artifact.weight_bytes / 1e9,
        __version__,
    )
    return report


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

    token = os.environ.get("HF_TOKEN") or None
    hub = {} if is_local(args.model) else {"revision": args.revision, "token": token}
    stage.name = "loading the tokenizer"
    tokenizer = AutoTokenizer.from_pretrained(args.model, **hub)
    stage.name = "loading the model"
    log.info("loading %s", args.model)
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
    from quantwise.jobs.calibration import load_calibration

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
    hooks = _progress_hooks(model, len(dataset)) if dataset is not None else []
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
