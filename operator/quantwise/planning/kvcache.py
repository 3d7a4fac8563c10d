"""KV-cache bytes, exactly as vLLM computes them.

vLLM (v1) allocates the KV cache in blocks of 16 tokens (``CacheConfig.block_size``). A block of
one attention layer takes ``page_size_bytes`` (vllm/v1/kv_cache_interface.py):

- full and sliding-window attention: ``2 * block_size * num_kv_heads * head_size * dtype_size``
  (K and V), where ``num_kv_heads = max(1, total_kv_heads // tp)`` on each GPU
  (vllm/config/model.py ``get_num_kv_heads``): heads are split when ``kv_heads % tp == 0``
  and replicated when ``tp % kv_heads == 0``;
- multi-head latent attention (DeepSeek-V2/V3): one latent of ``kv_lora_rank +
  qk_rope_head_dim`` per token, no separate V, the same on every TP rank
  (``MLAAttentionSpec``);
- quantized caches store each head's K and V in their own packed layout (see
  :func:`kv_bytes_per_head_per_token`).

A sliding-window layer holds at most the window (plus the tokens in flight) per sequence
(``SlidingWindowSpec.max_memory_usage_bytes``); in a model that mixes full and sliding layers,
vLLM's hybrid allocator charges layers in whole groups (:func:`hybrid_layer_groups`).
"""

from __future__ import annotations

import math
from typing import Literal, get_args

from quantwise.planning.architecture import Architecture
from quantwise.vllm import V0_11, V0_20, V0_33, Version, format_version

BLOCK_SIZE_TOKENS = 16
"""vLLM's default KV-cache block size in tokens (vllm/config/cache.py, ``block_size``)."""

KVCacheDtype = Literal[
    "auto",
    "float16",
    "bfloat16",
    "fp8",
    "fp8_e4m3",
    "fp8_e5m2",
    "fp8_inc",
    "fp8_ds_mla",
    "fp8_per_token_head",
    "int8_per_token_head",
    "int4_per_token_head",
    "turboquant_k8v4",
    "turboquant_4bit_nc",
    "turboquant_k3v4_nc",
    "turboquant_3bit_nc",
    "nvfp4",
]
KV_CACHE_DTYPES: tuple[str, ...] = get_args(KVCacheDtype)

# vLLM releases checked (vllm/config/cache.py ``CacheDType`` in the 0.11.0, 0.20.0 and 0.33.0
# wheels) that lack a dtype, and the first checked one that has it: ``vllm serve`` refuses a
# ``--kv-cache-dtype`` its release does not know. 0.11 has auto, bfloat16 and the fp8 family.
_FROM_0_20 = (V0_11, V0_20)
KV_CACHE_DTYPE_RELEASES: dict[str, tuple[Version, Version]] = {
    "float16": _FROM_0_20,
    "fp8_ds_mla": _FROM_0_20,
    "turboquant_k8v4": _FROM_0_20,
    "turboquant_4bit_nc": _FROM_0_20,
    "turboquant_k3v4_nc": _FROM_0_20,
    "turboquant_3bit_nc": _FROM_0_20,
    "int8_per_token_head": _FROM_0_20,
    "fp8_per_token_head": _FROM_0_20,
    "nvfp4": _FROM_0_20,
    "int4_per_token_head": (V0_20, V0_33),
}


def kv_cache_dtype_unavailable(kv_cache_dtype: str, vllm_version: Version) -> str | None:
    """Why vLLM ``vllm_version`` refuses ``--kv-cache-dtype kv_cache_dtype`` (None: it takes it).

    Only releases known to lack the dtype are refused; one between a release that lacks it and
    one that has it is given the benefit of the doubt.
    """
    releases = KV_CACHE_DTYPE_RELEASES.get(kv_cache_dtype)
    if releases is None or vllm_version > releases[0]:
        return None
    since = releases[1]
    return (
        f"spec.serving.kvCacheDtype {kv_cache_dtype} is not in vLLM "
        f"{format_version(vllm_version)} (vLLM {format_version(since)} has it): serve with a "
        "newer image (spec.serving.image / vllmVersion) or choose another kvCacheDtype"
    )


