"""The GPU inventory from GPU Feature Discovery's node labels: whole GPUs, MIG slices in both
strategies, GPUs shared by time-slicing or MPS, and the pools a spec may be planned on."""

from __future__ import annotations

from typing import Any

from quantwise.planning.gpus import lookup_gpu
from quantwise.planning.inventory import NodeGpus, node_gpus, pools

H100 = {
    "nvidia.com/gpu.product": "NVIDIA-H100-80GB-HBM3", "nvidia.com/gpu.count": "8",
    "nvidia.com/gpu.memory": "81559", "nvidia.com/gpu.replicas": "1",
    "nvidia.com/gpu.compute.major": "9", "nvidia.com/gpu.compute.minor": "0",
}  # fmt: skip


def mig_labels(profile: str, count: int, memory: int, parent: str = "NVIDIA-H100-80GB-HBM3",
               replicas: int = 1) -> dict[str, str]:  # fmt: skip
    """The labels GFD writes for one profile in the mixed strategy (internal/lm/resource.go)."""
    key = f"nvidia.com/mig-{profile}"
    product = f"{parent}-MIG-{profile}" + ("-SHARED" if replicas > 1 else "")
    return {
        f"{key}.count": str(count), f"{key}.memory": str(memory), f"{key}.product": product,
        f"{key}.replicas": str(replicas), f"{key}.multiprocessors": "16",
        f"{key}.slices.gi": profile[0], f"{key}.slices.ci": profile[0],
        f"{key}.engines.copy": "1",
    }  # fmt: skip


# Eight H100s, every one MIG-enabled (mixed strategy): GFD labels the GPUs with replicas=0.
MIXED: dict[str, str] = {
    **H100, "nvidia.com/gpu.replicas": "0", "nvidia.com/mig.strategy": "mixed",
    **mig_labels("1g.10gb", 42, 9984), **mig_labels("3g.40gb", 4, 40320),
}  # fmt: skip
# Single strategy: every GPU is cut into 3g.40gb; the gpu.* labels describe the instances.
SINGLE = {
    **H100, "nvidia.com/mig.strategy": "single",
    "nvidia.com/gpu.product": "NVIDIA-H100-80GB-HBM3-MIG-3g.40gb", "nvidia.com/gpu.count": "16",
    "nvidia.com/gpu.memory": "40320", "nvidia.com/gpu.slices.gi": "3",
}  # fmt: skip
# One L4 time-sliced four ways (renameByDefault false: the product gains -SHARED).
TIME_SLICED = {
    "nvidia.com/gpu.product": "NVIDIA-L4-SHARED", "nvidia.com/gpu.count": "1",
    "nvidia.com/gpu.memory": "23034", "nvidia.com/gpu.replicas": "4",
    "nvidia.com/gpu.sharing-strategy": "time-slicing",
    "nvidia.com/gpu.compute.major": "8", "nvidia.com/gpu.compute.minor": "9",
}  # fmt: skip


def node(name: str, labels: dict[str, str]) -> NodeGpus:
    found = node_gpus(name, labels)
    assert found is not None
    return found


def only(**fields: Any) -> Any:
    (device,) = [
        d for d in node("n", fields.pop("labels")).offers() if d.mig_profile == fields["mig"]
    ]
    return device


def test_whole_gpus_keep_their_old_reading() -> None:
    (device,) = node("h", H100).offers()
    assert (device.resource, device.count, device.replicas, device.mig_profile) == (
        "nvidia.com/gpu", 8, 1, None
    )  # fmt: skip
    (pool,) = pools([node("h", H100)])
    assert (pool.gpu.name, pool.nodes, pool.gpus_per_node) == ("H100-80GB", 1, 8)
    assert pool.node_selector == {"nvidia.com/gpu.product": "NVIDIA-H100-80GB-HBM3"}
    # A NodeGpus built by hand (no parsed devices) is whole GPUs of its product.
    assert pools([NodeGpus("l4", "NVIDIA-L4", 1, 23034, (8, 9))])[0].gpu.name == "L4"


def test_mixed_strategy_offers_each_profile_as_its_resource() -> None:
    found = node("mig-1", MIXED)
    # replicas=0: every GPU is MIG-enabled, no whole GPU to request.
    assert [(d.mig_profile, d.resource, d.count) for d in found.offers()] == [
        ("1g.10gb", "nvidia.com/mig-1g.10gb", 42), ("3g.40gb", "nvidia.com/mig-3g.40gb", 4),
    ]  # fmt: skip
    small, big = pools([found])
    assert small.gpu == lookup_gpu("H100-80GB-MIG-1g.10gb")
    assert big.gpu == lookup_gpu("H100-80GB-MIG-3g.40gb")
    assert (big.nodes, big.gpus_per_node) == (1, 4)
    assert big.node_selector == {
        "nvidia.com/mig-3g.40gb.product": "NVIDIA-H100-80GB-HBM3-MIG-3g.40gb"
    }
    assert big.describe == "1 nodes x 4 MIG 3g.40gb slices"


