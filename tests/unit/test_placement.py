"""Placement on a MIG slice or a shared GPU, from the spec or from the nodes' labels, and what
the rendered pod asks for."""

from __future__ import annotations

from typing import Any

from test_inventory import MIXED, TIME_SLICED, node
from test_measured import AVAILABLE, log_with
from test_reconcile import cond, deployed_observation, run

from quantwise.planning.inventory import pools
from quantwise.reconcile.core import planned_message


def applied(out: Any, kind: str) -> dict[str, Any]:
    (body,) = [a.body for a in out.actions if a.kind == "apply" and a.body["kind"] == kind]
    return body


def pod_of(out: Any) -> dict[str, Any]:
    spec: dict[str, Any] = applied(out, "Deployment")["spec"]["template"]["spec"]
    return spec


def args_of(out: Any) -> list[str]:
    args: list[str] = pod_of(out)["containers"][0]["args"]
    return args


def flag(out: Any, name: str) -> str:
    args = args_of(out)
    return args[args.index(name) + 1]


def test_a_spec_that_names_a_slice_requests_its_mig_resource() -> None:
    out = run(deployed_observation({"gpu": {"product": "H100-80GB-MIG-3g.40gb"}}))
    plan = out.status.plan
    assert plan is not None
    assert (plan.gpu, plan.tensor_parallel_size, plan.gpu_memory_utilization) == (
        "H100-80GB-MIG-3g.40gb", 1, 0.9
    )  # fmt: skip
    assert (plan.mig_profile, plan.gpu_resource, plan.memory_policy) == (
        "3g.40gb", "nvidia.com/mig-3g.40gb", "fill"
    )  # fmt: skip
    resources = pod_of(out)["containers"][0]["resources"]
    assert resources["limits"] == {"nvidia.com/mig-3g.40gb": "1"}
    assert resources["requests"] == {"nvidia.com/mig-3g.40gb": "1"}
    assert flag(out, "--gpu-memory-utilization") == "0.90"
    assert "nodeSelector" not in pod_of(out)  # the resource finds the nodes
    assert cond(out, "Planned") == ("True", "Planned")


def test_without_a_gpu_a_mig_node_gets_the_smallest_slice_that_fits() -> None:
    inventory = pools([node("mig-1", MIXED)])
    # 16 x 8192 tokens of 8B AWQ (16 GiB of KV cache) do not fit 1g.10gb: 3g.40gb.
    out = run(deployed_observation({"maxModelLen": 8192, "concurrency": 16}, inventory=inventory))
    plan = out.status.plan
    assert plan is not None and plan.gpu == "H100-80GB-MIG-3g.40gb"
    assert (plan.gpu_source, plan.gpu_product) == ("inventory", "NVIDIA-H100-80GB-HBM3-MIG-3g.40gb")
    assert plan.reasons[0].startswith(
        "NVIDIA-H100-80GB-HBM3-MIG-3g.40gb: the smallest of the cluster's GPUs (2 kinds"
    )
    assert (
        "on 1 nodes x 4 MIG 3g.40gb slices, requested as nvidia.com/mig-3g.40gb" in plan.reasons[0]
    )
    assert (
        "skipped: NVIDIA-H100-80GB-HBM3-MIG-1g.10gb (1 nodes x 42 MIG 1g.10gb slices)"
        in (plan.reasons[0])
    )
    pod = pod_of(out)
    assert pod["containers"][0]["resources"]["requests"] == {"nvidia.com/mig-3g.40gb": "1"}
    assert pod["nodeSelector"] == {
        "nvidia.com/mig-3g.40gb.product": "NVIDIA-H100-80GB-HBM3-MIG-3g.40gb"
    }
    # A budget that 1g.10gb holds lands there.
    small = run(deployed_observation({"maxModelLen": 2048, "concurrency": 2}, inventory=inventory))
    assert small.status.plan is not None and small.status.plan.gpu == "H100-80GB-MIG-1g.10gb"
    assert pod_of(small)["containers"][0]["resources"]["limits"] == {"nvidia.com/mig-1g.10gb": "1"}


