"""The operator's /metrics, scraped while it drives a model from Job to Deployment."""

from __future__ import annotations

import asyncio
import copy
import socket
import urllib.request
from typing import Any

import pytest
from conftest import JOBS, OPERATOR, eventually, objects, run_operator
from prometheus_client.parser import text_string_to_metric_families
from test_operator import BASE, MODEL, finish_job, status
from test_reconcile import report

from quantwise.api.report import dump_report
from support.kmockx import QuantwiseEmulator

pytestmark = [pytest.mark.kmock(cls=QuantwiseEmulator), pytest.mark.asyncio]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


async def scrape(port: int) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    def get() -> str:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as resp:
            return str(resp.read().decode())

    text = await asyncio.to_thread(get)
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


async def scrape_until(
    port: int, key: tuple[str, tuple[tuple[str, str], ...]], value: float, timeout: float = 5
) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Scrape until ``key`` has ``value`` (the metric follows the status patch), or time out."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        samples = await scrape(port)
        if samples.get(key) == value or asyncio.get_running_loop().time() > deadline:
            return samples
        await asyncio.sleep(0.05)


async def test_metrics_follow_the_model(server: Any) -> None:
    port = free_port()
    async with run_operator(
        server, OPERATOR, namespaces=("ml",), reload=("quantwise.handlers", "quantwise.metrics"),
        env={"QUANTWISE_METRICS_PORT": str(port)},
    ):  # fmt: skip
        resp = await server.post(BASE, json=copy.deepcopy(MODEL))
        assert resp.status < 300
        await eventually(lambda: status(server).get("phase") == "Quantizing")
        samples = await scrape_until(port, ("quantwise_models", (("phase", "Quantizing"),)), 1)
        assert samples[("quantwise_models", (("phase", "Quantizing"),))] == 1
        assert samples[("quantwise_models", (("phase", "Ready"),))] == 0
        assert samples[("quantwise_reconcile_duration_seconds_count", ())] >= 1

        (job,) = objects(server, JOBS)
        await finish_job(server, job, dump_report(report()))
        await eventually(lambda: status(server).get("phase") == "Deploying")
        samples = await scrape_until(port, ("quantwise_models", (("phase", "Deploying"),)), 1)
        model = (("name", "llama"), ("namespace", "ml"))
        assert samples[("quantwise_models", (("phase", "Deploying"),))] == 1
        assert samples[("quantwise_plan_tensor_parallel_size", model)] == 1
        plan = status(server)["plan"]
        assert samples[("quantwise_plan_kv_cache_tokens", model)] == plan["kvCacheTokens"]
        assert samples[("quantwise_plan_gpu_memory_utilization", model)] == pytest.approx(
            plan["gpuMemoryUtilization"]
        )
        completed = (("kind", "quantizer"), ("result", "succeeded"))
        assert samples[("quantwise_jobs_completed_total", completed)] == 1
