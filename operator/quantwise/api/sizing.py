"""Plan a QuantizedModel spec: the spec in the planner's terms.

Shared by the CLI and the operator: ``spec.serving`` becomes a Budget, ``spec.serving.gpu`` a GPU,
``spec.quantization`` (or the checkpoint's ``quantization_config``) a WeightFormat. The planner
(quantwise.planning) knows nothing of the API; this module is where the two meet.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from quantwise.api.spec import GpuSpec, Quantization, QuantizedModelSpec, Serving
from quantwise.planning.architecture import Architecture
from quantwise.planning.gpus import GPU, custom_gpu, lookup_gpu, shared_gpu
from quantwise.planning.planner import Budget, Plan, TPFilter, plan
from quantwise.planning.weights import UNQUANTIZED, WeightBreakdown, WeightFormat, estimate_weights
from quantwise.quantization.config import weight_format_from_quantization_config
from quantwise.vllm import version_of


def budget_from_serving(serving: Serving, default_image: str | None = None) -> Budget:
    """The planner's budget from ``spec.serving`` (served by ``default_image`` without one)."""
    return Budget(
        max_model_len=serving.max_model_len,
        concurrency=serving.concurrency,
        max_num_seqs=serving.max_num_seqs,
        kv_cache_dtype=serving.kv_cache_dtype,
        max_gpu_memory_utilization=serving.max_gpu_memory_utilization,
        gpus_per_node=serving.gpus_per_node,
        max_nodes=serving.max_nodes,
        # The release decides what vLLM counts (quantwise.planning.memory); an image without a
        # version tag is planned as the default release.
        vllm_version=version_of(serving.image or default_image, serving.vllm_version),
        enforce_eager="--enforce-eager" in (serving.extra_args or ()),
        memory_policy=serving.memory_policy,
    )


def gpu_from_spec(gpu: GpuSpec) -> GPU:
    """The GPU ``spec.serving.gpu`` names or describes (shared by ``sharedBy`` pods)."""
    if gpu.product is not None:
        found = lookup_gpu(gpu.product)
    else:
        assert gpu.memory_gib is not None and gpu.bandwidth_gbps is not None
        assert gpu.compute_capability is not None
        found = custom_gpu(
            gpu.memory_gib, gpu.bandwidth_gbps, gpu.compute_capability, gpu.name or "custom"
        )
    return shared_gpu(found, gpu.shared_by or 1)


def weight_format_for(
    quantization: Quantization, quantization_config: Mapping[str, Any] | None = None
) -> WeightFormat:
    """How the served checkpoint stores its weights.

    For a method that quantizes, the format it produces; for ``none``, what the checkpoint's
    ``quantization_config`` says (16 bits when it has none).
    """
    if quantization.method == "none":
        return weight_format_from_quantization_config(quantization_config)
    bits = quantization.effective_bits or 16
    return WeightFormat(
        bits=bits,
        group_size=quantization.effective_group_size,
        symmetric=quantization.effective_symmetric,
    )


def expected_weights(
    spec: QuantizedModelSpec,
    arch: Architecture,
    fmt: WeightFormat,
    measured: WeightBreakdown | None = None,
) -> WeightBreakdown:
    """The weights to plan with: measured ones of the served checkpoint, else an estimate.

    A measurement of the *base* model does not tell the bytes of its quantized version, so for
    a method that quantizes the weights are estimated unless the measurement is of the artifact.
    """
    if measured is not None and (spec.quantization.method == "none" or fmt == UNQUANTIZED):
        return measured
    quantize_lm_head = "lm_head" not in spec.quantization.ignore
    return estimate_weights(arch, fmt, quantize_lm_head=quantize_lm_head and fmt.quantized)


def plan_spec(
    spec: QuantizedModelSpec,
    arch: Architecture,
    weights: WeightBreakdown,
    fmt: WeightFormat,
    gpu: GPU | None = None,
    tp_filter: TPFilter | None = None,
) -> Plan:
    """Plan ``spec`` for ``arch`` with ``weights``; ``gpu`` overrides ``spec.serving.gpu``."""
    if gpu is None:
        if spec.serving.gpu is None:
            raise ValueError(
                "spec.serving.gpu is not set: name a GPU (e.g. --gpu H100-80GB) to plan offline"
            )
        gpu = gpu_from_spec(spec.serving.gpu)
    return plan(arch, weights, gpu, budget_from_serving(spec.serving), fmt, tp_filter)
