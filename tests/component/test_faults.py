"""Faults real clusters have, each against the real operator (KopfRunner + kmock).

Restarts in every phase, Jobs that fail, time out or vanish, bad reports, API errors (409, 429
with Retry-After, 500, timeouts), hand edits of the Deployment, invalid specs that reach the
operator anyway, and deletion while a Job runs. Each asserts the outcome: the status written,
the objects that exist (never a duplicate), the Events posted.
"""

from __future__ import annotations

import asyncio
import copy
from collections.abc import AsyncIterator
from typing import Any

import pytest
from conftest import (
    DEPLOYMENTS,
    EVENTS,
    JOBS,
    OPERATOR,
    QM,
    eventually,
    objects,
    quiet,
    run_operator,
)
from test_operator import BASE, MODEL, create, finish_job, patch_spec, status
from test_reconcile import report

from quantwise.api.report import dump_report
from quantwise.api.spec import QuantizedModelSpec
from quantwise.render.job import quantization_job
from quantwise.render.names import job_name
from support.kmockx import QuantwiseEmulator, inject_fault, operator_calls

pytestmark = [pytest.mark.kmock(cls=QuantwiseEmulator), pytest.mark.asyncio]

FAST = {
    "QUANTWISE_RESYNC_SECONDS": "0.5",
    "QUANTWISE_RETRY_BACKOFF_SECONDS": "0.5",
    "QUANTWISE_API_TIMEOUT_SECONDS": "1",
}


def fast(server: Any) -> Any:
    """The operator with a half-second resync and handler backoff."""
    return run_operator(
        server, OPERATOR, namespaces=("ml",), reload=("quantwise.handlers", "quantwise.k8s"),
        env=FAST,
    )  # fmt: skip


@pytest.fixture
async def op(server: Any) -> AsyncIterator[Any]:
    async with fast(server):
        yield server


def condition(server: Any, kind: str) -> dict[str, Any]:
    return next(c for c in status(server).get("conditions") or [] if c["type"] == kind)


async def phase(server: Any, wanted: str) -> dict[str, Any]:
    st: dict[str, Any] = await eventually(
        lambda: status(server) if status(server).get("phase") == wanted else None
    )
    return st


async def make_available(server: Any, name: str = "llama") -> None:
    resp = await server.patch(
        f"/apis/apps/v1/namespaces/ml/deployments/{name}/status",
        json={"status": {"replicas": 1, "availableReplicas": 1, "updatedReplicas": 1,
                         "observedGeneration": 1}},
        headers={"Content-Type": "application/merge-patch+json"},
    )  # fmt: skip
    assert resp.status < 300


async def reach(server: Any, wanted: str) -> str:
    """Drive a new model to ``wanted``; return its Job's name."""
    await create(server)
    (job,) = await eventually(lambda: list(objects(server, JOBS)))
    await phase(server, "Quantizing")
    if wanted == "Quantizing":
        return str(job)
    if wanted == "Failed":
        await finish_job(server, job, "Traceback: RuntimeError", ok=False)
        await phase(server, "Failed")
        return str(job)
    await finish_job(server, job, dump_report(report()))
    await phase(server, "Deploying")
    if wanted == "Ready":
        await make_available(server)
        await phase(server, "Ready")
    return str(job)


# ----- restarts -----


@pytest.mark.parametrize("wanted", ["Quantizing", "Deploying", "Ready", "Failed"])
async def test_restart_in_each_phase_loses_nothing(server: Any, wanted: str) -> None:
    async with fast(server):
        job = await reach(server, wanted)
        before = copy.deepcopy(status(server))
    async with fast(server):
        await asyncio.sleep(1.5)  # resume, and at least one resync
        after = status(server)
        assert after["phase"] == wanted

        # Nothing lost or re-done: every condition keeps its status and transition time (a
        # reason may move on, JobCreated -> JobRunning, as the operator sees more).
        def transitions(st: dict[str, Any]) -> dict[str, tuple[str, str]]:
            return {c["type"]: (c["status"], c["lastTransitionTime"]) for c in st["conditions"]}

        assert transitions(after) == transitions(before)
        assert after.get("artifact") == before.get("artifact")
        assert after.get("plan") == before.get("plan")
        assert list(objects(server, JOBS)) == [job]  # never a second Job
        assert len(objects(server, DEPLOYMENTS)) == (wanted in ("Deploying", "Ready"))


# ----- Jobs that fail, time out, or vanish -----


