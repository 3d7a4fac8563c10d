"""Run the operator under kopf.testing.KopfRunner against kmock."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import kmock
import pytest
from kopf.testing import KopfRunner

from support.kmockx import QuantwiseEmulator, declare

OPERATOR = str(Path(__file__).with_name("_operator.py"))
QM = kmock.resource("quantwise.dev", "v1alpha1", "quantizedmodels")
JOBS = kmock.resource("batch", "v1", "jobs")
PODS = kmock.resource("", "v1", "pods")
DEPLOYMENTS = kmock.resource("apps", "v1", "deployments")
SERVICES = kmock.resource("", "v1", "services")


def objects(server: Any, resource: Any) -> dict[str, dict[str, Any]]:
    """name -> body of the live objects of ``resource``."""
    return {
        name: obj.raw
        for (res, _ns, name), obj in list(server.objects.items())
        if res == resource and not obj.deleted
    }


async def eventually(check: Callable[[], Any], timeout: float = 20.0) -> Any:
    """Poll ``check`` until it returns something truthy (or raise after ``timeout`` seconds)."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        with contextlib.suppress(KeyError, IndexError, TypeError):
            result = check()
            if result:
                return result
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"timed out waiting for {check}")
        await asyncio.sleep(0.1)


@contextlib.asynccontextmanager
async def running(server: Any) -> AsyncIterator[KopfRunner]:
    """The operator running against ``server`` for the duration of the block."""
    runner = KopfRunner(["run", "--standalone", "--namespace", "ml", "--verbose", OPERATOR])
    watches_before = len(list(server[server.action.WATCH, QM]))
    await asyncio.to_thread(runner.__enter__)
    try:
        # Objects created before Kopf's first watch would arrive twice (TESTING.md): wait for it.
        await eventually(lambda: len(list(server[server.action.WATCH, QM])) > watches_before)
        yield runner
    finally:
        await asyncio.to_thread(runner.__exit__, None, None, None)
    if runner.exception is not None and not isinstance(runner.exception, SystemExit):
        raise runner.exception


@pytest.fixture
async def server(kmock: Any, monkeypatch: pytest.MonkeyPatch) -> Any:
    """A fresh kmock server with quantwise's resources declared and the operator's env set."""
    declare(kmock)
    monkeypatch.setenv("QUANTWISE_KUBE_SERVER", str(kmock.url).rstrip("/"))
    monkeypatch.setenv("QUANTWISE_QUANTIZER_IMAGE", "quantizer:test")
    monkeypatch.setenv("QUANTWISE_VLLM_IMAGE", "vllm:test")
    return kmock


@pytest.fixture
async def operator(server: Any) -> AsyncIterator[Any]:
    """The operator watching namespace ml of a fresh kmock server; yields the server."""
    async with running(server):
        yield server


pytestmark = pytest.mark.kmock(cls=QuantwiseEmulator)
