"""The operator end to end against kmock: Job, report, Deployment and Service, status."""

from __future__ import annotations

import copy
from typing import Any

import kubernetes_validate
import pytest
from conftest import DEPLOYMENTS, JOBS, QM, SERVICES, eventually, objects, running
from test_api import BASE as API_BASE
from test_reconcile import report

from quantwise.api.report import dump_report
from support.kmockx import QuantwiseEmulator

pytestmark = [pytest.mark.kmock(cls=QuantwiseEmulator), pytest.mark.asyncio]
BASE = "/apis/quantwise.dev/v1alpha1/namespaces/ml/quantizedmodels"
MODEL: dict[str, Any] = API_BASE  # The same QuantizedModel as the unit tests use.


def status(server: Any) -> dict[str, Any]:
    return objects(server, QM)["llama"].get("status") or {}


async def finish_job(server: Any, job: str, message: str, ok: bool = True) -> None:
    """Play the Job controller and kubelet: a terminated pod with a message, the Job done.

    The pod carries the Job template's labels and ``job-name``, as the Job controller sets them.
    """
    template = objects(server, JOBS)[job]["spec"]["template"]["metadata"].get("labels") or {}
    pod = {
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": f"{job}-abcde", "namespace": "ml",
                     "labels": {**template, "job-name": job}},
        "status": {"phase": "Succeeded" if ok else "Failed", "containerStatuses": [
            {"name": "quantizer", "state": {"terminated": {"exitCode": 0 if ok else 1, "message": message}}}]},
    }  # fmt: skip
    resp = await server.post("/api/v1/namespaces/ml/pods", json=pod)
    assert resp.status < 300, await resp.text()
    condition = {"type": "Complete" if ok else "Failed", "status": "True", "reason": "Completed" if ok else "BackoffLimitExceeded",
                 "message": "" if ok else "Job has reached the specified backoff limit"}  # fmt: skip
    body = {"status": {"succeeded" if ok else "failed": 1, "conditions": [condition]}}
    resp = await server.patch(
        f"/apis/batch/v1/namespaces/ml/jobs/{job}/status", json=body,
        headers={"Content-Type": "application/merge-patch+json"},
    )  # fmt: skip
    assert resp.status < 300, await resp.text()


async def test_model_goes_from_job_to_deployment(operator: Any) -> None:
    server = operator
    resp = await server.post(BASE, json=copy.deepcopy(MODEL))
    assert resp.status < 300, await resp.text()

    jobs = await eventually(lambda: objects(server, JOBS))
    assert len(jobs) == 1
    ((job_name, job),) = jobs.items()
    assert job_name.startswith("llama-quantize-")
    container = job["spec"]["template"]["spec"]["containers"][0]
    assert container["image"] == "quantizer:test"
    assert container["args"][:3] == ["quantize", "--model", "meta-llama/Llama-3.1-8B-Instruct"]
    assert job["metadata"]["ownerReferences"][0]["kind"] == "QuantizedModel"
    kubernetes_validate.validate(job, "1.33.0", strict=False)
    await eventually(lambda: status(server).get("phase") == "Quantizing")
    # No finalizer: deleting the model never waits for the operator; ownerReferences clean up.
    assert not objects(server, QM)["llama"]["metadata"].get("finalizers")

    await finish_job(server, job_name, dump_report(report()))
    deployment = (await eventually(lambda: objects(server, DEPLOYMENTS)))["llama"]
    args = deployment["spec"]["template"]["spec"]["containers"][0]["args"]
    assert args[args.index("--tensor-parallel-size") + 1] == "1"
    assert (
        deployment["spec"]["template"]["spec"]["containers"][0]["resources"]["limits"][
            "nvidia.com/gpu"
        ]
        == "1"
    )
    await eventually(lambda: "llama" in objects(server, SERVICES))
    st = await eventually(
        lambda: status(server) if status(server).get("phase") == "Deploying" else None
    )
    types = {c["type"]: c["status"] for c in st["conditions"]}
    assert types == {
        "Quantized": "True",
        "QualityVerified": "True",
        "Validated": "True",
        "Planned": "True",
        "Deployed": "True",
        "Ready": "False",
    }
    assert st["plan"]["tensorParallelSize"] == 1
    assert st["endpoint"] == "http://llama.ml.svc:8000/v1"
    # Still exactly one Job.
    assert len(objects(server, JOBS)) == 1

    # The Deployment becomes available: Ready.
    resp = await server.patch(
        "/apis/apps/v1/namespaces/ml/deployments/llama/status",
        json={
            "status": {
                "replicas": 1,
                "availableReplicas": 1,
                "updatedReplicas": 1,
                "observedGeneration": 1,
            }
        },
        headers={"Content-Type": "application/merge-patch+json"},
    )
    assert resp.status < 300
    await eventually(lambda: status(server).get("phase") == "Ready")
    # quantwise writes only the status: no Kopf annotation, no finalizer (Argo CD sees no drift).
    metadata = objects(server, QM)["llama"]["metadata"]
    assert (metadata.get("annotations"), metadata.get("finalizers")) == (
        MODEL["metadata"].get("annotations"),
        None,
    )


async def test_failed_job_fails_the_model_once(operator: Any) -> None:
    server = operator
    await server.post(BASE, json=copy.deepcopy(MODEL))
    (job_name,) = await eventually(lambda: list(objects(server, JOBS)))
    await finish_job(server, job_name, "torch.OutOfMemoryError: CUDA out of memory", ok=False)
    st = await eventually(
        lambda: status(server) if status(server).get("phase") == "Failed" else None
    )
    quantized = next(c for c in st["conditions"] if c["type"] == "Quantized")
    assert quantized["reason"] == "BackoffLimitExceeded"
    assert "CUDA out of memory" in quantized["message"]
    assert len(objects(server, JOBS)) == 1


