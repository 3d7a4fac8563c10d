"""The serving plan: tensor/pipeline parallelism and ``--gpu-memory-utilization`` from real bytes.

The planner takes the smallest tensor-parallel size in {1, 2, 4, 8, ...} (up to the GPUs of one
node) that vLLM can run the model at and that fits, per GPU, the weights, the KV-cache budget
(``concurrency`` sequences of ``max_model_len`` tokens) and the runtime overhead under the
memory cap. When no single node is enough and more nodes are allowed, it adds pipeline stages
across nodes with the largest tensor-parallel size.

``gpu_memory_utilization`` follows the memory policy. ``fill`` (the default on a GPU or MIG slice
the pod owns) gives vLLM the cap: the KV budget is a floor, and the memory no one else can use
becomes more KV cache (bigger batches, a larger prefix cache). ``budget`` (forced on a GPU shared
by time-slicing or MPS) is what the budget needs, rounded up to 0.01, so vLLM's KV cache holds the
budget and no more. A MIG slice or a shared GPU is planned at TP 1 (tensor parallelism needs
peer-to-peer between whole devices), a shared GPU under its share of the memory. Everything here
is pure: same inputs, same plan.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Literal

from quantwise.planning.architecture import Architecture
from quantwise.planning.gpus import CATALOG, GIB, GPU, MIG_CATALOG, shared_gpu
from quantwise.planning.kvcache import (
    KVCacheError,
    kv_bytes_per_sequence,
    kv_bytes_per_token,
    kv_cache_tokens,
    kv_heads_per_gpu,
)
from quantwise.planning.memory import (
    CUDA_GRAPH_MAX_CAPTURE_SIZE,
    CUDA_GRAPH_MAX_CAPTURE_SIZE_BLACKWELL,
    Overhead,
    default_max_num_batched_tokens,
    estimate_overhead,
)
from quantwise.planning.weights import (
    WeightBreakdown,
    WeightFormat,
    loaded_weights,
    quantizes_lm_head,
    repack_kernel,
)
from quantwise.vllm import DEFAULT_VERSION, Version

DEFAULT_MAX_MODEL_LEN = 8192
# At least this many sequences: vLLM's own default on GPUs under 70 GiB (1024 on larger ones but
# A100s, vllm/engine/arg_utils.py); quantwise passes --max-num-seqs, so every GPU gets the same.
DEFAULT_MAX_NUM_SEQS = 256
DEFAULT_GPUS_PER_NODE = 8
UTILIZATION_STEP = 0.01

MemoryPolicy = Literal["fill", "budget"]
FILL: MemoryPolicy = "fill"
BUDGET: MemoryPolicy = "budget"
MEMORY_POLICIES: tuple[MemoryPolicy, ...] = (FILL, BUDGET)

TPFilter = Callable[[int], str | None]
"""Extra check of a tensor-parallel size: a reason it cannot be used, or None."""


class PlanError(ValueError):
    """No plan fits, or the request is impossible; the message says what to change."""


@dataclass(frozen=True)
class Budget:
    """What the serving deployment must hold, from ``spec.serving``."""

    max_model_len: int | None = None
    concurrency: int = 16
    max_num_seqs: int | None = None
    kv_cache_dtype: str = "auto"
    max_gpu_memory_utilization: float = 0.9
    gpus_per_node: int = 8
    max_nodes: int = 1
    # The serving release: it decides how vLLM counts its overhead (quantwise.planning.memory).
    vllm_version: Version = DEFAULT_VERSION
    # --enforce-eager (in extraArgs): no CUDA graphs to reserve for.
    enforce_eager: bool = False
    # fill: vLLM gets the cap; budget: what the KV budget needs. None: fill, but budget on a
    # shared GPU.
    memory_policy: MemoryPolicy | None = None


@dataclass(frozen=True)
class Sizing:
    """Memory of one candidate (tp, pp) on its fullest GPU, in bytes."""

    tp: int
    pp: int
    weight_bytes: int
    kv_bytes_per_sequence: int
    kv_budget_bytes: int
    overhead: Overhead
    cap_bytes: int

    @property
    def required_bytes(self) -> int:
        """Weights + KV budget + overhead."""
        return self.weight_bytes + self.kv_budget_bytes + self.overhead.total_bytes

    @property
    def fits(self) -> bool:
        """True when the requirement is within the cap."""
        return self.required_bytes <= self.cap_bytes

    @property
    def shortfall_bytes(self) -> int:
        """How far the requirement exceeds the cap (0 when it fits)."""
        return max(0, self.required_bytes - self.cap_bytes)


@dataclass(frozen=True)
class Plan:
    """A serving plan and the numbers behind it."""

    gpu: GPU
    tensor_parallel_size: int
    pipeline_parallel_size: int
    gpu_memory_utilization: float
    max_model_len: int
    max_num_seqs: int
    max_num_batched_tokens: int
    kv_cache_dtype: str
    weight_bytes: int
    weights_measured: bool
    sizing: Sizing
    kv_cache_bytes_per_token: int
    kv_cache_tokens: int
    estimated_decode_tokens_per_second: float
    reasons: tuple[str, ...] = field(default_factory=tuple)
    memory_policy: MemoryPolicy = FILL
    kv_cache_budget_tokens: int = 0

    @property
    def gpus_per_replica(self) -> int:
        """GPUs one replica uses."""
        return self.tensor_parallel_size * self.pipeline_parallel_size


def gib(value: int | float) -> str:
    """Format bytes as GiB with one decimal, e.g. ``"5.3 GiB"``."""
    return f"{value / GIB:.1f} GiB"


def tp_candidates(gpus_per_node: int) -> list[int]:
    """Tensor-parallel sizes to try: powers of two up to the GPUs of one node."""
    sizes = [1]
    while sizes[-1] * 2 <= gpus_per_node:
        sizes.append(sizes[-1] * 2)
    return sizes


def tp_blockers(arch: Architecture, tp: int, fmt: WeightFormat) -> list[str]:
    """Reasons vLLM cannot run ``arch`` at tensor parallel ``tp`` (empty when it can).

    vLLM requires the attention heads to divide by TP (vllm/config/parallel.py
    ``verify_with_model_config``); KV heads are split when they divide by TP and replicated
    when TP divides by them (vllm/config/model.py ``get_num_kv_heads``), anything else fails.
    Row-parallel layers split their input across ranks, and a grouped-quantized layer needs
    each shard's input to hold whole groups (vllm/model_executor/layers/linear.py and the
    AWQ/GPTQ ``create_weights`` checks: "input_size_per_partition is not aligned with the
    quantized weight shape").
    """
    blockers: list[str] = []
    if arch.num_attention_heads % tp:
        blockers.append(f"the {arch.num_attention_heads} attention heads do not divide by TP={tp}")
    if not arch.is_mla:
        kv = arch.num_key_value_heads
        if kv % tp and tp % kv:
            blockers.append(f"the {kv} KV heads neither divide by TP={tp} nor divide it")
    row_inputs: list[tuple[str, int]] = []
    if arch.is_mla:
        row_inputs.append(("o_proj", arch.num_attention_heads * (arch.v_head_dim or 0)))
    else:
        row_inputs.append(("o_proj", arch.num_attention_heads * arch.head_dim))
    if not arch.is_moe or arch.num_dense_layers:
        row_inputs.append(("down_proj", arch.intermediate_size))
    if arch.is_moe:
        row_inputs.append(
            ("expert down_proj", arch.moe_intermediate_size or arch.intermediate_size)
        )
        if arch.shared_expert_intermediate_size:
            row_inputs.append(("shared expert down_proj", arch.shared_expert_intermediate_size))
    for name, width in row_inputs:
        if width % tp:
            blockers.append(f"{name}'s input of {width} does not divide by TP={tp}")
        elif (
            fmt.quantized
            and fmt.group_size
            and fmt.group_size > 0
            and (width // tp) % fmt.group_size
        ):
            blockers.append(
                f"{name}'s input shard {width}/{tp}={width // tp} is not a multiple of the "
                f"group size {fmt.group_size}"
            )
    return blockers


def _round_up(value: float, step: float = UTILIZATION_STEP) -> float:
    return round(math.ceil(round(value / step, 6)) * step, 2)


def weights_on_gpu(
    arch: Architecture, weights: WeightBreakdown, fmt: WeightFormat, gpu: GPU
) -> WeightBreakdown:
    """``weights`` as vLLM holds them on ``gpu`` (quantwise.planning.weights.loaded_weights)."""
    return loaded_weights(
        arch,
        weights,
        fmt,
        repack_kernel(gpu.compute_capability),
        quantize_lm_head=quantizes_lm_head(arch, weights),
    )


def max_cudagraph_capture_size(gpu: GPU) -> int:
    """The largest CUDA-graph batch vLLM captures by default on ``gpu``, in tokens."""
    if gpu.compute_capability[0] == 10:
        return CUDA_GRAPH_MAX_CAPTURE_SIZE_BLACKWELL
    return CUDA_GRAPH_MAX_CAPTURE_SIZE


@dataclass(frozen=True)
class _Search:
    """One planning problem: the model, its weights as loaded on ``gpu``, the budget."""

    arch: Architecture
    weights: WeightBreakdown
    gpu: GPU
    budget: Budget
    max_model_len: int
    max_num_seqs: int
    max_num_batched_tokens: int
    cap: float
    """The utilization cap on the planned GPU: the budget's, at most a shared GPU's share."""

    def size(self, tp: int, pp: int, kv_cache_dtype: str | None = None,
             gpu: GPU | None = None) -> Sizing:  # fmt: skip
        """Memory of (tp, pp) on the fullest GPU (on ``gpu`` instead of the planned one)."""
        cap = self.cap if gpu is None or gpu is self.gpu else utilization_cap(gpu, self.budget)
        gpu = gpu or self.gpu
        budget, arch = self.budget, self.arch
        mnbt = (
            self.max_num_batched_tokens
            if gpu is self.gpu
            else default_max_num_batched_tokens(gpu.memory_bytes, gpu.name, budget.vllm_version)
        )
        dtype = kv_cache_dtype or budget.kv_cache_dtype
        per_seq = kv_bytes_per_sequence(arch, tp, self.max_model_len, dtype, pp, mnbt)
        overhead = estimate_overhead(
            arch, tp, pp, mnbt, self.max_num_seqs, vllm_version=budget.vllm_version,
            enforce_eager=budget.enforce_eager,
            max_cudagraph_capture_size=max_cudagraph_capture_size(gpu),
        )  # fmt: skip
        return Sizing(
            tp=tp,
            pp=pp,
            weight_bytes=self.weights.per_gpu_bytes(arch, tp, pp),
            kv_bytes_per_sequence=per_seq,
            kv_budget_bytes=per_seq * budget.concurrency,
            overhead=overhead,
            cap_bytes=int(gpu.memory_bytes * cap),
        )

    @property
    def cap_text(self) -> str:
        """The memory cap in words: GiB and how it is made."""
        gpu, cap = self.gpu, self.cap
        shared = f" {gpu.sharing_text}" if gpu.shared else ""
        whole = gib(gpu.memory_bytes)
        return f"{gib(gpu.memory_bytes * cap)} ({cap:g} x {whole} {gpu.name}{shared})"

    def describe(self, s: Sizing) -> str:
        """What a sizing needs per GPU, in words."""
        return (
            f"weights {gib(s.weight_bytes)} + KV budget {gib(s.kv_budget_bytes)} "
            f"({self.budget.concurrency} x {self.max_model_len} tokens) + overhead "
            f"{gib(s.overhead.total_bytes)} = {gib(s.required_bytes)} per GPU"
        )


def utilization_cap(gpu: GPU, budget: Budget) -> float:
    """The most ``--gpu-memory-utilization`` may be on ``gpu``, a fraction.

    The budget's cap; on a GPU shared by N pods at most its share, 1/N rounded down to 0.01
    (vLLM's utilization is a fraction of the whole device's memory, which each pod sees:
    vllm/v1/worker/gpu_worker.py ``requested_memory``).
    """
    cap = budget.max_gpu_memory_utilization
    if not gpu.shared:
        return cap
    share = math.floor(round(1 / gpu.shared_by / UTILIZATION_STEP, 6)) * UTILIZATION_STEP
    return round(min(cap, share), 2)


def memory_policy(gpu: GPU, budget: Budget) -> MemoryPolicy:
    """The policy the plan follows: ``budget`` on a shared GPU, else the spec's (fill)."""
    if gpu.shared:
        return BUDGET
    return budget.memory_policy or FILL


