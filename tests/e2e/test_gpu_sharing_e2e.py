"""A MIG slice and a shared GPU on a real control plane, from GPU Feature Discovery's labels.

The kubelet stand-in registers a node with the labels and resources GFD and the NVIDIA device
plugin give a mixed-strategy MIG node (``nvidia.com/mig-<profile>.*`` labels, the
``nvidia.com/mig-<profile>`` resources) or a time-sliced one (``nvidia.com/gpu.replicas``,
``-SHARED``). A QuantizedModel that names no GPU is quantized (the tiny model, for real), planned
on the smallest slice that fits or within its share of the shared GPU, and the real scheduler
binds its vLLM pod to the node by the resource it requests.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from harness import ON_OUR_NODES, Cluster, Node, Nodes, condition, create_model, wait_for
from test_loop import NAME, Watcher, manifest, volume

# The labels GFD writes for one MIG profile (internal/lm/resource.go), as tests/unit/test_inventory.
MIG_1G = {
    "nvidia.com/mig.strategy": "mixed", "nvidia.com/gpu.replicas": "0",
    "nvidia.com/mig-1g.10gb.count": "7", "nvidia.com/mig-1g.10gb.memory": "9984",
    "nvidia.com/mig-1g.10gb.product": "NVIDIA-H100-80GB-HBM3-MIG-1g.10gb",
    "nvidia.com/mig-1g.10gb.replicas": "1", "nvidia.com/mig-1g.10gb.slices.gi": "1",
    "nvidia.com/mig-3g.40gb.count": "2", "nvidia.com/mig-3g.40gb.memory": "40320",
    "nvidia.com/mig-3g.40gb.product": "NVIDIA-H100-80GB-HBM3-MIG-3g.40gb",
    "nvidia.com/mig-3g.40gb.replicas": "1", "nvidia.com/mig-3g.40gb.slices.gi": "3",
}  # fmt: skip
TIME_SLICED = {"nvidia.com/gpu.replicas": "2", "nvidia.com/gpu.sharing-strategy": "time-slicing"}


def inventory_manifest(node_name: str) -> dict[str, Any]:
    """The loop's model with no GPU named, pinned (by nodeSelector) to one stand-in node.

    The quantizer runs on the CPU (no GPU requested): a node cut into MIG slices offers no whole
    GPU to the quantization Job.
    """
    body = manifest("awq")
    pin = {**ON_OUR_NODES, "quantwise.dev/e2e-node": node_name}
    del body["spec"]["serving"]["gpu"]
    body["spec"]["serving"]["nodeSelector"] = pin
    body["spec"]["quantizer"] = {"nodeSelector": pin, "gpus": 0}
    return body


def serve_on(
    cluster: Cluster, namespace: str, node: Node, tiny_model: Path, calibration: Path,
    run_operator: Any,
) -> tuple[Watcher, dict[str, Any]]:  # fmt: skip
    """The loop's model, planned from the inventory of ``node`` alone, and its status once Ready."""
    volume(cluster, namespace, node, tiny_model, calibration)
    run_operator(namespace)
    watch = Watcher(cluster, namespace)
    create_model(cluster, namespace, inventory_manifest(node.name))
    return watch, watch.until("Ready", timeout=300)


def served(cluster: Cluster, namespace: str) -> tuple[Any, Any]:
    """The Deployment and its pod, once the scheduler has bound the pod and it is ready."""
    dep = wait_for(lambda: cluster.apps.read_namespaced_deployment(NAME, namespace), 240,
                   "the Deployment")  # fmt: skip
    selector = ",".join(f"{k}={v}" for k, v in dep.spec.selector.match_labels.items())
    pod = wait_for(
        lambda: next((p for p in cluster.core.list_namespaced_pod(namespace, label_selector=selector)
                      .items if p.spec.node_name), None), 120, "the vLLM pod bound to a node",
    )  # fmt: skip
    return dep, pod


def test_a_mig_node_serves_the_model_on_its_smallest_slice(
    cluster: Cluster, namespace: str, nodes: Nodes, tiny_model: Path, calibration: Path,
    run_operator: Any,
) -> None:  # fmt: skip
    node = nodes.start("qw-e2e-mig", labels=MIG_1G,
                       resources={"nvidia.com/mig-1g.10gb": "7", "nvidia.com/mig-3g.40gb": "2"})  # fmt: skip
    try:
        watch, status = serve_on(cluster, namespace, node, tiny_model, calibration, run_operator)
        plan = status["plan"]
        assert plan["gpu"] == "H100-80GB-MIG-1g.10gb" and plan["gpuSource"] == "inventory"
        assert (plan["migProfile"], plan["gpuResource"], plan["memoryPolicy"]) == (
            "1g.10gb", "nvidia.com/mig-1g.10gb", "fill"
        )  # fmt: skip
        assert (plan["tensorParallelSize"], plan["gpuMemoryUtilization"]) == (1, 0.9)
        assert plan["kvCacheTokens"] > plan["kvCacheBudgetTokens"] == 4 * 4096
        dep, pod = served(cluster, namespace)
        container = dep.spec.template.spec.containers[0]
        assert container.resources.limits == {"nvidia.com/mig-1g.10gb": "1"}
        assert dep.spec.template.spec.node_selector["nvidia.com/mig-1g.10gb.product"] == (
            "NVIDIA-H100-80GB-HBM3-MIG-1g.10gb"
        )
        assert pod.spec.node_name == node.name
        args = container.args
        assert args[args.index("--gpu-memory-utilization") + 1] == "0.90"
        planned = condition(status, "Planned")
        assert planned is not None and "H100-80GB-MIG-1g.10gb" in planned["message"]
        # The stand-in's vLLM log says 2,000,000 tokens: above the budget, as fill intends.
        verified = wait_for(
            lambda: condition(watch.look(), "KVCacheVerified"), 30, "KVCacheVerified"
        )
        assert (verified["status"], verified["reason"]) == ("True", "AsPlanned")
        assert "memory policy fill" in verified["message"]
    finally:
        nodes.stop(node)


def test_a_time_sliced_gpu_is_planned_with_budget_within_its_share(
    cluster: Cluster, namespace: str, nodes: Nodes, tiny_model: Path, calibration: Path,
    run_operator: Any,
) -> None:  # fmt: skip
    node = nodes.start("qw-e2e-l4ts", gpus=1, product="NVIDIA-L4-SHARED", memory_mib=23034,
                       cc="8.9", labels=TIME_SLICED, resources={"nvidia.com/gpu": "2"})  # fmt: skip
    try:
        _, status = serve_on(cluster, namespace, node, tiny_model, calibration, run_operator)
        plan = status["plan"]
        assert (plan["gpu"], plan["sharedBy"], plan["sharingStrategy"]) == ("L4", 2, "time-slicing")
        assert plan["memoryPolicy"] == "budget" and plan["tensorParallelSize"] == 1
        assert plan["gpuMemoryUtilization"] <= 0.5
        dep, pod = served(cluster, namespace)
        assert dep.spec.template.spec.containers[0].resources.limits == {"nvidia.com/gpu": "1"}
        assert dep.spec.template.spec.node_selector["nvidia.com/gpu.product"] == "NVIDIA-L4-SHARED"
        assert pod.spec.node_name == node.name
        planned = condition(status, "Planned")
        assert planned is not None and "shared by 2 pods (time-slicing)" in planned["message"]
    finally:
        nodes.stop(node)
