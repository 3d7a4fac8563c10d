"""The component-test harness works: the emulator alone, then a demo operator end to end."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import aiohttp
import kubernetes_validate
import pytest
from conftest import DEMO_OPERATOR, EVENTS, JOBS, QM, SERVICES, apply_qm, eventually

from support.kmockx import (
    ApiCall,
    ApiServerEmulator,
    create_object,
    declare_resources,
    get_object,
    inject_fault,
    object_url,
    objects,
    operator_calls,
    patch_object,
    patch_status,
    rbac_rules,
    recorded_calls,
)

pytestmark = pytest.mark.kmock(cls=ApiServerEmulator, strict=True)  # emulator errors fail tests

MODEL: dict[str, Any] = {
    "metadata": {"name": "llama", "namespace": "ml"},
    "spec": {"model": "meta-llama/Llama-3.1-8B-Instruct"},
}
QM_BODY: dict[str, Any] = {
    "apiVersion": "quantwise.dev/v1alpha1",
    "kind": "QuantizedModel",
    **MODEL,
}
APPLY = {"Content-Type": "application/apply-patch+yaml"}


@pytest.fixture
def operator_path() -> str:
    return DEMO_OPERATOR


# ----- the emulator alone -----


async def test_server_sets_uid_generation_and_resource_version(kmock: Any) -> None:
    declare_resources(kmock)
    created = await create_object(kmock, QM, dict(QM_BODY))
    meta = created["metadata"]
    assert meta["uid"] and meta["creationTimestamp"] and meta["generation"] == 1
    rv = int(meta["resourceVersion"])

    after_status = await patch_status(kmock, QM, "ml", "llama", {"phase": "Pending"})
    assert after_status["metadata"]["generation"] == 1  # status writes keep the generation
    assert int(after_status["metadata"]["resourceVersion"]) == rv + 1
    assert after_status["status"] == {"phase": "Pending"}

    after_spec = await patch_object(
        kmock, QM, "ml", "llama", {"spec": {"model": "other"}, "status": {"phase": "Hacked"}}
    )
    assert after_spec["metadata"]["generation"] == 2
    assert int(after_spec["metadata"]["resourceVersion"]) == rv + 2
    assert after_spec["metadata"]["uid"] == meta["uid"]
    assert after_spec["status"] == {"phase": "Pending"}  # the main resource does not write status

    same = await patch_object(kmock, QM, "ml", "llama", {"spec": {"model": "other"}})
    assert same["metadata"]["resourceVersion"] == after_spec["metadata"]["resourceVersion"]  # no-op

    stale = {"metadata": {"resourceVersion": str(rv)}, "spec": {"model": "x"}}
    resp = await kmock.patch(
        object_url(QM, "ml", "llama"),
        json=stale,
        headers={"Content-Type": "application/merge-patch+json"},
    )
    assert resp.status == 409
    resp = await kmock.patch(
        object_url(QM, "ml", "llama"),
        json={"spec": {}},
        headers={"Content-Type": "application/strategic-merge-patch+json"},
    )
    assert resp.status == 415  # as a real server answers for custom resources
    assert kmock.errors == []  # API answers (404/409/415) are not emulator errors


async def test_server_side_apply_creates_then_merges(kmock: Any) -> None:
    declare_resources(kmock)
    url = object_url(SERVICES, "ml", "web") + "?fieldManager=quantwise&force=true"
    body = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": "web"},
        "spec": {"ports": [{"port": 80}]},
    }
    resp = await kmock.patch(url, data=json.dumps(body), headers=APPLY)
    assert resp.status == 200, await resp.text()
    svc = get_object(kmock, SERVICES, "ml", "web")
    assert svc is not None and svc["metadata"]["namespace"] == "ml"
    assert svc["metadata"]["managedFields"][0]["manager"] == "quantwise"

    yaml_body = (
        "apiVersion: v1\nkind: Service\nmetadata: {name: web}\nspec: {selector: {app: web}}\n"
    )
    resp = await kmock.patch(url, data=yaml_body, headers=APPLY)
    assert resp.status == 200, await resp.text()
    svc = get_object(kmock, SERVICES, "ml", "web")
    assert svc is not None and svc["spec"] == {"ports": [{"port": 80}], "selector": {"app": "web"}}
    assert len(svc["metadata"]["managedFields"]) == 1

    no_manager = await kmock.patch(object_url(SERVICES, "ml", "web"), data=yaml_body, headers=APPLY)
    assert no_manager.status == 400
    calls = [c for c in recorded_calls(kmock) if c.resource == "services"]
    assert [(c.verb, c.apply, c.upsert) for c in calls] == [
        ("patch", True, True),
        ("patch", True, False),
        ("patch", True, False),
    ]
    assert rbac_rules(calls) == {("", "services"): {"patch", "create"}}


async def test_generate_name_and_conflicts(kmock: Any) -> None:
    declare_resources(kmock)
    event = {
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": {"generateName": "kopf-event-"},
        "reason": "X",
    }
    first = await create_object(
        kmock, EVENTS, {**event, "metadata": {"generateName": "kopf-event-", "namespace": "ml"}}
    )
    second = await create_object(
        kmock, EVENTS, {**event, "metadata": {"generateName": "kopf-event-", "namespace": "ml"}}
    )
    assert first["metadata"]["name"].startswith("kopf-event-")
    assert first["metadata"]["name"] != second["metadata"]["name"]
    resp = await kmock.post(object_url(QM, "ml"), json=QM_BODY)
    assert resp.status < 300
    resp = await kmock.post(object_url(QM, "ml"), json=QM_BODY)
    assert resp.status == 409 and (await resp.json())["reason"] == "AlreadyExists"
    resp = await kmock.get(object_url(QM, "ml", "missing"))
    assert resp.status == 404
    resp = await kmock.get(object_url(QM, "ml", "llama"))
    assert resp.status == 200  # (a 404 before must not stick to kmock's fallback reaction)


async def test_watch_resumes_after_the_listed_resource_version(kmock: Any) -> None:
    declare_resources(kmock)
    await create_object(kmock, QM, dict(QM_BODY))
    listed = await (await kmock.get(object_url(QM, "ml"))).json()
    assert [i["metadata"]["name"] for i in listed["items"]] == ["llama"]
    later = {**QM_BODY, "metadata": {"name": "later", "namespace": "ml"}}
    await create_object(kmock, QM, later)
    rv = listed["metadata"]["resourceVersion"]
    resp = await kmock.get(
        object_url(QM, "ml") + f"?watch=true&resourceVersion={rv}&timeoutSeconds=1"
    )
    events = [json.loads(line) for line in (await resp.text()).splitlines() if line.strip()]
    assert [(e["type"], e["object"]["metadata"]["name"]) for e in events] == [("ADDED", "later")]


async def test_faults_fail_the_next_requests_without_changing_state(kmock: Any) -> None:
    declare_resources(kmock)
    fault = inject_fault(kmock, "create", JOBS, status=429, retry_after=1, times=2)
    job = {"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": "j", "namespace": "ml"}}
    for _ in range(2):
        resp = await kmock.post(object_url(JOBS, "ml"), json=job)
        assert resp.status == 429 and resp.headers["Retry-After"] == "1"
        assert (await resp.json())["details"]["retryAfterSeconds"] == 1
    assert objects(kmock, JOBS) == {} and fault.remaining == 0
    assert (await kmock.post(object_url(JOBS, "ml"), json=job)).status == 200  # (real: 201)

    inject_fault(kmock, "get", JOBS, delay=1.0)  # slower than the client's timeout
    with pytest.raises(asyncio.TimeoutError):
        await kmock.get(object_url(JOBS, "ml", "j"), timeout=aiohttp.ClientTimeout(total=0.2))
    resp = await kmock.get(object_url(JOBS, "ml", "j"))
    assert resp.status == 200


async def test_namespaces_list_and_pod_logs(kmock: Any) -> None:
    declare_resources(kmock)
    await create_object(
        kmock,
        "v1/namespaces",
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "ml"}},
    )
    resp = await kmock.get("/api/v1/namespaces")
    assert resp.status == 200 and [n["metadata"]["name"] for n in (await resp.json())["items"]] == [
        "ml"
    ]
    await create_object(
        kmock,
        "v1/pods",
        {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p", "namespace": "ml"}},
    )
    kmock.pod_logs["ml", "p"] = "hello\n"
    resp = await kmock.get(object_url("v1/pods", "ml", "p", "log"))
    assert resp.status == 200 and await resp.text() == "hello\n"


# ----- the demo operator end to end -----


def qm_status(kmock: Any) -> dict[str, Any]:
    return (get_object(kmock, QM, "ml", "llama") or {}).get("status") or {}


async def test_create_makes_job_service_event_and_status(kopf_runner: Any, kmock: Any) -> None:
    created = await apply_qm(kmock, MODEL)
    await eventually(lambda: qm_status(kmock).get("phase") == "Quantizing", timeout=8)

    (post,) = kmock["post", JOBS]
    job = post.data
    assert job["metadata"]["name"] == "llama-quantize"
    assert job["metadata"]["ownerReferences"] == [{
        "apiVersion": "quantwise.dev/v1alpha1", "kind": "QuantizedModel", "name": "llama",
        "uid": created["metadata"]["uid"], "controller": True, "blockOwnerDeletion": True,
    }]  # fmt: skip
    assert job["spec"]["template"]["spec"]["containers"][0]["args"] == [
        "quantize",
        "--model",
        MODEL["spec"]["model"],
    ]
    kubernetes_validate.validate(job, "1.33.0", strict=False)

    assert qm_status(kmock)["job"] == "llama-quantize"
    svc = get_object(kmock, SERVICES, "ml", "llama")
    assert svc is not None and svc["spec"]["ports"][0]["port"] == 8000
    assert svc["metadata"]["managedFields"][0]["manager"] == "quantwise"
    events = await eventually(
        lambda: [e for e in objects(kmock, EVENTS).values() if e.get("reason") == "JobCreated"],
        timeout=5,
    )
    assert events[0]["involvedObject"]["uid"] == created["metadata"]["uid"]
    assert events[0]["metadata"]["name"].startswith("kopf-event-")


async def test_job_status_change_reaches_the_event_handler(kopf_runner: Any, kmock: Any) -> None:
    await apply_qm(kmock, MODEL)
    await eventually(lambda: qm_status(kmock).get("phase") == "Quantizing", timeout=8)
    await patch_status(kmock, JOBS, "ml", "llama-quantize", {"succeeded": 1})
    await eventually(lambda: qm_status(kmock).get("phase") == "Quantized", timeout=5)


async def test_injected_500_on_job_create_is_retried_by_kopf(kopf_runner: Any, kmock: Any) -> None:
    fault = inject_fault(kmock, "create", JOBS, status=500)
    await apply_qm(kmock, MODEL)
    await eventually(lambda: qm_status(kmock).get("phase") == "Quantizing", timeout=8)
    assert len(fault.hits) == 1
    assert len(kmock["post", JOBS]) == 2  # the failed attempt, then Kopf's retry of the handler
    assert list(objects(kmock, JOBS)) == ["llama-quantize"]


async def test_injected_409_on_apply_retries_the_handler_idempotently(
    kopf_runner: Any, kmock: Any
) -> None:
    fault = inject_fault(
        kmock, "apply", SERVICES, status=409, message="conflict with another manager"
    )
    await apply_qm(kmock, MODEL)
    await eventually(lambda: qm_status(kmock).get("phase") == "Quantizing", timeout=8)
    assert len(fault.hits) == 1
    job_posts = [c for c in recorded_calls(kmock) if c.verb == "create" and c.resource == "jobs"]
    assert len(job_posts) == 2  # the retry's POST got a real 409 (already exists), taken as done
    assert list(objects(kmock, JOBS)) == ["llama-quantize"]
    assert get_object(kmock, SERVICES, "ml", "llama") is not None


async def test_injected_429_on_kopf_status_patch_is_retried(kopf_runner: Any, kmock: Any) -> None:
    fault = inject_fault(kmock, "patch", QM, subresource="status", status=429, retry_after=1)
    await apply_qm(kmock, MODEL)
    await eventually(lambda: qm_status(kmock).get("phase") == "Quantizing", timeout=8)
    assert len(fault.hits) == 1


async def test_recorded_requests_give_the_operator_rbac(kopf_runner: Any, kmock: Any) -> None:
    await apply_qm(kmock, MODEL)
    await eventually(lambda: qm_status(kmock).get("phase") == "Quantizing", timeout=8)
    await eventually(lambda: objects(kmock, EVENTS), timeout=5)
    await patch_status(kmock, JOBS, "ml", "llama-quantize", {"succeeded": 1})
    await eventually(lambda: qm_status(kmock).get("phase") == "Quantized", timeout=5)

    calls = operator_calls(kmock)  # less the test's own requests
    assert ApiCall("watch", "quantwise.dev", "v1alpha1", "quantizedmodels", None, "ml") in [
        ApiCall(*c[:6]) for c in calls
    ]
    assert any(c.apply and c.upsert and c.resource == "services" for c in calls)
    assert rbac_rules(calls) == {
        ("quantwise.dev", "quantizedmodels"): {"list", "watch", "patch"},
        ("quantwise.dev", "quantizedmodels/status"): {"patch"},
        ("batch", "jobs"): {"list", "watch", "create"},
        ("", "services"): {"patch", "create"},
        ("", "events"): {"create"},
    }
