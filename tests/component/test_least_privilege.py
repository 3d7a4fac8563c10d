"""Least privilege, proven: what the operator really calls is exactly what the chart grants.

One model goes through its whole life against the real operator: its Job fails and is retried
(the old Job deleted), the new Job succeeds, the Deployment and Service are applied (created),
become available, are re-applied after a spec change and after a hand edit; the plan then
spans nodes (a LeaderWorkerSet replaces the Deployment, its leader's log is read) and comes
back to one node; on each kind, a Recreate update stops the old server through its scale
subresource; the model is deleted. Every request the operator sent is recorded and turned into
RBAC rules, which must
equal the rules the chart renders from :data:`quantwise.k8s.API_CALLS`: a verb the code uses
and the chart does not grant fails here (it would fail with 403 in a cluster), and so does a
verb the chart grants that nothing uses. No request touches a Secret.
"""

from __future__ import annotations

from typing import Any

import pytest
from conftest import DEPLOYMENTS, JOBS, QM, eventually, objects, quiet
from test_faults import condition, fast, make_available, phase
from test_multinode import ACROSS_NODES, LWS, serving_pod
from test_operator import BASE, create, finish_job, patch_spec, status
from test_reconcile import report

from quantwise.api.report import dump_report
from quantwise.rbac import chart_rules
from support.kmockx import ApiServerEmulator, operator_calls, patch_status, rbac_rules

pytestmark = [pytest.mark.kmock(cls=ApiServerEmulator), pytest.mark.asyncio]


def granted(rules: list[dict[str, Any]]) -> dict[tuple[str, str], set[str]]:
    """(apiGroup, resource) -> verbs of a Role's ``rules``."""
    out: dict[tuple[str, str], set[str]] = {}
    for rule in rules:
        for group in rule["apiGroups"]:
            for resource in rule["resources"]:
                out.setdefault((group, resource), set()).update(rule["verbs"])
    return out


async def merge_patch(server: Any, path: str, body: dict[str, Any]) -> None:
    resp = await server.patch(
        path, json=body, headers={"Content-Type": "application/merge-patch+json"}
    )
    assert resp.status < 300, await resp.text()


async def recreate(server: Any, resource: str, kind: Any, group: int) -> None:
    """A Recreate update: the server is scaled to zero, the new Job runs, the server returns."""
    before = set(objects(server, JOBS))
    await patch_spec(server, {"serving": {"updateStrategy": "Recreate"},
                              "quantization": {"groupSize": group}})  # fmt: skip
    await eventually(lambda: objects(server, kind)["llama"]["spec"]["replicas"] == 0)
    scaled = [c for c in operator_calls(server) if c.subresource == "scale"]
    assert (scaled[-1].verb, scaled[-1].resource) == ("patch", resource)
    job = await eventually(lambda: next((j for j in objects(server, JOBS) if j not in before), 0))
    await finish_job(server, job, dump_report(report(group=group)))
    await eventually(lambda: objects(server, kind)["llama"]["spec"]["replicas"] == 1)


async def test_the_operator_calls_exactly_what_the_chart_grants(server: Any) -> None:
    async with fast(server):
        await create(server)
        (job,) = await eventually(lambda: list(objects(server, JOBS)))
        await finish_job(server, job, "Traceback: RuntimeError: CUDA error", ok=False)
        await phase(server, "Failed")
        await merge_patch(server, f"{BASE}/llama",
                          {"metadata": {"annotations": {"quantwise.dev/retry": "1"}}})  # fmt: skip
        first = objects(server, JOBS)[job]["metadata"]["uid"]
        await eventually(lambda: objects(server, JOBS)[job]["metadata"]["uid"] != first)
        # The garbage collector would remove the old Job's pod; kmock has none.
        resp = await server.delete(f"/api/v1/namespaces/ml/pods/{job}-abcde")
        assert resp.status < 300
        await finish_job(server, job, dump_report(report()))
        await phase(server, "Deploying")
        await make_available(server)
        await phase(server, "Ready")
        await patch_spec(server, {"serving": {"maxModelLen": 4096}})
        await eventually(lambda: condition(server, "Ready")["observedGeneration"] == 2)
        await merge_patch(server, "/apis/apps/v1/namespaces/ml/deployments/llama",
                          {"spec": {"replicas": 5}})  # fmt: skip
        await eventually(
            lambda: objects(server, DEPLOYMENTS)["llama"]["spec"]["replicas"] == 1, timeout=10
        )
        await recreate(server, "deployments", DEPLOYMENTS, group=64)
        # Across nodes: a LeaderWorkerSet replaces the Deployment; its leader's log is read.
        await patch_spec(server, {"serving": ACROSS_NODES})
        lws = await eventually(lambda: objects(server, LWS).get("llama"))
        await eventually(lambda: "llama" not in objects(server, DEPLOYMENTS))
        labels = lws["spec"]["leaderWorkerTemplate"]["leaderTemplate"]["metadata"]["labels"]
        await serving_pod(server, "llama-0", labels)
        await patch_status(server, LWS, "ml", "llama",
                           {"replicas": 1, "readyReplicas": 1, "updatedReplicas": 1})  # fmt: skip
        await eventually(lambda: status(server)["plan"].get("measured"))
        await recreate(server, "leaderworkersets", LWS, group=32)
        # And back on one node: the LeaderWorkerSet goes.
        await patch_spec(server, {"serving": {"gpu": {"product": "H100-80GB"}, "maxNodes": 2}})
        await eventually(lambda: "llama" not in objects(server, LWS))
        resp = await server.delete(f"{BASE}/llama")
        assert resp.status < 300
        await eventually(lambda: "llama" not in objects(server, QM))
        await quiet(server, seconds=1.0)
        calls = operator_calls(server)

    assert [c for c in calls if c.resource == "secrets"] == []
    rules = chart_rules()
    chart = granted(rules["namespaced"] + rules["cluster"])
    used = rbac_rules(calls)
    missing = {k: v - chart.get(k, set()) for k, v in used.items() if v - chart.get(k, set())}
    unused = {k: v - used.get(k, set()) for k, v in chart.items() if v - used.get(k, set())}
    assert missing == {}, f"the operator calls what the chart does not grant: {missing}"
    assert unused == {}, f"the chart grants what the operator never calls: {unused}"
