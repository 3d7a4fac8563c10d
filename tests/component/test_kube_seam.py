"""The API seam (quantwise.k8s.Kube) against kmock: idempotent writes, retries, deadlines."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest
from conftest import JOBS, objects
from test_operator import MODEL

from quantwise.api.spec import QuantizedModelSpec
from quantwise.k8s import Kube
from quantwise.render.job import quantization_job
from quantwise.settings import Settings
from support.kmockx import QuantwiseEmulator, inject_fault

pytestmark = [pytest.mark.kmock(cls=QuantwiseEmulator), pytest.mark.asyncio]


def job() -> dict[str, Any]:
    spec = QuantizedModelSpec.model_validate(MODEL["spec"])
    return quantization_job("llama", "ml", spec, "quantizer:test")


async def test_create_twice_and_delete_twice_are_success(server: Any) -> None:
    kube = Kube.from_environment()
    body = job()
    await asyncio.to_thread(kube.create_job, "ml", body)
    await asyncio.to_thread(kube.create_job, "ml", body)  # 409 AlreadyExists: the same Job
    assert list(objects(server, JOBS)) == [body["metadata"]["name"]]
    await asyncio.to_thread(kube.delete_job, "ml", body["metadata"]["name"])
    await asyncio.to_thread(kube.delete_job, "ml", body["metadata"]["name"])  # 404: gone
    assert objects(server, JOBS) == {}


async def test_429_waits_for_retry_after_then_succeeds(server: Any) -> None:
    kube = Kube.from_environment()
    fault = inject_fault(server, "create", JOBS, status=429, retry_after=1, times=2)
    started = time.monotonic()
    await asyncio.to_thread(kube.create_job, "ml", job())
    assert len(fault.hits) == 2
    assert time.monotonic() - started >= 2  # Retry-After honoured, twice
    assert len(objects(server, JOBS)) == 1


async def test_500_is_retried_and_a_persistent_one_is_raised(server: Any) -> None:
    from kubernetes.client.rest import ApiException

    kube = Kube.from_environment()
    inject_fault(server, "delete", JOBS, status=500, times=2)
    assert await asyncio.to_thread(kube.delete_job, "ml", "absent") is None  # 404: success
    inject_fault(server, "delete", JOBS, status=500, times=100)
    with pytest.raises(ApiException) as caught:
        await asyncio.to_thread(kube.delete_job, "ml", "absent")
    assert caught.value.status == 500


async def test_a_hung_request_times_out_and_is_retried(server: Any) -> None:
    kube = Kube.from_environment(Settings.from_environment(api_timeout_seconds=0.5))
    fault = inject_fault(server, "delete", JOBS, delay=2)
    started = time.monotonic()
    assert await asyncio.to_thread(kube.delete_job, "ml", "absent") is None
    assert len(fault.hits) == 1
    assert time.monotonic() - started < 2  # did not wait for the hung answer