def _one_device(gpu: GPU, budget: Budget, reasons: list[str]) -> Budget:
    """A MIG slice or a shared GPU runs one vLLM rank: TP 1 and no pipeline across nodes."""
    if gpu.is_mig:
        # MIG user guide, Application Considerations: no GPU-to-GPU peer-to-peer (PCIe or NVLink)
        # between MIG instances, which tensor parallelism's all-reduce needs.
        reasons.append(
            f"TP=1: {gpu.name} is a MIG instance ({gpu.compute_fraction * 7:.0f}/7 of the SMs, "
            f"{gpu.memory_fraction * 8:.0f}/8 of the memory and bandwidth of one {gpu.parent}); "
            "tensor parallelism across MIG instances is not possible"
        )
    elif gpu.shared:
        # The device plugin hands out replicas of one GPU: two may be the same device, and MPS
        # grants one per container (NVIDIA GPU Operator, "Multi-Process Service", Limitations).
        reasons.append(
            f"TP=1: the {gpu.name} is {gpu.sharing_text}; a pod gets "
            f"one replica of it and at most its share of the memory, "
            f"{gib(gpu.share_bytes)} of {gib(gpu.memory_bytes)}"
        )
    else:
        return budget
    return replace(budget, gpus_per_node=1, max_nodes=1)


