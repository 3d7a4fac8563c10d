"""What vLLM needs on a GPU besides weights and KV cache: activations, CUDA graphs, runtime.

vLLM sizes the KV cache as ``total_memory * gpu_memory_utilization`` minus what its profiling
run measured (vllm/v1/worker/gpu_worker.py ``determine_available_memory``): the weights, the
peak of PyTorch activations during a dummy forward pass of ``max_num_batched_tokens`` tokens
plus the sampler's logits for ``max_num_seqs`` sequences, memory allocated outside PyTorch
(CUDA context, cuBLAS workspaces, NCCL buffers) and the CUDA graphs it captures. quantwise
cannot profile, so it estimates each term from the architecture, on the high side: an estimate
too low makes vLLM refuse to start, one too high only wastes a little memory.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from quantwise.planning.architecture import Architecture

GIB = 1024**3

# Memory outside PyTorch's allocator on one GPU: CUDA context and cuBLAS workspaces. vLLM's
# profiling of Llama-3-8B on one H100 reports non_torch_memory 1.79 GiB, and 3.58 GiB at TP=2
# (vLLM PR #10511, the memory-profiling rework): the second term is NCCL's communicators.
NON_TORCH_BYTES = int(1.8 * GIB)
NCCL_BYTES = int(1.8 * GIB)
# CUDA graphs: vLLM captures graphs for batch sizes up to max_num_seqs (capped at 512); their
# memory pool grows with the number of layers. vLLM logs "Graph capturing finished ... took
# 0.3-1.5 GiB" for 7B-70B models; a base plus a per-layer term covers that range.
CUDA_GRAPH_BASE_BYTES = int(0.25 * GIB)
CUDA_GRAPH_PER_LAYER_BYTES = int(0.02 * GIB)


@dataclass(frozen=True)
class Overhead:
    """Per-GPU memory that is neither weights nor KV cache, in bytes."""

    activation_bytes: int
    sampler_bytes: int
    non_torch_bytes: int
    cuda_graph_bytes: int

    @property
    def total_bytes(self) -> int:
        """All overhead on one GPU."""
        return (
            self.activation_bytes
            + self.sampler_bytes
            + self.non_torch_bytes
            + self.cuda_graph_bytes
        )


def default_max_num_batched_tokens(gpu_memory_bytes: int, gpu_name: str = "") -> int:
    """The default ``--max-num-batched-tokens`` of vLLM's OpenAI server on this GPU.

    vllm/engine/arg_utils.py (``_set_default_args``): 8192 on GPUs with at least 70 GiB that are
    not A100s (H100, H200, B200...), 2048 on the others, the A100 80GB included.
    """
    large = gpu_memory_bytes >= 70 * GIB and "a100" not in gpu_name.lower()
    return 8192 if large else 2048


def estimate_overhead(
    arch: Architecture,
    tp: int,
    pp: int,
    max_num_batched_tokens: int,
    max_num_seqs: int,
) -> Overhead:
    """Estimate activation peak, sampler, non-torch and CUDA-graph bytes on one GPU.

    Activations: the profiling forward pass keeps about one residual stream, the attention's
    q/k/v and output, and the MLP's gate/up output for every batched token at once, in 16 bits
    (hidden size x 8 + MLP width x 2 per token, the MLP split by TP). Sampler: float32
    logits over the vocabulary, twice (logits and probabilities), for the dummy sampler run's
    ``min(max_num_seqs, max_num_batched_tokens)`` requests (vllm/v1/worker/gpu_model_runner.py,
    0.33 ``_dummy_sampler_run``).
    """
    act = 2  # bytes: activations are in the model dtype (16 bits).
    mlp_width = arch.intermediate_size
    if arch.is_moe:
        # The fused MoE kernel materialises the routed tokens' gate/up output: top_k copies.
        mlp_width = (arch.moe_intermediate_size or arch.intermediate_size) * (
            arch.num_experts_per_tok or 1
        )
    # 8 x hidden + 2 x MLP width reproduces the 1.26 GiB activation peak vLLM measured for
    # Llama-3-8B at 8192 batched tokens (with the sampler term below).
    per_token = (8 * arch.hidden_size + 2 * math.ceil(mlp_width / tp)) * act
    activation = max_num_batched_tokens * per_token
    sampler_seqs = min(max_num_seqs, max_num_batched_tokens)
    sampler = 2 * sampler_seqs * arch.vocab_size * 4  # On the last stage; assume the fullest.
    non_torch = NON_TORCH_BYTES + (NCCL_BYTES if tp * pp > 1 else 0)
    layers_here = math.ceil(arch.num_hidden_layers / pp)
    cuda_graph = CUDA_GRAPH_BASE_BYTES + CUDA_GRAPH_PER_LAYER_BYTES * layers_here
    return Overhead(
        activation_bytes=activation,
        sampler_bytes=sampler,
        non_torch_bytes=non_torch,
        cuda_graph_bytes=cuda_graph,
    )
