"""The memory model: each term of vLLM's profiling against the figures vLLM logs for it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from test_weights import LLAMA_31_8B

from quantwise.planning.architecture import Architecture, architecture_from_config
from quantwise.planning.gpus import GIB, MIB, lookup_gpu
from quantwise.planning.memory import (
    CUDA_GRAPH_MAX_CAPTURE_SIZE_BLACKWELL,
    NON_TORCH_BYTES,
    NON_TORCH_BYTES_0_11,
    SAFETY_MARGIN_BYTES,
    TP_COMMUNICATION_BYTES,
    cuda_graph_bytes,
    cuda_graph_capture_counts,
    default_max_num_batched_tokens,
    default_max_num_seqs,
    estimate_overhead,
    moe_workspace_bytes,
    sampler_bytes_per_logit,
)
from quantwise.planning.weights import estimate_weights, loaded_weights
from quantwise.vllm import V0_11, V0_20, V0_33

MODELS = Path(__file__).parents[2] / "examples" / "models"
LLAMA_8B = architecture_from_config(LLAMA_31_8B)
V0_19 = (0, 19)


def model(folder: str) -> Architecture:
    return architecture_from_config(json.loads((MODELS / folder / "config.json").read_text()))


def test_llama_8b_on_h100_with_vllm_0_19_is_what_its_debug_log_says() -> None:
    # llm-d-planner's vLLM 0.19.0 log of Llama-3.1-8B on one H100 (8192 batched tokens, 1024
    # sequences): "Total non KV cache memory: 17.12GiB; torch peak memory increase: 1.89GiB;
    # non-torch forward increase memory: 0.25GiB; weights memory: 14.99GiB".
    overhead = estimate_overhead(LLAMA_8B, 1, 1, 8192, 1024, vllm_version=V0_19)
    assert overhead.profile_peak_bytes / GIB == pytest.approx(1.89, abs=0.02)
    assert overhead.sampler_bytes > overhead.activation_bytes  # 1024 requests: the sampler wins
    assert overhead.non_torch_bytes == NON_TORCH_BYTES
    assert overhead.cuda_graph_bytes == 0  # 0.19 only logs its estimate
    weights = loaded_weights(LLAMA_8B, estimate_weights(LLAMA_8B))
    non_kv = weights.per_gpu_bytes(LLAMA_8B, 1) + overhead.total_bytes - SAFETY_MARGIN_BYTES
    assert non_kv / GIB == pytest.approx(17.12, abs=0.05)


def test_vllm_0_11_sorts_in_its_sampler_and_peaks_higher() -> None:
    # llm-d-benchmark, vLLM 0.11.0 on an H100: Llama-3.1-8B's torch peak increase 4.76 GiB and
    # 0.13 GiB of non-torch memory.
    overhead = estimate_overhead(LLAMA_8B, 1, 1, 8192, 1024, vllm_version=V0_11)
    assert overhead.profile_peak_bytes / GIB == pytest.approx(4.76, abs=0.05)
    assert overhead.non_torch_bytes == NON_TORCH_BYTES_0_11
    assert sampler_bytes_per_logit(V0_11, 1024) > 2 * sampler_bytes_per_logit(V0_19, 1024)
    # vLLM 0.20 still sorts below 8 requests; 0.33 never does.
    assert sampler_bytes_per_logit(V0_20, 4) == sampler_bytes_per_logit(V0_11, 4)
    assert sampler_bytes_per_logit(V0_33, 4) == sampler_bytes_per_logit(V0_33, 1024)


def test_the_forward_pass_sets_the_peak_with_few_sequences() -> None:
    # quantwise's own plans pass --max-num-seqs 256: at 8192 batched tokens the forward pass
    # outweighs the sampler. vLLM 0.19.0 logs 1.05-1.10 GiB for Llama-3.1-8B's pipeline stages
    # without a sampler; the estimate stays above.
    overhead = estimate_overhead(LLAMA_8B, 1, 1, 8192, 256, vllm_version=V0_19)
    assert overhead.activation_bytes > overhead.sampler_bytes
    assert 1.10 * GIB < overhead.profile_peak_bytes < 1.25 * GIB
    # Tensor parallelism splits the MLP part only.
    assert estimate_overhead(LLAMA_8B, 2, 1, 8192, 256).activation_bytes < (
        overhead.activation_bytes
    )


def test_tensor_parallelism_adds_the_communication_buffers() -> None:
    one = estimate_overhead(LLAMA_8B, 1, 1, 8192, 1024, vllm_version=V0_19)
    two = estimate_overhead(LLAMA_8B, 2, 1, 8192, 1024, vllm_version=V0_19)
    assert two.non_torch_bytes - one.non_torch_bytes == TP_COMMUNICATION_BYTES
    # vLLM 0.19.0 logs 2.06-2.11 GiB at TP=2 and 2.13-2.21 GiB at TP=4 on H100s.
    assert 2.1 * GIB < two.non_torch_bytes < 2.3 * GIB


def test_the_moe_workspace_is_what_the_triton_experts_ask_for() -> None:
    mixtral = model("mistralai--Mixtral-8x7B-Instruct-v0.1")
    # TP=2: 8192 tokens x top-2 x (max(7168, 4096) + max(14336, 4096)) x 2 bytes = 672 MiB.
    assert moe_workspace_bytes(mixtral, 2, 8192) == 8192 * 2 * (7168 + 14336) * 2
    qwen = model("Qwen--Qwen3-30B-A3B")
    # Experts of 768 under a hidden size of 2048: both shapes are hidden-wide, 512 MiB.
    assert moe_workspace_bytes(qwen, 1, 8192) == 512 * MIB
    assert moe_workspace_bytes(LLAMA_8B, 1, 8192) == 0
    # vLLM 0.19.0: Mixtral at TP=2 peaks at 1.21 GiB, Qwen3-30B-A3B at 2.68 GiB.
    peak = estimate_overhead(mixtral, 2, 1, 8192, 1024, vllm_version=V0_19).profile_peak_bytes
    assert peak / GIB == pytest.approx(1.21, abs=0.03)
    peak = estimate_overhead(qwen, 1, 1, 8192, 1024, vllm_version=V0_19).profile_peak_bytes
    assert peak / GIB == pytest.approx(2.68, abs=0.03)


@pytest.mark.parametrize(
    ("max_num_seqs", "batched", "expected"),
    [
        (1024, 8192, (51, 51)),  # llm-d-planner, H100: "PIECEWISE=51 (largest=512), FULL=51"
        (256, 2048, (51, 35)),  # tokenkaki, A100: "PIECEWISE=51 (largest=512), FULL=35"
        (32, 8192, (11, 7)),  # infertune, A10: "PIECEWISE=11 (largest=64), FULL=7"
    ],
)
def test_cuda_graph_counts_are_vllms_capture_sizes(
    max_num_seqs: int, batched: int, expected: tuple[int, int]
) -> None:
    assert cuda_graph_capture_counts(max_num_seqs, batched) == expected


def test_cuda_graphs_count_from_vllm_0_20_and_not_when_eager() -> None:
    before = estimate_overhead(LLAMA_8B, 1, 1, 8192, 1024, vllm_version=V0_19)
    after = estimate_overhead(LLAMA_8B, 1, 1, 8192, 1024, vllm_version=V0_20)
    assert before.cuda_graph_bytes == 0
    # vLLM 0.19.0 estimates 0.84 GiB for Llama-3.1-8B's 51 + 51 graphs on an H100.
    assert 0.84 * GIB <= after.cuda_graph_bytes < 1.4 * GIB
    assert after.total_bytes - before.total_bytes == after.cuda_graph_bytes
    eager = estimate_overhead(LLAMA_8B, 1, 1, 8192, 1024, vllm_version=V0_33, enforce_eager=True)
    assert eager.cuda_graph_bytes == 0
    # All-reduce buffers make each PIECEWISE graph dearer with tensor parallelism.
    assert cuda_graph_bytes(2, 1024, 8192) > cuda_graph_bytes(1, 1024, 8192)
    blackwell = cuda_graph_bytes(1, 1024, 16384, CUDA_GRAPH_MAX_CAPTURE_SIZE_BLACKWELL)
    assert blackwell > cuda_graph_bytes(1, 1024, 16384)


def test_vllm_batch_defaults_per_gpu_and_release() -> None:
    h100, a100, l4, b200 = (lookup_gpu(n) for n in ("H100-80GB", "A100-80GB", "L4", "B200"))
    assert default_max_num_batched_tokens(h100.memory_bytes, h100.name) == 8192
    assert default_max_num_batched_tokens(a100.memory_bytes, a100.name) == 2048
    assert default_max_num_batched_tokens(l4.memory_bytes, l4.name) == 2048
    assert default_max_num_batched_tokens(b200.memory_bytes, b200.name, V0_33) == 16384
    assert default_max_num_batched_tokens(b200.memory_bytes, b200.name, V0_20) == 8192
    assert default_max_num_seqs(h100.memory_bytes, h100.name) == 1024
    assert default_max_num_seqs(a100.memory_bytes, a100.name) == 256


def test_the_safety_margin_is_counted_once() -> None:
    overhead = estimate_overhead(LLAMA_8B, 1, 1, 8192, 256)
    assert overhead.safety_margin_bytes == SAFETY_MARGIN_BYTES
    assert overhead.total_bytes == (
        max(overhead.activation_bytes, overhead.sampler_bytes)
        + overhead.moe_workspace_bytes
        + overhead.non_torch_bytes
        + overhead.cuda_graph_bytes
        + SAFETY_MARGIN_BYTES
    )