def _max_model_len(arch: Architecture, budget: Budget) -> int:
    """The context to plan: the budget's, else the model's capped at DEFAULT_MAX_MODEL_LEN."""
    model_max = arch.max_position_embeddings
    if budget.max_model_len is None:
        return min(model_max, DEFAULT_MAX_MODEL_LEN)
    if budget.max_model_len > model_max:
        raise PlanError(
            f"spec.serving.maxModelLen {budget.max_model_len} exceeds the model's maximum "
            f"context of {model_max} tokens (config.json max_position_embeddings and RoPE "
            f"scaling); vLLM refuses it. Set maxModelLen to {model_max} or less."
        )
    return budget.max_model_len


def _allowed_tps(
    arch: Architecture, budget: Budget, fmt: WeightFormat, tp_filter: TPFilter | None,
    reasons: list[str],
) -> list[int]:  # fmt: skip
    """The tensor-parallel sizes vLLM can run the model at (the others go to ``reasons``)."""
    allowed: list[int] = []
    for tp in tp_candidates(budget.gpus_per_node):
        blockers = tp_blockers(arch, tp, fmt)
        if not blockers and tp_filter is not None and (extra := tp_filter(tp)):
            blockers.append(extra)
        if blockers:
            reasons.append(f"TP={tp} skipped: {'; '.join(blockers)}")
        else:
            allowed.append(tp)
    if not allowed:
        raise PlanError(
            f"no tensor-parallel size up to {budget.gpus_per_node} GPUs per node can run this "
            f"model: {'; '.join(reasons)}"
        )
    return allowed


