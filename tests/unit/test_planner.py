"""The planner: table-driven cases with values, error messages, and properties (hypothesis)."""

from __future__ import annotations

import math
from dataclasses import replace

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_weights import LLAMA_31_8B

from quantwise.api.status import PlanStatus
from quantwise.planning.architecture import Architecture, architecture_from_config
from quantwise.planning.gpus import CATALOG, GIB, lookup_gpu
from quantwise.planning.kvcache import BLOCK_SIZE_TOKENS
from quantwise.planning.planner import Budget, PlanError, plan, tp_blockers, tp_candidates
from quantwise.planning.weights import UNQUANTIZED, WeightFormat, estimate_weights

LLAMA_8B = architecture_from_config(LLAMA_31_8B)
AWQ = WeightFormat(bits=4, group_size=128, symmetric=False)
# meta-llama/Llama-3.1-405B-Instruct config.json, the fields that matter.
LLAMA_405B = architecture_from_config(
    {
        **LLAMA_31_8B,
        "hidden_size": 16384,
        "intermediate_size": 53248,
        "num_attention_heads": 128,
        "num_hidden_layers": 126,
        "num_key_value_heads": 8,
    }
)


def test_llama_8b_awq_on_h100_takes_one_gpu_and_little_memory() -> None:
    p = plan(
        LLAMA_8B,
        estimate_weights(LLAMA_8B, AWQ),
        lookup_gpu("H100-80GB"),
        Budget(8192, 16, memory_policy="budget"),
        AWQ,
    )
    assert (p.tensor_parallel_size, p.pipeline_parallel_size) == (1, 1)
    assert 0.2 < p.gpu_memory_utilization < 0.5
    assert p.memory_policy == "budget"
    assert p.kv_cache_bytes_per_token == 131072  # 32 layers x 8 heads x 128 x 2 (K,V) x 2 bytes
    assert p.sizing.kv_budget_bytes == 16 * 8192 * 131072
    assert p.kv_cache_tokens >= 16 * 8192
    assert p.max_num_seqs == 256
    # 3.35 TB/s over ~4.7 GB read per token.
    assert 650 < p.estimated_decode_tokens_per_second < 750
    status = PlanStatus.from_plan(p)
    assert status.weight_bytes_source == "estimated"
    assert status.weight_bytes == p.weight_bytes


def test_fp16_128k_by_32_on_l4_cannot_fit_and_says_what_to_change() -> None:
    with pytest.raises(PlanError) as err:
        plan(
            LLAMA_8B, estimate_weights(LLAMA_8B), lookup_gpu("L4"), Budget(131072, 32), UNQUANTIZED
        )
    message = str(err.value)
    assert message.startswith("does not fit on L4: at TP=8")
    assert "GiB short" in message
    assert "spec.serving.concurrency" in message
    assert "spec.serving.maxModelLen" in message
    assert "kvCacheDtype fp8" in message
    assert "H100-80GB" in message  # a bigger GPU that fits
    assert "maxNodes" in message


def test_fp16_on_l4_picks_a_larger_tp_when_one_gpu_is_not_enough() -> None:
    p = plan(LLAMA_8B, estimate_weights(LLAMA_8B), lookup_gpu("L4"), Budget(8192, 32), UNQUANTIZED)
    assert p.tensor_parallel_size == 4
    assert any(r.startswith("TP=1 does not fit") for r in p.reasons)
    assert any(r.startswith("TP=2 does not fit") for r in p.reasons)
    assert p.sizing.required_bytes <= 0.9 * lookup_gpu("L4").memory_bytes


def test_405b_fp16_on_h100_spans_two_nodes_with_pipeline_parallelism() -> None:
    budget = Budget(8192, 8, max_nodes=2)
    p = plan(LLAMA_405B, estimate_weights(LLAMA_405B), lookup_gpu("H100-80GB"), budget, UNQUANTIZED)
    assert (p.tensor_parallel_size, p.pipeline_parallel_size, p.gpus_per_replica) == (8, 2, 16)
    assert any("2 pipeline stages across 2 nodes" in r for r in p.reasons)
    with pytest.raises(PlanError, match="maxNodes"):
        plan(
            LLAMA_405B,
            estimate_weights(LLAMA_405B),
            lookup_gpu("H100-80GB"),
            Budget(8192, 8),
            UNQUANTIZED,
        )