FP8_FAMILY = frozenset({"fp8", "fp8_e4m3", "fp8_e5m2", "fp8_inc"})
MLA_ONLY = frozenset({"fp8_ds_mla"})

# fp8_ds_mla: 512 FP8 latent values, 4 float32 tile scales and 64 bf16 RoPE values per token
# (vllm/v1/attention/backends/mla/flashmla_sparse.py, 656-byte entries).
FP8_DS_MLA_BYTES_PER_TOKEN = 656


class KVCacheError(ValueError):
    """A KV-cache dtype that does not apply to the model."""


# TurboQuant presets (vllm/model_executor/layers/quantization/turboquant/config.py, TQ_PRESETS):
# key bits (8 = FP8 keys, else Lloyd-Max codes with a 2-byte norm), value bits (uniform codes
# with a 4-byte scale and zero point). vLLM's tests give the resulting slot for head_dim 128:
# k8v4 196, 4bit_nc 134, k3v4_nc 118, 3bit_nc 102 bytes.
TURBOQUANT_BITS: dict[str, tuple[int, int]] = {
    "turboquant_k8v4": (8, 4),
    "turboquant_4bit_nc": (4, 4),
    "turboquant_k3v4_nc": (3, 4),
    "turboquant_3bit_nc": (3, 3),
}
# vLLM keeps the first and the last two layers of a dense model at the model dtype when the
# cache is TurboQuant (turboquant/config.py; no flag turns it off).
TURBOQUANT_BOUNDARY_LAYERS = 2
# Per-token-head caches: one float32 scale per token per head for each of K and V
# (vllm/v1/kv_cache_interface.py page size: 2 * block * heads * 4 extra bytes); int4 packs two
# codes per byte.
PER_TOKEN_HEAD: dict[str, tuple[float, int]] = {
    "int8_per_token_head": (1.0, 4),
    "fp8_per_token_head": (1.0, 4),
    "int4_per_token_head": (0.5, 4),
}


def turboquant_slot_bytes(kv_cache_dtype: str, head_dim: int) -> int:
    """Bytes of one TurboQuant slot (K and V of one head for one token)."""
    key_bits, value_bits = TURBOQUANT_BITS[kv_cache_dtype]
    key = head_dim if key_bits == 8 else math.ceil(head_dim * key_bits / 8) + 2
    value = math.ceil(head_dim * value_bits / 8) + 4
    slot = key + value
    return slot + slot % 2  # Slots are kept 2-byte aligned.


def kv_bytes_per_head_per_token(
    kv_cache_dtype: str, head_dim: int, model_dtype_bytes: int = 2
) -> int:
    """Bytes one KV head takes per token on one GPU, K and V together.

    ``auto`` stores the model's dtype; the fp8 family one byte per element; the per-token-head
    and TurboQuant caches their packed codes plus scales (see the tables above).
    """
    if kv_cache_dtype == "auto":
        return 2 * head_dim * model_dtype_bytes
    if kv_cache_dtype in ("float16", "bfloat16"):
        return 2 * head_dim * 2
    if kv_cache_dtype in FP8_FAMILY:
        return 2 * head_dim
    if kv_cache_dtype in PER_TOKEN_HEAD:
        per_element, scale = PER_TOKEN_HEAD[kv_cache_dtype]
        return 2 * (math.ceil(head_dim * per_element) + scale)
    if kv_cache_dtype in TURBOQUANT_BITS:
        return turboquant_slot_bytes(kv_cache_dtype, head_dim)
    if kv_cache_dtype == "nvfp4":
        # FP4 codes (two per byte) plus one FP8 scale per 16 elements, for K and for V.
        return 2 * (math.ceil(head_dim / 2) + math.ceil(head_dim / 16))
    if kv_cache_dtype in MLA_ONLY:
        raise KVCacheError(f"kvCacheDtype {kv_cache_dtype} applies only to MLA models (DeepSeek)")
    raise KVCacheError(
        f"unknown kvCacheDtype {kv_cache_dtype!r}: use one of {', '.join(KV_CACHE_DTYPES)}"
    )