def _smallest_fit(
    search: _Search, allowed: list[int], fmt: WeightFormat, reasons: list[str]
) -> Sizing:
    """The smallest TP that fits on one node, else the fewest pipeline stages across nodes."""
    last: Sizing | None = None
    for tp in allowed:
        last = search.size(tp, 1)
        if last.fits:
            return last
        reasons.append(f"TP={tp} does not fit: {search.describe(last)} > cap {search.cap_text}")
    budget = search.budget
    if budget.max_nodes > 1:
        tp = allowed[-1]
        for pp in range(2, min(budget.max_nodes, search.arch.num_hidden_layers) + 1):
            last = search.size(tp, pp)
            if last.fits:
                reasons.append(
                    f"one node of {budget.gpus_per_node} GPUs is not enough: {pp} pipeline "
                    f"stages across {pp} nodes, TP={tp} within each"
                )
                return last
    assert last is not None
    raise PlanError(_no_fit_message(search, fmt, last))


def plan(
    arch: Architecture,
    weights: WeightBreakdown,
    gpu: GPU,
    budget: Budget,
    fmt: WeightFormat,
    tp_filter: TPFilter | None = None,
) -> Plan:
    """Return the smallest plan that fits ``budget`` on ``gpu``, or raise PlanError.

    ``fmt`` is the weight format (its group size restricts TP); ``tp_filter`` adds checks that
    depend on the checkpoint and kernel (quantwise.quantization plugs in there).
    """
    if not 0 < budget.max_gpu_memory_utilization <= 1:
        raise PlanError(
            f"spec.serving.maxGpuMemoryUtilization {budget.max_gpu_memory_utilization} must be "
            "in (0, 1]"
        )
    try:
        kv_bytes_per_token(arch, 1, budget.kv_cache_dtype)
    except KVCacheError as exc:
        raise PlanError(f"spec.serving.kvCacheDtype: {exc}") from exc
    reasons: list[str] = []
    budget = _one_device(gpu, budget, reasons)
    search = _Search(
        arch=arch,
        weights=weights_on_gpu(arch, weights, fmt, gpu),
        gpu=gpu,
        budget=budget,
        max_model_len=_max_model_len(arch, budget),
        max_num_seqs=budget.max_num_seqs or max(budget.concurrency, DEFAULT_MAX_NUM_SEQS),
        max_num_batched_tokens=default_max_num_batched_tokens(
            gpu.memory_bytes, gpu.name, budget.vllm_version
        ),
        cap=utilization_cap(gpu, budget),
    )
    allowed = _allowed_tps(arch, budget, fmt, tp_filter, reasons)
    chosen = _smallest_fit(search, allowed, fmt, reasons)
    if chosen.pp == 1:
        smaller = " (smaller TPs do not fit or cannot run it)" if chosen.tp > allowed[0] else ""
        reasons.append(
            f"TP={chosen.tp}{smaller}: {search.describe(chosen)} <= cap {search.cap_text}"
        )
    return _plan_of(search, chosen, weights, reasons)


