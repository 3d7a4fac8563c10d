"""Reconcile at scale: N QuantizedModels from creation to Deployment, then a quiet fleet.

The operator runs as a process of its own (``quantwise run``, so its CPU time and peak RSS are
its own) against kmock, an in-process mock API server (``tests/support/kmockx.py``). N models
are created at once; the benchmark plays the Job controller (a pod with the report, the Job
complete) and waits until every model has its Deployment and Service and the operator is quiet.
Then, with nothing changing, it counts the operator's requests over a window that covers
several periodic resyncs (the resync interval is shortened for the run): a fleet at rest.

The same is measured for a bare Kopf operator that makes the same writes (benchmarks/
bare_operator.py: create a Job, patch status, apply a Deployment and a Service, patch status):
the baseline. Prints, per N and operator: wall time from creation to the last Deployment,
requests per model (and by verb and resource), requests per model per hour at rest, CPU
seconds and peak RSS. Run: ``python -m benchmarks.reconcile [--n 0 100 1000] [--rest 20]``.
``--cluster`` runs quantwise against the cluster KUBECONFIG names instead (the real control
plane of ../shared/k8s with a kubelet stand-in node; see benchmarks/cluster.py).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import copy
import ctypes
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
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
    SERVICES,
    ApiServerEmulator,
    declare_resources,
    objects,
    operator_calls,
    watches,
)

# Resync every few seconds during the run, so that the window at rest covers several.
RESYNC_SECONDS = 2.0
OPERATORS = ("quantwise", "bare-kopf")


@dataclass
class Result:
    """One run of one operator at one N."""

    operator: str
    models: int
    wall_seconds: float
    requests: int
    by_verb: Counter[str] = field(default_factory=Counter)
    rest_requests: int = 0
    rest_by_verb: Counter[str] = field(default_factory=Counter)
    to_deployments: int | None = None
    """Requests when the last Deployment appeared, where counted apart (--cluster)."""
    rest_seconds: float = 0.0
    cpu_seconds: float = 0.0
    peak_rss_mib: float = 0.0

    @property
    def per_model(self) -> float:
        """Requests per model from creation to the last Deployment."""
        return self.requests / self.models if self.models else 0.0

    @property
    def rest_per_model_hour(self) -> float:
        """Requests per model per hour with nothing changing (watch streams not counted)."""
        if not self.models or not self.rest_seconds:
            return 0.0
        return self.rest_requests / self.models / (self.rest_seconds / 3600)


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


async def _quiet(server: Any, seconds: float, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    count, since = len(operator_calls(server)), time.monotonic()
    while time.monotonic() - since < seconds and time.monotonic() < deadline:
        await asyncio.sleep(0.1)
        if (now := len(operator_calls(server))) != count:
            count, since = now, time.monotonic()


def _command(operator: str) -> list[str]:
    if operator == "quantwise":
        return [sys.executable, "-c", "from quantwise.cli import main; main()", "run",
                "--standalone", "-n", "ml", "--liveness", "", "--log-format", "plain"]  # fmt: skip
    return [sys.executable, "-m", "kopf", "run", "--standalone", "-n", "ml", "--liveness", "",
            str(ROOT / "benchmarks" / "bare_operator.py")]  # fmt: skip


def _die_with_parent() -> None:
    """In the operator's process: SIGKILL it when the benchmark dies, however it dies.

    Linux's PR_SET_PDEATHSIG (prctl(2), option 1); a benchmark killed by a timeout would
    otherwise leave its operator running against a server that is gone.
    """
    if sys.platform == "linux":
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)


def _verb(call: Any) -> str:
    what = f"{call.resource}/{call.subresource}" if call.subresource else call.resource
    return f"{'apply' if call.apply else call.verb} {what}"


async def run(models: int, operator: str, rest: float, timeout: float = 900.0) -> Result:
    """Reconcile ``models`` QuantizedModels with a fresh operator process and server."""
    async with ApiServerEmulator() as server, kmock.Server(server) as http:
        declare_resources(server)
        server.history_limit = 1  # kmock's reaction matching is quadratic in its history
        with tempfile.TemporaryDirectory() as tmp, open(Path(tmp) / "operator.log", "w") as log:
            env = {**os.environ, "KUBECONFIG": _kubeconfig(str(http.url).rstrip("/"), tmp),
                   "QUANTWISE_QUANTIZER_IMAGE": "quantizer:bench",
                   "QUANTWISE_VLLM_IMAGE": "vllm:bench",
                   "QUANTWISE_RESYNC_SECONDS": str(RESYNC_SECONDS),
                   "PYTHONPATH": str(ROOT / "operator")}  # fmt: skip
            env.pop("QUANTWISE_KUBE_SERVER", None)
            proc = subprocess.Popen(_command(operator), env=env, stdout=log, stderr=log,
                                    preexec_fn=_die_with_parent)  # fmt: skip
            try:
                try:
                    await _until(lambda: watches(server, QM) > 0 or proc.poll() is not None, 60,
                                 "the operator to watch QuantizedModels")  # fmt: skip
                except TimeoutError as exc:
                    raise RuntimeError(f"{exc}: {Path(log.name).read_text()[-2000:]}") from exc
                if proc.poll() is not None:
                    raise RuntimeError(f"the operator exited: {Path(log.name).read_text()[-2000:]}")
                first = len(operator_calls(server))
                result = await _drive(server, models, operator, timeout)
                await _quiet(server, 2.0, timeout)
                calls = [c for c in operator_calls(server)[first:] if c.verb != "watch"]
                result.requests, result.by_verb = len(calls), Counter(_verb(c) for c in calls)
                await asyncio.sleep(RESYNC_SECONDS)  # a resync after the last write
                at_rest = len(operator_calls(server))
                started = time.monotonic()
                await asyncio.sleep(rest)
                result.rest_seconds = time.monotonic() - started
                rest_calls = [c for c in operator_calls(server)[at_rest:] if c.verb != "watch"]
                result.rest_by_verb = Counter(_verb(c) for c in rest_calls)
                result.rest_requests = len(rest_calls)
                result.cpu_seconds, result.peak_rss_mib = _usage(proc.pid)
            finally:
                proc.terminate()
                with contextlib.suppress(subprocess.TimeoutExpired):
                    proc.wait(timeout=30)
                if proc.poll() is None:
                    proc.kill()
                    proc.wait()
    return result


def _usage(pid: int) -> tuple[float, float]:
    """CPU seconds and peak RSS (MiB) of a running process (Linux /proc: stat, VmHWM)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    cpu = (int(fields[11]) + int(fields[12])) / ticks  # utime, stime (proc(5))
    status = Path(f"/proc/{pid}/status").read_text()
    peak_kib = next(int(line.split()[1]) for line in status.splitlines()
                    if line.startswith("VmHWM:"))  # fmt: skip
    return cpu, peak_kib / 1024