def test_max_model_len_defaults_to_8192_and_cannot_exceed_the_model() -> None:
    w = estimate_weights(LLAMA_8B, AWQ)
    assert plan(LLAMA_8B, w, lookup_gpu("H100-80GB"), Budget(), AWQ).max_model_len == 8192
    with pytest.raises(
        PlanError,
        match=r"spec.serving.maxModelLen 200000 exceeds the model's maximum context of 131072",
    ):
        plan(LLAMA_8B, w, lookup_gpu("H100-80GB"), Budget(200_000), AWQ)


def test_mla_cache_dtype_on_a_dense_model_is_refused() -> None:
    with pytest.raises(
        PlanError, match="kvCacheDtype: kvCacheDtype fp8_ds_mla applies only to MLA"
    ):
        plan(
            LLAMA_8B,
            estimate_weights(LLAMA_8B),
            lookup_gpu("H100-80GB"),
            Budget(kv_cache_dtype="fp8_ds_mla"),
            UNQUANTIZED,
        )


def test_fp8_kv_cache_halves_the_budget() -> None:
    w = estimate_weights(LLAMA_8B, AWQ)
    h100, budget = lookup_gpu("H100-80GB"), Budget(8192, 16, memory_policy="budget")
    auto = plan(LLAMA_8B, w, h100, budget, AWQ)
    fp8 = plan(LLAMA_8B, w, h100, replace(budget, kv_cache_dtype="fp8"), AWQ)
    assert fp8.sizing.kv_budget_bytes * 2 == auto.sizing.kv_budget_bytes
    assert fp8.gpu_memory_utilization < auto.gpu_memory_utilization
    # Filling the GPU instead, the same memory holds twice the tokens at fp8.
    auto_fill = plan(LLAMA_8B, w, h100, Budget(8192, 16), AWQ)
    fp8_fill = plan(LLAMA_8B, w, h100, Budget(8192, 16, kv_cache_dtype="fp8"), AWQ)
    assert fp8_fill.gpu_memory_utilization == auto_fill.gpu_memory_utilization == 0.9
    assert fp8_fill.kv_cache_tokens == pytest.approx(2 * auto_fill.kv_cache_tokens, abs=16)


def test_utilization_never_exceeds_the_cap() -> None:
    w = estimate_weights(LLAMA_8B)
    gpu = lookup_gpu("A100-80GB")
    p = plan(LLAMA_8B, w, gpu, Budget(8192, 60, max_gpu_memory_utilization=0.95), UNQUANTIZED)
    assert p.gpu_memory_utilization <= 0.95
    assert p.sizing.required_bytes <= 0.95 * gpu.memory_bytes


def test_group_size_blocks_tensor_parallel_sizes() -> None:
    # Qwen2.5-7B: intermediate 18944 = 148 x 128; at TP=8 each shard has 2368 = 18.5 groups.
    arch = architecture_from_config(
        {
            **LLAMA_31_8B,
            "model_type": "qwen2",
            "hidden_size": 3584,
            "intermediate_size": 18944,
            "num_attention_heads": 28,
            "num_key_value_heads": 4,
            "num_hidden_layers": 28,
            "vocab_size": 152064,
        }
    )
    blockers = " ".join(tp_blockers(arch, 8, WeightFormat(4, 128)))
    assert "28 attention heads do not divide by TP=8" in blockers
    assert (
        "down_proj's input shard 18944/8=2368 is not a multiple of the group size 128" in blockers
    )
    assert tp_blockers(arch, 4, WeightFormat(4, 128)) == []
    assert tp_blockers(arch, 8, WeightFormat(4, -1)) == [
        "the 28 attention heads do not divide by TP=8"
    ]


def test_kv_heads_must_divide_or_be_divided() -> None:
    arch = architecture_from_config(
        {**LLAMA_31_8B, "num_attention_heads": 24, "num_key_value_heads": 6, "hidden_size": 3072}
    )
    assert "the 6 KV heads neither divide by TP=4 nor divide it" in tp_blockers(
        arch, 4, UNQUANTIZED
    )
    assert tp_blockers(arch, 2, UNQUANTIZED) == []


