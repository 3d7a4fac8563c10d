"""Reconcile at scale: N QuantizedModels from report to Deployment, the operator a real process.

The operator runs as ``quantwise run`` in a child process (so its CPU time and peak RSS are its
own) against kmock, an in-process mock API server (``tests/support/kmockx.py``). N models are
created at once; the benchmark plays the Job controller (a pod with the report, the Job
complete) and waits until every model is Deploying with its Deployment and Service applied and
the operator has gone quiet. N=0 is the idle operator, the baseline the others grow from.

Prints, per N: wall time from creation to the last Deployment, operator requests per model (of
the mock server), operator CPU seconds and peak RSS. Run:
``python -m benchmarks.reconcile [--n 10 100 1000]``. A real API server is not driven here:
the Jobs would start real quantizer pods.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import copy
import os
import resource
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
for _path in ("tests", "tests/unit"):  # the mock server and the example report live there
    if str(ROOT / _path) not in sys.path:
        sys.path.insert(0, str(ROOT / _path))

import kmock  # noqa: E402
from test_api import BASE as MODEL  # noqa: E402
from test_reconcile import report  # noqa: E402

from quantwise.api.report import dump_report  # noqa: E402
from support.kmockx import (  # noqa: E402
    DEPLOYMENTS,
    JOBS,
    QM,
    ApiServerEmulator,
    declare_resources,
    objects,
    operator_calls,
    watches,
)


@dataclass
class Result:
    """One run."""

    models: int
    wall_seconds: float
    requests: int
    cpu_seconds: float
    peak_rss_mib: float


def _kubeconfig(url: str, directory: str) -> str:
    path = os.path.join(directory, "kubeconfig")
    with open(path, "w", encoding="utf-8") as f:
        f.write(
            "apiVersion: v1\nkind: Config\ncurrent-context: kmock\n"
            f"clusters: [{{name: kmock, cluster: {{server: '{url}'}}}}]\n"
            "contexts: [{name: kmock, context: {cluster: kmock, user: kmock, namespace: ml}}]\n"
            "users: [{name: kmock, user: {token: benchmark}}]\n"
        )
    return path


async def _until(check: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout:.0f} s waiting for {what}")
        await asyncio.sleep(0.1)


async def _finish(server: Any, job: str, message: str) -> None:
    # The pod carries the Job template's labels and job-name, as the Job controller sets them.
    template = objects(server, JOBS)[job]["spec"]["template"]["metadata"].get("labels") or {}
    pod = {
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": f"{job}-x", "namespace": "ml",
                     "labels": {**template, "job-name": job}},
        "status": {"phase": "Succeeded", "containerStatuses": [
            {"name": "quantizer", "state": {"terminated": {"exitCode": 0, "message": message}}}]},
    }  # fmt: skip
    await server.post("/api/v1/namespaces/ml/pods", json=pod)
    await server.patch(
        f"/apis/batch/v1/namespaces/ml/jobs/{job}/status",
        json={"status": {"succeeded": 1, "conditions": [{"type": "Complete", "status": "True"}]}},
        headers={"Content-Type": "application/merge-patch+json"},
    )


def _phases(server: Any) -> set[str | None]:
    return {(m.get("status") or {}).get("phase") for m in objects(server, QM).values()}


async def _quiet(server: Any, seconds: float, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    count, since = len(operator_calls(server)), time.monotonic()
    while time.monotonic() - since < seconds and time.monotonic() < deadline:
        await asyncio.sleep(0.1)
        if (now := len(operator_calls(server))) != count:
            count, since = now, time.monotonic()


async def run(models: int, timeout: float = 900.0) -> Result:
    """Reconcile ``models`` QuantizedModels with a fresh operator process and server."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    async with ApiServerEmulator() as server, kmock.Server(server) as http:
        declare_resources(server)
        server.history_limit = 1  # kmock's reaction matching is quadratic in its history
        with tempfile.TemporaryDirectory() as tmp, open(Path(tmp) / "operator.log", "w") as log:
            env = {**os.environ, "KUBECONFIG": _kubeconfig(str(http.url).rstrip("/"), tmp),
                   "QUANTWISE_QUANTIZER_IMAGE": "quantizer:bench",
                   "QUANTWISE_VLLM_IMAGE": "vllm:bench"}  # fmt: skip
            env.pop("QUANTWISE_KUBE_SERVER", None)
            command = [
                sys.executable, "-c", "from quantwise.cli import main; main()", "run",
                "--standalone", "-n", "ml", "--liveness", "", "--log-format", "plain",
            ]  # fmt: skip
            proc = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT)
            try:
                await _until(lambda: watches(server, QM) > 0 or proc.poll() is not None, 60,
                             "the operator to watch QuantizedModels")  # fmt: skip
                if proc.poll() is not None:
                    raise RuntimeError(f"the operator exited: {Path(log.name).read_text()[-2000:]}")
                start_calls = len(operator_calls(server))
                start = time.perf_counter()
                bodies = []
                for i in range(models):
                    body = copy.deepcopy(MODEL)
                    body["metadata"] = {"name": f"m{i:04d}", "namespace": "ml"}
                    bodies.append(body)
                base = "/apis/quantwise.dev/v1alpha1/namespaces/ml/quantizedmodels"
                await asyncio.gather(*(server.post(base, json=b) for b in bodies))
                if models:
                    await _until(
                        lambda: (
                            len(objects(server, JOBS)) == models
                            and _phases(server) == {"Quantizing"}
                        ),
                        timeout,
                        "the Jobs",
                    )
                    text = dump_report(report())
                    await asyncio.gather(*(_finish(server, j, text) for j in objects(server, JOBS)))
                    await _until(
                        lambda: (
                            len(objects(server, DEPLOYMENTS)) == models
                            and _phases(server) == {"Deploying"}
                        ),
                        timeout,
                        "the Deployments",
                    )
                wall = time.perf_counter() - start
                await _quiet(server, 2.0, timeout)
                requests = len(operator_calls(server)) - start_calls
            finally:
                proc.terminate()
                with contextlib.suppress(subprocess.TimeoutExpired):
                    proc.wait(timeout=30)
                if proc.poll() is None:
                    proc.kill()
                    proc.wait()
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return Result(models, wall, requests, cpu, after.ru_maxrss / 1024)  # ru_maxrss: KiB on Linux


def render(results: list[Result]) -> str:
    """A Markdown table; growth is relative to the smallest non-zero N."""
    lines = [
        "| models | wall s (create -> Deployments) | requests/model | operator CPU s | "
        "CPU ms/model over idle | peak RSS MiB |",
        "|---|---|---|---|---|---|",
    ]
    idle = next((r.cpu_seconds for r in results if r.models == 0), 0.0)
    for r in results:
        per = f"{r.requests / r.models:.1f}" if r.models else f"{r.requests} in all"
        over = f"{(r.cpu_seconds - idle) / r.models * 1e3:.0f}" if r.models else "-"
        lines.append(f"| {r.models} | {r.wall_seconds:.1f} | {per} | {r.cpu_seconds:.1f} | "
                     f"{over} | {r.peak_rss_mib:.0f} |")  # fmt: skip
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Run each N in turn (a fresh server and operator each) and print the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, nargs="+", default=[0, 10, 100, 1000])
    args = parser.parse_args(argv)
    results = [asyncio.run(run(n)) for n in args.n]
    print(render(results))
    print("\nPeak RSS is the largest of the operator processes so far (getrusage of children).")
    return 0


if __name__ == "__main__":
    sys.exit(main())