def _plan_of(
    search: _Search, chosen: Sizing, file_weights: WeightBreakdown, reasons: list[str]
) -> Plan:
    """The plan of the chosen sizing: utilization, KV tokens, decode bound, and why."""
    arch, gpu, budget = search.arch, search.gpu, search.budget
    tp, pp = chosen.tp, chosen.pp
    policy = memory_policy(gpu, budget)
    needed = min(search.cap, _round_up(chosen.required_bytes / gpu.memory_bytes))
    utilization = search.cap if policy == FILL else needed
    # What vLLM will have: its KV cache is the utilization's share of the device less what its
    # profiling counts (vllm/v1/worker/gpu_worker.py determine_available_memory), the same
    # arithmetic benchmarks/sizing.py checks against logged start-ups.
    kv_memory = (
        int(gpu.memory_bytes * utilization) - chosen.weight_bytes - chosen.overhead.total_bytes
    )
    tokens = kv_cache_tokens(arch, tp, kv_memory, budget.kv_cache_dtype, pp)
    per_token = kv_bytes_per_token(arch, tp, budget.kv_cache_dtype, pp)
    sequences = kv_memory / chosen.kv_bytes_per_sequence if chosen.kv_bytes_per_sequence else 0.0
    if arch.num_sliding_window_layers:
        # A sliding-window layer holds a window, not every token: vLLM states such a cache's
        # size as whole sequences x max_model_len (vllm/v1/core/kv_cache_utils.py,
        # get_kv_cache_capacity: int(max_concurrency x max_model_len)), and so does the plan.
        tokens = int(sequences * search.max_model_len)
    bytes_read = file_weights.bytes_read_per_token(arch)
    decode = gpu.bandwidth_gbps * 1e9 * tp / bytes_read if bytes_read else 0.0
    shared = " while the other pods that share the GPU are idle" if gpu.shared else ""
    reasons = [
        *reasons,
        _utilization_reason(search, chosen, policy, utilization, needed),
        _kv_reason(arch, tp, budget.kv_cache_dtype, per_token, tokens, sequences,
                   search.max_model_len),
        f"max-num-seqs {search.max_num_seqs}: "
        + ("from spec.serving.maxNumSeqs" if budget.max_num_seqs
           else f"max(concurrency {budget.concurrency}, {DEFAULT_MAX_NUM_SEQS}); "
           "shorter sequences share the KV budget"),
        f"decode <= {decode:,.0f} tokens/s for one sequence{shared}: {gpu.bandwidth_gbps:,.0f} "
        f"GB/s x TP {tp} / {bytes_read / 1e9:.2f} GB of weights read per token (an upper bound: "
        "it ignores KV-cache reads and kernel efficiency)",
    ]  # fmt: skip
    return Plan(
        gpu=gpu,
        tensor_parallel_size=tp,
        pipeline_parallel_size=pp,
        gpu_memory_utilization=utilization,
        max_model_len=search.max_model_len,
        max_num_seqs=search.max_num_seqs,
        max_num_batched_tokens=search.max_num_batched_tokens,
        kv_cache_dtype=budget.kv_cache_dtype,
        weight_bytes=file_weights.total_bytes,
        weights_measured=file_weights.measured,
        sizing=chosen,
        kv_cache_bytes_per_token=per_token,
        kv_cache_tokens=tokens,
        estimated_decode_tokens_per_second=round(decode, 1),
        reasons=tuple(reasons),
        memory_policy=policy,
        kv_cache_budget_tokens=budget.concurrency * search.max_model_len,
    )