def kv_heads_per_gpu(arch: Architecture, tp: int) -> int:
    """KV heads each GPU stores with tensor parallel ``tp`` (vLLM ``get_num_kv_heads``)."""
    if arch.is_mla:
        return 1
    return max(1, arch.num_key_value_heads // tp)


def layer_kv_bytes_per_token(arch: Architecture, tp: int, kv_cache_dtype: str = "auto") -> int:
    """KV-cache bytes one token takes in one attention layer on one GPU."""
    if arch.is_mla:
        width = arch.mla_kv_width
        # Sparse MLA (DeepSeek-V3.2): each layer also caches the indexer's FP8 key with a float32
        # scale per 128 values (models/deepseek_v2.py DeepseekV32IndexerCache), and a quantized
        # cache is always fp8_ds_mla (layers/attention/mla_attention.py
        # _canonicalize_sparse_mla_kv_cache_dtype).
        head = arch.index_head_dim or 0
        indexer = head + head // 128 * 4
        if indexer and kv_cache_dtype in FP8_FAMILY:
            return FP8_DS_MLA_BYTES_PER_TOKEN + indexer
        if kv_cache_dtype == "fp8_ds_mla":
            return FP8_DS_MLA_BYTES_PER_TOKEN + indexer
        if kv_cache_dtype in ("auto", "float16", "bfloat16"):
            return width * arch.dtype_bytes + indexer
        if kv_cache_dtype in FP8_FAMILY:
            return width
        raise KVCacheError(
            f"kvCacheDtype {kv_cache_dtype} is not supported for MLA models: use auto, fp8 or "
            "fp8_ds_mla"
        )
    if kv_cache_dtype in MLA_ONLY:
        raise KVCacheError(
            f"kvCacheDtype {kv_cache_dtype} applies only to MLA models (DeepSeek), not "
            f"{arch.model_type}"
        )
    per_head = kv_bytes_per_head_per_token(kv_cache_dtype, arch.head_dim, arch.dtype_bytes)
    return kv_heads_per_gpu(arch, tp) * per_head


def layers_on_gpu(arch: Architecture, pp: int) -> tuple[int, int]:
    """(full-attention layers, sliding-window layers) on the fullest pipeline stage."""
    total = arch.num_hidden_layers
    stage = math.ceil(total / pp)
    sliding = round(arch.num_sliding_window_layers * stage / total)
    return stage - sliding, sliding


def _per_token_bytes(arch: Architecture, tp: int, kv_cache_dtype: str, pp: int) -> tuple[int, int]:
    """(full-attention, sliding-window) KV bytes per token on the fullest GPU."""
    full, sliding = layers_on_gpu(arch, pp)
    per_layer = layer_kv_bytes_per_token(arch, tp, kv_cache_dtype)
    full_bytes = full * per_layer
    if kv_cache_dtype in TURBOQUANT_BITS:
        # Boundary layers stay 16-bit: both ends with one stage, one end on the first or last.
        boundary = min(full, TURBOQUANT_BOUNDARY_LAYERS * (2 if pp == 1 else 1))
        full_bytes += boundary * (layer_kv_bytes_per_token(arch, tp, "auto") - per_layer)
    return full_bytes, sliding * per_layer


def kv_bytes_per_token(
    arch: Architecture, tp: int, kv_cache_dtype: str = "auto", pp: int = 1
) -> int:
    """KV-cache bytes one token takes on the fullest GPU, over all of that GPU's layers."""
    full_bytes, sliding_bytes = _per_token_bytes(arch, tp, kv_cache_dtype, pp)
    return full_bytes + sliding_bytes


def _blocks(tokens: int) -> int:
    return math.ceil(tokens / BLOCK_SIZE_TOKENS)


def in_flight_tokens(max_num_batched_tokens: int, pp: int = 1) -> int:
    """Tokens vLLM may have in flight at once: what a sliding-window layer holds beyond its window.

    vllm/config/vllm.py (0.33): ``max_in_flight_tokens = max_concurrent_batches x
    max_num_batched_tokens``, with asynchronous scheduling (the default) two batches with one
    pipeline stage and ``pp + 1`` with more. vLLM 0.20 counted one batch; the larger figure
    never plans less than either needs.
    """
    return (pp + 1 if pp > 1 else 2) * max_num_batched_tokens


def hybrid_layer_groups(full_layers: int, sliding_layers: int) -> tuple[int, int]:
    """(full, sliding) layers as vLLM's hybrid allocator charges them, padded to whole groups.

    vllm/v1/core/kv_cache_planning.py (0.33): the group size is the rarer kind's layer count (or
    the commoner's when it has fewer than 1.5 times as many), and each kind is split into whole
    groups, so Gemma-3-27B's 52 sliding layers beside 10 full ones are charged as 60.
    """
    if not full_layers or not sliding_layers:
        return full_layers, sliding_layers
    few, many = sorted((full_layers, sliding_layers))
    group = many if many < 1.5 * few else few
    return (
        math.ceil(full_layers / group) * group,
        math.ceil(sliding_layers / group) * group,
    )


def kv_bytes_per_sequence(
    arch: Architecture,
    tp: int,
    max_model_len: int,
    kv_cache_dtype: str = "auto",
    pp: int = 1,
    max_num_batched_tokens: int = 8192,
) -> int:
    """KV-cache bytes one sequence of ``max_model_len`` tokens needs on the fullest GPU.

    Full-attention layers hold every token, in whole blocks; sliding-window layers hold
    ``min(window - 1 + in-flight tokens, max_model_len)`` tokens plus one block
    (vllm/v1/kv_cache_interface.py, ``SlidingWindowSpec.max_memory_usage_bytes``); with both
    kinds, layers count in whole groups (:func:`hybrid_layer_groups`). This is the figure vLLM
    checks at start-up (one sequence of ``max_model_len`` must fit) and divides its KV memory
    by for the "Maximum concurrency" it logs.
    """
    full_bytes, sliding_bytes = _per_token_bytes(arch, tp, kv_cache_dtype, pp)
    if not (sliding_bytes and arch.sliding_window):
        return full_bytes * BLOCK_SIZE_TOKENS * _blocks(max_model_len)
    full, sliding = layers_on_gpu(arch, pp)
    charged_full, charged_sliding = hybrid_layer_groups(full, sliding)
    full_bytes = full_bytes * charged_full // full if full else 0
    sliding_bytes = sliding_bytes * charged_sliding // sliding
    held = min(
        arch.sliding_window - 1 + in_flight_tokens(max_num_batched_tokens, pp), max_model_len
    )
    return BLOCK_SIZE_TOKENS * (
        full_bytes * _blocks(max_model_len) + sliding_bytes * (_blocks(held) + 1)
    )


def kv_cache_tokens(
    arch: Architecture, tp: int, kv_memory_bytes: int, kv_cache_dtype: str = "auto", pp: int = 1
) -> int:
    """Tokens a KV cache of ``kv_memory_bytes`` per GPU holds (vLLM's "GPU KV cache size").

    vLLM divides the memory into blocks of 16 tokens across all the GPU's layers.
    """
    per_token = kv_bytes_per_token(arch, tp, kv_cache_dtype, pp)
    if per_token == 0:
        return 0
    blocks = kv_memory_bytes // (per_token * BLOCK_SIZE_TOKENS)
    return max(0, blocks) * BLOCK_SIZE_TOKENS
