"""The GPU catalog: memory, bandwidth and compute capability of the GPUs quantwise plans for.

Names carry no spaces and match case-insensitively (``h100-80gb`` is ``H100-80GB``). A GPU not in
the catalog is described in the spec by its memory, bandwidth and compute capability.

A GPU here is what one vLLM pod gets: a whole GPU, a MIG slice of one (``H100-80GB-MIG-3g.40gb``:
its own memory, a share of the SMs and of the memory bandwidth, requested as the device plugin's
``nvidia.com/mig-3g.40gb`` resource in the ``mixed`` MIG strategy), or a GPU shared by time-slicing
or MPS (``shared_by`` pods; each may use its share of the memory).

``memory_bytes`` is the total the CUDA driver reports (``torch.cuda.mem_get_info()[1]``), which is
what vLLM multiplies by ``--gpu-memory-utilization`` (vllm/v1/worker/gpu_worker.py,
``requested_memory = total_memory * gpu_memory_utilization``). It is a little below the
marketing size and below ``nvidia-smi``'s ``memory.total``, because the driver reserves memory.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

GIB = 1024**3
MIB = 1024**2
# The extended resources of the NVIDIA device plugin (k8s-device-plugin, docs/customizing.md): a
# whole GPU, a MIG instance in the mixed strategy, and a time-sliced GPU when the plugin renames
# shared resources (renameByDefault: true).
GPU_RESOURCE = "nvidia.com/gpu"
SHARED_GPU_RESOURCE = "nvidia.com/gpu.shared"
MIG_RESOURCE_PREFIX = "nvidia.com/mig-"


@dataclass(frozen=True)
class GPU:
    """One GPU type: its name and the numbers the planner needs."""

    name: str
    memory_bytes: int
    """Total device memory as CUDA reports it, in bytes."""
    bandwidth_gbps: float
    """Peak memory bandwidth in GB/s (10^9 bytes per second), from the vendor's datasheet."""
    compute_capability: tuple[int, int]
    """CUDA compute capability (major, minor)."""
    products: tuple[str, ...] = ()
    """Values of the ``nvidia.com/gpu.product`` node label that GPU Feature Discovery publishes."""
    custom: bool = False
    mig_profile: str | None = None
    """The MIG profile (``3g.40gb``) when this is a MIG instance of the ``parent`` GPU."""
    parent: str | None = None
    """The catalog name of the whole GPU a MIG slice is cut from."""
    compute_fraction: float = 1.0
    """Share of the whole GPU's SMs (a MIG slice: compute slices / 7)."""
    memory_fraction: float = 1.0
    """Share of the whole GPU's memory and memory bandwidth (a MIG slice: memory slices / 8)."""
    resource: str = GPU_RESOURCE
    """The extended resource a pod requests one of (the NVIDIA device plugin's name)."""
    shared_by: int = 1
    """Pods that share this GPU by time-slicing or MPS (``nvidia.com/gpu.replicas``)."""
    sharing: str | None = None
    """How it is shared: ``time-slicing`` or ``mps`` (``nvidia.com/gpu.sharing-strategy``)."""

    @property
    def memory_gib(self) -> float:
        """Total device memory in GiB."""
        return self.memory_bytes / GIB

    @property
    def is_mig(self) -> bool:
        """True for a MIG instance: tensor parallelism across MIG instances is not possible."""
        return self.mig_profile is not None

    @property
    def shared(self) -> bool:
        """True when other pods share the GPU (time-slicing or MPS)."""
        return self.shared_by > 1

    @property
    def sharing_text(self) -> str:
        """``shared by N pods (time-slicing)``; empty when the pod owns the GPU."""
        if not self.shared:
            return ""
        how = f" ({self.sharing})" if self.sharing else ""
        return f"shared by {self.shared_by} pods{how}"

    @property
    def share_bytes(self) -> int:
        """The memory one pod may use, in bytes: all of it, or its share of a shared GPU."""
        return self.memory_bytes // self.shared_by

    @property
    def compute_capability_str(self) -> str:
        """Compute capability as ``"major.minor"``."""
        return f"{self.compute_capability[0]}.{self.compute_capability[1]}"


def _gib(value: float) -> int:
    return int(value * GIB)