async def test_deadline_exceeded_fails_and_the_retry_annotation_runs_it_again(op: Any) -> None:
    server = op
    await create(server)
    (job,) = await eventually(lambda: list(objects(server, JOBS)))
    resp = await server.patch(
        f"/apis/batch/v1/namespaces/ml/jobs/{job}/status",
        json={"status": {"failed": 1, "conditions": [{
            "type": "Failed", "status": "True", "reason": "DeadlineExceeded",
            "message": "Job was active longer than specified deadline"}]}},
        headers={"Content-Type": "application/merge-patch+json"},
    )  # fmt: skip
    assert resp.status < 300
    await phase(server, "Failed")
    assert condition(server, "Quantized")["reason"] == "DeadlineExceeded"
    assert "longer than specified deadline" in condition(server, "Quantized")["message"]
    first_uid = objects(server, JOBS)[job]["metadata"]["uid"]

    resp = await server.patch(
        f"{BASE}/llama", json={"metadata": {"annotations": {"quantwise.dev/retry": "1"}}},
        headers={"Content-Type": "application/merge-patch+json"},
    )  # fmt: skip
    assert resp.status < 300
    await eventually(
        lambda: (
            job in objects(server, JOBS)
            and objects(server, JOBS)[job]["metadata"]["uid"] != first_uid
        )
    )
    await phase(server, "Quantizing")
    assert list(objects(server, JOBS)) == [job]


async def test_a_job_deleted_by_someone_fails_and_a_spec_change_makes_a_new_one(op: Any) -> None:
    server = op
    await create(server)
    (job,) = await eventually(lambda: list(objects(server, JOBS)))
    await phase(server, "Quantizing")
    resp = await server.delete(f"/apis/batch/v1/namespaces/ml/jobs/{job}")
    assert resp.status < 300
    await phase(server, "Failed")
    assert condition(server, "Quantized")["reason"] == "JobDeleted"
    assert "quantwise.dev/retry" in condition(server, "Quantized")["message"]
    await asyncio.sleep(1)  # resyncs pass: still failed, nothing recreated
    assert objects(server, JOBS) == {}

    await patch_spec(server, {"quantization": {"method": "awq", "groupSize": 64}})
    (new,) = await eventually(lambda: list(objects(server, JOBS)))
    assert new != job
    await phase(server, "Quantizing")


@pytest.mark.parametrize(
    ("message", "reason"),
    [
        ("", "ReportMissing"),
        ("x" * 5000, "ReportTooLarge"),
        ('{"version":1,"kind":"QuantizeReport","artifact":{"path":"/a","weig', "ReportTruncated"),
        ('{"version": 1, "kind": "QuantizeReport", "artifact": {}}', "ReportInvalid"),
    ],
)
async def test_bad_reports_fail_with_the_reason(op: Any, message: str, reason: str) -> None:
    server = op
    await create(server)
    (job,) = await eventually(lambda: list(objects(server, JOBS)))
    await finish_job(server, job, message)
    await phase(server, "Failed")
    assert condition(server, "Quantized")["reason"] == reason
    assert not objects(server, DEPLOYMENTS)


async def test_a_report_that_does_not_match_the_spec_is_refused(op: Any) -> None:
    server = op
    await create(server)
    (job,) = await eventually(lambda: list(objects(server, JOBS)))
    await finish_job(server, job, dump_report(report(bits=4, group=64)))  # spec: group 128
    await phase(server, "Failed")
    validated = condition(server, "Validated")
    assert validated["reason"] == "Mismatch"
    assert "group size 64" in validated["message"]
    assert not objects(server, DEPLOYMENTS)


# ----- the API server misbehaves -----


@pytest.mark.parametrize(
    ("verb", "resource", "fault"),
    [
        ("create", JOBS, {"status": 500, "times": 2}),
        ("create", JOBS, {"status": 429, "retry_after": 1}),
        ("patch", QM, {"status": 503, "times": 3}),
        ("apply", DEPLOYMENTS, {"status": 429, "retry_after": 1}),
        ("apply", DEPLOYMENTS, {"status": 500, "times": 2}),
        ("create", JOBS, {"delay": 2.5}),  # longer than the 1 s request timeout
    ],
)
async def test_api_errors_are_retried_without_duplicates(
    op: Any, verb: str, resource: Any, fault: dict[str, Any]
) -> None:
    server = op
    injected = inject_fault(server, verb, resource, **fault)
    await create(server)
    (job,) = await eventually(lambda: list(objects(server, JOBS)), timeout=15)
    await finish_job(server, job, dump_report(report()))
    await eventually(lambda: objects(server, DEPLOYMENTS).get("llama"), timeout=15)
    await phase(server, "Deploying")
    assert injected.hits, "the fault was never hit"
    assert list(objects(server, JOBS)) == [job]
    assert list(objects(server, DEPLOYMENTS)) == ["llama"]


