"""The memory policy (fill, budget), MIG slices and shared GPUs in the catalog and the planner."""

from __future__ import annotations

import math
from dataclasses import replace

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_planner import AWQ, LLAMA_8B

from quantwise.api.status import PlanStatus
from quantwise.planning.gpus import (
    GIB,
    MIG_CATALOG,
    MIG_CUDA_RESERVED_BYTES,
    UnknownGPUError,
    lookup_gpu,
    mig_slices_of,
    shared_gpu,
)
from quantwise.planning.kvcache import kv_cache_tokens
from quantwise.planning.planner import Budget, PlanError, plan, utilization_cap
from quantwise.planning.weights import UNQUANTIZED, estimate_weights

AWQ_WEIGHTS = estimate_weights(LLAMA_8B, AWQ)
H100 = lookup_gpu("H100-80GB")


# ----- the catalog -----


def test_a_slice_is_found_by_name_case_insensitively_with_its_shares() -> None:
    s = lookup_gpu("h100-80gb-mig-3G.40GB")
    assert s.name == "H100-80GB-MIG-3g.40gb"
    assert (s.parent, s.mig_profile, s.is_mig) == ("H100-80GB", "3g.40gb", True)
    # nvidia-smi mig -lgip: 39.38 GiB (the lower of two drivers), less what CUDA keeps.
    assert s.memory_bytes == int(39.38 * GIB) - MIG_CUDA_RESERVED_BYTES
    # 4 of 8 memory slices: half the bandwidth; 3 of 7 compute slices.
    assert s.bandwidth_gbps == H100.bandwidth_gbps / 2 == 1675.0
    assert s.compute_fraction == pytest.approx(3 / 7)
    assert s.compute_capability == H100.compute_capability
    assert s.resource == "nvidia.com/mig-3g.40gb"
    # The product label GPU Feature Discovery writes in the single MIG strategy.
    assert "NVIDIA-H100-80GB-HBM3-MIG-3g.40gb" in s.products


def test_the_catalog_has_the_mig_profiles_of_the_mig_gpus() -> None:
    profiles = {
        g.parent: [s.mig_profile for s in mig_slices_of(g.parent or "")] for g in MIG_CATALOG
    }
    assert profiles["A100-40GB"] == [
        "1g.5gb",
        "1g.10gb",
        "2g.10gb",
        "3g.20gb",
        "4g.20gb",
        "7g.40gb",
    ]
    assert profiles["H100-80GB"] == [
        "1g.10gb",
        "1g.20gb",
        "2g.20gb",
        "3g.40gb",
        "4g.40gb",
        "7g.80gb",
    ]
    assert set(profiles) == {"A100-40GB", "A100-80GB", "H100-80GB", "H200", "B200"}
    for s in MIG_CATALOG:
        whole = lookup_gpu(s.parent or "")
        # A slice never has more memory than its GPU, and the full slice only a little less.
        assert s.memory_bytes < whole.memory_bytes
        assert s.bandwidth_gbps == whole.bandwidth_gbps * s.memory_fraction
    assert lookup_gpu("H100-80GB-MIG-7g.80gb").memory_bytes > 0.99 * H100.memory_bytes


def test_an_unknown_slice_is_refused_naming_the_slices() -> None:
    with pytest.raises(UnknownGPUError) as err:
        lookup_gpu("H100-80GB-MIG-5g.50gb")
    assert "H100-80GB-MIG-{1g.10gb, 1g.20gb, 2g.20gb, 3g.40gb, 4g.40gb, 7g.80gb}" in str(err.value)


# ----- the memory policy -----


