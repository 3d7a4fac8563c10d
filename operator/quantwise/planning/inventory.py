"""The cluster's GPUs, from the node labels NVIDIA GPU Feature Discovery publishes (pure).

GFD labels each GPU node with ``nvidia.com/gpu.product`` (e.g. ``NVIDIA-H100-80GB-HBM3``),
``nvidia.com/gpu.memory`` (MiB, nvidia-smi's ``memory.total``), ``nvidia.com/gpu.count`` and
``nvidia.com/gpu.compute.major``/``minor`` (NVIDIA k8s-device-plugin, GFD label reference).
Nodes of one product form a pool; a spec that names no GPU is planned on the smallest pool
that fits.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from quantwise.planning.gpus import CATALOG, GIB, GPU, MIB

LABEL_PRODUCT = "nvidia.com/gpu.product"
LABEL_MEMORY = "nvidia.com/gpu.memory"
LABEL_COUNT = "nvidia.com/gpu.count"
LABEL_MAJOR = "nvidia.com/gpu.compute.major"
LABEL_MINOR = "nvidia.com/gpu.compute.minor"
# nvidia-smi's memory.total (what GFD publishes) is above what CUDA reports as the total, which
# vLLM sizes against; the catalog (gpus.py) measured 0.3-0.8 GiB: take the larger gap.
DRIVER_RESERVED_BYTES = int(0.8 * GIB)
_BY_PRODUCT = {product.lower(): gpu for gpu in CATALOG for product in gpu.products}


@dataclass(frozen=True)
class NodeGpus:
    """The GPUs of one node, as its labels describe them."""

    node: str
    product: str
    count: int
    memory_mib: int | None = None
    compute_capability: tuple[int, int] | None = None


@dataclass(frozen=True)
class GpuPool:
    """Nodes with the same GPU product: the GPU, how many nodes, GPUs per node (the fewest)."""

    product: str
    gpu: GPU
    nodes: int
    gpus_per_node: int


def node_gpus(name: str, labels: Mapping[str, str]) -> NodeGpus | None:
    """The node's GPUs from its GFD labels; None for a node without a usable product label."""
    product = labels.get(LABEL_PRODUCT)
    if not product:
        return None
    try:
        count = int(labels.get(LABEL_COUNT, "0"))
    except ValueError:
        return None
    if count < 1:
        return None
    memory = labels.get(LABEL_MEMORY, "")
    major, minor = labels.get(LABEL_MAJOR, ""), labels.get(LABEL_MINOR, "")
    cc = (int(major), int(minor)) if major.isdigit() and minor.isdigit() else None
    return NodeGpus(name, product, count, int(memory) if memory.isdigit() else None, cc)


def gpu_for(product: str, memory_mib: int | None, cc: tuple[int, int] | None) -> GPU | None:
    """The catalog GPU of a GFD product name, else one its labels describe.

    None when too little is known (no memory or compute capability label).
    """
    known = _BY_PRODUCT.get(product.lower())
    if known is not None:
        return known
    if memory_mib is None or cc is None:
        return None
    # Not in the catalog: the bandwidth is unknown (0: no decode-speed estimate).
    return GPU(
        name=product,
        memory_bytes=memory_mib * MIB - DRIVER_RESERVED_BYTES,
        bandwidth_gbps=0.0,
        compute_capability=cc,
        products=(product,),
        custom=True,
    )


def pools(nodes: Iterable[NodeGpus]) -> tuple[GpuPool, ...]:
    """Group nodes by product; smallest GPU memory first, then by name (deterministic)."""
    by_product: dict[str, list[NodeGpus]] = {}
    for node in nodes:
        by_product.setdefault(node.product, []).append(node)
    out: list[GpuPool] = []
    for product, members in by_product.items():
        memory = Counter(n.memory_mib for n in members).most_common(1)[0][0]
        cc = Counter(n.compute_capability for n in members).most_common(1)[0][0]
        gpu = gpu_for(product, memory, cc)
        if gpu is None:
            continue
        out.append(GpuPool(product, gpu, len(members), min(n.count for n in members)))
    return tuple(sorted(out, key=lambda p: (p.gpu.memory_bytes, p.product)))
