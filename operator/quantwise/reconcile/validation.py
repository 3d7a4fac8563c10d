"""The reconcile's kernel check: the artifact against the vLLM support matrix on the GPU."""

from __future__ import annotations

from typing import Literal, get_args

from quantwise.api.spec import QuantizedModelSpec
from quantwise.api.status import ArtifactStatus
from quantwise.planning.gpus import GPU
from quantwise.planning.kvcache import kv_cache_dtype_unavailable
from quantwise.quantization.config import ActOrder, CheckpointQuantization, Scheme
from quantwise.quantization.methods import NONE
from quantwise.quantization.recipe import checkpoint_of, recipe_for
from quantwise.quantization.validate import validate
from quantwise.reconcile.state import Validation, Validator
from quantwise.vllm import version_of

# How each scheme stores a weight (the rest are floating point: 16 bits, FP8).
_WEIGHT_TYPES: dict[str, Literal["int", "nf4", "fp4"]] = {
    "awq": "int", "gptq": "int", "wna16": "int", "w8a8-int8": "int", "w4a8": "int",
    "bnb-8bit": "int", "bnb-4bit": "nf4", "nvfp4": "fp4",
}  # fmt: skip


def checkpoint_from_artifact(artifact: ArtifactStatus) -> CheckpointQuantization:
    """The normalised quantization the Job reported, rebuilt from ``status.artifact``."""
    bits = artifact.bits or 16
    act_order = artifact.act_order if artifact.act_order in get_args(ActOrder) else "none"
    scheme = artifact.scheme if artifact.scheme in get_args(Scheme) else None
    scheme = scheme or ("none" if bits >= 16 else "wna16")
    return CheckpointQuantization(
        producer="compressed-tensors" if artifact.scheme in ("wna16", "w8a8-int8") else "none",
        scheme=scheme,
        quant_method=artifact.method or "none",
        weight_bits=bits,
        weight_type=_WEIGHT_TYPES.get(scheme, "float"),
        activation_bits=artifact.activation_bits or 16,
        group_size=artifact.group_size,
        symmetric=artifact.symmetric if artifact.symmetric is not None else True,
        act_order=act_order,
        format=artifact.format,
    )


def produced_checkpoint(spec: QuantizedModelSpec) -> CheckpointQuantization | None:
    """The quantization the Job will write for ``spec`` (None: ``method: none``, not known yet).

    Read from the very recipe the Job runs (quantwise.quantization.recipe.checkpoint_of), so the
    check before a Job is made cannot drift from what the Job produces.
    """
    q = spec.quantization
    if q.method == NONE:
        return None
    request = q.request(kv_cache_fp8=spec.serving.kv_cache_dtype.startswith("fp8"))
    return checkpoint_of(recipe_for(request))


def kernel_validator(default_image: str | None) -> Validator:
    """A Validator for the serving image's vLLM version (``spec.serving.vllmVersion`` wins).

    Without an artifact it checks what the quantization Job would write, so a checkpoint vLLM
    cannot load is refused before GPU hours are spent making it.
    """

    def check(
        spec: QuantizedModelSpec, artifact: ArtifactStatus | None, gpu: GPU | None
    ) -> Validation | None:
        if gpu is None:
            return None
        version = version_of(spec.serving.image or default_image, spec.serving.vllm_version)
        if reason := kv_cache_dtype_unavailable(spec.serving.kv_cache_dtype, version):
            return Validation("unsupported", None, (reason,))
        if artifact is None:
            expected = produced_checkpoint(spec)
            if expected is None:
                return None
            verdict = validate(expected, gpu, version)
            messages = tuple(f"{f.field}: {f.message}" for f in verdict.findings)
            return Validation(verdict.verdict, verdict.kernel, messages)
        verdict = validate(checkpoint_from_artifact(artifact), gpu, version, artifact.architecture)
        severity = "error" if verdict.verdict == "unsupported" else "warning"
        messages = tuple(
            f"{f.field}: {f.message}" for f in verdict.findings if f.severity == severity
        )
        quant = checkpoint_from_artifact(artifact)
        arch = artifact.architecture
        tp_filter = None
        if arch is not None and verdict.marlin_shapes:

            def tp_filter(tp: int) -> str | None:
                return verdict.tp_blocker(arch, quant, tp)

        return Validation(verdict.verdict, verdict.kernel, messages, tp_filter)

    return check
