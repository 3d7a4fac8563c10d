"""The llm-compressor recipe for a quantization method, as plain data (pure).

:func:`recipe_for` returns the modifiers ``quantwise quantize`` hands to llm-compressor's
``oneshot``, each as a class name and keyword arguments, so the choice is tested without torch;
:func:`build_modifiers` turns them into llm-compressor objects inside the Job.

The schemes follow llm-compressor's presets (compressed_tensors/quantization/quant_scheme.py:
W4A16, W4A16_ASYM, W8A16, INT8_W8A8, FP8, FP8_DYNAMIC) with the group size and symmetry of the
spec, and its examples (examples/awq, examples/quantization_w4a16, examples/quantization_w8a8_int8,
examples/quantization_w8a8_fp8, examples/quantization_kv_cache).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

# SmoothQuant migration strength for W8A8-INT8, llm-compressor's example value
# (examples/quantization_w8a8_int8/llama3_example.py: smoothing_strength=0.8).
SMOOTHING_STRENGTH = 0.8

# Calibration is needed for the static scales of these methods (activations, AWQ's search,
# GPTQ's Hessians); fp8-dynamic computes activation scales at run time.
CALIBRATED_METHODS = frozenset({"awq", "gptq", "w8a8-int8", "fp8"})


class RecipeError(ValueError):
    """A method/bits/group combination llm-compressor cannot produce."""


@dataclass(frozen=True)
class QuantizeRequest:
    """What to produce: the flags of ``quantwise quantize`` that shape the checkpoint."""

    method: str
    bits: int
    group_size: int | None = None
    symmetric: bool = True
    kv_cache_fp8: bool = False
    ignore: tuple[str, ...] = ("lm_head",)
    calibrated: bool = True

    @property
    def needs_calibration(self) -> bool:
        """True when oneshot needs calibration samples for this request."""
        return self.method in CALIBRATED_METHODS or (self.kv_cache_fp8 and self.calibrated)


@dataclass(frozen=True)
class Modifier:
    """One llm-compressor modifier: its class name and keyword arguments (plain data)."""

    kind: str
    kwargs: dict[str, Any] = field(default_factory=dict)


def _int_weights(bits: int, group_size: int | None, symmetric: bool) -> dict[str, Any]:
    args: dict[str, Any] = {"num_bits": bits, "type": "int", "symmetric": symmetric}
    if group_size is None or group_size == -1:
        args["strategy"] = "channel"
    else:
        args["strategy"] = "group"
        args["group_size"] = group_size
    return args


# KV-cache scales: one static FP8 scale per tensor for K and V, calibrated
# (llm-compressor examples/quantization_kv_cache; vLLM reads k_scale / v_scale).
KV_CACHE_FP8: dict[str, Any] = {
    "num_bits": 8,
    "type": "float",
    "strategy": "tensor",
    "dynamic": False,
    "symmetric": True,
}


def recipe_for(request: QuantizeRequest) -> list[Modifier]:
    """Return the modifiers that produce ``request``, in the order oneshot applies them."""
    method, bits = request.method, request.bits
    ignore = list(request.ignore)
    kv: dict[str, Any] = {}
    if request.kv_cache_fp8 and request.calibrated:
        kv = {"kv_cache_scheme": dict(KV_CACHE_FP8)}
    if method in ("awq", "gptq"):
        allowed = (4,) if method == "awq" else (4, 8)
        if bits not in allowed:
            raise RecipeError(
                f"--bits {bits}: {method} produces {' or '.join(map(str, allowed))}-bit weights"
            )
        if request.group_size is not None and request.group_size != -1 and request.group_size <= 0:
            raise RecipeError(f"--group-size {request.group_size}: must be -1 or positive")
        scheme = {
            "targets": ["Linear"],
            "weights": _int_weights(bits, request.group_size, request.symmetric),
        }
        quant = {"config_groups": {"group_0": scheme}, "ignore": ignore, **kv}
        if method == "awq":
            # llm-compressor >= 0.14: AWQ is a transform (scales searched on calibration data)
            # followed by the quantization it was searched for.
            return [Modifier("AWQModifier"), Modifier("QuantizationModifier", quant)]
        return [Modifier("GPTQModifier", quant)]
    if method == "w8a8-int8":
        if bits != 8:
            raise RecipeError(f"--bits {bits}: w8a8-int8 produces 8-bit weights")
        scheme = {
            "targets": ["Linear"],
            # vLLM's CUTLASS W8A8 kernels take symmetric per-channel weights and per-token
            # dynamic activations (llm-compressor's INT8_W8A8 preset).
            "weights": {"num_bits": 8, "type": "int", "symmetric": True, "strategy": "channel"},
            "input_activations": {
                "num_bits": 8,
                "type": "int",
                "symmetric": request.symmetric,
                "strategy": "token",
                "dynamic": True,
            },
        }
        return [
            Modifier("SmoothQuantModifier", {"smoothing_strength": SMOOTHING_STRENGTH}),
            Modifier(
                "GPTQModifier", {"config_groups": {"group_0": scheme}, "ignore": ignore, **kv}
            ),
        ]
    if method in ("fp8", "fp8-dynamic"):
        if bits != 8:
            raise RecipeError(f"--bits {bits}: {method} produces 8-bit weights")
        if method == "fp8":
            scheme = {
                "targets": ["Linear"],
                "weights": {"num_bits": 8, "type": "float", "symmetric": True,
                            "strategy": "tensor"},
                "input_activations": {"num_bits": 8, "type": "float", "symmetric": True,
                                      "strategy": "tensor", "dynamic": False,
                                      "observer": "static_minmax"},
            }  # fmt: skip
        else:
            scheme = {
                "targets": ["Linear"],
                "weights": {"num_bits": 8, "type": "float", "symmetric": True,
                            "strategy": "channel"},
                "input_activations": {"num_bits": 8, "type": "float", "symmetric": True,
                                      "strategy": "token", "dynamic": True},
            }  # fmt: skip
        quant = {"config_groups": {"group_0": scheme}, "ignore": ignore, **kv}
        return [Modifier("QuantizationModifier", quant)]
    raise RecipeError(
        f"--method {method}: quantwise quantize produces awq, gptq, w8a8-int8, fp8, fp8-dynamic"
    )


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
