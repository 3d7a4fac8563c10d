"""The cluster's GPUs, from the node labels NVIDIA GPU Feature Discovery publishes (pure).

GFD labels each GPU node with ``nvidia.com/gpu.product`` (e.g. ``NVIDIA-H100-80GB-HBM3``),
``nvidia.com/gpu.memory`` (MiB, nvidia-smi's ``memory.total``), ``nvidia.com/gpu.count``,
``nvidia.com/gpu.replicas`` and ``nvidia.com/gpu.compute.major``/``minor`` (NVIDIA
k8s-device-plugin, docs/gfd_labels.md and internal/lm/resource.go). On MIG nodes
(``nvidia.com/mig.strategy``):

- ``single``: every GPU is cut into one profile and each instance is an ``nvidia.com/gpu``; the
  product label becomes ``<product>-MIG-<profile>`` and count and memory are the instances';
- ``mixed``: each profile is its own resource, ``nvidia.com/mig-<profile>``, with labels
  ``nvidia.com/mig-<profile>.count``, ``.memory`` (MiB), ``.product``, ``.slices.gi``...; a node
  whose GPUs are all MIG-enabled labels them with ``nvidia.com/gpu.replicas=0`` (no whole GPU to
  request).

A GPU shared by time-slicing or MPS carries ``nvidia.com/gpu.replicas`` > 1 and
``nvidia.com/gpu.sharing-strategy``; its product gains ``-SHARED``, unless the device plugin
renames the resource to ``nvidia.com/gpu.shared`` instead (``renameByDefault``, NVIDIA GPU Operator
"Time-Slicing GPUs" and "Multi-Process Service").

Devices of one kind (product, resource) on the nodes a spec may use form a pool; a spec that
names no GPU is planned on the smallest pool that fits: the smallest MIG slice, shared GPU or
whole GPU whose memory holds it.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace

from quantwise.planning.gpus import (
    ALL_GPUS,
    CATALOG,
    COMPUTE_SLICES,
    GIB,
    GPU,
    GPU_RESOURCE,
    MEMORY_SLICES,
    MIB,
    mig_resource,
    profile_slices,
    shared_gpu,
)

LABEL_PRODUCT = "nvidia.com/gpu.product"
LABEL_MEMORY = "nvidia.com/gpu.memory"
LABEL_COUNT = "nvidia.com/gpu.count"
LABEL_MAJOR = "nvidia.com/gpu.compute.major"
LABEL_MINOR = "nvidia.com/gpu.compute.minor"
LABEL_REPLICAS = "nvidia.com/gpu.replicas"
LABEL_SHARING = "nvidia.com/gpu.sharing-strategy"
LABEL_MIG_STRATEGY = "nvidia.com/mig.strategy"
MIG_PREFIX = "nvidia.com/mig-"
_MIG_LABEL = re.compile(r"^nvidia\.com/mig-(?P<profile>[0-9]+g\.[0-9]+gb)\.(?P<key>[a-z.]+)$")
MIG_INFIX = "-MIG-"
SHARED_SUFFIX = "-SHARED"
# The resource a renamed shared resource is advertised as (renameByDefault: true).
SHARED_RESOURCE_SUFFIX = ".shared"
# nvidia-smi's memory.total (what GFD publishes) is above what CUDA reports as the total, which
# vLLM sizes against; the catalog (gpus.py) measured 0.3-0.8 GiB: take the larger gap.
DRIVER_RESERVED_BYTES = int(0.8 * GIB)
_BY_PRODUCT = {product.lower(): gpu for gpu in CATALOG for product in gpu.products}
_BY_NAME = {gpu.name.lower(): gpu for gpu in ALL_GPUS}


@dataclass(frozen=True)
class Device:
    """One kind of device a pod can request on a node: a whole GPU, a MIG instance, a replica."""

    product: str
    """The value of the product label the pods are pinned to (as GFD writes it)."""
    label: str
    """The product label's key: ``nvidia.com/gpu.product`` or ``nvidia.com/mig-<p>.product``."""
    resource: str
    """The extended resource a pod requests: ``nvidia.com/gpu``, ``nvidia.com/mig-3g.40gb``..."""
    count: int
    """Devices on the node (instances of a MIG profile, physical GPUs when shared)."""
    memory_mib: int | None = None
    """Memory of one device in MiB, as GFD labels it (nvidia-smi's total)."""
    parent: str = ""
    """The whole GPU's product (no ``-MIG-<profile>``, no ``-SHARED``)."""
    mig_profile: str | None = None
    replicas: int = 1
    """Pods that share one device (time-slicing or MPS); 1 when not shared."""
    sharing: str | None = None
    compute_slices: int | None = None
    """A MIG instance's compute slices (``.slices.gi``)."""


