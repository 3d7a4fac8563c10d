"""KV-cache bytes per token and per sequence, as vLLM allocates them."""

from __future__ import annotations

import pytest
from test_weights import LLAMA_31_8B

from quantwise.planning.architecture import Architecture, architecture_from_config
from quantwise.planning.kvcache import (
    KV_CACHE_DTYPES,
    KVCacheError,
    hybrid_layer_groups,
    in_flight_tokens,
    kv_bytes_per_head_per_token,
    kv_bytes_per_sequence,
    kv_bytes_per_token,
    kv_cache_dtype_unavailable,
    kv_cache_tokens,
    kv_heads_per_gpu,
    layer_kv_bytes_per_token,
)

LLAMA = architecture_from_config(LLAMA_31_8B)
DEEPSEEK_V3 = architecture_from_config({
    "model_type": "deepseek_v3", "hidden_size": 7168, "intermediate_size": 18432, "moe_intermediate_size": 2048,
    "num_attention_heads": 128, "num_key_value_heads": 128, "num_hidden_layers": 61, "vocab_size": 129280,
    "kv_lora_rank": 512, "q_lora_rank": 1536, "qk_rope_head_dim": 64, "qk_nope_head_dim": 128, "v_head_dim": 128,
    "n_routed_experts": 256, "n_shared_experts": 1, "num_experts_per_tok": 8, "first_k_dense_replace": 3,
    "max_position_embeddings": 163840,
})  # fmt: skip
GEMMA2_9B = architecture_from_config({
    "model_type": "gemma2", "hidden_size": 3584, "intermediate_size": 14336, "num_attention_heads": 16,
    "num_key_value_heads": 8, "head_dim": 256, "num_hidden_layers": 42, "vocab_size": 256000,
    "max_position_embeddings": 8192, "sliding_window": 4096,
})  # fmt: skip
FALCON_7B = architecture_from_config({
    "model_type": "falcon", "hidden_size": 4544, "n_head": 71, "n_layer": 32, "vocab_size": 65024,
    "multi_query": True, "max_position_embeddings": 2048,
})  # fmt: skip


@pytest.mark.parametrize(
    ("tp", "heads_per_gpu", "bytes_per_token"),
    [(1, 8, 131072), (2, 4, 65536), (4, 2, 32768), (8, 1, 16384), (16, 1, 16384)],
)
def test_gqa_heads_split_then_replicate(tp: int, heads_per_gpu: int, bytes_per_token: int) -> None:
    # 32 layers x heads x 128 head_dim x 2 (K, V) x 2 bytes.
    assert kv_heads_per_gpu(LLAMA, tp) == heads_per_gpu
    assert kv_bytes_per_token(LLAMA, tp) == bytes_per_token


def test_mqa_keeps_one_head_on_every_gpu() -> None:
    assert kv_bytes_per_token(FALCON_7B, 1) == 32 * 2 * 1 * 64 * 2
    assert kv_bytes_per_token(FALCON_7B, 2) == kv_bytes_per_token(FALCON_7B, 1)


def test_mla_latent_is_replicated_across_tp() -> None:
    # 61 layers x (512 + 64) x 2 bytes; no separate V; the same on every rank.
    assert kv_bytes_per_token(DEEPSEEK_V3, 1) == 61 * 576 * 2 == 70272
    assert kv_bytes_per_token(DEEPSEEK_V3, 8) == 70272
    assert kv_bytes_per_token(DEEPSEEK_V3, 8, "fp8") == 61 * 576
    assert kv_bytes_per_token(DEEPSEEK_V3, 8, "fp8_ds_mla") == 61 * 656
    with pytest.raises(KVCacheError, match="not supported for MLA"):
        kv_bytes_per_token(DEEPSEEK_V3, 1, "turboquant_k8v4")


