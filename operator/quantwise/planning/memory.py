"""What vLLM needs on a GPU besides weights and KV cache, as its start-up profiling counts it.

vLLM sizes the KV cache as ``total_memory x gpu_memory_utilization`` less what its profiling
measured (vllm/v1/worker/gpu_worker.py ``determine_available_memory``, with
vllm/utils/mem_utils.py ``memory_profiling``):

- the weights, as loaded (``quantwise.planning.weights.loaded_weights``);
- the peak of PyTorch allocations in the profile run (vllm/v1/worker/gpu_model_runner.py
  ``profile_run``): a forward pass over ``max_num_batched_tokens`` dummy tokens, then the
  sampler over one token for each of ``min(max_num_seqs, max_num_batched_tokens)`` dummy
  requests; a mixture of experts keeps its fused-MoE workspace for the rest of the run;
- memory allocated outside PyTorch since the worker started (cuBLAS workspaces, compiled
  kernels, NCCL and the all-reduce buffers of tensor parallelism). The CUDA context created
  before the worker's first memory snapshot is not counted;
- from vLLM 0.20 on, the CUDA-graph memory its capture profiler estimates
  (``VLLM_MEMORY_PROFILER_ESTIMATE_CUDAGRAPHS``, on by default in 0.20.0's envs.py; 0.19 only
  logged the estimate). Before that the graphs were captured after the KV cache, outside the
  utilization.

Each term below is calibrated against real start-ups (``benchmarks/data/measured.csv``; the
fit rows are vLLM 0.19.0 DEBUG logs on an H100 that print every term, and vLLM 0.11.0 runs of
llm-d-benchmark): the estimate is meant to be vLLM's own figure, not a bound. The safety lies in
one place, :data:`SAFETY_MARGIN_BYTES`, added once to the total.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from quantwise.planning.architecture import Architecture
from quantwise.vllm import DEFAULT_VERSION, V0_11, V0_20, Version

GIB = 1024**3
MIB = 1024**2

# ----- the forward pass of the profile run -----

# Bytes of one activation element: vLLM runs activations in the model dtype (16 bits).
ACTIVATION_ELEMENT_BYTES = 2
# Per batched token, the forward pass's peak holds about 8 hidden-size vectors (residual, normed
# input, q/k/v and attention output, all-reduce buffers) and 3 MLP-width ones (the gate/up
# output and the activation's output), the MLP split by TP. Fitted to vLLM 0.19.0 on an H100:
# Llama-3.1-8B's pipeline stages without the sampler peak at 1.05-1.10 GiB for 8192 tokens
# (llm-d-planner logs, tp1pp2 and tp1pp4), this gives 1.16 GiB. Mistral-Small-24B, whose
# forward pass outweighs its sampler, peaks at 2.03 GiB (this: 2.24).
ACTIVATION_HIDDEN_VECTORS = 8
ACTIVATION_MLP_VECTORS = 3

# ----- the sampler of the profile run -----

# Bytes per logit (requests x vocabulary) at the sampler's peak. vLLM 0.11 filters top-k/top-p
# by sorting the float32 logits (values and int64 indices, then softmax, cumsum, mask and
# scatter: vllm/v1/sample/ops/topk_topp_sampler.py ``apply_top_k_top_p``); from 0.19 a Triton
# kernel does it in place (``apply_top_k_top_p_triton``, for 8 requests or more in 0.20, always
# in 0.33). Fitted: 0.11.0 on an H100 peaks at 4.76 GiB for Llama-3.1-8B and 5.56-5.64 GiB for
# Qwen3 with 1024 requests (llm-d-benchmark, empirical-vllm-memory-results.md): 38 bytes a
# logit; 0.19.0 at 1.89 GiB (Llama-3.1-8B), 2.21 (Qwen2.5-7B, Qwen3-8B), 3.62-3.66 (Gemma 2,
# vocabulary 256000), 1.52 (Phi-4): 14.4 bytes a logit.
SAMPLER_SORT_BYTES_PER_LOGIT = 38.0
SAMPLER_TRITON_BYTES_PER_LOGIT = 14.5
TRITON_SAMPLER_FROM: Version = (0, 19)
# vLLM 0.20 sorts in PyTorch below this many requests (topk_topp_sampler.py).
TRITON_SAMPLER_MIN_REQUESTS = 8
# The profile run keeps the forward pass's hidden states (max_num_batched_tokens x hidden, in
# the model dtype) while the sampler runs, plus about 64 MiB the fit above leaves (the sampled
# hidden states and their random copy, the sampler's small tensors).
SAMPLER_BASE_BYTES = 64 * MIB

# ----- memory outside PyTorch -----

# Counted from the worker's first snapshot to the end of profiling (mem_utils.py
# ``non_torch_increase``; 0.33 counts it within ``total_consumed``). On one GPU: cuBLAS
# workspaces and kernels loaded since. vLLM 0.11.0 logs 0.13-0.14 GiB on an H100
# (llm-d-benchmark); 0.19.0 logs 0.24-0.27 GiB (llm-d-planner, 27 runs), 0.31.0 0.26 GiB on an
# A100 (weights + non-torch 15.26 GiB with 15.0 GiB of weights).
NON_TORCH_BYTES_0_11 = int(0.14 * GIB)
NON_TORCH_BYTES = int(0.27 * GIB)
# Tensor parallelism adds NCCL's buffers and the all-reduce workspaces (custom all-reduce,
# FlashInfer's fused all-reduce from 0.19): 0.55 GiB in all at TP=2 with 0.11.0, 2.06-2.11 GiB
# at TP=2 and 2.13-2.21 GiB at TP=4 with 0.19.0, on H100s (NVLink). That is the largest seen;
# no log of a PCIe GPU at TP > 1 with these lines was found, so the H100 figure stands for all.
TP_COMMUNICATION_BYTES_0_11 = int(0.42 * GIB)
TP_COMMUNICATION_BYTES = int(1.95 * GIB)

# ----- CUDA graphs -----

CUDA_GRAPH_ESTIMATE_FROM: Version = V0_20
# vLLM captures a graph for each size in [1, 2, 4] + range(8, 256, 8) + range(256, max + 1, 16)
# up to ``min(2 x max_num_seqs, 512)`` (1024 on data-centre Blackwell) and max_num_batched_tokens,
# once PIECEWISE for all of them and once FULL for those up to max_num_seqs (config/vllm.py
# ``_set_cudagraph_sizes``; cudagraph_mode FULL_AND_PIECEWISE by default). The profiler counts the
# largest first capture once, then the second capture's growth for every further graph
# (gpu_model_runner.py ``profile_cudagraph_memory``).
CUDA_GRAPH_MAX_CAPTURE_SIZE = 512
CUDA_GRAPH_MAX_CAPTURE_SIZE_BLACKWELL = 1024
# From the estimates vLLM 0.19.0 logs on an H100 ("Estimated CUDA graph memory", 51 + 51
# graphs): 0.61-0.84 GiB for dense 7-8B models at TP=1 (first capture 0.11-0.26 GiB, then 4-8
# MiB a graph), 1.24-1.39 GiB for Qwen3-30B-A3B and DeepSeek-V2-Lite (10 MiB a graph), and at
# TP > 1 up to 26 MiB more for each PIECEWISE graph (all-reduce buffers; 0.57-1.92 GiB in all).
# The constants take the top of those ranges: 1.24 GiB for Llama-3.1-8B where vLLM estimated
# 0.84. One estimate lies above them: 2.35 GiB for Qwen3-8B on an A100-40GB with 51 + 35 graphs
# (tokenkaki, vLLM 0.19.1), where these give 1.08 GiB. No vLLM >= 0.20 log with a KV pool to
# check them against was found (benchmarks/data/README.md): the data is too thin to tell
# whether A100s, that model or that run cause it, so it is not fitted, and it is stated here.
CUDA_GRAPH_FIRST_CAPTURE_BYTES = int(0.26 * GIB)
CUDA_GRAPH_PER_GRAPH_BYTES = 10 * MIB
CUDA_GRAPH_TP_PER_PIECEWISE_GRAPH_BYTES = 20 * MIB

# ----- the margin -----

# The one safety margin: what the plan keeps free beyond vLLM's own accounting. An estimate too
# low makes vLLM find less KV memory than planned (fewer tokens than status.plan says, or a
# refusal to start when one sequence no longer fits); too high only leaves memory unused. Without
# it, the 35 runs the benchmark compares range from 0.16 GiB below vLLM's KV memory to 0.05 GiB
# above (the A100-40GB run, whose catalog total is about 0.1 GiB above what CUDA reports there);
# the unexplained weights of a few checkpoints reach 0.06 GiB (Qwen2.5-7B). 0.2 GiB is four times
# the worst of those: 0.3 % of an H100's KV cache, 1-3 % of a 24 GB GPU's.
SAFETY_MARGIN_BYTES = int(0.2 * GIB)


@dataclass(frozen=True)
class Overhead:
    """Per-GPU memory that is neither weights nor KV cache, in bytes.

    vLLM counts the peak of the profile run: the larger of the forward pass's activations and
    the sampler's, plus the MoE workspace both share.
    """

    activation_bytes: int
    sampler_bytes: int
    non_torch_bytes: int
    cuda_graph_bytes: int
    moe_workspace_bytes: int = 0
    safety_margin_bytes: int = 0

    @property
    def profile_peak_bytes(self) -> int:
        """PyTorch's peak in the profile run beyond the weights (vLLM's "peak activation")."""
        return max(self.activation_bytes, self.sampler_bytes) + self.moe_workspace_bytes

    @property
    def total_bytes(self) -> int:
        """All overhead on one GPU, the safety margin included."""
        return (
            self.profile_peak_bytes
            + self.non_torch_bytes
            + self.cuda_graph_bytes
            + self.safety_margin_bytes
        )


def default_max_num_batched_tokens(
    gpu_memory_bytes: int, gpu_name: str = "", vllm_version: Version = DEFAULT_VERSION
) -> int:
    """The default ``--max-num-batched-tokens`` of vLLM's OpenAI server on this GPU, in tokens.

    vllm/engine/arg_utils.py (``get_batch_defaults``): 8192 on GPUs with at least 70 GiB that
    are not A100s (H100, H200...), 2048 on the others, the A100 80GB included; vLLM 0.33 gives
    GPUs with 160 GiB or more (B200, B300) 16384.
    """
    if gpu_memory_bytes >= 160 * GIB and vllm_version >= (0, 33):
        return 16384
    large = gpu_memory_bytes >= 70 * GIB and "a100" not in gpu_name.lower()
    return 8192 if large else 2048


def default_max_num_seqs(gpu_memory_bytes: int, gpu_name: str = "") -> int:
    """The default ``--max-num-seqs`` of vLLM's OpenAI server on this GPU, in sequences.

    vllm/engine/arg_utils.py (``get_batch_defaults``, 0.11 to 0.33): 1024 where
    :func:`default_max_num_batched_tokens` is large, 256 on the others.
    """
    large = gpu_memory_bytes >= 70 * GIB and "a100" not in gpu_name.lower()
    return 1024 if large else 256


def cuda_graph_capture_counts(
    max_num_seqs: int, max_num_batched_tokens: int, max_capture_size: int = 512
) -> tuple[int, int]:
    """(PIECEWISE, FULL) graphs vLLM captures with its default capture sizes, in graphs."""
    largest = min(2 * max_num_seqs, max_capture_size, max_num_batched_tokens)
    sizes = [s for s in (1, 2, 4) if s <= largest]
    sizes += list(range(8, min(largest + 1, 256), 8))
    sizes += list(range(256, largest + 1, 16))
    piecewise = len(sizes)
    full = sum(1 for s in sizes if s <= max_num_seqs)
    return piecewise, full


def cuda_graph_bytes(
    tp: int,
    max_num_seqs: int,
    max_num_batched_tokens: int,
    max_capture_size: int = CUDA_GRAPH_MAX_CAPTURE_SIZE,
) -> int:
    """CUDA-graph memory vLLM's capture profiler estimates on one GPU, in bytes."""
    piecewise, full = cuda_graph_capture_counts(
        max_num_seqs, max_num_batched_tokens, max_capture_size
    )
    if not piecewise:
        return 0
    per_piecewise = CUDA_GRAPH_PER_GRAPH_BYTES + (
        CUDA_GRAPH_TP_PER_PIECEWISE_GRAPH_BYTES if tp > 1 else 0
    )
    return (
        CUDA_GRAPH_FIRST_CAPTURE_BYTES
        + (piecewise - 1) * per_piecewise
        + max(full - 1, 0) * CUDA_GRAPH_PER_GRAPH_BYTES
    )