def test_tp_filter_plugs_in_extra_rules() -> None:
    w = estimate_weights(LLAMA_8B, AWQ)
    p = plan(
        LLAMA_8B,
        w,
        lookup_gpu("H100-80GB"),
        Budget(8192, 16),
        AWQ,
        tp_filter=lambda tp: "no kernel" if tp == 1 else None,
    )
    assert p.tensor_parallel_size == 2
    assert "TP=1 skipped: no kernel" in p.reasons


def test_tp_candidates() -> None:
    assert tp_candidates(8) == [1, 2, 4, 8]
    assert tp_candidates(6) == [1, 2, 4]
    assert tp_candidates(1) == [1]


# ----- properties -----


@st.composite
def architectures(draw: st.DrawFn) -> Architecture:
    kv = draw(st.sampled_from([1, 2, 4, 8, 16]))
    heads = kv * draw(st.sampled_from([1, 2, 4, 8]))
    head_dim = draw(st.sampled_from([64, 128]))
    return architecture_from_config(
        {
            "model_type": "llama",
            "num_hidden_layers": draw(st.integers(1, 96)),
            "hidden_size": heads * head_dim,
            "intermediate_size": 128 * draw(st.integers(1, 400)),
            "num_attention_heads": heads,
            "num_key_value_heads": kv,
            "head_dim": head_dim,
            "vocab_size": draw(st.integers(1000, 260000)),
            "max_position_embeddings": 131072,
        }
    )