@pytest.mark.parametrize(
    ("dtype", "per_head"),
    [
        ("auto", 512), ("bfloat16", 512), ("float16", 512),
        ("fp8", 256), ("fp8_e4m3", 256), ("fp8_e5m2", 256), ("fp8_inc", 256),
        ("int8_per_token_head", 2 * (128 + 4)), ("fp8_per_token_head", 2 * (128 + 4)),
        ("int4_per_token_head", 2 * (64 + 4)), ("nvfp4", 2 * (64 + 8)),
        # vLLM's own TurboQuant tests give these slot sizes for head_dim 128.
        ("turboquant_k8v4", 196), ("turboquant_4bit_nc", 134), ("turboquant_k3v4_nc", 118), ("turboquant_3bit_nc", 102),
    ],
)  # fmt: skip
def test_bytes_per_head_for_every_dtype(dtype: str, per_head: int) -> None:
    assert kv_bytes_per_head_per_token(dtype, 128) == per_head
    if dtype.startswith("turboquant"):
        # The first and last two layers stay at the model dtype.
        assert kv_bytes_per_token(LLAMA, 1, dtype) == 28 * 8 * per_head + 4 * 8 * 512
    else:
        assert kv_bytes_per_token(LLAMA, 1, dtype) == 32 * 8 * per_head


def test_every_listed_dtype_is_sized() -> None:
    for dtype in KV_CACHE_DTYPES:
        arch = DEEPSEEK_V3 if dtype == "fp8_ds_mla" else LLAMA
        assert kv_bytes_per_token(arch, 1, dtype) > 0


def test_mla_only_dtype_on_dense_model_and_unknown_dtype() -> None:
    with pytest.raises(KVCacheError, match="only to MLA"):
        kv_bytes_per_token(LLAMA, 1, "fp8_ds_mla")
    with pytest.raises(KVCacheError, match="unknown kvCacheDtype"):
        kv_bytes_per_head_per_token("int2", 128)


def test_sequence_bytes_use_whole_blocks() -> None:
    # 100 tokens take 7 blocks of 16.
    assert kv_bytes_per_sequence(LLAMA, 1, 100) == 7 * 16 * 131072


def test_sliding_window_layers_hold_at_most_the_window() -> None:
    per_layer = 2 * 8 * 256 * 2  # 8 KV heads x head_dim 256 x K,V x 2 bytes
    assert kv_bytes_per_token(GEMMA2_9B, 1) == 42 * per_layer
    # With 1024 batched tokens, two batches in flight (vLLM 0.33's asynchronous scheduling): the
    # window holds 4096 - 1 + 2 x 1024 = 6143 tokens of the 8192: 384 blocks + 1.
    full = 21 * 512 * 16 * per_layer
    sliding = 21 * (384 + 1) * 16 * per_layer
    assert kv_bytes_per_sequence(GEMMA2_9B, 1, 8192, max_num_batched_tokens=1024) == full + sliding
    # With 2048 batched tokens the window covers all but one token: 512 blocks + 1.
    assert (
        kv_bytes_per_sequence(GEMMA2_9B, 1, 8192, max_num_batched_tokens=2048)
        == (21 * 512 + 21 * 513) * 16 * per_layer
    )
    # A short context is held whole by every layer (plus one block on sliding layers).
    assert (
        kv_bytes_per_sequence(GEMMA2_9B, 1, 1024, max_num_batched_tokens=2048)
        == (21 * 64 + 21 * 65) * 16 * per_layer
    )


def test_in_flight_tokens_follow_the_pipeline() -> None:
    assert in_flight_tokens(8192) == 16384  # Two batches with asynchronous scheduling.
    assert in_flight_tokens(8192, pp=2) == 3 * 8192
    assert in_flight_tokens(2048, pp=4) == 5 * 2048


@pytest.mark.parametrize(
    ("full", "sliding", "charged"),
    [
        (10, 52, (10, 60)),  # Gemma-3-27B: 6 groups of 10 sliding layers.
        (5, 29, (5, 30)),  # Gemma-3-4B
        (4, 22, (4, 24)),  # Gemma-3-1B
        (21, 21, (21, 21)),  # Gemma-2: even split, no padding.
        (3, 4, (4, 4)),  # Fewer than 1.5 x: one group of the commoner kind's size.
        (32, 0, (32, 0)),  # One kind only: nothing to pad.
    ],
)
def test_hybrid_allocator_charges_whole_groups(
    full: int, sliding: int, charged: tuple[int, int]
) -> None:
    assert hybrid_layer_groups(full, sliding) == charged


