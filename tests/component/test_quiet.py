"""A fleet at rest costs nothing; a change to what quantwise owns is undone from its watch event.

The operator reads only from its watch caches: with the resync every half second, a Ready fleet
makes no request at all (kmock's request log), a hand edit or deletion of a Deployment or a
Service arrives as a watch event and is undone at once (not at the next resync), and undoing it
writes only that object.
"""

from __future__ import annotations

import asyncio
import copy
from typing import Any

import pytest
from conftest import DEPLOYMENTS, JOBS, QM, SERVICES, eventually, objects, quiet
from test_faults import fast, make_available
from test_operator import MODEL, create, finish_job
from test_reconcile import report

from quantwise.api.report import dump_report
from support.kmockx import ApiServerEmulator, operator_calls

pytestmark = [pytest.mark.kmock(cls=ApiServerEmulator), pytest.mark.asyncio]

FLEET = ("llama", "mistral", "qwen")


async def ready_fleet(server: Any) -> None:
    """Three models, each quantized and served, all Ready."""
    for name in FLEET:
        body = copy.deepcopy(MODEL)
        body["metadata"]["name"] = name
        await create(server, body)
    await eventually(lambda: len(objects(server, JOBS)) == len(FLEET))
    for job in list(objects(server, JOBS)):
        await finish_job(server, job, dump_report(report()))
    await eventually(lambda: len(objects(server, DEPLOYMENTS)) == len(FLEET))
    for name in FLEET:
        await make_available(server, name)
    await eventually(lambda: all(
        (objects(server, QM).get(n) or {}).get("status", {}).get("phase") == "Ready"
        for n in FLEET))  # fmt: skip
    await quiet(server, seconds=1.0)


def writes(calls: list[Any]) -> list[Any]:
    return [c for c in calls if c.verb in ("create", "update", "patch", "delete")]


async def test_a_fleet_at_rest_makes_no_request(server: Any) -> None:
    async with fast(server):  # the resync every 0.5 s
        await ready_fleet(server)
        before = len(operator_calls(server))
        await asyncio.sleep(3)  # six resyncs of every model
        assert operator_calls(server)[before:] == []


async def test_a_deleted_service_comes_back_and_nothing_else_is_written(server: Any) -> None:
    async with fast(server):
        await ready_fleet(server)
        before = len(operator_calls(server))
        resp = await server.delete("/api/v1/namespaces/ml/services/mistral")
        assert resp.status < 300
        restored = await eventually(lambda: objects(server, SERVICES).get("mistral"), timeout=5)
        assert restored["spec"]["selector"]["app.kubernetes.io/instance"] == "mistral"
        await quiet(server, seconds=1.0)
        done = writes(operator_calls(server)[before:])
        assert [(c.verb, c.resource, c.name) for c in done] == [("patch", "services", "mistral")]


async def test_a_hand_edited_deployment_is_restored_from_its_watch_event(server: Any) -> None:
    async with fast(server):
        await ready_fleet(server)
        before = len(operator_calls(server))
        resp = await server.patch(
            "/apis/apps/v1/namespaces/ml/deployments/qwen",
            json={"spec": {"replicas": 3}},
            headers={"Content-Type": "application/merge-patch+json"},
        )
        assert resp.status < 300
        await eventually(lambda: objects(server, DEPLOYMENTS)["qwen"]["spec"]["replicas"] == 1,
                         timeout=5)  # fmt: skip
        await quiet(server, seconds=1.0)
        done = writes(operator_calls(server)[before:])
        # The Deployment is put back; qwen's status says it rolls out again (its generation
        # moved twice); the other models are not touched.
        assert [(c.verb, c.resource, c.name) for c in done if c.resource != "quantizedmodels"] == [
            ("patch", "deployments", "qwen")
        ]
        assert {c.name for c in done} == {"qwen"}
        assert {n: objects(server, DEPLOYMENTS)[n]["spec"]["replicas"] for n in FLEET} == {
            n: 1 for n in FLEET
        }