async def _drive(server: Any, models: int, operator: str, timeout: float) -> Result:
    """Create the models, complete their Jobs, wait for every Deployment and Service."""
    start = time.perf_counter()
    base = "/apis/quantwise.dev/v1alpha1/namespaces/ml/quantizedmodels"
    bodies = []
    for i in range(models):
        body = copy.deepcopy(MODEL)
        body["metadata"] = {"name": f"m{i:04d}", "namespace": "ml"}
        bodies.append(body)
    await asyncio.gather(*(server.post(base, json=b) for b in bodies))
    if models:
        await _until(lambda: len(objects(server, JOBS)) == models, timeout, "the Jobs")
        text = dump_report(report())
        await asyncio.gather(*(_finish(server, j, text) for j in objects(server, JOBS)))
        await _until(
            lambda: (
                len(objects(server, DEPLOYMENTS)) == models
                and len(objects(server, SERVICES)) == models
            ),
            timeout,
            "the Deployments and Services",
        )
    return Result(operator, models, time.perf_counter() - start, 0)


def render(results: list[Result]) -> str:
    """A Markdown table, quantwise and the bare Kopf baseline side by side."""
    lines = [
        "| models | operator | wall s (create -> Deployments) | requests/model | "
        "requests/model/hour at rest | CPU s | peak RSS MiB |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in results:
        per = f"{r.per_model:.1f}" if r.models else f"{r.requests} in all"
        rest = f"{r.rest_per_model_hour:.0f}" if r.models else f"{r.rest_requests} in all"
        lines.append(f"| {r.models} | {r.operator} | {r.wall_seconds:.1f} | {per} | {rest} | "
                     f"{r.cpu_seconds:.1f} | {r.peak_rss_mib:.0f} |")  # fmt: skip
    lines.append("")
    for r in results:
        if r.models:
            verbs = ", ".join(f"{v} {n / r.models:.1f}" for v, n in sorted(r.by_verb.items()))
            lines.append(f"- {r.operator}, N={r.models}, requests per model: {verbs}")
        if r.to_deployments is not None:
            lines.append(f"- {r.operator}, N={r.models}, requests per model by the time the last "
                         f"Deployment appeared: {r.to_deployments / r.models:.1f}")  # fmt: skip
        if r.rest_by_verb:
            verbs = ", ".join(f"{v} {n}" for v, n in sorted(r.rest_by_verb.items()))
            lines.append(f"- {r.operator}, N={r.models}, requests at rest: {verbs}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Run each N with each operator in turn (a fresh server and process each); print a table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, nargs="+", default=[0, 10, 100, 1000])
    parser.add_argument("--rest", type=float, default=20.0, help="seconds of the window at rest")
    parser.add_argument("--operator", choices=OPERATORS, nargs="+", default=list(OPERATORS))
    parser.add_argument(
        "--cluster", action="store_true", help="quantwise on the KUBECONFIG cluster (cluster.py)"
    )
    args = parser.parse_args(argv)
    if args.cluster:
        from benchmarks import cluster

        results = [cluster.run(n, args.rest, RESYNC_SECONDS, Result, _usage) for n in args.n]
    else:
        results = [asyncio.run(run(n, op, args.rest)) for n in args.n for op in args.operator]
    print(render(results))
    print(
        f"\nAt rest: {args.rest:.0f} s with nothing changing, the resync every "
        f"{RESYNC_SECONDS:.0f} s; watch streams are not counted. Peak RSS is the largest of the "
        "operator process's high-water mark (VmHWM)."
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
