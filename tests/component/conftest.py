"""Run a Kopf operator under ``kopf.testing.KopfRunner`` against kmock (component tests).

How an operator module gets the server, without knowing it is under test:

* Kopf's own API calls: ``run_operator`` gives ``KopfRunner`` a fresh ``kopf.OperatorRegistry``
  holding a ``@kopf.on.login`` handler that returns ``kopf.ConnectionInfo(server=<kmock url>,
  insecure=True)``. ``kopf run`` makes that registry the default before it loads the operator
  file, so the file's decorators register into it too, and every run starts from a clean
  registry (the demo operator's handlers never leak into the real operator's runs).
* The operator's own Kubernetes client: for the run, ``KUBECONFIG`` points at a kubeconfig for
  the kmock server, and so does the kubernetes client's default location (it reads ``KUBECONFIG``
  once, at import), so ``kubernetes.config.load_kube_config()`` works unchanged; and
  ``QUANTWISE_KUBE_SERVER`` is set (``quantwise.k8s.Kube.from_environment()``).

Test settings (a ``kopf.OperatorSettings`` handed to ``KopfRunner``): ``--standalone``, namespace
scanning disabled, API error backoffs of a fraction of a second, short watch timeouts.

A module imported by the operator file (``import quantwise.handlers``) is cached after the first
run and would not register its handlers into the next run's fresh registry: name it in
``reload=`` and it is imported anew for each run (and the old module restored afterwards).

Usage::

    @pytest.fixture
    def operator_path() -> str:
        return str(Path(__file__).with_name("_demo_operator.py"))

    async def test_it(kopf_runner, kmock):
        await apply_qm(kmock, MODEL)                         # after Kopf's WATCH
        job = await eventually(lambda: objects(kmock, JOBS))

or, for more control: ``async with run_operator(kmock, path, namespaces=("ml",)) as runner:``.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import os
import sys
import tempfile
from collections.abc import AsyncIterator, Callable, Iterable
from pathlib import Path
from typing import Any

import kopf
import pytest
from kopf.testing import KopfRunner

from support.kmockx import (
    DEPLOYMENTS,
    EVENTS,
    JOBS,
    PODS,
    QM,
    SERVICES,
    ApiServerEmulator,
    QuantwiseEmulator,
    as_resource,
    create_object,
    declare,
    declare_resources,
    objects,
    operator_calls,
    wait_for_watch,
    watches,
)

__all__ = [
    "DEMO_OPERATOR",
    "DEPLOYMENTS",
    "EVENTS",
    "JOBS",
    "OPERATOR",
    "PODS",
    "QM",
    "SERVICES",
    "ApiServerEmulator",
    "QuantwiseEmulator",
    "apply_qm",
    "component_settings",
    "declare",
    "declare_resources",
    "eventually",
    "objects",
    "run_operator",
    "running",
]  # fmt: skip

OPERATOR = str(Path(__file__).with_name("_operator.py"))
DEMO_OPERATOR = str(Path(__file__).with_name("_demo_operator.py"))


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
        await asyncio.sleep(0.05)


def component_settings() -> kopf.OperatorSettings:
    """Kopf settings for component tests: no namespace scanning, fast retries, short watches."""
    settings = kopf.OperatorSettings()
    settings.scanning.disabled = True  # kmock 0.8 could not list namespaces; no cluster to scan
    settings.networking.error_backoffs = [0.1, 0.2, 0.5, 1.0]  # Kopf's API retries (5xx, 429)
    settings.networking.request_timeout = 10
    settings.watching.server_timeout = 30
    settings.watching.reconnect_backoff = 0.1
    settings.queueing.exit_timeout = 2.0
    return settings


def _kubeconfig(url: str, directory: str) -> str:
    path = os.path.join(directory, "kubeconfig")
    with open(path, "w", encoding="utf-8") as f:
        f.write(
            "apiVersion: v1\nkind: Config\ncurrent-context: kmock\n"
            f"clusters: [{{name: kmock, cluster: {{server: '{url}', insecure-skip-tls-verify: true}}}}]\n"
            "contexts: [{name: kmock, context: {cluster: kmock, user: kmock, namespace: default}}]\n"
            "users: [{name: kmock, user: {token: test}}]\n"
        )
    return path


@contextlib.contextmanager
def _environ(values: dict[str, str]) -> Any:
    old = {key: os.environ.get(key) for key in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for key, value in old.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


@contextlib.contextmanager
def _kubeconfig_default(path: str) -> Any:
    """``kubernetes.config.load_kube_config()`` reads ``KUBECONFIG`` once, at import: repoint it."""
    try:
        from kubernetes import config as kconfig
        from kubernetes.config import kube_config
    except ImportError:  # the operator does not use the kubernetes client
        yield
        return
    old = (kconfig.KUBE_CONFIG_DEFAULT_LOCATION, kube_config.KUBE_CONFIG_DEFAULT_LOCATION)
    kconfig.KUBE_CONFIG_DEFAULT_LOCATION = kube_config.KUBE_CONFIG_DEFAULT_LOCATION = path
    try:
        yield
    finally:
        kconfig.KUBE_CONFIG_DEFAULT_LOCATION, kube_config.KUBE_CONFIG_DEFAULT_LOCATION = old


@contextlib.contextmanager
def _fresh_modules(prefixes: Iterable[str]) -> Any:
    """Import the modules under ``prefixes`` anew inside the block; restore the old ones after."""
    prefixes = tuple(prefixes)
    if not prefixes:
        yield
        return

    def ours(name: str) -> bool:
        return any(name == p or name.startswith(p + ".") for p in prefixes)

    saved = {name: mod for name, mod in sys.modules.items() if ours(name)}
    for name in saved:
        del sys.modules[name]
    try:
        yield
    finally:
        for name in [n for n in sys.modules if ours(n)]:
            del sys.modules[name]
        sys.modules.update(saved)
        for name, module in saved.items():  # ``import a.b`` reads ``a.b`` as an attribute of a
            parent, _, child = name.rpartition(".")
            if parent in sys.modules:
                setattr(sys.modules[parent], child, module)


@contextlib.asynccontextmanager
async def run_operator(
    server: Any,
    path: str,
    *,
    namespaces: Iterable[str] | None = ("ml",),
    wait_for: Iterable[Any] = (QM,),
    reload: Iterable[str] = (),
    configure: Callable[[kopf.OperatorSettings], None] | None = None,
    env: dict[str, str] | None = None,
    args: Iterable[str] = ("--verbose",),
    startup_timeout: float = 10.0,
    stop_timeout: float = 15.0,
) -> AsyncIterator[KopfRunner]:
    """Run the Kopf operator file ``path`` against ``server`` for the duration of the block.

    ``namespaces``: ``-n`` for each (None: ``-A``). ``wait_for``: resources whose WATCH must have
    arrived before the block starts (the operator is ready then; with ApiServerEmulator an object
    created earlier is still seen once, on plain kmock it would be seen twice). ``reload``: module prefixes to import anew for this run.
    ``configure``: changes the test settings. ``env``: more environment for the run.
    """
    url = str(server.url).rstrip("/")
    registry = kopf.OperatorRegistry()

    @kopf.on.login(registry=registry, id="kmock-login")
    def _login(**_: Any) -> kopf.ConnectionInfo:
        return kopf.ConnectionInfo(server=url, insecure=True, default_namespace="default")

    settings = component_settings()
    if configure is not None:
        configure(settings)
    ns_args: list[str] = (
        ["-A"] if namespaces is None else [a for n in namespaces for a in ("-n", n)]
    )
    cli = ["run", "--standalone", *args, *ns_args, path]
    before = {res: watches(server, res) for res in map(as_resource, wait_for)}
    previous_registry = kopf.get_default_registry()
    with contextlib.ExitStack() as stack:
        kubeconfig = _kubeconfig(url, stack.enter_context(tempfile.TemporaryDirectory()))
        stack.enter_context(_kubeconfig_default(kubeconfig))
        stack.enter_context(_fresh_modules(reload))
        stack.enter_context(
            _environ({"KUBECONFIG": kubeconfig, "QUANTWISE_KUBE_SERVER": url, **(env or {})})
        )
        runner = KopfRunner(cli, registry=registry, settings=settings, timeout=stop_timeout)
        await asyncio.to_thread(runner.__enter__)
        try:
            for res, count in before.items():
                loop = asyncio.get_running_loop()
                deadline = loop.time() + startup_timeout
                while watches(server, res) <= count:
                    if runner.future.done():
                        result = runner.future.result()
                        raise AssertionError(
                            f"the operator exited before watching {res}: {result.exception!r}\n"
                            f"{result.output[-4000:]}"
                        )
                    if loop.time() > deadline:
                        raise AssertionError(f"no WATCH for {res} within {startup_timeout}s")
                    await asyncio.sleep(0.02)
            yield runner
        except BaseException as failure:
            # The block's own failure is the one to report, not a slow stop after it.
            try:
                await asyncio.to_thread(runner.__exit__, None, None, None)
            except Exception as stop_failure:
                failure.add_note(f"and then, stopping the operator: {stop_failure}")
            finally:
                kopf.set_default_registry(previous_registry)
            raise
        else:
            try:
                await asyncio.to_thread(runner.__exit__, None, None, None)
            finally:
                kopf.set_default_registry(previous_registry)
        finally:
            # Kopf leaves its handler threads to finish on their own; reconciles still queued
            # would call a server that is gone (retrying, with backoff) and hold pytest's exit.
            settings.execution.executor.shutdown(wait=False, cancel_futures=True)


async def quiet(server: Any, *, seconds: float = 1.0, timeout: float = 60.0) -> None:
    """Wait until the operator has made no request for ``seconds`` (its queues are drained)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    count, since = len(operator_calls(server)), loop.time()
    while loop.time() - since < seconds:
        if loop.time() > deadline:
            raise AssertionError(f"the operator was still busy after {timeout}s")
        await asyncio.sleep(0.1)
        if (now := len(operator_calls(server))) != count:
            count, since = now, loop.time()


