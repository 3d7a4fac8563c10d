"""Updates on a full cluster, against the real operator (KopfRunner + kmock).

A Ready model's quantization changes. Under RollingUpdate its new Job's pod cannot be
scheduled (no free GPU): the model stays Ready and serving, Updating and a Warning Event say
so and what to do. Under Recreate the old Deployment is scaled to zero first (its scale
subresource), the Job runs, and the new Deployment comes with strategy Recreate.
"""

from __future__ import annotations

import copy
from typing import Any

import pytest
from conftest import DEPLOYMENTS, EVENTS, JOBS, PODS, eventually, objects
from test_faults import condition, fast, make_available, phase
from test_operator import MODEL, create, finish_job, patch_spec, status
from test_reconcile import report

from quantwise.api.report import dump_report
from support.kmockx import ApiServerEmulator, create_object, operator_calls

pytestmark = [pytest.mark.kmock(cls=ApiServerEmulator), pytest.mark.asyncio]
NO_GPU = "0/1 nodes are available: 1 Insufficient nvidia.com/gpu. preemption: 0/1 nodes"


async def ready(server: Any, strategy: str) -> str:
    body = copy.deepcopy(MODEL)
    body["spec"]["serving"] = {**body["spec"].get("serving", {}), "updateStrategy": strategy}
    await create(server, body)
    (job,) = await eventually(lambda: list(objects(server, JOBS)))
    await finish_job(server, job, dump_report(report()))
    await eventually(lambda: objects(server, DEPLOYMENTS).get("llama"))
    await make_available(server)
    await phase(server, "Ready")
    return str(job)


async def test_a_rolling_update_with_no_free_gpu_serves_on_and_says_what_to_do(server: Any) -> None:
    async with fast(server):
        first = await ready(server, "RollingUpdate")
        await patch_spec(server, {"quantization": {"method": "awq", "groupSize": 64}})
        second = await eventually(
            lambda: next((j for j in objects(server, JOBS) if j != first), None)
        )
        labels = objects(server, JOBS)[second]["spec"]["template"]["metadata"]["labels"]
        await create_object(server, PODS, {
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": f"{second}-x", "namespace": "ml",
                         "labels": {**labels, "job-name": second}},
            "status": {"phase": "Pending", "conditions": [
                {"type": "PodScheduled", "status": "False", "reason": "Unschedulable",
                 "message": NO_GPU}]},
        })  # fmt: skip
        await eventually(lambda: condition(server, "Updating")["reason"] == "WaitingForGPU")
        assert status(server)["phase"] == "Ready"
        assert condition(server, "Ready")["status"] == "True"
        assert "updateStrategy: Recreate" in condition(server, "Updating")["message"]
        warnings = [e for e in objects(server, EVENTS).values()
                    if e["reason"] == "WaitingForGPU" and e["type"] == "Warning"]  # fmt: skip
        assert len(warnings) == 1
        assert objects(server, DEPLOYMENTS)["llama"]["spec"]["replicas"] == 1  # never taken down


async def test_recreate_frees_the_gpus_then_serves_the_new_artifact(server: Any) -> None:
    async with fast(server):
        first = await ready(server, "Recreate")
        await patch_spec(server, {"quantization": {"method": "awq", "groupSize": 64}})
        await eventually(lambda: objects(server, DEPLOYMENTS)["llama"]["spec"]["replicas"] == 0)
        scaled = [c for c in operator_calls(server) if c.subresource == "scale"]
        assert [(c.verb, c.resource, c.name) for c in scaled] == [("patch", "deployments", "llama")]
        await eventually(lambda: condition(server, "Updating")["reason"] == "Recreating")
        assert condition(server, "Ready")["reason"] == "Recreating"
        second = await eventually(
            lambda: next((j for j in objects(server, JOBS) if j != first), None)
        )
        await finish_job(server, second, dump_report(report(group=64)))
        dep = await eventually(
            lambda: (d := objects(server, DEPLOYMENTS)["llama"])["spec"]["replicas"] == 1 and d
        )
        assert dep["spec"]["strategy"] == {"type": "Recreate"}
        # The status is written after the actions: it may land just after the Deployment.
        await eventually(lambda: status(server)["artifact"]["groupSize"] == 64)
        reasons = [e["reason"] for e in objects(server, EVENTS).values()]
        assert "Recreating" in reasons  # the downtime is in the Events