def test_fill_gives_vllm_the_cap_and_the_budget_is_a_floor() -> None:
    fill = plan(LLAMA_8B, AWQ_WEIGHTS, H100, Budget(8192, 16), AWQ)
    budget = plan(LLAMA_8B, AWQ_WEIGHTS, H100, Budget(8192, 16, memory_policy="budget"), AWQ)
    assert (fill.memory_policy, fill.gpu_memory_utilization) == ("fill", 0.9)
    assert budget.memory_policy == "budget"
    assert budget.gpu_memory_utilization == pytest.approx(
        math.ceil(budget.sizing.required_bytes / H100.memory_bytes * 100) / 100
    )
    assert budget.gpu_memory_utilization == 0.31
    # Same TP, same sizing: only what vLLM may take differs.
    assert fill.sizing == budget.sizing and fill.tensor_parallel_size == 1
    # The KV tokens are what vLLM allocates at that utilization (benchmarks/sizing.py's formula).
    s = fill.sizing
    kv_memory = int(H100.memory_bytes * 0.9) - s.weight_bytes - s.overhead.total_bytes
    assert fill.kv_cache_tokens == kv_cache_tokens(LLAMA_8B, 1, kv_memory) == 516_496
    assert budget.kv_cache_tokens >= 16 * 8192 == fill.kv_cache_budget_tokens
    assert fill.kv_cache_tokens > 3.8 * budget.kv_cache_tokens == 3.8 * 134_144
    assert any("memory policy fill: the pod owns its GPU" in r for r in fill.reasons)
    assert any("memory policy budget: from spec.serving.memoryPolicy" in r for r in budget.reasons)
    status = PlanStatus.from_plan(fill)
    assert (status.memory_policy, status.kv_cache_budget_tokens) == ("fill", 131072)
    assert (status.gpu_resource, status.mig_profile, status.shared_by) == (
        "nvidia.com/gpu",
        None,
        None,
    )


def test_fill_still_refuses_what_the_budget_cannot_fit() -> None:
    with pytest.raises(PlanError, match="does not fit on L4"):
        plan(
            LLAMA_8B, estimate_weights(LLAMA_8B), lookup_gpu("L4"), Budget(131072, 32), UNQUANTIZED
        )


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    concurrency=st.integers(1, 64),
    max_model_len=st.sampled_from([2048, 8192, 32768]),
    gpu=st.sampled_from(
        ["L4", "A100-80GB", "H100-80GB", "H100-80GB-MIG-3g.40gb", "H200-MIG-1g.18gb"]
    ),
    cap=st.floats(0.5, 0.95),
)
def test_fill_never_holds_fewer_tokens_than_budget(
    concurrency: int, max_model_len: int, gpu: str, cap: float
) -> None:
    budget = Budget(max_model_len, concurrency, max_gpu_memory_utilization=cap)
    try:
        fill = plan(LLAMA_8B, AWQ_WEIGHTS, lookup_gpu(gpu), budget, AWQ)
    except PlanError:
        return
    exact = plan(
        LLAMA_8B, AWQ_WEIGHTS, lookup_gpu(gpu), replace(budget, memory_policy="budget"), AWQ
    )
    assert fill.gpu_memory_utilization == cap >= exact.gpu_memory_utilization
    assert fill.kv_cache_tokens >= exact.kv_cache_tokens >= concurrency * max_model_len - 16
    assert fill.sizing.required_bytes <= cap * fill.gpu.memory_bytes


# ----- MIG slices -----


def test_a_slice_plan_is_tp_1_with_the_slices_bandwidth() -> None:
    slice_ = lookup_gpu("H100-80GB-MIG-3g.40gb")
    p = plan(LLAMA_8B, AWQ_WEIGHTS, slice_, Budget(8192, 16, gpus_per_node=8, max_nodes=4), AWQ)
    assert (p.tensor_parallel_size, p.pipeline_parallel_size) == (1, 1)
    assert p.gpu_memory_utilization == 0.9 and p.memory_policy == "fill"
    # Half the memory slices: half the H100's decode bound.
    whole = plan(LLAMA_8B, AWQ_WEIGHTS, H100, Budget(8192, 16), AWQ)
    assert p.estimated_decode_tokens_per_second == pytest.approx(
        whole.estimated_decode_tokens_per_second / 2, abs=0.1
    )
    # Under 70 GiB vLLM batches 2048 tokens by default (vllm/engine/arg_utils.py).
    assert p.max_num_batched_tokens == 2048
    assert p.reasons[0].startswith("TP=1: H100-80GB-MIG-3g.40gb is a MIG instance (3/7 of the SMs")
    status = PlanStatus.from_plan(p)
    assert (status.gpu, status.gpu_resource, status.mig_profile) == (
        "H100-80GB-MIG-3g.40gb", "nvidia.com/mig-3g.40gb", "3g.40gb"
    )  # fmt: skip