async def apply_qm(server: Any, body: dict[str, Any], *, timeout: float = 10.0) -> dict[str, Any]:
    """Create a QuantizedModel through the server once Kopf watches them; returns it as stored."""
    await wait_for_watch(server, QM, timeout=timeout)
    body = copy.deepcopy(body)
    body.setdefault("apiVersion", "quantwise.dev/v1alpha1")
    body.setdefault("kind", "QuantizedModel")
    body.setdefault("metadata", {}).setdefault("namespace", "ml")
    return await create_object(server, QM, body)


# ----- fixtures -----


@pytest.fixture
def operator_path() -> str:
    """The operator file ``kopf_runner`` runs: override it in a test module."""
    raise pytest.UsageError("override the operator_path fixture to use kopf_runner")


@pytest.fixture
def operator_options() -> dict[str, Any]:
    """Keyword arguments for ``run_operator`` (namespaces, wait_for, reload, configure, env)."""
    return {}


@pytest.fixture
async def kopf_runner(
    kmock: Any, operator_path: str, operator_options: dict[str, Any]
) -> AsyncIterator[KopfRunner]:
    """The operator at ``operator_path`` running against a fresh kmock with resources declared."""
    declare_resources(kmock)
    async with run_operator(kmock, operator_path, **operator_options) as runner:
        yield runner


