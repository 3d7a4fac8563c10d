"""The vLLM kernel support matrix, as one reviewed table of data.

Each :class:`Rule` says: for this scheme, on GPUs of at least this compute capability, in this
range of vLLM versions, checkpoints with these bits / group sizes / symmetry / act-order load on
this kernel family, fast or slow. Rules are tried in order; the first that matches gives the
verdict. When none matches, the checkpoint will not load, and every rule that came close says
why. Each rule cites the vLLM file it comes from.

The rows were checked against the Python sources of the released vLLM 0.11.0, 0.20.0 and 0.33.0
wheels (``get_min_capability``, ``query_marlin_supported_quant_types``, the mixed-precision
kernel picker ``choose_mp_linear_kernel`` and each kernel's ``can_implement``); paths below are
under ``vllm/model_executor/layers/`` unless they say otherwise. Boundaries between those three
releases (0.24 for GGUF, 0.28 for bitsandbytes) come from release notes, and the exact FP4
capability lives in C++ (``cutlass_scaled_mm_supports_fp4``).

Versions are (major, minor); ``max_version`` is exclusive.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from quantwise.vllm import V0_20, V0_33

Speed = Literal["fast", "slow"]
ALL_GROUPS: frozenset[int | None] = frozenset()  # empty: any group size
MARLIN_GROUP_SIZES = frozenset({-1, 32, 64, 128})
MACHETE_GROUP_SIZES = frozenset({-1, 64, 128})
# Marlin's minimum shard sizes (quantization/utils/marlin_utils.py:
# GPTQ_MARLIN_MIN_THREAD_N = 64, GPTQ_MARLIN_MIN_THREAD_K = 128).
MARLIN_MIN_THREAD_N = 64
MARLIN_MIN_THREAD_K = 128
# From 0.33 Marlin zero-pads weight shapes it cannot tile (kernels/linear/mixed_precision/
# marlin.py), so the thread-shape checks above apply only before it; a quantization group split
# across tensor-parallel shards still fails (compressed_tensors_wNa16.py,
# verify_group_size_divides_partition).
MARLIN_PADS_FROM = V0_33
# Act-order that needs no g_idx at run time (static/weight ordering is folded into the weights).
NO_G_IDX = frozenset({"none", "static", "weight"})


@dataclass(frozen=True)
class Rule:
    """One row of the matrix."""

    scheme: str
    kernel: str
    speed: Speed
    min_capability: tuple[int, int]
    source: str
    bits: frozenset[int] = frozenset()
    group_sizes: frozenset[int | None] = ALL_GROUPS
    symmetric_only: bool = False
    zero_points_only: bool = False
    act_order: frozenset[str] = frozenset({"none", "static", "weight", "group", "dynamic"})
    min_version: tuple[int, int] = (0, 0)
    max_version: tuple[int, int] = (99, 0)
    max_capability: tuple[int, int] | None = None
    marlin_shapes: bool = False
    note: str = ""
    producers: frozenset[str] = field(default_factory=frozenset)


R = Rule
_FP8_MARLIN_NOTE = (
    "no FP8 tensor cores below compute capability 8.9: weights are FP8, activations stay "
    "16-bit, and the FP8 compute speed-up is lost"
)
_FP4_MARLIN_NOTE = "no FP4 tensor cores below Blackwell: weights are dequantized by Marlin"
_HUMMING_NOTE = (
    "served by Humming, vLLM 0.33's generic JIT-compiled mixed-precision kernel (the "
    "humming-kernels dependency), not Marlin or Machete; its speed is not measured here: for "
    "Marlin use 4-bit, or 8-bit symmetric, weights with group size 32, 64, 128 or per channel"
)


def _wna16_marlin(min_capability: tuple[int, int], **window: Any) -> tuple[Rule, Rule]:
    """Marlin's two rows for compressed-tensors WNA16 in one release window.

    4-bit with or without zero points, 8-bit symmetric only (Marlin's zero-point type is uint4).
    """
    source = "compressed_tensors/schemes/compressed_tensors_wNa16.py"
    return (
        Rule("wna16", "Marlin", "fast", min_capability, source, bits=frozenset({4}),
             group_sizes=MARLIN_GROUP_SIZES, marlin_shapes=True, **window),
        Rule("wna16", "Marlin", "fast", min_capability, source, bits=frozenset({8}),
             group_sizes=MARLIN_GROUP_SIZES, symmetric_only=True, marlin_shapes=True, **window),
    )  # fmt: skip


TABLE: tuple[Rule, ...] = (
    # --- AWQ ---------------------------------------------------------------------------------
    # AWQ has zero points; Marlin takes them for 4 bits only (marlin_utils.py
    # query_marlin_supported_quant_types: has_zp -> [uint4]); zero_point: false never reaches
    # Marlin (check_marlin_supported(..., has_zp=False) refuses uint4). 0.11: capability 8.0
    # (marlin_utils.py "device_capability < 80: return []"); 8-bit AWQ loads in none of the three
    # releases (awq.py takes 4 bits only). From 0.20 the mixed-precision picker chooses the
    # kernel (awq_marlin.py, 0.33 auto_awq.py): Machete on Hopper (zero points uint4), else
    # Marlin, from 7.5.
    R("awq", "Marlin", "fast", (8, 0), "quantization/awq_marlin.py, utils/marlin_utils.py (0.11)",
      bits=frozenset({4}), group_sizes=MARLIN_GROUP_SIZES, zero_points_only=True,
      marlin_shapes=True, max_version=V0_20),
    R("awq", "Machete", "fast", (9, 0), "kernels/linear/mixed_precision/machete.py (0.20, 0.33)",
      bits=frozenset({4}), group_sizes=MACHETE_GROUP_SIZES, zero_points_only=True,
      max_capability=(9, 0), min_version=V0_20),
    R("awq", "Marlin", "fast", (7, 5), "quantization/awq_marlin.py (0.20), auto_awq.py (0.33)",
      bits=frozenset({4}), group_sizes=MARLIN_GROUP_SIZES, zero_points_only=True,
      marlin_shapes=True, min_version=V0_20),
    # quantization/awq.py: AWQConfig.get_min_capability() == 75, 4 bits; also the fallback when
    # a layer's shape or zero_point: false does not suit Marlin.
    R("awq", "AWQ GEMM", "slow", (7, 5), "quantization/awq.py", bits=frozenset({4}),
      note="the AWQ GEMM kernel: several times slower than Marlin at batch sizes above one"),
    # --- GPTQ --------------------------------------------------------------------------------
    # gptq checkpoints are upgraded to gptq_marlin when is_gptq_marlin_compatible (symmetric 4 or
    # 8 bits, Marlin group sizes); the picker prefers Machete on Hopper. 0.33 has one GPTQ class
    # (auto_gptq.py): symmetric 4- and 8-bit only (TYPE_MAP), and desc_act with grouped
    # quantization is refused (utils/gptq_utils.py normalize_and_validate_gptq_desc_act: "GPTQ
    # group activation ordering (desc_act=True) is no longer supported"); its config says 6.0
    # but Marlin needs 7.5 (marlin_utils.py), which is what loads.
    R("gptq", "Machete", "fast", (9, 0), "kernels/.../mixed_precision/machete.py",
      bits=frozenset({4, 8}), group_sizes=MACHETE_GROUP_SIZES, symmetric_only=True,
      act_order=frozenset({"none"}), max_capability=(9, 0)),
    R("gptq", "Marlin", "fast", (8, 0), "quantization/gptq_marlin.py", bits=frozenset({4, 8}),
      group_sizes=MARLIN_GROUP_SIZES, symmetric_only=True, marlin_shapes=True, max_version=V0_20),
    R("gptq", "Marlin", "fast", (7, 5), "quantization/gptq_marlin.py", bits=frozenset({4, 8}),
      group_sizes=MARLIN_GROUP_SIZES, symmetric_only=True, marlin_shapes=True,
      min_version=V0_20, max_version=V0_33),
    R("gptq", "Marlin", "fast", (7, 5), "quantization/auto_gptq.py (0.33)", bits=frozenset({4, 8}),
      group_sizes=frozenset({-1}), symmetric_only=True, marlin_shapes=True, min_version=V0_33),
    R("gptq", "Marlin", "fast", (7, 5), "quantization/auto_gptq.py (0.33)", bits=frozenset({4, 8}),
      group_sizes=frozenset({32, 64, 128}), symmetric_only=True, marlin_shapes=True,
      act_order=frozenset({"none"}), min_version=V0_33),
    # quantization/gptq.py: GPTQConfig (ExLlama kernels), capability 6.0, 2/3/4/8 bits,
    # asymmetric allowed; gone in 0.33.
    R("gptq", "ExLlama", "slow", (6, 0), "quantization/gptq.py", bits=frozenset({2, 3, 4, 8}),
      max_version=V0_33, note="the ExLlama kernels: slower than Marlin"),
    # --- compressed-tensors ------------------------------------------------------------------
    # compressed_tensors/schemes/compressed_tensors_wNa16.py picks a kernel with
    # choose_mp_linear_kernel: Machete on Hopper (from 0.11), else Marlin. The scheme needs 8.0
    # in 0.11 and 7.5 from 0.20 (get_min_capability). Marlin's zero-point type is uint4 only, so
    # 8-bit asymmetric weights have no kernel off Hopper before 0.33. 0.33 refuses actorder
    # group/dynamic (compressed_tensors.py) and takes 2-8 bits, with or without zero points
    # (WNA16_SUPPORTED_TYPES_MAP); what Machete and Marlin do not take goes to Humming.
    R("wna16", "Machete", "fast", (9, 0), "compressed_tensors/schemes/compressed_tensors_wNa16.py",
      bits=frozenset({4, 8}), group_sizes=MACHETE_GROUP_SIZES, act_order=NO_G_IDX,
      max_capability=(9, 0)),
    *_wna16_marlin((8, 0), max_version=V0_20),
    *_wna16_marlin((7, 5), min_version=V0_20, max_version=V0_33),
    *_wna16_marlin((7, 5), act_order=NO_G_IDX, min_version=V0_33),
    R("wna16", "Humming", "slow", (7, 5), "kernels/linear/mixed_precision/humming.py (0.33)",
      bits=frozenset({2, 3, 4, 5, 6, 7, 8}), act_order=NO_G_IDX, min_version=V0_33,
      note=_HUMMING_NOTE),
    # compressed_tensors_w8a8_int8.py: CUTLASS scaled_mm int8, capability 7.5.
    R("w8a8-int8", "CUTLASS W8A8", "fast", (7, 5), "compressed_tensors/schemes/compressed_tensors_w8a8_int8.py",
      bits=frozenset({8})),
    # compressed_tensors_w8a8_fp8.py / fp8.py: FP8 tensor cores need 8.9; below, vLLM falls back
    # to FP8 Marlin, weight-only (compressed_tensors_w8a16_fp8.py), with a warning: 8.0 in 0.11,
    # 7.5 from 0.20 (get_min_capability).
    R("w8a8-fp8", "FP8 tensor cores (CUTLASS)", "fast", (8, 9), "compressed_tensors/schemes/compressed_tensors_w8a8_fp8.py",
      bits=frozenset({8})),
    R("w8a8-fp8", "FP8 Marlin (weight-only)", "slow", (8, 0), "compressed_tensors/schemes/compressed_tensors_w8a16_fp8.py",
      bits=frozenset({8}), max_version=V0_20, note=_FP8_MARLIN_NOTE),
    R("w8a8-fp8", "FP8 Marlin (weight-only)", "slow", (7, 5), "quantization/fp8.py (use_marlin)",
      bits=frozenset({8}), min_version=V0_20, note=_FP8_MARLIN_NOTE),
    # A checkpoint that is FP8 weight-only by design runs on the kernel meant for it: fast.
    R("fp8-weight-only", "FP8 Marlin", "fast", (8, 0), "compressed_tensors/schemes/compressed_tensors_w8a16_fp8.py",
      bits=frozenset({8}), max_version=V0_20),
    R("fp8-weight-only", "FP8 Marlin", "fast", (7, 5), "compressed_tensors/schemes/compressed_tensors_w8a16_fp8.py",
      bits=frozenset({8}), min_version=V0_20),
    # NVFP4: CUTLASS FP4 GEMMs on Blackwell (10.0+); below, the Marlin FP4 scheme, weight-only:
    # 8.0 in 0.11 (compressed_tensors.py falls back to it), 7.5 from 0.20.
    R("nvfp4", "FP4 tensor cores (CUTLASS)", "fast", (10, 0), "compressed_tensors/schemes/compressed_tensors_w4a4_nvfp4.py",
      bits=frozenset({4})),
    R("nvfp4", "FP4 Marlin (weight-only)", "slow", (8, 0), "quantization/utils/marlin_utils_fp4.py",
      bits=frozenset({4}), max_version=V0_20,
      note=_FP4_MARLIN_NOTE),
    R("nvfp4", "FP4 Marlin (weight-only)", "slow", (7, 5), "quantization/utils/marlin_utils_fp4.py",
      bits=frozenset({4}), min_version=V0_20,
      note=_FP4_MARLIN_NOTE),
    # W4A8: CUTLASS mixed-input GEMMs on Hopper only, group size 128, no zero points
    # (compressed_tensors_w4a8_fp8.py get_min_capability 90; kernels/.../cutlass.py).
    R("w4a8", "CUTLASS W4A8", "fast", (9, 0), "compressed_tensors/schemes/compressed_tensors_w4a8_fp8.py",
      bits=frozenset({4}), group_sizes=frozenset({128}), symmetric_only=True,
      max_capability=(9, 0)),
    # --- bitsandbytes and GGUF: built in up to 0.20, gone in 0.33 (release notes: 0.28, 0.24) --
    R("bnb-4bit", "bitsandbytes", "slow", (7, 0), "quantization/bitsandbytes.py", max_version=(0, 28),
      note="bitsandbytes dequantizes on the fly: far slower than Marlin; use AWQ or GPTQ for serving"),
    R("bnb-8bit", "bitsandbytes", "slow", (7, 0), "quantization/bitsandbytes.py", max_version=(0, 28),
      note="LLM.int8 is slow for serving; use W8A8-INT8 (CUTLASS) instead"),
    R("gguf", "GGUF dequantization", "slow", (6, 0), "quantization/gguf.py", max_version=(0, 24),
      note="GGUF kernels are tuned for llama.cpp, not vLLM batching"),
)  # fmt: skip


@dataclass(frozen=True)
class Removed:
    """A scheme vLLM no longer loads itself from ``version`` on."""

    version: tuple[int, int]
    plugin: str | None  # the package that loads it instead, if any


# The 0.33 wheel declares vllm-gguf-plugin (extra "extra-quant") and nothing for bitsandbytes.
REMOVED: dict[str, Removed] = {
    "bnb-4bit": Removed((0, 28), None),
    "bnb-8bit": Removed((0, 28), None),
    "gguf": Removed((0, 24), "vllm-gguf-plugin (pip install 'vllm[extra-quant]')"),
}


def rules_for(scheme: str) -> list[Rule]:
    """The rows of one scheme, in the order they are tried."""
    return [r for r in TABLE if r.scheme == scheme]