def test_a_model_that_needs_tp_does_not_fit_a_slice_and_the_message_names_what_fits() -> None:
    """Llama-3.1-8B at 16 bits with 16 x 131072 tokens fits no slice; with one short sequence
    it fits the H100's 3g.40gb and up, and the message names them first."""
    weights = estimate_weights(LLAMA_8B)
    small = lookup_gpu("H100-80GB-MIG-1g.10gb")
    with pytest.raises(PlanError) as err:
        plan(LLAMA_8B, weights, small, Budget(131072, 16), UNQUANTIZED)
    message = str(err.value)
    assert message.startswith("does not fit on H100-80GB-MIG-1g.10gb: at TP=1")
    assert "no MIG slice holds it" in message
    assert (
        "whole GPUs that fit: L40S (TP=8), A100-80GB (TP=8), H100-80GB (TP=8), H200 (TP=4)"
        in message
    )
    assert "maxNodes" not in message  # slices run on one node
    with pytest.raises(PlanError) as err:
        plan(LLAMA_8B, weights, small, Budget(16384, 1), UNQUANTIZED)
    lines = str(err.value).splitlines()
    slices = next(line for line in lines if line.startswith("- MIG slices that fit (TP=1): "))
    assert slices.startswith(
        "- MIG slices that fit (TP=1): H100-80GB-MIG-{3g.40gb, 4g.40gb, 7g.80gb};"
    )
    assert "2g.20gb" not in slices.split(";")[0]  # 19.4 GiB x 0.9 is less than 19.1 GiB needed


# ----- shared GPUs -----


def test_a_shared_gpu_is_planned_with_budget_within_its_share() -> None:
    l4 = shared_gpu(lookup_gpu("L4"), 2, "time-slicing")
    assert utilization_cap(l4, Budget()) == 0.5
    assert utilization_cap(shared_gpu(lookup_gpu("L4"), 3), Budget()) == 0.33
    assert (
        utilization_cap(shared_gpu(lookup_gpu("L4"), 3), Budget(max_gpu_memory_utilization=0.2))
        == 0.2
    )
    p = plan(LLAMA_8B, AWQ_WEIGHTS, l4, Budget(4096, 2, memory_policy="fill"), AWQ)
    assert (p.tensor_parallel_size, p.memory_policy) == (1, "budget")
    assert p.gpu_memory_utilization <= 0.5
    assert p.sizing.required_bytes <= p.gpu_memory_utilization * l4.memory_bytes
    assert any("does not apply to a shared GPU" in r for r in p.reasons)
    assert any(r.startswith("TP=1: the L4 is shared by 2 pods (time-slicing)") for r in p.reasons)
    status = PlanStatus.from_plan(p)
    assert (status.shared_by, status.sharing_strategy, status.memory_policy) == (
        2,
        "time-slicing",
        "budget",
    )


def test_a_shared_gpu_refuses_what_its_share_cannot_hold() -> None:
    """Four pods on an L4: 0.25 x 22 GiB = 5.5 GiB each, less than 8B AWQ's weights."""
    with pytest.raises(PlanError) as err:
        plan(LLAMA_8B, AWQ_WEIGHTS, shared_gpu(lookup_gpu("L4"), 4), Budget(4096, 2), AWQ)
    message = str(err.value)
    assert "the cap is 5.5 GiB (0.25 x 22.0 GiB L4 shared by 4 pods)" in message
    assert "- MIG slices that fit (TP=1): " in message and "whole GPUs that fit: " in message