# Bandwidth and compute capability: NVIDIA datasheets and the CUDA GPUs list
# (developer.nvidia.com/cuda-gpus). Memory: the CUDA-visible total as PyTorch out-of-memory
# messages and vLLM's profiling logs print it on current Linux drivers (public issue reports);
# nvidia-smi's memory.total, which GPU Feature Discovery publishes as nvidia.com/gpu.memory, is
# 0.3-0.8 GiB higher. Where no such log was found: memory.total less 0.5 GiB.
CATALOG: tuple[GPU, ...] = (
    # Tesla T4: 16 GB GDDR6, 320 GB/s, Turing (7.5); nvidia-smi 15360 MiB; PyTorch 14.56 GiB on
    # current drivers (14.75 on old ones).
    GPU("T4", _gib(14.56), 320.0, (7, 5), ("Tesla-T4",)),
    # A10G (AWS g5): 24 GB GDDR6, 600 GB/s, Ampere GA102 (8.6); nvidia-smi 23028 MiB.
    GPU("A10G", _gib(21.99), 600.0, (8, 6), ("NVIDIA-A10G",)),
    # L4 datasheet: 24 GB GDDR6, 300 GB/s, Ada (8.9); nvidia-smi 23034 MiB.
    GPU("L4", _gib(22.03), 300.0, (8, 9), ("NVIDIA-L4",)),
    # L40S datasheet: 48 GB GDDR6, 864 GB/s, Ada (8.9); nvidia-smi 46068 MiB; PyTorch 44.42 GiB.
    GPU("L40S", _gib(44.42), 864.0, (8, 9), ("NVIDIA-L40S",)),
    # A100 40GB SXM4 datasheet: 1,555 GB/s, Ampere (8.0); nvidia-smi 40960 MiB; PyTorch 39.50 GiB.
    GPU(
        "A100-40GB", _gib(39.50), 1555.0, (8, 0), ("NVIDIA-A100-SXM4-40GB", "NVIDIA-A100-PCIE-40GB")
    ),
    # A100 80GB SXM4 datasheet: 2,039 GB/s (PCIe: 1,935), Ampere (8.0); PyTorch 79.25 GiB.
    GPU(
        "A100-80GB", _gib(79.25), 2039.0, (8, 0), ("NVIDIA-A100-SXM4-80GB", "NVIDIA-A100-80GB-PCIe")
    ),
    # H100 SXM5: 80 GB HBM3, 3.35 TB/s, Hopper (9.0); nvidia-smi 81559 MiB; vLLM 79.11 GiB.
    GPU("H100-80GB", _gib(79.11), 3350.0, (9, 0), ("NVIDIA-H100-80GB-HBM3", "NVIDIA-H100-PCIe")),
    # H200 SXM datasheet: 141 GB HBM3e, 4.8 TB/s, Hopper (9.0); nvidia-smi 143771 MiB.
    GPU("H200", _gib(139.8), 4800.0, (9, 0), ("NVIDIA-H200", "NVIDIA-H200-NVL")),
    # B200 (DGX B200 datasheet: 1,440 GB, 64 TB/s for 8 GPUs), Blackwell (10.0); PyTorch 178.35 GiB.
    GPU("B200", _gib(178.35), 8000.0, (10, 0), ("NVIDIA-B200",)),
    # GeForce RTX 4090: 24 GB GDDR6X, 1,008 GB/s, Ada (8.9); PyTorch 23.64 GiB.
    GPU("RTX-4090", _gib(23.64), 1008.0, (8, 9), ("NVIDIA-GeForce-RTX-4090",)),
    # GeForce RTX 5070 Ti: 16 GB GDDR7, 896 GB/s, Blackwell consumer (12.0);
    # nvidia-smi 16303 MiB, no PyTorch total found: memory.total less 0.5 GiB.
    GPU("RTX-5070-Ti", _gib(15.47), 896.0, (12, 0), ("NVIDIA-GeForce-RTX-5070-Ti",)),
)

GPU_NAMES: tuple[str, ...] = tuple(gpu.name for gpu in CATALOG)
"""The whole GPUs of the catalog."""

# ----- MIG slices -----

