"""The vLLM kernel support matrix, as one reviewed table of data.

Each :class:`Rule` says: for this scheme, on GPUs of at least this compute capability, in this
range of vLLM versions, checkpoints with these bits / group sizes / symmetry / act-order load on
this kernel family, fast or slow. Rules are tried in order; the first that matches gives the
verdict. When none matches, the checkpoint will not load, and every rule that came close says
why. Each rule cites the vLLM file it comes from.

Versions are (major, minor); ``max_version`` is exclusive.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

Speed = Literal["fast", "slow"]
ALL_GROUPS: frozenset[int | None] = frozenset()  # empty: any group size
MARLIN_GROUP_SIZES = frozenset({-1, 32, 64, 128})
MACHETE_GROUP_SIZES = frozenset({-1, 64, 128})
# Marlin's minimum shard sizes (vllm/model_executor/layers/quantization/utils/marlin_utils.py:
# GPTQ_MARLIN_MIN_THREAD_N = 64, GPTQ_MARLIN_MIN_THREAD_K = 128).
MARLIN_MIN_THREAD_N = 64
MARLIN_MIN_THREAD_K = 128
V0_20 = (0, 20)
V0_33 = (0, 33)
# From 0.33 Marlin pads weight shapes it cannot tile, so the thread-shape checks above apply only
# before it (the newest auto_gptq.py / marlin_utils.py; a group split across TP shards still fails).
MARLIN_PADS_FROM = V0_33


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
TABLE: tuple[Rule, ...] = (
    # --- AWQ ---------------------------------------------------------------------------------
    # vllm/model_executor/layers/quantization/awq_marlin.py: awq checkpoints are upgraded to
    # awq_marlin when is_awq_marlin_compatible (Marlin group sizes; 4 or 8 bits; capability 8.0).
    # From 0.20 Marlin runs on Turing (7.5, vLLM PR #29901) and 8-bit AWQ is refused
    # ("Unsupported num_bits = 8"); the newest code folds awq/awq_marlin into one AutoAWQ class.
    R("awq", "Marlin", "fast", (8, 0), "quantization/awq_marlin.py", bits=frozenset({4, 8}),
      group_sizes=MARLIN_GROUP_SIZES, marlin_shapes=True, max_version=V0_20),
    R("awq", "Marlin", "fast", (7, 5), "quantization/awq_marlin.py, auto_awq.py", bits=frozenset({4}),
      group_sizes=MARLIN_GROUP_SIZES, marlin_shapes=True, min_version=V0_20),
    # vllm/model_executor/layers/quantization/awq.py: AWQConfig.get_min_capability() == 75, 4 bits;
    # also the fallback when a layer's shape does not suit Marlin.
    R("awq", "AWQ GEMM", "slow", (7, 5), "quantization/awq.py", bits=frozenset({4}),
      note="the AWQ GEMM kernel: several times slower than Marlin at batch sizes above one"),
    # --- GPTQ --------------------------------------------------------------------------------
    # gptq checkpoints are upgraded to gptq_marlin when is_gptq_marlin_compatible (symmetric 4 or
    # 8 bits, Marlin group sizes); the mixed-precision kernel picker prefers Machete on Hopper.
    # 0.33 (one GPTQ class): only symmetric 4- and 8-bit, and desc_act with grouped quantization
    # is refused (the statement of 0.33; the newest upstream source read accepts it).
    R("gptq", "Machete", "fast", (9, 0), "quantization/kernels/mixed_precision/machete.py",
      bits=frozenset({4, 8}), group_sizes=MACHETE_GROUP_SIZES, symmetric_only=True,
      act_order=frozenset({"none"}), max_capability=(9, 0)),
    R("gptq", "Marlin", "fast", (8, 0), "quantization/gptq_marlin.py", bits=frozenset({4, 8}),
      group_sizes=MARLIN_GROUP_SIZES, symmetric_only=True, marlin_shapes=True, max_version=V0_20),
    R("gptq", "Marlin", "fast", (7, 5), "quantization/gptq_marlin.py", bits=frozenset({4, 8}),
      group_sizes=MARLIN_GROUP_SIZES, symmetric_only=True, marlin_shapes=True,
      min_version=V0_20, max_version=V0_33),
    R("gptq", "Marlin", "fast", (7, 5), "quantization/gptq.py (0.33)", bits=frozenset({4, 8}),
      group_sizes=frozenset({-1}), symmetric_only=True, marlin_shapes=True, min_version=V0_33),
    R("gptq", "Marlin", "fast", (7, 5), "quantization/gptq.py (0.33)", bits=frozenset({4, 8}),
      group_sizes=frozenset({32, 64, 128}), symmetric_only=True, marlin_shapes=True,
      act_order=frozenset({"none"}), min_version=V0_33),
    # vllm/model_executor/layers/quantization/gptq.py: GPTQConfig (ExLlama kernels), capability 6.0,
    # 2/3/4/8 bits, asymmetric allowed; gone as a separate path in 0.33.
    R("gptq", "ExLlama", "slow", (6, 0), "quantization/gptq.py", bits=frozenset({2, 3, 4, 8}),
      max_version=V0_33, note="the ExLlama kernels: slower than Marlin"),
    # --- compressed-tensors ------------------------------------------------------------------
    # vllm/model_executor/layers/quantization/compressed_tensors/schemes/compressed_tensors_wNa16.py
    # picks a kernel with choose_mp_linear_kernel: Machete on Hopper, else Marlin; capability 8.0.
    # 0.33 refuses actorder group/dynamic.
    R("wna16", "Machete", "fast", (9, 0), "compressed_tensors/schemes/compressed_tensors_wNa16.py",
      bits=frozenset({4, 8}), group_sizes=MACHETE_GROUP_SIZES, act_order=frozenset({"none"}),
      max_capability=(9, 0), min_version=(0, 20)),
    R("wna16", "Marlin", "fast", (8, 0), "compressed_tensors/schemes/compressed_tensors_wNa16.py",
      bits=frozenset({4, 8}), group_sizes=MARLIN_GROUP_SIZES, marlin_shapes=True,
      max_version=V0_33),
    R("wna16", "Marlin", "fast", (8, 0), "compressed_tensors/schemes/compressed_tensors_wNa16.py",
      bits=frozenset({4, 8}), group_sizes=MARLIN_GROUP_SIZES, marlin_shapes=True,
      act_order=frozenset({"none", "static", "weight"}), min_version=V0_33),
    # compressed_tensors_w8a8_int8.py: CUTLASS scaled_mm int8, capability 7.5.
    R("w8a8-int8", "CUTLASS W8A8", "fast", (7, 5), "compressed_tensors/schemes/compressed_tensors_w8a8_int8.py",
      bits=frozenset({8})),
    # compressed_tensors_w8a8_fp8.py / fp8.py: FP8 tensor cores need 8.9; on 8.0-8.6 vLLM falls back
    # to FP8 Marlin, weight-only (compressed_tensors_w8a16_fp8.py), with a warning.
    R("w8a8-fp8", "FP8 tensor cores (CUTLASS)", "fast", (8, 9), "compressed_tensors/schemes/compressed_tensors_w8a8_fp8.py",
      bits=frozenset({8})),
    # FP8 Marlin needs 8.0 in 0.11 and runs on 7.5 in later releases.
    R("w8a8-fp8", "FP8 Marlin (weight-only)", "slow", (8, 0), "compressed_tensors/schemes/compressed_tensors_w8a16_fp8.py",
      bits=frozenset({8}), max_version=V0_20, note=_FP8_MARLIN_NOTE),
    R("w8a8-fp8", "FP8 Marlin (weight-only)", "slow", (7, 5), "quantization/fp8.py (use_marlin)",
      bits=frozenset({8}), min_version=V0_20, note=_FP8_MARLIN_NOTE),
    R("fp8-weight-only", "FP8 Marlin", "fast", (8, 0), "compressed_tensors/schemes/compressed_tensors_w8a16_fp8.py",
      bits=frozenset({8})),
    # NVFP4: CUTLASS FP4 GEMMs on Blackwell (10.0+); Marlin FP4 emulation, weight-only, from 8.0.
    R("nvfp4", "FP4 tensor cores (CUTLASS)", "fast", (10, 0), "compressed_tensors/schemes/compressed_tensors_w4a4_nvfp4.py",
      bits=frozenset({4})),
    R("nvfp4", "FP4 Marlin (weight-only)", "slow", (8, 0), "quantization/utils/marlin_utils_fp4.py",
      bits=frozenset({4}), min_version=(0, 20),
      note="no FP4 tensor cores below Blackwell: weights are dequantized by Marlin"),
    # W4A8: CUTLASS mixed-input GEMMs on Hopper only.
    R("w4a8", "CUTLASS W4A8", "fast", (9, 0), "compressed_tensors/schemes/compressed_tensors_w4a8_fp8.py",
      bits=frozenset({4}), max_capability=(9, 0), min_version=(0, 20)),
    # --- bitsandbytes and GGUF: out-of-tree plugins from 0.28 and 0.24 (release notes) --------
    R("bnb-4bit", "bitsandbytes", "slow", (7, 0), "quantization/bitsandbytes.py", max_version=(0, 28),
      note="bitsandbytes dequantizes on the fly: far slower than Marlin; use AWQ or GPTQ for serving"),
    R("bnb-8bit", "bitsandbytes", "slow", (7, 0), "quantization/bitsandbytes.py", max_version=(0, 28),
      note="LLM.int8 is slow for serving; use W8A8-INT8 (CUTLASS) instead"),
    R("gguf", "GGUF dequantization", "slow", (6, 0), "quantization/gguf.py", max_version=(0, 24),
      note="GGUF kernels are tuned for llama.cpp, not vLLM batching"),
)  # fmt: skip

# Schemes vLLM loads only through an out-of-tree plugin from this version on.
PLUGIN_ONLY_FROM: dict[str, tuple[int, int]] = {
    "bnb-4bit": (0, 28),
    "bnb-8bit": (0, 28),
    "gguf": (0, 24),
}


def rules_for(scheme: str) -> list[Rule]:
    """The rows of one scheme, in the order they are tried."""
    return [r for r in TABLE if r.scheme == scheme]