budgets = st.builds(
    Budget,
    max_model_len=st.sampled_from([512, 2048, 8192, 32768, 131072]),
    concurrency=st.integers(1, 256),
    kv_cache_dtype=st.sampled_from(["auto", "fp8", "int8_per_token_head", "turboquant_4bit_nc"]),
    max_gpu_memory_utilization=st.floats(0.5, 1.0),
    gpus_per_node=st.sampled_from([1, 2, 4, 8]),
    max_nodes=st.integers(1, 4),
)
formats = st.sampled_from(
    [
        UNQUANTIZED,
        WeightFormat(8),
        WeightFormat(4, 128, False),
        WeightFormat(4, 32, True),
        WeightFormat(8, -1),
    ]
)
gpus = st.sampled_from(CATALOG)
SETTINGS = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@SETTINGS
@given(architectures(), budgets, formats, gpus)
def test_a_returned_plan_always_fits_and_is_runnable(
    arch: Architecture, budget: Budget, fmt: WeightFormat, gpu: object
) -> None:
    try:
        p = plan(arch, estimate_weights(arch, fmt), gpu, budget, fmt)  # type: ignore[arg-type]
    except PlanError:
        return
    tp = p.tensor_parallel_size
    assert p.sizing.required_bytes <= budget.max_gpu_memory_utilization * p.gpu.memory_bytes
    assert p.gpu_memory_utilization <= budget.max_gpu_memory_utilization
    assert (
        p.gpu_memory_utilization * p.gpu.memory_bytes >= p.sizing.required_bytes - 0.001 * GIB
        or p.gpu_memory_utilization == budget.max_gpu_memory_utilization
    )
    assert arch.num_attention_heads % tp == 0
    kv = arch.num_key_value_heads
    assert kv % tp == 0 or tp % kv == 0
    assert tp <= budget.gpus_per_node and p.pipeline_parallel_size <= budget.max_nodes
    if fmt.group_size and fmt.group_size > 0:
        assert (arch.intermediate_size // tp) % fmt.group_size == 0
    # The KV cache holds the whole budget: concurrency sequences of max_model_len.
    assert (
        p.kv_cache_tokens
        >= budget.concurrency * math.ceil(p.max_model_len / BLOCK_SIZE_TOKENS) * BLOCK_SIZE_TOKENS
    )


@SETTINGS
@given(architectures(), budgets, formats, gpus, st.integers(1, 64))
def test_more_concurrency_never_needs_less_memory(
    arch: Architecture, budget: Budget, fmt: WeightFormat, gpu: object, extra: int
) -> None:
    more = Budget(**{**budget.__dict__, "concurrency": budget.concurrency + extra})
    weights = estimate_weights(arch, fmt)
    try:
        low = plan(arch, weights, gpu, budget, fmt)  # type: ignore[arg-type]
    except PlanError:
        with pytest.raises(PlanError):
            plan(arch, weights, gpu, more, fmt)  # type: ignore[arg-type]
        return
    try:
        high = plan(arch, weights, gpu, more, fmt)  # type: ignore[arg-type]
    except PlanError:
        return
    assert high.gpus_per_replica >= low.gpus_per_replica
    if high.gpus_per_replica == low.gpus_per_replica:
        assert high.sizing.required_bytes >= low.sizing.required_bytes
        assert high.gpu_memory_utilization >= low.gpu_memory_utilization


@SETTINGS
@given(architectures(), budgets, gpus, st.sampled_from([128, 64, 32, -1]))
def test_fewer_weight_bits_never_need_more_gpus(
    arch: Architecture, budget: Budget, gpu: object, group: int
) -> None:
    four, eight = WeightFormat(4, group), WeightFormat(8, group)
    try:
        p8 = plan(arch, estimate_weights(arch, eight), gpu, budget, eight)  # type: ignore[arg-type]
    except PlanError:
        return
    p4 = plan(arch, estimate_weights(arch, four), gpu, budget, four)  # type: ignore[arg-type]
    assert p4.gpus_per_replica <= p8.gpus_per_replica


def test_planning_is_deterministic() -> None:
    w = estimate_weights(LLAMA_8B, AWQ)
    a = plan(LLAMA_8B, w, lookup_gpu("L40S"), Budget(16384, 8), AWQ)
    b = plan(LLAMA_8B, w, lookup_gpu("L40S"), Budget(16384, 8), AWQ)
    assert a == b


def test_a_sliding_window_plan_states_its_kv_as_whole_sequences() -> None:
    gemma2 = architecture_from_config({
        "model_type": "gemma2", "hidden_size": 3584, "intermediate_size": 14336,
        "num_attention_heads": 16, "num_key_value_heads": 8, "head_dim": 256,
        "num_hidden_layers": 42, "vocab_size": 256000, "max_position_embeddings": 8192,
        "sliding_window": 4096,
    })  # fmt: skip
    p = plan(
        gemma2, estimate_weights(gemma2), lookup_gpu("H100-80GB"), Budget(8192, 8), UNQUANTIZED
    )
    kv_memory = (
        int(p.gpu.memory_bytes * p.gpu_memory_utilization)
        - p.sizing.weight_bytes
        - p.sizing.overhead.total_bytes
    )
    sequences = kv_memory / p.sizing.kv_bytes_per_sequence
    # As vLLM 0.33 logs it: int(max concurrency x max_model_len), at least the budget's 8 x 8192.
    assert p.kv_cache_tokens == int(sequences * 8192)
    assert p.kv_cache_tokens >= 8 * 8192


def test_the_plan_counts_what_the_serving_release_counts() -> None:
    w = estimate_weights(LLAMA_8B, AWQ)
    gpu = lookup_gpu("H100-80GB")
    current = plan(LLAMA_8B, w, gpu, Budget(8192, 16), AWQ)
    old = plan(LLAMA_8B, w, gpu, Budget(8192, 16, vllm_version=(0, 19)), AWQ)
    eager = plan(LLAMA_8B, w, gpu, Budget(8192, 16, enforce_eager=True), AWQ)
    # vLLM 0.33 takes its CUDA graphs out of the utilization; 0.19 did not, nor does eager mode.
    assert current.sizing.overhead.cuda_graph_bytes > 0
    assert old.sizing.overhead.cuda_graph_bytes == eager.sizing.overhead.cuda_graph_bytes == 0
    assert old.sizing.required_bytes < current.sizing.required_bytes
    # The weights as vLLM holds them: more than the checkpoint (rotary cache, vocab padding...).
    assert current.sizing.weight_bytes > w.per_gpu_bytes(LLAMA_8B, 1)
    assert current.weight_bytes == w.total_bytes  # status.plan.weightBytes: the checkpoint's
