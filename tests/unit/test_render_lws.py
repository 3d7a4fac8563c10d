"""The LeaderWorkerSet for a plan across nodes: 2 x 8 H100 for Llama-3.1-405B in BF16.

One group per replica, TP inside a node and PP across nodes, the Service on the leaders. From
vLLM 0.20 every pod runs ``vllm serve --nnodes ... --node-rank`` (workers ``--headless``);
before, the vLLM docs' Ray recipe: the leader runs the Ray head and ``vllm serve``, the workers
join its Ray cluster.
"""

from __future__ import annotations

import copy
from typing import Any

import kubernetes_validate
import pytest
from test_api import BASE
from test_planner import LLAMA_405B
from test_render import K8S_VERSION, OWNER

from quantwise.api.sizing import plan_spec
from quantwise.api.spec import QuantizedModelSpec
from quantwise.api.status import PlanStatus
from quantwise.planning.weights import UNQUANTIZED, estimate_weights
from quantwise.render.serving import (
    LEADER_SCRIPT,
    MASTER_PORT,
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
    plan = PlanStatus.from_plan(
        plan_spec(spec, LLAMA_405B, estimate_weights(LLAMA_405B), UNQUANTIZED)
    )
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
    # vLLM 0.33 (the default image): its own launcher, no Ray and no shell.
    assert leader["command"] == worker["command"] == ["vllm", "serve"]
    assert flags["--distributed-executor-backend"] == "mp"
    assert (flags["--nnodes"], flags["--node-rank"]) == ("2", "0")
    assert flags["--master-addr"] == "$(LWS_LEADER_ADDRESS)"
    assert flags["--master-port"] == str(MASTER_PORT)
    assert {"name": "dist", "containerPort": MASTER_PORT, "protocol": "TCP"} in leader["ports"]
    wargs = worker["args"]
    wflags = {wargs[i]: wargs[i + 1] for i in range(1, len(wargs) - 1) if wargs[i].startswith("--")}
    assert wargs[0] == args[0] and wargs[-1] == "--headless"
    assert wflags["--node-rank"] == "$(LWS_WORKER_INDEX)"  # set by LWS, expanded by the kubelet
    assert (wflags["--nnodes"], wflags["--master-addr"]) == ("2", "$(LWS_LEADER_ADDRESS)")
    assert wflags["--tensor-parallel-size"] == "8" and wflags["--pipeline-parallel-size"] == "2"
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


def test_before_vllm_0_20_the_leader_runs_a_ray_head_and_the_workers_join_it() -> None:
    lws, _ = render(spec_405b(vllmVersion="0.11"))
    group = lws["spec"]["leaderWorkerTemplate"]
    leader = group["leaderTemplate"]["spec"]["containers"][0]
    worker = group["workerTemplate"]["spec"]["containers"][0]
    assert leader["command"] == ["/bin/bash", "-c", LEADER_SCRIPT, "vllm-leader"]
    assert "ray start --head" in LEADER_SCRIPT and 'exec vllm serve "$@"' in LEADER_SCRIPT
    assert leader["args"][-2:] == ["--distributed-executor-backend", "ray"]
    assert worker["command"][:2] == ["ray", "start"]
    assert "--address=$(LWS_LEADER_ADDRESS):6379" in worker["command"]
    assert "--block" in worker["command"]
    kubernetes_validate.validate(as_pod(group["leaderTemplate"]), K8S_VERSION, strict=True)


@pytest.mark.parametrize("version", ["0.11", "0.33"])
def test_spec_values_never_reach_a_shell(version: str) -> None:
    hostile = ["--enable-prefix-caching=$(reboot)", "--seed=`id`"]
    lws, _ = render(spec_405b(extraArgs=hostile, vllmVersion=version))
    for role in ("leaderTemplate", "workerTemplate"):
        container = lws["spec"]["leaderWorkerTemplate"][role]["spec"]["containers"][0]
        command = container["command"]
        # The only shell is the fixed Ray leader script; values come after it, as "$@".
        assert command in (
            ["vllm", "serve"],
            ["/bin/bash", "-c", LEADER_SCRIPT, "vllm-leader"],
        ) or (command[:2] == ["ray", "start"] and not any(h in command for h in hostile))
    leader = lws["spec"]["leaderWorkerTemplate"]["leaderTemplate"]["spec"]["containers"][0]
    assert all(h in leader["args"] for h in hostile)


def test_each_kind_refuses_the_other_plan() -> None:
    spec = spec_405b()
    _, plan = render(spec)
    with pytest.raises(ValueError, match="LeaderWorkerSet"):
        deployment("llama", "ml", spec, plan, serving_location(spec, None))
    one_node = plan.model_copy(update={"pipeline_parallel_size": 1})
    with pytest.raises(ValueError, match="Deployment"):
        leader_worker_set("llama", "ml", spec, one_node, serving_location(spec, None))


@pytest.mark.parametrize("vllm", ["0.11", "0.33"])
@pytest.mark.parametrize("revision", ["main", "v2"])
def test_every_flag_the_renderer_emits_is_one_extra_args_may_not_set(
    vllm: str, revision: str
) -> None:
    """The admission guard is the renderer's own flag table: each ``-``/``--`` argument of every
    vLLM container (Deployment, LWS leader and workers, Ray and mp launchers, a revision) is a
    planned flag, so ``spec.serving.extraArgs`` can never set one of them again."""
    from quantwise.vllm import planned_flag

    one = spec_405b(vllmVersion=vllm)
    body = one.model_dump(by_alias=True, exclude_none=True)
    body["source"]["huggingFace"]["revision"] = revision
    spec = QuantizedModelSpec.model_validate(body)
    lws, _ = render(spec)
    group = lws["spec"]["leaderWorkerTemplate"]
    containers = [
        group["leaderTemplate"]["spec"]["containers"][0],
        group["workerTemplate"]["spec"]["containers"][0],
    ]
    small = QuantizedModelSpec.model_validate(
        {**body, "serving": {**body["serving"], "maxNodes": 1, "gpu": {"product": "B200"}}}
    )
    plan = PlanStatus.from_plan(
        plan_spec(small, LLAMA_405B, estimate_weights(LLAMA_405B), UNQUANTIZED)
    )
    containers.append(
        deployment("llama", "ml", small, plan, serving_location(small, None))["spec"]["template"][
            "spec"
        ]["containers"][0]
    )
    emitted = {
        a.split("=", 1)[0]
        for c in containers
        if c["command"][0] == "vllm" or "vllm serve" in " ".join(c["command"])
        for a in c.get("args") or []
        if a.startswith("-")
    }
    assert {"--tensor-parallel-size", "--max-model-len"} <= emitted
    assert ("--revision" in emitted) == (revision != "main")
    assert ("--headless" in emitted) == (vllm == "0.33")
    assert [a for a in sorted(emitted) if planned_flag(a) is None] == []