def test_gemma3_sequence_is_charged_for_its_padded_sliding_layers() -> None:
    gemma3 = Architecture.model_validate(
        {**GEMMA2_9B.model_dump(), "num_hidden_layers": 62, "num_sliding_window_layers": 52,
         "sliding_window": 1024, "max_position_embeddings": 131072}
    )  # fmt: skip
    per_layer = kv_bytes_per_token(GEMMA2_9B, 1) // 42
    # 32768 tokens: 10 full layers x 2048 blocks; 60 charged sliding layers x
    # (1024 - 1 + 2 x 8192 = 17407 tokens: 1088 blocks + 1).
    expected = (10 * 2048 + 60 * 1089) * 16 * per_layer
    assert kv_bytes_per_sequence(gemma3, 1, 32768) == expected


def test_kv_tokens_are_whole_blocks_of_the_memory() -> None:
    assert kv_cache_tokens(LLAMA, 1, 16 * 131072 * 10 + 5) == 160
    assert kv_cache_tokens(LLAMA, 1, 0) == 0


def test_pipeline_stages_hold_their_layers() -> None:
    # 32 layers over 3 stages: the fullest holds 11.
    assert kv_bytes_per_token(LLAMA, 1, pp=3) == 11 * 8 * 512


def test_deepseek_v32_sparse_attention_caches_the_indexer_key_too() -> None:
    v32 = architecture_from_config(
        {**DEEPSEEK_V3.model_dump(), "model_type": "deepseek_v32", "num_hidden_layers": 61,
         "num_key_value_heads": 128, "qk_rope_head_dim": 64, "kv_lora_rank": 512,
         "index_topk": 2048, "index_head_dim": 128, "index_n_heads": 64}
    )  # fmt: skip
    assert v32.index_head_dim == 128
    # Any quantized cache is fp8_ds_mla (656 B) plus the indexer's 128 FP8 values and one
    # float32 scale (132 B): 788 bytes a token a layer, on every TP rank.
    assert layer_kv_bytes_per_token(v32, 8, "fp8") == 788
    assert layer_kv_bytes_per_token(v32, 1, "fp8_ds_mla") == 788
    assert layer_kv_bytes_per_token(v32, 1, "auto") == 576 * 2 + 132
    # DeepSeek-V3 (dense MLA) has no indexer.
    assert DEEPSEEK_V3.index_head_dim is None
    assert layer_kv_bytes_per_token(DEEPSEEK_V3, 1, "fp8") == 576


@pytest.mark.parametrize(
    ("dtype", "version", "refused"),
    [
        ("auto", (0, 11), False),
        ("fp8_e5m2", (0, 11), False),
        ("float16", (0, 11), True),  # 0.11's CacheDType has bfloat16 but not float16.
        ("float16", (0, 20), False),
        ("nvfp4", (0, 11), True),
        ("nvfp4", (0, 15), False),  # Between a release without it and one with it: allowed.
        ("int4_per_token_head", (0, 20), True),
        ("int4_per_token_head", (0, 33), False),
    ],
)
def test_kv_cache_dtypes_per_vllm_release(
    dtype: str, version: tuple[int, int], refused: bool
) -> None:
    reason = kv_cache_dtype_unavailable(dtype, version)
    assert (reason is not None) == refused
    if reason:
        assert reason.startswith(f"spec.serving.kvCacheDtype {dtype} is not in vLLM")


def test_every_kv_cache_dtype_is_known_to_the_newest_release_checked() -> None:
    assert all(kv_cache_dtype_unavailable(d, (0, 33)) is None for d in KV_CACHE_DTYPES)