# MIG user guide (docs.nvidia.com/datacenter/tesla/mig-user-guide, "Supported MIG Profiles", v580):
# a profile <g>g.<n>gb holds g of the GPU's 7 compute slices and some of its 8 memory slices; a
# memory slice carries its memory controllers, so a slice gets that share of the bandwidth too
# (Concepts: "GPU memory slice"). Memory slices per profile are the guide's "Fraction of Memory"
# (its A100-40GB table prints 1/8 for 1g.10gb, whose 9.62 GiB are two slices: 2 here).
# Memory is what `nvidia-smi mig -lgip` prints (GiB): A100-40GB from the MIG user guide's own
# example; A100-80GB and H100-80GB from published lgip listings, the lower where drivers differ
# (H100 3g.40gb 39.50 and 39.38, 7g.80gb 79.25 and 79.12); H200 1g.18gb 16.00 from a published
# listing. Where no listing was found (the other H200 profiles, B200) the memory is the profile's
# name scaled as H200 1g.18gb is, 16.00 GiB for "18gb" (0.889), the lowest ratio seen.
MIG_UNMEASURED_GIB_PER_NAMED_GB = 16.00 / 18
# What CUDA reports on a MIG instance (the total vLLM multiplies by --gpu-memory-utilization) is
# below lgip's figure: PyTorch prints 39.25 GiB total on an A100-80GB 3g.40gb (lgip 39.50) and
# 9.5 GiB visible on a 1g.10gb (lgip 9.75).
MIG_CUDA_RESERVED_BYTES = int(0.25 * GIB)
COMPUTE_SLICES = 7
MEMORY_SLICES = 8

_MIG_PROFILES: dict[str, tuple[tuple[str, int, float | None], ...]] = {
    # (profile, memory slices, lgip GiB or None when estimated from the name)
    "A100-40GB": (("1g.5gb", 1, 4.75), ("1g.10gb", 2, 9.62), ("2g.10gb", 2, 9.62),
                  ("3g.20gb", 4, 19.50), ("4g.20gb", 4, 19.50), ("7g.40gb", 8, 39.25)),
    "A100-80GB": (("1g.10gb", 1, 9.75), ("1g.20gb", 2, 19.62), ("2g.20gb", 2, 19.62),
                  ("3g.40gb", 4, 39.50), ("4g.40gb", 4, 39.50), ("7g.80gb", 8, 79.25)),
    "H100-80GB": (("1g.10gb", 1, 9.75), ("1g.20gb", 2, 19.62), ("2g.20gb", 2, 19.62),
                  ("3g.40gb", 4, 39.38), ("4g.40gb", 4, 39.38), ("7g.80gb", 8, 79.12)),
    "H200": (("1g.18gb", 1, 16.00), ("1g.35gb", 2, None), ("2g.35gb", 2, None),
             ("3g.71gb", 4, None), ("4g.71gb", 4, None), ("7g.141gb", 8, None)),
    "B200": (("1g.23gb", 1, None), ("1g.45gb", 2, None), ("2g.45gb", 2, None),
             ("3g.90gb", 4, None), ("4g.90gb", 4, None), ("7g.180gb", 8, None)),
}  # fmt: skip


def mig_resource(profile: str) -> str:
    """The device plugin's resource for a MIG profile in the mixed strategy."""
    return f"{MIG_RESOURCE_PREFIX}{profile}"


def profile_slices(profile: str) -> tuple[int, float]:
    """(compute slices, memory in GB as the name says) of a profile name such as ``3g.40gb``."""
    compute, _, memory = profile.partition("g.")
    if not compute.isdigit() or not memory.endswith("gb"):
        raise ValueError(f"MIG profile {profile!r} is not of the form <g>g.<n>gb, e.g. 3g.40gb")
    return int(compute), float(memory.removesuffix("gb"))


