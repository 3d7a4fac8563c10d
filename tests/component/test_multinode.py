"""Beyond one node, against the real operator: LeaderWorkerSet, GPU inventory, measured KV.

A plan that spans nodes is applied as a LeaderWorkerSet (or, without its CRD, a condition says
how to install it); a spec without a GPU is planned on the nodes GPU Feature Discovery labelled
and pinned to them; once a serving pod is ready, the KV cache vLLM logged goes into status.
"""

from __future__ import annotations

import copy
from typing import Any

import kmock
import pytest
from conftest import DEPLOYMENTS, JOBS, SERVICES, eventually, objects
from test_faults import condition, fast, phase
from test_measured import LOG
from test_operator import MODEL, create, finish_job, status
from test_reconcile import report

from quantwise.api.report import dump_report
from support.kmockx import ApiServerEmulator, create_object, patch_status

pytestmark = [pytest.mark.kmock(cls=ApiServerEmulator), pytest.mark.asyncio]

LWS = kmock.resource("leaderworkerset.x-k8s.io", "v1", "leaderworkersets")
NODES = kmock.resource("", "v1", "nodes")
PODS = kmock.resource("", "v1", "pods")
ACROSS_NODES = {"gpu": {"product": "L4"}, "gpusPerNode": 1, "maxNodes": 4,
                "maxModelLen": 8192, "concurrency": 32}  # fmt: skip


def model(serving: dict[str, Any]) -> dict[str, Any]:
    body = copy.deepcopy(MODEL)
    body["spec"]["serving"] = serving
    return body


def reason(server: Any, kind: str) -> str | None:
    found = [c for c in status(server).get("conditions") or [] if c["type"] == kind]
    return found[0]["reason"] if found else None


async def quantized(server: Any, serving: dict[str, Any]) -> None:
    await create(server, model(serving))
    (job,) = await eventually(lambda: list(objects(server, JOBS)))
    await finish_job(server, job, dump_report(report()))


async def serving_pod(server: Any, name: str, labels: dict[str, str]) -> None:
    """Play the kubelet: a running, ready vLLM pod, and its log."""
    await create_object(server, PODS, {
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": "ml", "labels": labels},
        "status": {"phase": "Running", "containerStatuses": [{"name": "vllm", "ready": True}]},
    })  # fmt: skip
    server.pod_logs["ml", name] = LOG


async def test_a_plan_across_nodes_runs_as_a_leader_worker_set(server: Any) -> None:
    async with fast(server):
        await quantized(server, ACROSS_NODES)
        lws = await eventually(lambda: objects(server, LWS).get("llama"))
        await phase(server, "Deploying")
        plan = status(server)["plan"]
        assert plan["pipelineParallelSize"] > 1
        group = lws["spec"]["leaderWorkerTemplate"]
        assert group["size"] == plan["pipelineParallelSize"]
        leader = group["leaderTemplate"]["spec"]["containers"][0]
        assert "--distributed-executor-backend" in leader["args"]
        assert lws["metadata"]["ownerReferences"][0]["kind"] == "QuantizedModel"
        assert objects(server, DEPLOYMENTS) == {}
        assert (
            objects(server, SERVICES)["llama"]["spec"]["selector"]["quantwise.dev/role"] == "leader"
        )
        assert "LeaderWorkerSet llama" in condition(server, "Deployed")["message"]

        # The LWS controller reports a ready group; the leader pod logged its KV cache.
        labels = group["leaderTemplate"]["metadata"]["labels"]
        await serving_pod(server, "llama-0", labels)
        await patch_status(server, LWS, "ml", "llama",
                           {"replicas": 1, "readyReplicas": 1, "updatedReplicas": 1})  # fmt: skip
        await phase(server, "Ready")
        measured = await eventually(lambda: status(server)["plan"].get("measured"))
        assert measured["pod"] == "llama-0" and measured["kvCacheTokens"] == 356_512
        assert measured["predictedKvCacheTokens"] == plan["kvCacheTokens"]
        assert condition(server, "KVCacheVerified")["type"] == "KVCacheVerified"

        # Back to one node (an H100 holds it): a Deployment, and the LeaderWorkerSet goes.
        resp = await server.patch(
            "/apis/quantwise.dev/v1alpha1/namespaces/ml/quantizedmodels/llama",
            json={
                "spec": {
                    "serving": {"gpu": {"product": "H100-80GB"}, "gpusPerNode": 8, "maxNodes": 4}
                }
            },
            headers={"Content-Type": "application/merge-patch+json"},
        )
        assert resp.status < 300
        await eventually(lambda: "llama" in objects(server, DEPLOYMENTS))
        await eventually(lambda: "llama" not in objects(server, LWS))
        # (The Service's selector loses its role key on a real API server, where server-side
        # apply drops what the manager no longer applies; kmock keeps it: test_render_lws.py.)


