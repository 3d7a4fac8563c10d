"""A long Job's progress and the quality gate, against the real operator (KopfRunner + kmock).

kmock plays the kubelet: a running Job pod whose log holds the quantizer's progress lines
(served with ``tailLines`` as a kubelet serves them), a log that cannot be read, a finished Job
whose report passed or failed the quality gate.
"""

from __future__ import annotations

import asyncio
import datetime
from typing import Any

import kmock
import pytest
from conftest import DEPLOYMENTS, EVENTS, JOBS, OPERATOR, eventually, objects, run_operator
from test_faults import FAST
from test_operator import create, finish_job, status
from test_quality_gate import gate_failure
from test_reconcile import report

from quantwise.api.progress import ProgressLine, format_line
from quantwise.api.report import dump_report
from support.kmockx import QuantwiseEmulator, create_object, operator_calls, patch_status

pytestmark = [pytest.mark.kmock(cls=QuantwiseEmulator), pytest.mark.asyncio]
PODS = kmock.resource("", "v1", "pods")


def running_fast(server: Any, interval: str = "0.2") -> Any:
    """The operator reading a running Job's progress every ``interval`` seconds."""
    return run_operator(
        server, OPERATOR, namespaces=("ml",), reload=("quantwise.handlers", "quantwise.k8s"),
        env={**FAST, "QUANTWISE_PROGRESS_INTERVAL_SECONDS": interval},
    )  # fmt: skip


def progress_log(step: int, elapsed: int) -> str:
    line = ProgressLine(stage="calibrating", step=step, steps=80, percent=100 * step / 80,
                        elapsed_seconds=elapsed, stage_seconds=elapsed - 40)  # fmt: skip
    noise = "".join(f"INFO - Quantizing 1 module(s): layers.{step}.mlp.proj{i}\n" for i in range(7))
    return f"loading the model\n{noise}{format_line(line)}\n{noise}"


def pod_status(phase: str) -> dict[str, Any]:
    """A Job pod's status: Pending, or Running since a minute ago."""
    started = datetime.datetime.now(datetime.UTC) - datetime.timedelta(seconds=60)
    running = {"running": {"startedAt": started.strftime("%Y-%m-%dT%H:%M:%SZ")}}
    waiting = {"waiting": {"reason": "ContainerCreating"}}
    return {"phase": phase, "containerStatuses": [
        {"name": "quantizer", "ready": phase == "Running",
         "state": running if phase == "Running" else waiting}]}  # fmt: skip


async def job_pod(server: Any, job: str, phase: str = "Running") -> str:
    """Play the Job controller and the kubelet: the Job's pod."""
    template = objects(server, JOBS)[job]["spec"]["template"]["metadata"]["labels"]
    name = f"{job}-x1"
    await create_object(server, PODS, {
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": "ml", "labels": {**template, "job-name": job}},
        "status": pod_status(phase),
    })  # fmt: skip
    return name


def log_reads(server: Any) -> list[Any]:
    return [c for c in operator_calls(server) if (c.resource, c.subresource) == ("pods", "log")]


async def test_a_running_job_shows_its_progress_and_keeps_it_when_the_log_fails(
    server: Any,
) -> None:
    async with running_fast(server):
        await create(server)
        (job,) = await eventually(lambda: list(objects(server, JOBS)))
        pod = await job_pod(server, job, phase="Pending")
        await asyncio.sleep(1)
        assert log_reads(server) == []  # a Job that does not run is not read
        server.pod_logs["ml", pod] = progress_log(step=12, elapsed=60)
        await patch_status(server, PODS, "ml", pod, pod_status("Running"))  # now it runs

        shown = await eventually(lambda: status(server).get("progress"))
        assert status(server)["phase"] == "Quantizing"
        assert (shown["stage"], shown["step"], shown["steps"], shown["percent"]) == (
            "calibrating", 12, 80, 15,
        )  # fmt: skip
        # 20 s for 12 layers: 68 more take about 2 minutes.
        assert shown["message"] == "calibrating 15% ~2m left"
        assert shown["lastProgressTime"].endswith("Z")

        server.pod_logs["ml", pod] = progress_log(step=40, elapsed=100)
        moved = await eventually(
            lambda: (p := status(server).get("progress")) and p["percent"] == 50 and p
        )
        assert moved["message"].startswith("calibrating 50%")

        # The kubelet goes away: the last known progress stays, the model is reconciled on.
        server.pod_log_failures["ml", pod] = 500
        failed_reads = len(log_reads(server))
        await eventually(lambda: len(log_reads(server)) >= failed_reads + 2)
        assert status(server)["progress"] == moved
        assert status(server)["phase"] == "Quantizing"

        await finish_job(server, job, dump_report(report()))
        await eventually(lambda: status(server).get("phase") == "Deploying")
        assert "progress" not in status(server)  # shown only while the Job runs
        # Every read asked for the tail only, not the whole log.
        assert all(c.name == pod for c in log_reads(server))


async def test_the_log_is_read_no_more_often_than_the_interval(server: Any) -> None:
    async with running_fast(server, interval="3600"):
        await create(server)
        (job,) = await eventually(lambda: list(objects(server, JOBS)))
        pod = await job_pod(server, job)
        server.pod_logs["ml", pod] = progress_log(step=12, elapsed=60)
        await eventually(lambda: status(server).get("progress"))
        # The resync wakes the model every half second: the log is not read again.
        await asyncio.sleep(2)
        assert len(log_reads(server)) == 1


async def test_a_failed_quality_gate_fails_the_model_and_deploys_nothing(server: Any) -> None:
    async with running_fast(server):
        await create(server)
        (job,) = await eventually(lambda: list(objects(server, JOBS)))
        message = gate_failure(job).termination_message
        assert message is not None
        await finish_job(server, job, message, ok=False)
        await eventually(lambda: status(server).get("phase") == "Failed")
        conditions = {c["type"]: c for c in status(server)["conditions"]}
        gate = conditions["QualityVerified"]
        assert (gate["status"], gate["reason"]) == ("False", "QualityGateFailed")
        assert "8.2 after quantization vs 6.14" in gate["message"]
        assert conditions["Quantized"]["reason"] == "QualityGateFailed"
        await asyncio.sleep(1)
        assert objects(server, DEPLOYMENTS) == {}
        reasons = [e.get("reason") for e in objects(server, EVENTS).values()]
        assert reasons.count("QualityGateFailed") == 1


async def test_a_passing_report_shows_quality_verified_with_the_numbers(server: Any) -> None:
    async with running_fast(server):
        await create(server)
        (job,) = await eventually(lambda: list(objects(server, JOBS)))
        await finish_job(server, job, dump_report(report()))
        await eventually(lambda: status(server).get("phase") == "Deploying")
        st = status(server)
        assert st["artifact"]["quality"] == {
            "baselinePerplexity": 6.14, "perplexity": 6.32, "increasePercent": 2.93,
            "limitPercent": 15.0, "samples": 128, "tokens": 65_408, "passed": True,
            "durationSeconds": 41.0,
        }  # fmt: skip
        gate = next(c for c in st["conditions"] if c["type"] == "QualityVerified")
        assert (gate["status"], gate["reason"]) == ("True", "WithinLimit")
        assert "6.32 vs 6.14" in gate["message"]
        assert "llama" in objects(server, DEPLOYMENTS)