def test_mixed_strategy_with_whole_gpus_left_offers_both() -> None:
    partly = {**MIXED, "nvidia.com/gpu.replicas": "1"}
    kinds = [p.gpu.name for p in pools([node("mig-2", partly)])]
    assert kinds == ["H100-80GB-MIG-1g.10gb", "H100-80GB-MIG-3g.40gb", "H100-80GB"]


def test_single_strategy_is_a_slice_requested_as_nvidia_com_gpu() -> None:
    (pool,) = pools([node("single", SINGLE)])
    assert pool.gpu.name == "H100-80GB-MIG-3g.40gb" and pool.gpu.mig_profile == "3g.40gb"
    assert pool.gpu.resource == "nvidia.com/gpu"
    assert pool.gpus_per_node == 16
    assert pool.node_selector == {"nvidia.com/gpu.product": "NVIDIA-H100-80GB-HBM3-MIG-3g.40gb"}
    invalid = {**SINGLE, "nvidia.com/gpu.product": "NVIDIA-H100-80GB-HBM3-MIG-INVALID"}
    assert pools([node("bad", invalid)]) == ()


def test_an_unknown_parent_is_described_by_its_labels() -> None:
    labels = {
        **MIXED, "nvidia.com/gpu.product": "NVIDIA-H100-NVL",
        "nvidia.com/gpu.memory": "95830",
        **mig_labels("1g.12gb", 7, 11264, parent="NVIDIA-H100-NVL"),
    }  # fmt: skip
    pool = next(p for p in pools([node("nvl", labels)]) if p.gpu.mig_profile == "1g.12gb")
    gpu = pool.gpu
    assert gpu.name == "NVIDIA-H100-NVL-MIG-1g.12gb" and gpu.custom
    assert gpu.memory_bytes == 11264 * 1024**2 - int(0.8 * 1024**3)
    assert gpu.memory_fraction == 1 / 8 and gpu.compute_fraction == 1 / 7
    assert gpu.compute_capability == (9, 0) and gpu.bandwidth_gbps == 0.0


def test_time_slicing_is_a_shared_gpu() -> None:
    (pool,) = pools([node("l4-shared", TIME_SLICED)])
    gpu = pool.gpu
    assert (gpu.name, gpu.shared_by, gpu.sharing, gpu.resource) == (
        "L4", 4, "time-slicing", "nvidia.com/gpu"
    )  # fmt: skip
    assert gpu.share_bytes == lookup_gpu("L4").memory_bytes // 4
    assert pool.node_selector == {"nvidia.com/gpu.product": "NVIDIA-L4-SHARED"}
    assert pool.describe == "1 nodes x 1 GPUs shared by 4 pods (time-slicing)"


def test_a_renamed_shared_resource_is_requested_as_gpu_shared() -> None:
    renamed = {**TIME_SLICED, "nvidia.com/gpu.product": "NVIDIA-L4",
               "nvidia.com/gpu.sharing-strategy": "mps"}  # fmt: skip
    (pool,) = pools([node("l4-mps", renamed)])
    assert (pool.gpu.resource, pool.gpu.sharing, pool.gpu.shared_by) == (
        "nvidia.com/gpu.shared", "mps", 4
    )  # fmt: skip


def test_a_shared_mig_slice_is_both() -> None:
    labels = {**MIXED, **mig_labels("1g.10gb", 42, 9984, replicas=2)}
    small = pools([node("mig-shared", labels)])[0]
    assert small.gpu.mig_profile == "1g.10gb" and small.gpu.shared_by == 2
    assert small.gpu.resource == "nvidia.com/mig-1g.10gb"


def test_pools_go_smallest_first_and_keep_to_the_node_selector() -> None:
    nodes = [
        node("h100", {**H100, "pool": "big"}),
        node("mig", {**MIXED, "pool": "mig"}),
        node("l4", {**TIME_SLICED, "pool": "shared"}),
    ]
    order = [(p.gpu.name, p.gpu.shared_by) for p in pools(nodes)]
    # What one pod may use: 5.5 GiB of a shared L4, 9.5 GiB, 39.1 GiB, a whole H100.
    assert order == [("L4", 4), ("H100-80GB-MIG-1g.10gb", 1), ("H100-80GB-MIG-3g.40gb", 1),
                     ("H100-80GB", 1)]  # fmt: skip
    assert [p.gpu.name for p in pools(nodes, {"pool": "big"})] == ["H100-80GB"]
    assert pools(nodes, {"pool": "none"}) == ()


def test_nodes_without_a_usable_product_are_not_gpu_nodes() -> None:
    assert node_gpus("cpu", {"kubernetes.io/os": "linux"}) is None
    assert node_gpus("zero", {**H100, "nvidia.com/gpu.count": "0"}) is None
    assert node_gpus("odd", {**H100, "nvidia.com/gpu.count": "eight"}) is None
