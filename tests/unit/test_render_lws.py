"""The LeaderWorkerSet for a plan across nodes: 2 x 8 H100 for Llama-3.1-405B in BF16.

vLLM's multi-node recipe with Ray (docs.vllm.ai, "Deployment: LWS"): one group per replica,
the leader runs the Ray head and ``vllm serve`` with TP inside a node and PP across nodes; the
workers join the leader's Ray cluster; the Service selects the leaders.
"""

from __future__ import annotations

import copy
from typing import Any

import kubernetes_validate
import pytest
from test_api import BASE
from test_planner import LLAMA_405B
from test_render import K8S_VERSION, OWNER

from quantwise.api.spec import QuantizedModelSpec
from quantwise.planning.for_spec import plan_spec
from quantwise.planning.weights import UNQUANTIZED, estimate_weights
from quantwise.render.serving import (
    LEADER_SCRIPT,
    deployment,
    leader_worker_set,
    service,
    serving_location,
)


def spec_405b(**serving: Any) -> QuantizedModelSpec:
    body = copy.deepcopy(BASE["spec"])
    body["source"] = {"huggingFace": {"repo": "meta-llama/Llama-3.1-405B-Instruct"}}
    body["quantization"] = {"method": "none"}
    body.pop("storage")
    body["serving"] = {"gpu": {"product": "H100-80GB"}, "maxNodes": 2, "maxModelLen": 8192,
                       "concurrency": 8, **serving}  # fmt: skip
    return QuantizedModelSpec.model_validate(body)


def render(spec: QuantizedModelSpec) -> tuple[dict[str, Any], Any]:
    plan = plan_spec(spec, LLAMA_405B, estimate_weights(LLAMA_405B), UNQUANTIZED).to_status()
    location = serving_location(spec, None)
    return leader_worker_set("llama", "ml", spec, plan, location, owner=OWNER), plan


def as_pod(template: dict[str, Any]) -> dict[str, Any]:
    meta = {"name": "llama-0", "namespace": "ml", **template["metadata"]}
    return {"apiVersion": "v1", "kind": "Pod", "metadata": meta, "spec": template["spec"]}


def test_16_h100_render_a_leader_worker_set_of_2_x_8_with_tp8_pp2() -> None:
    lws, plan = render(spec_405b())
    assert (plan.tensor_parallel_size, plan.pipeline_parallel_size) == (8, 2)
    assert lws["apiVersion"] == "leaderworkerset.x-k8s.io/v1"
    assert lws["kind"] == "LeaderWorkerSet"
    assert lws["metadata"]["ownerReferences"] == [OWNER]
    group = lws["spec"]["leaderWorkerTemplate"]
    assert lws["spec"]["replicas"] == 1
    assert group["size"] == 2  # pods per group: one per node
    assert group["restartPolicy"] == "RecreateGroupOnPodRestart"
    leader = group["leaderTemplate"]["spec"]["containers"][0]
    worker = group["workerTemplate"]["spec"]["containers"][0]
    for container in (leader, worker):
        assert container["resources"]["limits"]["nvidia.com/gpu"] == "8"
        assert container["resources"]["requests"]["nvidia.com/gpu"] == "8"
    args = leader["args"]
    assert args[0] == "meta-llama/Llama-3.1-405B-Instruct"  # `vllm serve MODEL`
    flags = {args[i]: args[i + 1] for i in range(1, len(args) - 1) if args[i].startswith("--")}
    assert flags["--tensor-parallel-size"] == "8"
    assert flags["--pipeline-parallel-size"] == "2"
    assert flags["--distributed-executor-backend"] == "ray"
    assert leader["command"] == ["/bin/bash", "-c", LEADER_SCRIPT, "vllm-leader"]
    assert "ray start --head" in LEADER_SCRIPT and 'exec vllm serve "$@"' in LEADER_SCRIPT
    assert worker["command"][:2] == ["ray", "start"]
    assert "--address=$(LWS_LEADER_ADDRESS):6379" in worker["command"]
    assert "--block" in worker["command"]
    assert "readinessProbe" in leader and "readinessProbe" not in worker
    labels = group["leaderTemplate"]["metadata"]["labels"]
    assert labels["quantwise.dev/role"] == "leader"
    assert group["workerTemplate"]["metadata"]["labels"]["quantwise.dev/role"] == "worker"


@pytest.mark.parametrize("role", ["leaderTemplate", "workerTemplate"])
def test_each_pod_template_is_a_valid_pod(role: str) -> None:
    lws, _ = render(spec_405b())
    pod = as_pod(lws["spec"]["leaderWorkerTemplate"][role])
    kubernetes_validate.validate(pod, K8S_VERSION, strict=True)
    spec = pod["spec"]
    assert spec["securityContext"]["runAsNonRoot"] is True
    assert any(v.get("emptyDir", {}).get("medium") == "Memory" for v in spec["volumes"])


def test_the_service_selects_the_leaders_only() -> None:
    svc = service("llama", "ml", OWNER, leaders_only=True)
    kubernetes_validate.validate(svc, K8S_VERSION, strict=True)
    assert svc["spec"]["selector"]["quantwise.dev/role"] == "leader"
    assert "quantwise.dev/role" not in service("llama", "ml", OWNER)["spec"]["selector"]


def test_the_leader_script_is_the_same_whatever_the_spec() -> None:
    hostile = ["--enable-prefix-caching=$(reboot)", "--seed=`id`"]
    lws, _ = render(spec_405b(extraArgs=hostile))
    leader = lws["spec"]["leaderWorkerTemplate"]["leaderTemplate"]["spec"]["containers"][0]
    assert leader["command"][2] == LEADER_SCRIPT  # values only in args, as "$@"
    assert all(h in leader["args"] for h in hostile)


def test_each_kind_refuses_the_other_plan() -> None:
    spec = spec_405b()
    _, plan = render(spec)
    with pytest.raises(ValueError, match="LeaderWorkerSet"):
        deployment("llama", "ml", spec, plan, serving_location(spec, None))
    one_node = plan.model_copy(update={"pipeline_parallel_size": 1})
    with pytest.raises(ValueError, match="Deployment"):
        leader_worker_set("llama", "ml", spec, one_node, serving_location(spec, None))
