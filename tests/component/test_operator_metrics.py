"""The operator's /metrics, scraped while it drives a model from Job to Deployment."""

from __future__ import annotations

import asyncio
import copy
import socket
import urllib.request
from collections import Counter
from typing import Any

import pytest
from conftest import JOBS, OPERATOR, eventually, objects, quiet, run_operator
from prometheus_client.parser import text_string_to_metric_families
from test_operator import BASE, MODEL, finish_job, status
from test_reconcile import report

from quantwise.api.report import dump_report
from support.kmockx import QuantwiseEmulator, operator_calls

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


def by_request(calls: list[Any]) -> Counter[tuple[str, str]]:
    """kmock's record of the Kubernetes client's requests, as (verb, resource) counts."""
    return Counter(
        ("apply" if c.apply else c.verb, f"{c.resource}/{c.subresource}" if c.subresource
         else c.resource)
        for c in calls if c.user_agent.startswith("OpenAPI-Generator")
    )  # fmt: skip


async def test_the_request_counter_counts_what_the_api_server_received(server: Any) -> None:
    """quantwise_api_requests_total agrees with kmock's log of the operator's requests, one by
    one: a Job created, a pod's log read, a Deployment and a Service applied, status patches,
    Events, and a 500 the seam retried (counted twice, with its code)."""
    port = free_port()
    async with run_operator(
        server, OPERATOR, namespaces=("ml",), reload=("quantwise.handlers", "quantwise.metrics"),
        env={"QUANTWISE_METRICS_PORT": str(port)},
    ):  # fmt: skip
        server.inject("create", "jobs", status=500, times=1)
        resp = await server.post(BASE, json=copy.deepcopy(MODEL))
        assert resp.status < 300
        (job,) = await eventually(lambda: list(objects(server, JOBS)))
        await finish_job(server, job, dump_report(report()))
        await eventually(lambda: status(server).get("phase") == "Deploying")
        await quiet(server)
        samples = await scrape(port)
    counted: Counter[tuple[str, str]] = Counter()
    codes: Counter[str] = Counter()
    for (name, labels), value in samples.items():
        if name == "quantwise_api_requests_total":
            label = dict(labels)
            counted[(label["verb"], label["resource"])] += int(value)
            codes[label["code"]] += int(value)
    assert counted == by_request(operator_calls(server))
    assert counted[("create", "jobs")] == 2 and codes["500"] == 1
    assert counted[("apply", "deployments")] == 1 and counted[("apply", "services")] == 1