def mig_slice(parent: GPU, profile: str, memory_slices: int, lgip_gib: float | None = None) -> GPU:
    """The MIG instance ``profile`` of ``parent``: its memory as CUDA reports it, its shares."""
    compute, named_gb = profile_slices(profile)
    lgip = lgip_gib if lgip_gib is not None else named_gb * MIG_UNMEASURED_GIB_PER_NAMED_GB
    memory_fraction = memory_slices / MEMORY_SLICES
    return GPU(
        name=f"{parent.name}-MIG-{profile}",
        memory_bytes=int(lgip * GIB) - MIG_CUDA_RESERVED_BYTES,
        bandwidth_gbps=parent.bandwidth_gbps * memory_fraction,
        compute_capability=parent.compute_capability,
        # GPU Feature Discovery's product label under the single MIG strategy.
        products=tuple(f"{product}-MIG-{profile}" for product in parent.products),
        custom=parent.custom,
        mig_profile=profile,
        parent=parent.name,
        compute_fraction=compute / COMPUTE_SLICES,
        memory_fraction=memory_fraction,
        resource=mig_resource(profile),
    )


_WHOLE = {gpu.name: gpu for gpu in CATALOG}
MIG_CATALOG: tuple[GPU, ...] = tuple(
    mig_slice(_WHOLE[parent], profile, slices, lgip)
    for parent, profiles in _MIG_PROFILES.items()
    for profile, slices, lgip in profiles
)
MIG_NAMES: tuple[str, ...] = tuple(gpu.name for gpu in MIG_CATALOG)
"""The MIG slices of the catalog, ``<GPU>-MIG-<profile>``."""
ALL_GPUS: tuple[GPU, ...] = CATALOG + MIG_CATALOG
_BY_KEY = {gpu.name.lower(): gpu for gpu in ALL_GPUS}


def mig_slices_of(parent: str) -> tuple[GPU, ...]:
    """The catalog's MIG slices of the whole GPU ``parent``, smallest first."""
    return tuple(
        sorted((g for g in MIG_CATALOG if g.parent == parent), key=lambda g: g.memory_bytes)
    )


def mig_catalog_text() -> str:
    """The MIG slices in words: ``A100-40GB-MIG-{1g.5gb, ...}; ...``."""
    return "; ".join(
        f"{parent}-MIG-{{{', '.join(p for p, _, _ in profiles)}}}"
        for parent, profiles in _MIG_PROFILES.items()
    )


class UnknownGPUError(ValueError):
    """A GPU name that is not in the catalog."""


def lookup_gpu(name: str) -> GPU:
    """Return the catalog GPU or MIG slice called ``name`` (case-insensitive).

    Raise UnknownGPUError for a name not in the catalog.
    """
    gpu = _BY_KEY.get(name.strip().lower())
    if gpu is None:
        raise UnknownGPUError(
            f"unknown GPU {name!r}: use one of {', '.join(GPU_NAMES)}, a MIG slice "
            f"({mig_catalog_text()}), or describe it with memoryGiB, bandwidthGBps and "
            "computeCapability"
        )
    return gpu


def shared_gpu(gpu: GPU, replicas: int, sharing: str | None = None) -> GPU:
    """``gpu`` shared by ``replicas`` pods: one pod may use its share.

    ``sharing`` is how, when known: ``time-slicing`` or ``mps``.
    """
    if replicas < 1:
        raise ValueError(f"a GPU is shared by at least 1 pod, got {replicas}")
    if replicas == 1:
        return replace(gpu, shared_by=1, sharing=None)
    return replace(gpu, shared_by=replicas, sharing=sharing)


def parse_compute_capability(value: str) -> tuple[int, int]:
    """Parse ``"8.9"`` into ``(8, 9)``; raise ValueError on anything else."""
    major, sep, minor = value.strip().partition(".")
    if not sep or not major.isdigit() or not minor.isdigit():
        raise ValueError(f"compute capability {value!r} is not of the form MAJOR.MINOR, e.g. 8.9")
    return int(major), int(minor)


def custom_gpu(
    memory_gib: float, bandwidth_gbps: float, compute_capability: str, name: str = "custom"
) -> GPU:
    """Return a GPU described by its total memory (GiB), bandwidth (GB/s) and capability."""
    if memory_gib <= 0:
        raise ValueError(f"memoryGiB must be positive, got {memory_gib}")
    if bandwidth_gbps <= 0:
        raise ValueError(f"bandwidthGBps must be positive, got {bandwidth_gbps}")
    return GPU(
        name=name,
        memory_bytes=int(memory_gib * GIB),
        bandwidth_gbps=bandwidth_gbps,
        compute_capability=parse_compute_capability(compute_capability),
        custom=True,
    )