@dataclass(frozen=True)
class NodeGpus:
    """The GPUs of one node, as its labels describe them."""

    node: str
    product: str
    count: int
    memory_mib: int | None = None
    compute_capability: tuple[int, int] | None = None
    devices: tuple[Device, ...] | None = None
    """What a pod can request there; None (not parsed): ``count`` whole GPUs of ``product``."""
    labels: tuple[tuple[str, str], ...] = ()
    """The node's labels, to match a spec's nodeSelector."""

    def offers(self) -> tuple[Device, ...]:
        """The devices of the node (whole GPUs of ``product`` when none were parsed)."""
        if self.devices is not None:
            return self.devices
        whole = Device(self.product, LABEL_PRODUCT, GPU_RESOURCE, self.count, self.memory_mib,
                       parent=self.product)  # fmt: skip
        return (whole,)

    def matches(self, selector: Mapping[str, str] | None) -> bool:
        """Whether the node carries every label of ``selector``."""
        labels = dict(self.labels)
        return all(labels.get(key) == value for key, value in (selector or {}).items())


@dataclass(frozen=True)
class GpuPool:
    """Devices of one kind on several nodes: the GPU a pod gets, how many nodes, per node."""

    product: str
    gpu: GPU
    nodes: int
    gpus_per_node: int
    label: str = LABEL_PRODUCT
    """The label that pins pods to the pool's nodes (its value is ``product``)."""

    @property
    def node_selector(self) -> dict[str, str]:
        """The node selector that pins the serving pods to this pool."""
        return {self.label: self.product}

    @property
    def kind(self) -> str:
        """The devices in words: "" for whole GPUs, else MIG slices or a GPU's shares."""
        kind = f"MIG {self.gpu.mig_profile} slices" if self.gpu.is_mig else ""
        if self.gpu.shared:
            kind = f"{kind or 'GPUs'} {self.gpu.sharing_text}"
        return kind

    @property
    def describe(self) -> str:
        """``N nodes x M`` and the kind of device."""
        return f"{self.nodes} nodes x {self.gpus_per_node}" + (f" {self.kind}" if self.kind else "")


def _int(value: str | None, default: int | None = None) -> int | None:
    return int(value) if value is not None and value.isdigit() else default


def _unshared(product: str) -> str:
    return product[: -len(SHARED_SUFFIX)] if product.endswith(SHARED_SUFFIX) else product


def _sharing(product: str, resource: str, replicas: int, strategy: str | None) -> tuple[str, str]:
    """(resource, sharing strategy) of a device shared ``replicas`` ways.

    GFD (internal/lm/resource.go): the product gains ``-SHARED`` unless the device plugin renames
    the resource to ``<resource>.shared``, which pods must then request.
    """
    if replicas <= 1:
        return resource, ""
    renamed = not product.endswith(SHARED_SUFFIX)
    strategy = strategy if strategy and strategy != "none" else "time-slicing"
    return (resource + SHARED_RESOURCE_SUFFIX if renamed else resource), strategy


def _whole_or_single(labels: Mapping[str, str], product: str, count: int) -> Device | None:
    """The device of the ``nvidia.com/gpu.*`` labels: whole GPUs, or single-strategy MIG."""
    replicas = _int(labels.get(LABEL_REPLICAS), 1)
    if replicas == 0:
        return None  # Every GPU is MIG-enabled (mixed strategy): no whole GPU to request.
    base = _unshared(product)
    parent, infix, profile = base.partition(MIG_INFIX)
    if infix and not re.fullmatch(r"[0-9]+g\.[0-9]+gb", profile):
        return None  # "<product>-MIG-INVALID": GFD found a configuration single cannot serve.
    resource, sharing = _sharing(product, GPU_RESOURCE, replicas or 1, labels.get(LABEL_SHARING))
    return Device(
        product=product, label=LABEL_PRODUCT, resource=resource, count=count,
        memory_mib=_int(labels.get(LABEL_MEMORY)), parent=parent,
        mig_profile=profile if infix else None, replicas=replicas or 1, sharing=sharing or None,
        compute_slices=_int(labels.get("nvidia.com/gpu.slices.gi")),
    )  # fmt: skip


def _mixed(labels: Mapping[str, str], parent: str) -> list[Device]:
    """The MIG devices of the mixed strategy's ``nvidia.com/mig-<profile>.*`` labels."""
    by_profile: dict[str, dict[str, str]] = {}
    for key, value in labels.items():
        if found := _MIG_LABEL.match(key):
            by_profile.setdefault(found["profile"], {})[found["key"]] = value
    devices: list[Device] = []
    for profile, values in sorted(by_profile.items()):
        count = _int(values.get("count"), 0) or 0
        if count < 1:
            continue
        replicas = _int(values.get("replicas"), 1) or 1
        product = values.get("product") or f"{parent}{MIG_INFIX}{profile}"
        resource, sharing = _sharing(
            product, mig_resource(profile), replicas, labels.get(LABEL_SHARING)
        )
        label = f"{MIG_PREFIX}{profile}.product" if "product" in values else LABEL_PRODUCT
        devices.append(Device(
            product=product if "product" in values else labels.get(LABEL_PRODUCT, parent),
            label=label, resource=resource, count=count, memory_mib=_int(values.get("memory")),
            parent=parent, mig_profile=profile, replicas=replicas, sharing=sharing or None,
            compute_slices=_int(values.get("slices.gi")),
        ))  # fmt: skip
    return devices


