"""The llm-compressor recipe for a quantization method, as plain data (pure).

:func:`recipe_for` returns the modifiers ``quantwise quantize`` hands to llm-compressor's
``oneshot``, each as a class name and keyword arguments, so the choice is tested without torch;
the Job turns them into llm-compressor objects (quantwise.jobs.quantize). :func:`checkpoint_of`
reads the recipe as the checkpoint it will write, so the kernel check before a Job is made checks
exactly what the Job will produce.

The schemes follow llm-compressor's presets (compressed_tensors/quantization/quant_scheme.py:
W4A16, W4A16_ASYM, W8A16, INT8_W8A8, FP8, FP8_DYNAMIC) with the group size and symmetry of the
spec, and its examples (examples/awq, examples/quantization_w4a16, examples/quantization_w8a8_int8,
examples/quantization_w8a8_fp8, examples/quantization_kv_cache).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from quantwise.quantization.config import CheckpointQuantization, parse_compressed_tensors
from quantwise.quantization.methods import DEFAULT_IGNORE, METHODS, QUANTIZING

# SmoothQuant migration strength for W8A8-INT8, llm-compressor's example value
# (examples/quantization_w8a8_int8/llama3_example.py: smoothing_strength=0.8).
SMOOTHING_STRENGTH = 0.8


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
    ignore: tuple[str, ...] = DEFAULT_IGNORE
    calibrated: bool = True

    @property
    def needs_calibration(self) -> bool:
        """True when oneshot needs calibration samples for this request."""
        known = METHODS.get(self.method)
        return (known is not None and known.calibrated) or (self.kv_cache_fp8 and self.calibrated)


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
        allowed = METHODS[method].bits
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
    raise RecipeError(f"--method {method}: quantwise quantize produces {', '.join(QUANTIZING)}")


def _format(group: dict[str, Any]) -> str:
    """The compressed-tensors format llm-compressor saves a scheme in.

    compressed-tensors' infer_quantization_format: integer weights alone are packed, FP8 ones
    float-quantized, integer weights with integer activations int-quantized.
    """
    weights = group["weights"]
    if weights["type"] == "float":
        return "float-quantized"
    return "int-quantized" if "input_activations" in group else "pack-quantized"


def checkpoint_of(modifiers: list[Modifier]) -> CheckpointQuantization:
    """The quantization the checkpoint of this recipe will declare in its config.json.

    The recipe's last quantizing modifier holds the scheme llm-compressor writes as
    ``quantization_config`` (``config_groups``, ``ignore``, ``kv_cache_scheme``): it is read
    back here as any compressed-tensors checkpoint is.
    """
    quant = next(m.kwargs for m in reversed(modifiers) if "config_groups" in m.kwargs)
    groups = quant["config_groups"]
    config: dict[str, Any] = {
        "quant_method": "compressed-tensors",
        "format": _format(next(iter(groups.values()))),
        "config_groups": groups,
        "ignore": quant.get("ignore") or [],
    }
    if "kv_cache_scheme" in quant:
        config["kv_cache_scheme"] = quant["kv_cache_scheme"]
    return parse_compressed_tensors(config)