async def test_a_job_that_already_exists_is_adopted_not_duplicated(op: Any) -> None:
    """A crashed operator created the Job but never wrote status."""
    server = op
    spec = QuantizedModelSpec.model_validate(MODEL["spec"])
    name = job_name("llama", spec)
    job = quantization_job("llama", "ml", spec, "quantizer:test")
    resp = await server.post("/apis/batch/v1/namespaces/ml/jobs", json=job)
    assert resp.status < 300
    uid = objects(server, JOBS)[name]["metadata"]["uid"]
    await create(server)
    await phase(server, "Quantizing")
    await asyncio.sleep(1)
    assert list(objects(server, JOBS)) == [name]
    assert objects(server, JOBS)[name]["metadata"]["uid"] == uid
    # It read the Job by its deterministic name first, so it did not even try to create one.
    assert not [c for c in operator_calls(server) if c.verb == "create" and c.resource == "jobs"]
    await finish_job(server, name, dump_report(report()))
    await phase(server, "Deploying")


# ----- hand edits -----


async def test_a_deployment_deleted_by_hand_is_restored(op: Any) -> None:
    server = op
    await reach(server, "Deploying")
    resp = await server.delete("/apis/apps/v1/namespaces/ml/deployments/llama")
    assert resp.status < 300
    restored = await eventually(lambda: objects(server, DEPLOYMENTS).get("llama"), timeout=5)
    assert restored["spec"]["template"]["spec"]["containers"][0]["image"] == "vllm:test"


async def test_a_deployment_edited_by_hand_is_restored(op: Any) -> None:
    server = op
    await reach(server, "Deploying")
    resp = await server.patch(
        "/apis/apps/v1/namespaces/ml/deployments/llama",
        json={"spec": {"template": {"spec": {"containers": [{"name": "vllm", "image": "evil:1",
                                                              "args": ["--max-model-len", "99"]}]}}}},
        headers={"Content-Type": "application/merge-patch+json"},
    )  # fmt: skip
    assert resp.status < 300

    def image() -> str:
        return str(objects(server, DEPLOYMENTS)["llama"]["spec"]["template"]["spec"][
            "containers"][0]["image"])  # fmt: skip

    await eventually(lambda: image() == "vllm:test", timeout=5)
    args = objects(server, DEPLOYMENTS)["llama"]["spec"]["template"]["spec"]["containers"][0][
        "args"
    ]
    assert args[args.index("--max-model-len") + 1] == "8192"


# ----- what the CRD cannot stop -----


async def test_an_invalid_spec_that_reaches_the_operator_fails_once_and_recovers(
    op: Any,
) -> None:
    """An object stored before a stricter CRD (kmock validates nothing, as an old object)."""
    server = op
    body = copy.deepcopy(MODEL)
    body["spec"]["quantization"] = {"method": "awq", "bits": 8}
    await create(server, body)
    await phase(server, "Failed")
    ready = condition(server, "Ready")
    assert ready["reason"] == "InvalidSpec"
    assert "spec.quantization" in ready["message"] and "bits" in ready["message"]
    # The failure is written once (status and its Event); wait until the operator is quiet.
    await quiet(server, seconds=0.5)
    # No retry storm: over a few resyncs, a handful of requests, one Event.
    before = len(operator_calls(server))
    await asyncio.sleep(2)
    during = operator_calls(server)[before:]
    writes = [c for c in during if c.verb in ("create", "patch", "delete", "update")]
    assert writes == [], writes
    assert len(during) <= 20, during
    warnings = [e for e in objects(server, EVENTS).values() if e.get("reason") == "InvalidSpec"]
    assert len(warnings) == 1
    assert objects(server, JOBS) == {}

    await patch_spec(server, {"quantization": {"method": "awq", "bits": 4}})
    await eventually(lambda: objects(server, JOBS))
    await phase(server, "Quantizing")


async def test_deleting_the_model_while_its_job_runs(op: Any) -> None:
    server = op
    job = await reach(server, "Quantizing")
    owner = objects(server, JOBS)[job]["metadata"]["ownerReferences"][0]
    # The garbage collector deletes the Job (and, through the Job, its pods) after the model.
    assert owner["kind"] == "QuantizedModel" and owner["name"] == "llama"
    assert owner["controller"] is True and owner["blockOwnerDeletion"] is True
    assert owner["uid"] == objects(server, QM)["llama"]["metadata"]["uid"]
    resp = await server.delete(f"{BASE}/llama")
    assert resp.status < 300
    # No finalizer: the model is gone at once, the operator need not be running.
    await eventually(lambda: "llama" not in objects(server, QM))
    await asyncio.sleep(1)  # resyncs: nothing recreated for a deleted model
    assert "llama" not in objects(server, QM)
    assert objects(server, DEPLOYMENTS) == {}
