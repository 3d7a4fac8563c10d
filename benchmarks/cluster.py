"""The reconcile benchmark on a real control plane: ``python -m benchmarks.reconcile --cluster``.

The cluster is the one ``KUBECONFIG`` names: the control plane of ../shared/k8s (kube-apiserver,
controller-manager, scheduler, etcd) with one kubelet stand-in node (``QUANTWISE_STANDIN``,
as in tests/e2e). Everything real but the quantizer: the stand-in runs each Job's
``quantwise`` command as it would, and this benchmark gives it a stand-in for the quantizer
that writes the example report to the termination message at once (quantizing is not what is
measured). The real Job controller, scheduler and garbage collector do the rest, and the
stand-in reports the vLLM pods Ready, so the requests counted run until every model is Ready
(its vLLM log read, its Ready status and Event included), not only to its Deployment.

The operator runs as ``quantwise run`` in a namespace of its own; its requests are read from its
own ``quantwise_api_requests_total`` (every request its API seam sends; the component tests
prove that counter equals the mock API server's log of the same requests), as the deltas
between scrapes: from creation until the operator is quiet, then over a window at rest.
"""

from __future__ import annotations

import contextlib
import copy
import ctypes
import os
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

ROOT = Path(__file__).resolve().parents[1]
for _path in ("tests", "tests/unit", "tests/e2e"):
    if str(ROOT / _path) not in sys.path:
        sys.path.insert(0, str(ROOT / _path))

import yaml  # noqa: E402
from harness import (  # noqa: E402
    E2E_LABEL,
    ON_OUR_NODES,
    Cluster,
    Nodes,
    free_port,
    make_claim,
    wait_for,
)
from test_api import BASE as MODEL  # noqa: E402
from test_reconcile import report  # noqa: E402

from quantwise.api.report import dump_report  # noqa: E402

GROUP, VERSION, PLURAL = "quantwise.dev", "v1alpha1", "quantizedmodels"
QUIET_SECONDS = 3.0


def _die_with_parent() -> None:
    """SIGKILL this child when the benchmark dies (Linux prctl(2) PR_SET_PDEATHSIG = 1)."""
    if sys.platform == "linux":
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)


def connect() -> Cluster:
    """The cluster KUBECONFIG names, with quantwise's CRDs applied."""
    from kubernetes import config

    path = os.environ.get("KUBECONFIG")
    if not path:
        raise SystemExit("--cluster needs KUBECONFIG (the control plane of ../shared/k8s)")
    api = config.new_client_from_config(config_file=path)
    found = Cluster(kubeconfig=path, api=api, server=api.configuration.host)
    for crd_file in sorted((ROOT / "crds").glob("*.yaml")):
        for body in yaml.safe_load_all(crd_file.read_text()):
            if body:
                found.apply_crd(body)
    return found


def fake_quantizer(directory: Path) -> Path:
    """A ``quantwise`` for the stand-in to run: it writes the example report and exits 0."""
    report_file = directory / "report.json"
    report_file.write_text(dump_report(report()))
    script = directory / "quantwise"
    script.write_text(
        f"#!{sys.executable}\nimport shutil, sys\n"
        f"shutil.copyfile({str(report_file)!r}, sys.argv[sys.argv.index('--report-path') + 1])\n"
    )
    script.chmod(0o755)
    return script