# ----- the quantwise operator (tests/component/test_operator.py) -----


@contextlib.asynccontextmanager
async def running(server: Any) -> AsyncIterator[KopfRunner]:
    """The quantwise operator watching namespace ml of ``server`` for the duration of the block."""
    async with run_operator(
        server, OPERATOR, namespaces=("ml",), wait_for=(QM,), reload=("quantwise.handlers",)
    ) as runner:
        yield runner


@pytest.fixture
async def server(kmock: Any, monkeypatch: pytest.MonkeyPatch) -> Any:
    """A fresh kmock server with quantwise's resources declared and the operator's env set."""
    declare_resources(kmock)
    monkeypatch.setenv("QUANTWISE_KUBE_SERVER", str(kmock.url).rstrip("/"))
    monkeypatch.setenv("QUANTWISE_QUANTIZER_IMAGE", "quantizer:test")
    monkeypatch.setenv("QUANTWISE_VLLM_IMAGE", "vllm:test")
    return kmock


@pytest.fixture
async def operator(server: Any) -> AsyncIterator[Any]:
    """The operator watching namespace ml of a fresh kmock server; yields the server."""
    async with running(server):
        yield server


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Component tests get the ApiServerEmulator unless they ask for another kmock class."""
    here = Path(__file__).parent
    for item in items:
        if Path(str(item.fspath)).parent == here and item.get_closest_marker("kmock") is None:
            item.add_marker(pytest.mark.kmock(cls=ApiServerEmulator))
