"""The GPU catalog: memory, bandwidth and compute capability of the GPUs quantwise plans for.

Names carry no spaces and match case-insensitively (``h100-80gb`` is ``H100-80GB``). A GPU not in
the catalog is described in the spec by its memory, bandwidth and compute capability.

``memory_bytes`` is the total the CUDA driver reports (``torch.cuda.mem_get_info()[1]``), which is
what vLLM multiplies by ``--gpu-memory-utilization`` (vllm/v1/worker/gpu_worker.py,
``requested_memory = total_memory * gpu_memory_utilization``). It is a little below the
marketing size and below ``nvidia-smi``'s ``memory.total``, because the driver reserves memory.
"""

from __future__ import annotations

from dataclasses import dataclass

GIB = 1024**3
MIB = 1024**2


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

    @property
    def memory_gib(self) -> float:
        """Total device memory in GiB."""
        return self.memory_bytes / GIB

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
_BY_KEY = {gpu.name.lower(): gpu for gpu in CATALOG}


class UnknownGPUError(ValueError):
    """A GPU name that is not in the catalog."""


def lookup_gpu(name: str) -> GPU:
    """Return the catalog GPU called ``name`` (case-insensitive), or raise UnknownGPUError."""
    gpu = _BY_KEY.get(name.strip().lower())
    if gpu is None:
        raise UnknownGPUError(
            f"unknown GPU {name!r}: use one of {', '.join(GPU_NAMES)}, "
            "or describe it with memoryGiB, bandwidthGBps and computeCapability"
        )
    return gpu


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