def requests(port: int) -> Counter[str]:
    """The operator's request counter, by "verb resource"."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as resp:
        text = resp.read().decode()
    out: Counter[str] = Counter()
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == "quantwise_api_requests_total":
                out[f"{sample.labels['verb']} {sample.labels['resource']}"] += int(sample.value)
    return out


def _until_quiet(port: int, timeout: float) -> Counter[str]:
    deadline = time.monotonic() + timeout
    last, since = requests(port), time.monotonic()
    while time.monotonic() - since < QUIET_SECONDS and time.monotonic() < deadline:
        time.sleep(0.5)
        if (now := requests(port)) != last:
            last, since = now, time.monotonic()
    return last


def _model(namespace: str, index: int) -> dict[str, Any]:
    body = copy.deepcopy(MODEL)
    body["metadata"] = {"name": f"m{index:04d}", "namespace": namespace}
    body["spec"]["serving"]["nodeSelector"] = dict(ON_OUR_NODES)
    body["spec"]["quantizer"] = {"nodeSelector": dict(ON_OUR_NODES)}
    return body


def _operator(cluster: Cluster, namespace: str, port: int, log: Path, resync: float) -> Any:
    env = {**os.environ, "KUBECONFIG": cluster.kubeconfig,
           "QUANTWISE_QUANTIZER_IMAGE": "quantizer:bench", "QUANTWISE_VLLM_IMAGE": "vllm:bench",
           "QUANTWISE_RESYNC_SECONDS": str(resync),
           "PYTHONPATH": str(ROOT / "operator")}  # fmt: skip
    env.pop("QUANTWISE_KUBE_SERVER", None)
    argv = [sys.executable, "-c", "from quantwise.cli import main; main()", "run",
            "--standalone", "-n", namespace, "--liveness", "", "--log-format", "plain",
            "--metrics-port", str(port)]  # fmt: skip
    return subprocess.Popen(argv, env=env, stdout=log.open("wb"), stderr=subprocess.STDOUT,
                            preexec_fn=_die_with_parent)  # fmt: skip


def run(models: int, rest: float, resync: float, result_type: Any, usage: Any) -> Any:
    """N models on the real control plane: a Result as the kmock runs give (operator quantwise)."""
    cluster = connect()
    namespace = f"qw-bench-{uuid.uuid4().hex[:6]}"
    cluster.core.create_namespace({"metadata": {"name": namespace, "labels": {E2E_LABEL: "true"}}})
    with tempfile.TemporaryDirectory(prefix="quantwise-bench-") as tmp:
        work = Path(tmp)
        nodes = Nodes(cluster, work)
        proc = None
        try:
            node = nodes.start("qw-bench", gpus=2 * models + 2, quantwise=fake_quantizer(work))
            make_claim(cluster, namespace, node)
            port = free_port()
            proc = _operator(cluster, namespace, port, work / "operator.log", resync)
            wait_for(lambda: requests(port) is not None, 60, "the operator's /metrics")
            time.sleep(QUIET_SECONDS)
            before = requests(port)
            start = time.perf_counter()
            for i in range(models):
                cluster.custom.create_namespaced_custom_object(
                    GROUP, VERSION, namespace, PLURAL, _model(namespace, i)
                )
            wait_for(lambda: len(cluster.apps.list_namespaced_deployment(namespace).items)
                     == models, 600, "every Deployment", every=0.2)  # fmt: skip
            wall = time.perf_counter() - start
            to_deployments = sum((requests(port) - before).values())

            def ready() -> bool:
                listed = cluster.custom.list_namespaced_custom_object(
                    GROUP, VERSION, namespace, PLURAL
                )["items"]
                return all((m.get("status") or {}).get("phase") == "Ready" for m in listed)

            wait_for(ready, 600, "every model Ready", every=1.0)
            after = _until_quiet(port, 600)
            result = result_type("quantwise (real API server)", models, wall, 0)
            result.by_verb = after - before
            result.to_deployments = to_deployments
            result.requests = sum(result.by_verb.values())
            time.sleep(resync)  # a resync after the last write
            at_rest = requests(port)
            started = time.monotonic()
            time.sleep(rest)
            result.rest_seconds = time.monotonic() - started
            result.rest_by_verb = requests(port) - at_rest
            result.rest_requests = sum(result.rest_by_verb.values())
            result.cpu_seconds, result.peak_rss_mib = usage(proc.pid)
            return result
        finally:
            if proc is not None:
                proc.terminate()
                with contextlib.suppress(subprocess.TimeoutExpired):
                    proc.wait(30)
                if proc.poll() is None:
                    proc.kill()
            with contextlib.suppress(Exception):
                cluster.core.delete_namespace(namespace)
            nodes.stop_all()
            for pv in cluster.core.list_persistent_volume(
                label_selector=f"{E2E_LABEL}={namespace}"
            ).items:
                with contextlib.suppress(Exception):
                    cluster.core.delete_persistent_volume(pv.metadata.name)