def sampler_bytes_per_logit(vllm_version: Version, requests: int) -> float:
    """Bytes per logit at the sampler's peak for this vLLM release (see the constants)."""
    triton = vllm_version >= TRITON_SAMPLER_FROM and (
        requests >= TRITON_SAMPLER_MIN_REQUESTS or vllm_version >= (0, 33)
    )
    return SAMPLER_TRITON_BYTES_PER_LOGIT if triton else SAMPLER_SORT_BYTES_PER_LOGIT


def moe_workspace_bytes(arch: Architecture, tp: int, max_num_batched_tokens: int) -> int:
    """Bytes of the fused-MoE workspace vLLM keeps after the profile run, on one GPU.

    The Triton experts take ``(tokens, top_k, max(I, hidden))`` and ``(tokens, top_k,
    max(2 x I, hidden))`` elements, I the expert width on this rank
    (vllm/model_executor/layers/fused_moe/experts/triton_moe.py ``workspace_shapes``), from a
    workspace manager that keeps its high-water mark (modular_kernel.py). Checked against vLLM
    0.19.0 on an H100: Mixtral TP=2, Qwen3-30B-A3B, DeepSeek-V2-Lite and Qwen1.5-MoE peak
    0.66, 0.50, 0.45 and 0.26 GiB above their samplers; this gives 0.66, 0.50, 0.45, 0.26.
    """
    if not arch.is_moe:
        return 0
    width = math.ceil((arch.moe_intermediate_size or arch.intermediate_size) / tp)
    h = arch.hidden_size
    per_token = (arch.num_experts_per_tok or 1) * (max(width, h) + max(2 * width, h))
    return max_num_batched_tokens * per_token * ACTIVATION_ELEMENT_BYTES