def _utilization_reason(
    search: _Search, chosen: Sizing, policy: MemoryPolicy, utilization: float, needed: float
) -> str:
    """Why this ``--gpu-memory-utilization``: the memory policy and the numbers behind it."""
    gpu, budget = search.gpu, search.budget
    need = (
        f"weights, overhead and the KV budget need {gib(chosen.required_bytes)} of "
        f"{gib(gpu.memory_bytes)}"
    )
    if policy == FILL:
        extra = int(gpu.memory_bytes * utilization) - chosen.required_bytes
        device = "MIG slice" if gpu.is_mig else ("GPUs" if chosen.tp * chosen.pp > 1 else "GPU")
        return (
            f"gpu-memory-utilization {utilization:.2f}, memory policy fill: the pod owns its "
            f"{device}, so vLLM gets the cap ({gib(gpu.memory_bytes * utilization)}); {need} "
            f"({needed:.2f}), and the {gib(extra)} beyond the budget become more KV cache (bigger "
            "batches, a larger prefix cache)"
        )
    if gpu.shared:
        why = f"the GPU is {gpu.sharing_text}, each may use at most {search.cap:.2f} of it"
        if budget.memory_policy == FILL:
            why += " (spec.serving.memoryPolicy fill does not apply to a shared GPU)"
    else:
        why = (
            "from spec.serving.memoryPolicy, vLLM takes what the budget needs and leaves the "
            "rest of the GPU to others"
        )
    return (
        f"gpu-memory-utilization {utilization:.2f}, memory policy budget: {why}; {need}, "
        "rounded up to 0.01"
    )


def _kv_reason(
    arch: Architecture,
    tp: int,
    dtype: str,
    per_token: int,
    tokens: int,
    sequences: float,
    max_model_len: int,
) -> str:
    if arch.is_mla:
        shape = f"MLA latent {arch.mla_kv_width} per layer, replicated on every rank"
    else:
        shape = (
            f"{kv_heads_per_gpu(arch, tp)} of {arch.num_key_value_heads} KV heads x head_dim "
            f"{arch.head_dim} x K,V per layer"
        )
    sliding = (
        f"; {arch.num_sliding_window_layers} sliding-window layers hold at most "
        f"{arch.sliding_window} tokens"
        if arch.num_sliding_window_layers
        else ""
    )
    return (
        f"KV cache {per_token:,} bytes/token/GPU ({shape}, {dtype}){sliding}; it holds "
        f"{tokens:,} tokens, {sequences:.1f} sequences of {max_model_len}"
    )


