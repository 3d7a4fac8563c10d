"""What each quantization method is, in one table.

The API, the recipe, the Job's arguments, the kernel check and the CLI read it. The methods
are llm-compressor's presets (compressed_tensors/quantization/quant_scheme.py: W4A16,
W4A16_ASYM, W8A16, INT8_W8A8, FP8, FP8_DYNAMIC) as quantwise offers them, and ``none``: a
checkpoint that is already quantized (or served as it is), inspected and validated only.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Method:
    """One method's facts."""

    name: str
    bits: tuple[int, ...]
    """Weight bits it produces; the first is the default (``none``: what a checkpoint may hold)."""
    grouped: bool
    """Weights quantized in groups of ``groupSize`` inputs (default DEFAULT_GROUP_SIZE)."""
    calibrated: bool
    """Static scales computed from calibration samples (AWQ's search, GPTQ's Hessians, static
    activation scales); fp8-dynamic computes activation scales at run time."""
    symmetric: bool | None
    """Symmetric (no zero point) unless the spec says; None: always symmetric (FP8), not set."""
    weight_only: bool
    """16-bit activations (only the weights are quantized)."""

    @property
    def quantizes(self) -> bool:
        """Whether a Job quantizes (every method but ``none``, which inspects)."""
        return self.name != NONE


NONE = "none"
DEFAULT_GROUP_SIZE = 128
# Group sizes vLLM's Marlin kernels accept (vllm/model_executor/layers/quantization/utils/
# marlin_utils.py, MARLIN_SUPPORTED_GROUP_SIZES); -1 means one group per output channel.
GROUP_SIZES: tuple[int, ...] = (-1, 32, 64, 128)
DEFAULT_IGNORE: tuple[str, ...] = ("lm_head",)
"""Modules left in 16 bits unless the spec says otherwise (llm-compressor's examples)."""

# Calibration defaults: llm-compressor's examples calibrate on UltraChat, 256 to 512 samples of
# 512 to 2048 tokens (examples/awq, examples/quantization_w4a16).
DEFAULT_CALIBRATION_DATASET = "HuggingFaceH4/ultrachat_200k"
DEFAULT_CALIBRATION_SAMPLES = 256
DEFAULT_CALIBRATION_SEQUENCE_LENGTH = 512


def default_split(dataset: str | None) -> str:
    """The training split of a calibration dataset (UltraChat names it train_sft)."""
    return "train_sft" if (dataset or "").endswith("ultrachat_200k") else "train"


METHODS: dict[str, Method] = {
    m.name: m
    for m in (
        # AutoAWQ's default is asymmetric (zero points); vLLM's AWQ Marlin needs them.
        Method("awq", (4,), grouped=True, calibrated=True, symmetric=False, weight_only=True),
        Method("gptq", (4, 8), grouped=True, calibrated=True, symmetric=True, weight_only=True),
        Method(
            "w8a8-int8", (8,), grouped=False, calibrated=True, symmetric=True, weight_only=False
        ),
        Method("fp8", (8,), grouped=False, calibrated=True, symmetric=None, weight_only=False),
        Method(
            "fp8-dynamic", (8,), grouped=False, calibrated=False, symmetric=None, weight_only=False
        ),
        Method(
            NONE, (2, 3, 4, 8, 16), grouped=True, calibrated=False, symmetric=True, weight_only=True
        ),
    )
}
QUANTIZING: tuple[str, ...] = tuple(name for name, m in METHODS.items() if m.quantizes)
"""The methods a Job quantizes with (``quantwise quantize --method``)."""


def method(name: str) -> Method:
    """The method called ``name`` (KeyError for an unknown one: the API refuses it first)."""
    return METHODS[name]