def node_gpus(name: str, labels: Mapping[str, str]) -> NodeGpus | None:
    """The node's GPUs from its GFD labels; None for a node without a usable product label."""
    product = labels.get(LABEL_PRODUCT)
    if not product:
        return None
    count = _int(labels.get(LABEL_COUNT), -1)
    if count is None or count < 1:
        return None
    major, minor = labels.get(LABEL_MAJOR, ""), labels.get(LABEL_MINOR, "")
    cc = (int(major), int(minor)) if major.isdigit() and minor.isdigit() else None
    parent = _unshared(product).partition(MIG_INFIX)[0]
    devices: list[Device] = []
    if (main := _whole_or_single(labels, product, count)) is not None:
        devices.append(main)
    if labels.get(LABEL_MIG_STRATEGY) == "mixed":
        devices += _mixed(labels, parent)
    return NodeGpus(
        node=name, product=product, count=count, memory_mib=_int(labels.get(LABEL_MEMORY)),
        compute_capability=cc, devices=tuple(devices), labels=tuple(sorted(labels.items())),
    )  # fmt: skip


def gpu_for(product: str, memory_mib: int | None, cc: tuple[int, int] | None) -> GPU | None:
    """The catalog GPU of a GFD product name, else one its labels describe.

    None when too little is known (no memory or compute capability label).
    """
    known = _BY_PRODUCT.get(_unshared(product).lower())
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


def _mig_gpu(device: Device, parent: GPU | None, cc: tuple[int, int] | None) -> GPU | None:
    """The catalog MIG slice of a device, else one its labels describe."""
    profile = device.mig_profile
    assert profile is not None
    if parent is not None and not parent.custom:
        known = _BY_NAME.get(f"{parent.name}-MIG-{profile}".lower())
        if known is not None:
            return known
    capability = parent.compute_capability if parent is not None else cc
    if device.memory_mib is None or capability is None:
        return None
    compute, _ = profile_slices(profile)
    memory_bytes = device.memory_mib * MIB - DRIVER_RESERVED_BYTES
    parent_bytes = parent.memory_bytes if parent is not None else 0
    # A slice holds whole eighths of the memory and of the bandwidth (MIG user guide).
    eighths = round(MEMORY_SLICES * memory_bytes / parent_bytes) if parent_bytes else 0
    fraction = min(max(eighths, 1), MEMORY_SLICES) / MEMORY_SLICES if parent_bytes else 0.0
    return GPU(
        name=f"{device.parent}{MIG_INFIX}{profile}",
        memory_bytes=memory_bytes,
        bandwidth_gbps=parent.bandwidth_gbps * fraction if parent is not None else 0.0,
        compute_capability=capability,
        products=(device.product,),
        custom=True,
        mig_profile=profile,
        parent=parent.name if parent is not None else device.parent,
        compute_fraction=(device.compute_slices or compute) / COMPUTE_SLICES,
        memory_fraction=fraction or 1.0,
    )


def device_gpu(device: Device, node: NodeGpus) -> GPU | None:
    """The GPU a pod that requests one ``device`` gets (None: too little is known)."""
    cc = node.compute_capability
    if device.mig_profile is None:
        gpu = gpu_for(device.product, device.memory_mib, cc)
    else:
        # The node's gpu.memory is the whole GPU's in the mixed strategy, the instance's in single.
        mixed = device.resource.startswith(MIG_PREFIX)
        parent = gpu_for(device.parent, node.memory_mib if mixed else None, cc)
        gpu = _mig_gpu(device, parent, cc)
    if gpu is None:
        return None
    gpu = replace(gpu, resource=device.resource)
    return shared_gpu(gpu, device.replicas, device.sharing)


def pools(
    nodes: Iterable[NodeGpus], node_selector: Mapping[str, str] | None = None
) -> tuple[GpuPool, ...]:
    """Group the devices of the nodes that match ``node_selector`` by kind.

    Smallest memory a pod may use first (a MIG slice, a share of a GPU, a whole GPU), then by
    product (deterministic).
    """
    by_kind: dict[tuple[str, str, str], list[tuple[NodeGpus, Device]]] = {}
    for node in nodes:
        if not node.matches(node_selector):
            continue
        for device in node.offers():
            key = (device.label, device.product, device.resource)
            by_kind.setdefault(key, []).append((node, device))
    out: list[GpuPool] = []
    for (label, product, _), members in by_kind.items():
        memory = Counter(d.memory_mib for _, d in members).most_common(1)[0][0]
        cc = Counter(n.compute_capability for n, _ in members).most_common(1)[0][0]
        node, device = members[0]
        typical = replace(node, compute_capability=cc)
        gpu = device_gpu(replace(device, memory_mib=memory), typical)
        if gpu is None:
            continue
        per_node = min(d.count for _, d in members)
        out.append(GpuPool(product, gpu, len({n.node for n, _ in members}), per_node, label))
    return tuple(sorted(out, key=lambda p: (p.gpu.share_bytes, p.product, p.gpu.resource)))