def _no_fit_message(search: _Search, fmt: WeightFormat, last: Sizing) -> str:
    """Why nothing fits, by how much, and the changes that would make it fit."""
    gpu, budget = search.gpu, search.budget
    where = f"TP={last.tp}" + (f" x PP={last.pp}" if last.pp > 1 else "")
    lines = [
        f"does not fit on {gpu.name}: at {where} (the most allowed) {search.describe(last)}, "
        f"but the cap is {search.cap_text}: {gib(last.shortfall_bytes)} short.",
        "Try:",
    ]
    room = last.cap_bytes - last.weight_bytes - last.overhead.total_bytes
    if room <= 0:
        lines.append(
            f"- the weights alone ({gib(last.weight_bytes)} per GPU) leave no room: use a "
            "lower-bit method (spec.quantization: awq or gptq 4-bit), or a bigger GPU"
        )
    else:
        lines += _smaller_budgets(search, last, room)
    if fmt.bits > 4:
        lines.append("- a lower-bit method (spec.quantization.method awq or gptq, 4 bits)")
    if gpu.is_mig or gpu.shared:
        lines += _other_devices(search, fmt)
        return "\n".join(lines)
    bigger = [
        g.name
        for g in CATALOG
        if g.memory_bytes > gpu.memory_bytes and search.size(last.tp, last.pp, gpu=g).fits
    ]
    if bigger:
        lines.append(f"- a bigger GPU: {', '.join(bigger)} fit at {where}")
    if budget.max_nodes == 1:
        lines.append("- spec.serving.maxNodes > 1 to add pipeline-parallel stages across nodes")
    return "\n".join(lines)


def _other_devices(search: _Search, fmt: WeightFormat) -> list[str]:
    """The MIG slices (at TP 1) and whole GPUs (at their smallest TP) that hold the model."""
    gpu, budget = search.gpu, search.budget
    lines: list[str] = []
    if gpu.shared:
        fewer = next(
            (n for n in range(gpu.shared_by - 1, 0, -1)
             if search.size(1, 1, gpu=shared_gpu(gpu, n, gpu.sharing)).fits),
            None,
        )  # fmt: skip
        if fewer is not None:
            lines.append(
                f"- fewer pods on the {gpu.name}: a share of 1/{fewer} holds it "
                f"(spec.serving.gpu.sharedBy {fewer}, nodes with nvidia.com/gpu.replicas {fewer})"
            )
    fitting: dict[str, list[str]] = {}  # profiles by the GPU they are cut from
    for g in sorted(MIG_CATALOG, key=lambda g: g.parent != gpu.parent):
        if g.memory_bytes > gpu.share_bytes and search.size(1, 1, gpu=g).fits:
            fitting.setdefault(str(g.parent), []).append(str(g.mig_profile))
    slices = "; ".join(f"{parent}-MIG-{{{', '.join(p)}}}" for parent, p in fitting.items())
    lines.append(
        f"- MIG slices that fit (TP=1): {slices}"
        if slices
        else "- no MIG slice holds it (a slice runs TP=1 only)"
    )
    whole: list[str] = []
    for g in CATALOG:
        for tp in tp_candidates(max(budget.gpus_per_node, DEFAULT_GPUS_PER_NODE)):
            if not tp_blockers(search.arch, tp, fmt) and search.size(tp, 1, gpu=g).fits:
                whole.append(f"{g.name} (TP={tp})")
                break
    if whole:
        lines.append(f"- whole GPUs that fit: {', '.join(whole)}")
    return lines


def _smaller_budgets(search: _Search, last: Sizing, room: int) -> list[str]:
    """The concurrency, context or KV dtype that the room left by weights and overhead holds."""
    budget, max_model_len = search.budget, search.max_model_len
    lines: list[str] = []
    seqs = room // last.kv_bytes_per_sequence if last.kv_bytes_per_sequence else 0
    if seqs >= 1:
        lines.append(
            f"- spec.serving.concurrency {seqs} or less (the room left holds {seqs} "
            f"sequences of {max_model_len} tokens)"
        )
    per_token = last.kv_bytes_per_sequence / max(max_model_len, 1)
    fit_len = int(room / budget.concurrency / per_token) // 16 * 16 if per_token else 0
    if fit_len >= 16:
        lines.append(
            f"- spec.serving.maxModelLen {fit_len} or less at concurrency {budget.concurrency}"
        )
    if budget.kv_cache_dtype in ("auto", "float16", "bfloat16"):
        fp8 = "fp8" if not search.arch.is_mla else "fp8_ds_mla"
        with contextlib.suppress(KVCacheError):  # fp8 applies to every architecture
            s8 = search.size(last.tp, last.pp, kv_cache_dtype=fp8)
            verdict = "fits" if s8.fits else f"still {gib(s8.shortfall_bytes)} short"
            lines.append(f"- spec.serving.kvCacheDtype {fp8} (halves the KV cache: {verdict})")
    return lines