async def test_without_the_lws_crd_the_model_says_how_to_install_it(server: Any) -> None:
    for key in [k for k in server.resources if "leaderworkerset" in str(k)]:
        del server.resources[key]
    async with fast(server):
        await quantized(server, ACROSS_NODES)
        await eventually(lambda: reason(server, "Deployed") == "LeaderWorkerSetMissing")
        message = condition(server, "Deployed")["message"]
        assert "https://lws.sigs.k8s.io/docs/installation/" in message
        assert status(server)["phase"] == "Deploying"
        assert objects(server, DEPLOYMENTS) == {}


GFD = {"nvidia.com/gpu.count": "8", "nvidia.com/gpu.memory": "81559",
       "nvidia.com/gpu.compute.major": "9", "nvidia.com/gpu.compute.minor": "0"}  # fmt: skip


async def node(server: Any, name: str, labels: dict[str, str]) -> None:
    await create_object(server, NODES, {
        "apiVersion": "v1", "kind": "Node", "metadata": {"name": name, "labels": labels},
    })  # fmt: skip


async def test_without_a_gpu_the_model_is_planned_on_the_labelled_nodes(server: Any) -> None:
    await node(server, "cpu-1", {"kubernetes.io/os": "linux"})
    await node(server, "l4-1", {"nvidia.com/gpu.product": "NVIDIA-L4", "nvidia.com/gpu.count": "1",
                                "nvidia.com/gpu.memory": "23034"})  # fmt: skip
    await node(server, "h100-1", {"nvidia.com/gpu.product": "NVIDIA-H100-80GB-HBM3", **GFD})
    async with fast(server):
        await quantized(server, {"maxModelLen": 8192, "concurrency": 32})
        dep = await eventually(lambda: objects(server, DEPLOYMENTS).get("llama"))
        plan = await eventually(lambda: status(server).get("plan"))
        assert plan["gpu"] == "H100-80GB"
        assert plan["gpuSource"] == "inventory"
        assert plan["gpuProduct"] == "NVIDIA-H100-80GB-HBM3"
        assert "smallest" in plan["reasons"][0] and "NVIDIA-L4" in plan["reasons"][0]
        selector = dep["spec"]["template"]["spec"]["nodeSelector"]
        assert selector == {"nvidia.com/gpu.product": "NVIDIA-H100-80GB-HBM3"}


async def test_an_unreadable_pod_log_never_blocks_ready(server: Any) -> None:
    """A kubelet that cannot be reached answers 500 to pods/log (seen on a real control plane):
    the model still goes Ready at once, KVCacheVerified says why it is unknown, and the read is
    not retried on every reconcile (once, then after LOG_RETRY_SECONDS)."""
    async with fast(server):
        await quantized(server, {"gpu": {"product": "H100-80GB"}})
        dep = await eventually(lambda: objects(server, DEPLOYMENTS).get("llama"))
        labels = dep["spec"]["template"]["metadata"]["labels"]
        await serving_pod(server, "llama-abc", labels)
        server.pod_log_failures["ml", "llama-abc"] = 500
        await patch_status(server, DEPLOYMENTS, "ml", "llama",
                           {"replicas": 1, "availableReplicas": 1, "updatedReplicas": 1,
                            "observedGeneration": 1})  # fmt: skip
        await phase(server, "Ready")
        verified = await eventually(lambda: condition(server, "KVCacheVerified"))
        assert verified["status"] == "Unknown"
        assert verified["reason"] == "LogUnavailable"
        assert "llama-abc" in verified["message"] and "500" in verified["message"]
        assert condition(server, "Ready")["status"] == "True"
        assert "measured" not in status(server)["plan"]
        reads = [c for c in server.calls if (c.resource, c.subresource) == ("pods", "log")]
        assert len(reads) == 1, reads  # one attempt: no retry storm against a dead kubelet