def estimate_overhead(
    arch: Architecture,
    tp: int,
    pp: int,
    max_num_batched_tokens: int,
    max_num_seqs: int,
    vllm_version: Version = DEFAULT_VERSION,
    enforce_eager: bool = False,
    max_cudagraph_capture_size: int = CUDA_GRAPH_MAX_CAPTURE_SIZE,
) -> Overhead:
    """Estimate the profile run's peak, non-torch and CUDA-graph bytes on the fullest GPU.

    Every stage is sized as the last one, which also runs the sampler. ``vllm_version`` picks
    the sampler's implementation, the non-torch figures and whether CUDA graphs are counted;
    ``enforce_eager`` captures none.
    """
    act = ACTIVATION_ELEMENT_BYTES
    dense_width = 0
    if not arch.is_moe or arch.num_dense_layers:
        dense_width = math.ceil(arch.intermediate_size / tp)
    if arch.shared_expert_intermediate_size:
        dense_width = max(dense_width, math.ceil(arch.shared_expert_intermediate_size / tp))
    per_token = (
        ACTIVATION_HIDDEN_VECTORS * arch.hidden_size + ACTIVATION_MLP_VECTORS * dense_width
    ) * act
    activation = max_num_batched_tokens * per_token

    requests = min(max_num_seqs, max_num_batched_tokens)
    logits = requests * arch.vocab_size
    sampler = int(
        logits * sampler_bytes_per_logit(vllm_version, requests)
        + max_num_batched_tokens * arch.hidden_size * act
        + SAMPLER_BASE_BYTES
    )

    old = vllm_version <= V0_11
    non_torch = NON_TORCH_BYTES_0_11 if old else NON_TORCH_BYTES
    if tp > 1:
        non_torch += TP_COMMUNICATION_BYTES_0_11 if old else TP_COMMUNICATION_BYTES
    graphs = 0
    if vllm_version >= CUDA_GRAPH_ESTIMATE_FROM and not enforce_eager:
        graphs = cuda_graph_bytes(
            tp, max_num_seqs, max_num_batched_tokens, max_cudagraph_capture_size
        )
    return Overhead(
        activation_bytes=activation,
        sampler_bytes=sampler,
        non_torch_bytes=non_torch,
        cuda_graph_bytes=graphs,
        moe_workspace_bytes=moe_workspace_bytes(arch, tp, max_num_batched_tokens),
        safety_margin_bytes=SAFETY_MARGIN_BYTES,
    )
