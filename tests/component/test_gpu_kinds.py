"""MIG slices and shared GPUs from node labels, against the real operator under kmock.

Nodes carry the labels GPU Feature Discovery writes (tests/unit/test_inventory.py has the same
sets): a spec that names no GPU lands on the smallest MIG slice of a mixed-strategy node that
fits, or, on a time-sliced node, is planned with memory policy budget within its share. The
operator reads only the nodes the spec's nodeSelector selects.
"""

from __future__ import annotations

from typing import Any

import pytest
from conftest import DEPLOYMENTS, eventually, objects
from test_faults import condition, fast
from test_inventory import MIXED, TIME_SLICED
from test_multinode import node, quantized
from test_operator import status

from support.kmockx import ApiServerEmulator

pytestmark = [pytest.mark.kmock(cls=ApiServerEmulator), pytest.mark.asyncio]


def container(dep: dict[str, Any]) -> dict[str, Any]:
    found: dict[str, Any] = dep["spec"]["template"]["spec"]["containers"][0]
    return found


async def test_a_mixed_mig_node_serves_the_model_on_its_smallest_slice_that_fits(
    server: Any,
) -> None:
    await node(server, "mig-1", {**MIXED, "pool": "mig"})
    # A whole H100 elsewhere, outside the spec's nodeSelector: not a candidate.
    await node(server, "h100-1", {**{k: v for k, v in MIXED.items() if "mig" not in k},
                                  "nvidia.com/gpu.replicas": "1", "pool": "whole"})  # fmt: skip
    async with fast(server):
        await quantized(server, {"maxModelLen": 8192, "concurrency": 16,
                                 "nodeSelector": {"pool": "mig"}})  # fmt: skip
        dep = await eventually(lambda: objects(server, DEPLOYMENTS).get("llama"))
        plan = await eventually(lambda: status(server).get("plan"))
        assert plan["gpu"] == "H100-80GB-MIG-3g.40gb"
        assert (plan["migProfile"], plan["gpuResource"], plan["memoryPolicy"]) == (
            "3g.40gb", "nvidia.com/mig-3g.40gb", "fill"
        )  # fmt: skip
        assert (plan["tensorParallelSize"], plan["gpuMemoryUtilization"]) == (1, 0.9)
        assert "skipped: NVIDIA-H100-80GB-HBM3-MIG-1g.10gb" in plan["reasons"][0]
        assert container(dep)["resources"]["limits"] == {"nvidia.com/mig-3g.40gb": "1"}
        assert dep["spec"]["template"]["spec"]["nodeSelector"] == {
            "pool": "mig",
            "nvidia.com/mig-3g.40gb.product": "NVIDIA-H100-80GB-HBM3-MIG-3g.40gb",
        }
        args = container(dep)["args"]
        assert args[args.index("--gpu-memory-utilization") + 1] == "0.90"
        assert "memory policy fill" in condition(server, "Planned")["message"]


async def test_a_time_sliced_node_is_planned_with_budget_within_its_share(server: Any) -> None:
    await node(server, "l4-shared", {**TIME_SLICED, "nvidia.com/gpu.replicas": "2"})
    async with fast(server):
        await quantized(server, {"maxModelLen": 4096, "concurrency": 2})
        dep = await eventually(lambda: objects(server, DEPLOYMENTS).get("llama"))
        plan = await eventually(lambda: status(server).get("plan"))
        assert (plan["gpu"], plan["sharedBy"], plan["sharingStrategy"]) == ("L4", 2, "time-slicing")
        assert plan["memoryPolicy"] == "budget" and plan["gpuMemoryUtilization"] <= 0.5
        assert plan["kvCacheTokens"] >= plan["kvCacheBudgetTokens"] == 2 * 4096
        assert container(dep)["resources"]["limits"] == {"nvidia.com/gpu": "1"}
        selector = dep["spec"]["template"]["spec"]["nodeSelector"]
        assert selector == {"nvidia.com/gpu.product": "NVIDIA-L4-SHARED"}
        message = condition(server, "Planned")["message"]
        assert "on L4 shared by 2 pods (time-slicing)" in message
        assert "memory policy budget" in message