async def create(server: Any, body: dict[str, Any] = MODEL) -> None:
    resp = await server.post(BASE, json=copy.deepcopy(body))
    assert resp.status < 300, await resp.text()


async def patch_spec(server: Any, spec: dict[str, Any]) -> None:
    resp = await server.patch(
        f"{BASE}/llama", json={"metadata": {"generation": 2}, "spec": spec},
        headers={"Content-Type": "application/merge-patch+json"},
    )  # fmt: skip
    assert resp.status < 300, await resp.text()


async def deployed(server: Any) -> str:
    """Create the model, finish its Job; return the Job's name once the Deployment exists."""
    await create(server)
    (job,) = await eventually(lambda: list(objects(server, JOBS)))
    await finish_job(server, job, dump_report(report()))
    await eventually(lambda: objects(server, DEPLOYMENTS).get("llama"))
    return str(job)


def deployment_arg(server: Any, flag: str) -> str:
    args = objects(server, DEPLOYMENTS)["llama"]["spec"]["template"]["spec"]["containers"][0][
        "args"
    ]
    return str(args[args.index(flag) + 1])


async def test_serving_change_rolls_the_deployment_without_a_new_job(operator: Any) -> None:
    server = operator
    await deployed(server)
    assert deployment_arg(server, "--max-model-len") == "8192"
    await patch_spec(
        server,
        {"serving": {"gpu": {"product": "H100-80GB"}, "maxModelLen": 16384, "concurrency": 4}},
    )
    await eventually(lambda: deployment_arg(server, "--max-model-len") == "16384")
    assert len(objects(server, JOBS)) == 1
    await eventually(lambda: status(server).get("observedGeneration") == 2)


async def test_quantization_change_makes_a_second_job_and_keeps_serving(operator: Any) -> None:
    server = operator
    first = await deployed(server)
    await patch_spec(server, {"quantization": {"method": "awq", "groupSize": 64}})
    jobs = await eventually(
        lambda: objects(server, JOBS) if len(objects(server, JOBS)) == 2 else None
    )
    assert first in jobs
    # The old artifact is still served until the new one is ready.
    assert deployment_arg(server, "--model").endswith(first.split("-quantize-")[1])


async def test_bad_report_fails_clearly(operator: Any) -> None:
    server = operator
    await create(server)
    (job,) = await eventually(lambda: list(objects(server, JOBS)))
    await finish_job(server, job, '{"version": 1, "kind": "QuantizeReport", "artifact": {"pa')
    st = await eventually(
        lambda: status(server) if status(server).get("phase") == "Failed" else None
    )
    assert {c["type"]: c["reason"] for c in st["conditions"]}["Quantized"] == "ReportTruncated"
    assert not objects(server, DEPLOYMENTS)


async def test_plan_that_cannot_fit_fails_with_what_to_change(operator: Any) -> None:
    server = operator
    body = copy.deepcopy(MODEL)
    body["spec"]["serving"] = {
        "gpu": {"product": "L4"},
        "gpusPerNode": 1,
        "maxModelLen": 131072,
        "concurrency": 64,
    }
    await create(server, body)
    (job,) = await eventually(lambda: list(objects(server, JOBS)))
    await finish_job(server, job, dump_report(report()))
    st = await eventually(
        lambda: status(server) if status(server).get("phase") == "Failed" else None
    )
    planned = next(c for c in st["conditions"] if c["type"] == "Planned")
    assert planned["reason"] == "DoesNotFit"
    assert "does not fit on L4" in planned["message"]


async def test_unsupported_quantization_for_the_gpu_fails_before_any_job(operator: Any) -> None:
    server = operator
    body = copy.deepcopy(MODEL)
    # vLLM 0.11's compressed-tensors W4A16 needs compute capability 8.0 (7.5 from 0.20): the
    # checkpoint the Job would write could not be served, so no GPU hours are spent on it.
    body["spec"]["serving"] = {
        "gpu": {"product": "T4"}, "vllmVersion": "0.11", "maxModelLen": 4096, "concurrency": 2,
    }  # fmt: skip
    await create(server, body)
    st = await eventually(
        lambda: status(server) if status(server).get("phase") == "Failed" else None
    )
    validated = next(c for c in st["conditions"] if c["type"] == "Validated")
    assert validated["reason"] == "Unsupported"
    assert "not quantized" in validated["message"] and "T4 has 7.5" in validated["message"]
    assert not objects(server, JOBS)
    assert not objects(server, DEPLOYMENTS)


async def test_restart_in_the_middle_resumes_without_a_second_job(server: Any) -> None:
    async with running(server):
        await create(server)
        (job,) = await eventually(lambda: list(objects(server, JOBS)))
        await eventually(lambda: status(server).get("phase") == "Quantizing")
    # The Job finishes while the operator is down.
    await finish_job(server, job, dump_report(report()))
    async with running(server):
        await eventually(lambda: objects(server, DEPLOYMENTS).get("llama"))
        assert list(objects(server, JOBS)) == [job]
        await eventually(lambda: status(server).get("phase") == "Deploying")


async def test_deleting_the_model_is_not_blocked(operator: Any) -> None:
    server = operator
    await create(server)
    await eventually(lambda: objects(server, JOBS))
    resp = await server.delete(f"{BASE}/llama")
    assert resp.status < 300
    await eventually(lambda: "llama" not in objects(server, QM))
    # kmock has no garbage collector; the Job carries the ownerReference a real one follows.
    (job,) = objects(server, JOBS).values()
    assert job["metadata"]["ownerReferences"][0]["name"] == "llama"