def test_without_a_gpu_a_time_sliced_node_is_planned_with_budget() -> None:
    two_ways = {**TIME_SLICED, "nvidia.com/gpu.replicas": "2"}
    out = run(deployed_observation({"maxModelLen": 4096, "concurrency": 2},
                                   inventory=pools([node("l4", two_ways)])))  # fmt: skip
    plan = out.status.plan
    assert plan is not None
    assert (plan.gpu, plan.shared_by, plan.sharing_strategy) == ("L4", 2, "time-slicing")
    assert plan.memory_policy == "budget" and plan.tensor_parallel_size == 1
    assert 0.3 < plan.gpu_memory_utilization <= 0.5
    assert plan.kv_cache_tokens >= 2 * 4096
    pod = pod_of(out)
    assert pod["nodeSelector"] == {"nvidia.com/gpu.product": "NVIDIA-L4-SHARED"}
    assert pod["containers"][0]["resources"]["limits"] == {"nvidia.com/gpu": "1"}
    message = next(c.message for c in out.status.conditions or [] if c.type == "Planned")
    assert message == planned_message(plan)
    assert "on L4 shared by 2 pods (time-slicing)" in message
    assert "memory policy budget" in message


def test_a_spec_that_says_the_gpu_is_shared_gets_budget_and_its_share() -> None:
    serving = {"gpu": {"product": "H100-80GB", "sharedBy": 4}, "memoryPolicy": "fill",
               "concurrency": 8}  # fmt: skip
    plan = run(deployed_observation(serving)).status.plan
    assert plan is not None and plan.memory_policy == "budget" and plan.shared_by == 4
    assert 0.15 < plan.gpu_memory_utilization <= 0.25
    assert any("does not apply to a shared GPU" in r for r in plan.reasons)
    # 16 sequences need more than a quarter of the H100: the message says how many pods fit.
    out = run(deployed_observation({**serving, "concurrency": 16}))
    assert cond(out, "Planned") == ("False", "DoesNotFit")
    message = next(c.message for c in out.status.conditions or [] if c.type == "Planned")
    assert "0.25 x 79.1 GiB H100-80GB shared by 4 pods" in message
    assert "- fewer pods on the H100-80GB: a share of 1/3 holds it" in message


def test_gpu_resources_in_the_spec_give_way_to_the_plan() -> None:
    serving = {"gpu": {"product": "H100-80GB-MIG-3g.40gb"},
               "resources": {"limits": {"nvidia.com/gpu": 2, "memory": "32Gi"},
                             "requests": {"cpu": "4", "nvidia.com/mig-1g.10gb": 1}}}  # fmt: skip
    resources = pod_of(run(deployed_observation(serving)))["containers"][0]["resources"]
    assert resources["limits"] == {"memory": "32Gi", "nvidia.com/mig-3g.40gb": "1"}
    assert resources["requests"] == {"cpu": "4", "nvidia.com/mig-3g.40gb": "1"}


def test_a_filled_cache_above_the_budget_is_as_planned() -> None:
    """With fill vLLM holds far more than concurrency x maxModelLen: as planned, not a finding."""
    serving = {"gpu": {"product": "H100-80GB"}, "maxModelLen": 8192, "concurrency": 4}
    first = run(deployed_observation(serving, deployment=AVAILABLE)).status.plan
    assert first is not None and first.kv_cache_tokens > 10 * first.kv_cache_budget_tokens  # type: ignore[operator]
    out = run(deployed_observation(serving, deployment=AVAILABLE,
                                   vllm_log=("p", log_with(first.kv_cache_tokens))))  # fmt: skip
    assert cond(out, "KVCacheVerified") == ("True", "AsPlanned")
    message = next(c.message for c in out.status.conditions or [] if c.type == "KVCacheVerified")
    assert "memory policy fill: the budget is a floor" in message
    assert out.status.plan is not None and out.status.plan.measured is not None
    assert out.status.plan.measured.error_percent == 0.0
