"""The operator end to end against kmock: Job, report, Deployment and Service, status."""

from __future__ import annotations

import copy
from typing import Any

import kubernetes_validate
import pytest
from conftest import DEPLOYMENTS, JOBS, QM, SERVICES, eventually, objects
from test_reconcile import report

from quantwise.api.report import dump_report
from support.kmockx import QuantwiseEmulator

pytestmark = [pytest.mark.kmock(cls=QuantwiseEmulator), pytest.mark.asyncio]
BASE = "/apis/quantwise.dev/v1alpha1/namespaces/ml/quantizedmodels"
MODEL: dict[str, Any] = {
    "apiVersion": "quantwise.dev/v1alpha1",
    "kind": "QuantizedModel",
    "metadata": {"name": "llama", "namespace": "ml"},
    "spec": {
        "source": {"huggingFace": {"repo": "meta-llama/Llama-3.1-8B-Instruct"}},
        "quantization": {"method": "awq"},
        "storage": {"pvc": {"claimName": "models", "path": "quantized"}},
        "serving": {"gpu": {"product": "H100-80GB"}},
    },
}


def status(server: Any) -> dict[str, Any]:
    return objects(server, QM)["llama"].get("status") or {}


async def finish_job(server: Any, job: str, message: str, ok: bool = True) -> None:
    """Play the Job controller and kubelet: a terminated pod with a message, the Job done."""
    pod = {
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": f"{job}-abcde", "namespace": "ml", "labels": {"job-name": job}},
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
    assert "llama" in objects(server, SERVICES)
    st = await eventually(
        lambda: status(server) if status(server).get("phase") == "Deploying" else None
    )
    types = {c["type"]: c["status"] for c in st["conditions"]}
    assert types == {
        "Quantized": "True",
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
