"""The e2e harness: a real API server named by KUBECONFIG, kubelet stand-ins, the operator.

Everything here runs against whatever cluster ``KUBECONFIG`` names: the real control plane of
``../shared/k8s`` (kube-apiserver, controller-manager, scheduler, etcd), or kind. Without one
the tests skip with the reason, so CI stays green; a context that does not look like a test
cluster (a ``kind-``/``k3d-``/... name, or an API server on a loopback address) is refused
unless ``QUANTWISE_E2E_ANY_CONTEXT=1``.

Tests that need pods to run use the kubelet stand-in (``QUANTWISE_STANDIN``: the path of
``standin_kubelet.py``; default ``../shared/k8s/standin_kubelet.py`` next to the repository):
each stand-in registers one node with NVIDIA GPU Feature Discovery labels, really runs the
Job's ``quantwise`` command on this machine (volumes mapped to ``ROOT/pvc/<claim>``), reports
other pods Running and Ready, and serves pod logs as a kubelet does. The operator runs as a
real process (``python -m quantwise.cli run``), with the admin kubeconfig or the token of the
chart's ServiceAccount, and can be killed and started again.

Each test works in a namespace of its own, deleted at the end with its PersistentVolumes.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import pytest
import yaml

ROOT = Path(__file__).parents[2]
TEST_CONTEXT_PREFIXES = ("kind-", "minikube", "k3d-", "docker-desktop", "rancher-desktop")
LOOPBACK = ("127.", "localhost", "[::1]")
GROUP, VERSION, PLURAL = "quantwise.dev", "v1alpha1", "quantizedmodels"
E2E_LABEL = "quantwise.dev/e2e"
# Several e2e sessions may share one control plane: each labels its stand-in nodes with its own
# session, and every pod a test makes selects them (ON_OUR_NODES), so no session runs another's.
SESSION = uuid.uuid4().hex[:5]
SESSION_LABEL = "quantwise.dev/e2e-session"
ON_OUR_NODES = {SESSION_LABEL: SESSION}
# A vLLM start-up log's KV-cache lines (vllm/v1/core/kv_cache_utils.py), served by the stand-in
# as every serving pod's log: the operator's measured feedback reads something true in form.
SERVING_LOG = """\
INFO 12-01 10:00:00 [gpu_worker.py:298] Available KV cache memory: 61.03 GiB
INFO 12-01 10:00:00 [kv_cache_utils.py:1087] GPU KV cache size: 2,000,000 tokens
INFO 12-01 10:00:00 [kv_cache_utils.py:1091] Maximum concurrency for 512 tokens per request: 3906.25x
"""


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    here = Path(__file__).parent
    for item in items:
        if Path(str(item.fspath)).parent == here:
            item.add_marker(pytest.mark.e2e)


# ----- the cluster -----


@dataclass
class Cluster:
    """The API server the tests run against, and clients for it."""

    kubeconfig: str
    api: Any
    server: str

    @property
    def core(self) -> Any:
        from kubernetes import client

        return client.CoreV1Api(self.api)

    @property
    def apps(self) -> Any:
        from kubernetes import client

        return client.AppsV1Api(self.api)

    @property
    def batch(self) -> Any:
        from kubernetes import client

        return client.BatchV1Api(self.api)

    @property
    def custom(self) -> Any:
        from kubernetes import client

        return client.CustomObjectsApi(self.api)

    @property
    def ext(self) -> Any:
        from kubernetes import client

        return client.ApiextensionsV1Api(self.api)

    def model(self, namespace: str, name: str) -> dict[str, Any]:
        obj: dict[str, Any] = self.custom.get_namespaced_custom_object(
            GROUP, VERSION, namespace, PLURAL, name
        )
        return obj

    def status(self, namespace: str, name: str) -> dict[str, Any]:
        return dict(self.model(namespace, name).get("status") or {})

    def apply_crd(self, body: dict[str, Any]) -> None:
        """Create or replace a CRD, then wait until it is established."""
        from kubernetes import client

        name = body["metadata"]["name"]
        try:
            self.ext.create_custom_resource_definition(body)
        except client.ApiException as exc:
            if exc.status != 409:
                raise
            current = self.ext.read_custom_resource_definition(name)
            body = {**body, "metadata": {**body["metadata"],
                                         "resourceVersion": current.metadata.resource_version}}  # fmt: skip
            self.ext.replace_custom_resource_definition(name, body)

        def established() -> bool:
            crd = self.ext.read_custom_resource_definition(name)
            return any(
                c.type == "Established" and c.status == "True"
                for c in (crd.status.conditions or [])
            )

        wait_for(established, 30, f"CRD {name} established")


def wait_for(check: Callable[[], Any], timeout: float, what: str, every: float = 0.5) -> Any:
    """Poll ``check`` until it returns something truthy; fail naming ``what`` after ``timeout``."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while True:
        try:
            last = check()
        except Exception as exc:  # a read that fails now may succeed later (object not yet there)
            last = exc
        else:
            if last:
                return last
        if time.monotonic() > deadline:
            raise AssertionError(
                f"timed out after {timeout:.0f} s waiting for {what} (last: {last!r})"
            )
        time.sleep(every)


@pytest.fixture(scope="session")
def cluster() -> Cluster:
    """The cluster KUBECONFIG names, with quantwise's CRDs applied (skip when there is none)."""
    path = os.environ.get("KUBECONFIG")
    if not path:
        pytest.skip("no KUBECONFIG: the e2e tests need a cluster (README: End to end)")
    try:
        from kubernetes import client, config

        _, active = config.list_kube_config_contexts(config_file=path)
        api = config.new_client_from_config(config_file=path)
        server = api.configuration.host
        host = urlparse(server).hostname or ""
        looks_like_test = active["name"].startswith(TEST_CONTEXT_PREFIXES) or host.startswith(
            LOOPBACK
        )
        if not looks_like_test and not os.environ.get("QUANTWISE_E2E_ANY_CONTEXT"):
            pytest.skip(
                f"context {active['name']!r} ({server}) does not look like a test cluster; set "
                "QUANTWISE_E2E_ANY_CONTEXT=1 to allow it"
            )
        client.VersionApi(api).get_code(_request_timeout=5)
    except Exception as exc:  # any failure to reach the cluster means skip
        pytest.skip(f"the cluster named by KUBECONFIG is not reachable: {exc}")
    found = Cluster(kubeconfig=path, api=api, server=server)
    for crd_file in sorted((ROOT / "crds").glob("*.yaml")):
        for body in yaml.safe_load_all(crd_file.read_text()):
            if body:
                found.apply_crd(body)
    return found


def _exists(cluster: Cluster, namespace: str) -> bool:
    from kubernetes import client

    try:
        cluster.core.read_namespace(namespace)
    except client.ApiException as exc:
        if exc.status == 404:
            return False
        raise
    return True


@pytest.fixture
def namespace(cluster: Cluster) -> Iterator[str]:
    """A fresh namespace for one test, deleted afterwards (its PVs too)."""
    name = f"qw-e2e-{uuid.uuid4().hex[:6]}"
    cluster.core.create_namespace({"metadata": {"name": name, "labels": {E2E_LABEL: "true"}}})
    try:
        yield name
    finally:
        with contextlib.suppress(Exception):
            cluster.core.delete_namespace(name)
        with contextlib.suppress(AssertionError):  # the pod reaper finishes what kubelets would
            wait_for(lambda: not _exists(cluster, name), 60, f"namespace {name} deleted", every=1)
        for pv in cluster.core.list_persistent_volume(label_selector=f"{E2E_LABEL}={name}").items:
            with contextlib.suppress(Exception):
                cluster.core.delete_persistent_volume(pv.metadata.name)


# ----- kubelet stand-ins -----


def _free_port(address: str) -> int:
    with socket.socket() as probe:
        probe.bind((address, 0))
        return int(probe.getsockname()[1])


def standin_path() -> Path:
    return Path(
        os.environ.get("QUANTWISE_STANDIN") or ROOT.parent / "shared/k8s/standin_kubelet.py"
    )


@dataclass
class Node:
    """One stand-in node: its name, the folder its volumes map to, its process."""

    name: str
    root: Path
    process: subprocess.Popen[bytes]
    log: Path
    labels: dict[str, str] = field(default_factory=dict)

    def claim_dir(self, claim: str) -> Path:
        """The local folder a PersistentVolumeClaim of this name is mapped to."""
        return self.root / "pvc" / claim


class Nodes:
    """Starts stand-in nodes and stops (and deletes) them at the end."""

    def __init__(self, cluster: Cluster, workdir: Path) -> None:
        self.cluster = cluster
        self.workdir = workdir
        self.started: list[Node] = []
        self.session = SESSION
        self.serving_log = workdir / "vllm-startup.log"
        self.serving_log.write_text(SERVING_LOG)
        self._stop = threading.Event()
        self._reaper = threading.Thread(target=self._reap, name="pod-reaper", daemon=True)
        self._reaper.start()

    def _reap(self) -> None:
        """Finish the deletion of pods on the stand-in nodes, as a kubelet confirms it.

        A deleted pod keeps its node's GPUs until its kubelet reports the containers stopped
        and removes it; the stand-in never does, so a rolled-out or deleted vLLM pod would hold
        its GPUs (and its namespace) forever.
        """
        while not self._stop.wait(1.0):
            names = {n.name for n in self.started}
            with contextlib.suppress(Exception):
                for pod in self.cluster.core.list_pod_for_all_namespaces().items:
                    if pod.metadata.deletion_timestamp and pod.spec.node_name in names:
                        self.cluster.core.delete_namespaced_pod(
                            pod.metadata.name, pod.metadata.namespace, grace_period_seconds=0
                        )

    def start(
        self,
        name: str,
        *,
        gpus: int = 8,
        product: str = "NVIDIA-H100-80GB-HBM3",
        memory_mib: int = 81559,
        cc: str = "9.0",
        labels: dict[str, str] | None = None,
        resources: dict[str, str] | None = None,
        logs: bool = True,
        root: Path | None = None,
        quantwise: Path | None = None,
    ) -> Node:
        """Start a stand-in node; ``quantwise``: what runs a Job's ``quantwise`` command (the
        installed one by default; the fleet benchmark gives a stand-in for the quantizer)."""
        script = standin_path()
        if not script.is_file():
            pytest.skip(
                f"no kubelet stand-in at {script}: set QUANTWISE_STANDIN to standin_kubelet.py"
            )
        # Several e2e sessions may share one control plane: a node's name carries this
        # session's suffix, and its kubelet port is a free one on an address of its own.
        name = f"{name}-{self.session}"
        address = f"127.0.{random.randrange(1, 255)}.{random.randrange(2, 255)}"
        port = _free_port(address)
        root = root or self.workdir / name
        root.mkdir(parents=True, exist_ok=True)
        command = quantwise or shutil.which("quantwise", path=str(Path(sys.executable).parent))
        assert command, "the quantwise command is not installed next to this Python"
        labels = {"quantwise.dev/e2e-node": name, SESSION_LABEL: SESSION, **(labels or {})}
        argv = [
            sys.executable, str(script), "--root", str(root), "--quantwise", str(command),
            "--node", name, "--address", address, "--kubelet-port", str(port),
            "--gpus", str(gpus), "--product", product, "--memory-mib", str(memory_mib), "--cc", cc,
        ]  # fmt: skip
        for key, value in labels.items():
            argv += ["--label", f"{key}={value}"]
        for key, value in (resources or {}).items():
            argv += ["--resource", f"{key}={value}"]
        argv += ["--serving-log", str(self.serving_log)] if logs else ["--no-logs"]
        log = self.workdir / f"standin-{name}.log"
        env = {**os.environ, "KUBECONFIG": self.cluster.kubeconfig}
        process = subprocess.Popen(argv, stdout=log.open("wb"), stderr=subprocess.STDOUT, env=env)
        node = Node(name, root, process, log, labels)
        self.started.append(node)

        def ready() -> bool:
            assert process.poll() is None, log.read_text()[-2000:]
            found = self.cluster.core.read_node(name)
            return any(c.type == "Ready" and c.status == "True" for c in found.status.conditions)

        wait_for(ready, 60, f"stand-in node {name} Ready")
        return node

    def stop(self, node: Node) -> None:
        node.process.send_signal(signal.SIGTERM)
        try:
            node.process.wait(10)
        except subprocess.TimeoutExpired:
            node.process.kill()
        with contextlib.suppress(Exception):
            self.cluster.core.delete_node(node.name)
        self.started.remove(node)

    def stop_all(self) -> None:
        for node in list(self.started):
            self.stop(node)
        self._stop.set()


@pytest.fixture(scope="session")
def e2e_workdir() -> Iterator[Path]:
    directory = Path(tempfile.mkdtemp(prefix="quantwise-e2e-"))
    yield directory
    if not os.environ.get("QUANTWISE_E2E_KEEP"):
        shutil.rmtree(directory, ignore_errors=True)


@pytest.fixture(scope="session")
def nodes(cluster: Cluster, e2e_workdir: Path) -> Iterator[Nodes]:
    started = Nodes(cluster, e2e_workdir)
    try:
        yield started
    finally:
        started.stop_all()


@pytest.fixture(scope="session")
def gpu_node(nodes: Nodes) -> Node:
    """The default node: 8 H100s, pod logs served (a vLLM start-up log for serving pods)."""
    return nodes.start("qw-e2e-h100")


# ----- the model and its volumes -----

# The e2e tiny model claims a long context (RoPE only: the weights do not change), so that a
# large KV budget can make a plan span nodes.
TINY_MAX_POSITIONS = 131072


@pytest.fixture(scope="session")
def tiny_model(e2e_workdir: Path) -> Path:
    from support.tiny import build_tiny_llama

    pytest.importorskip("transformers", reason="the e2e model is built with transformers")
    return build_tiny_llama(
        e2e_workdir / "models" / "tiny-llama", max_position_embeddings=TINY_MAX_POSITIONS
    )


@pytest.fixture(scope="session")
def calibration(e2e_workdir: Path) -> Path:
    from support.tiny import write_calibration

    return write_calibration(e2e_workdir / "models" / "calibration.jsonl")


def make_claim(cluster: Cluster, namespace: str, node: Node, claim: str = "models") -> Path:
    """A PersistentVolumeClaim bound to a hostPath PV (the stand-in maps it to a local folder).

    Returns that folder. The stand-in maps a claim by its name alone (``ROOT/pvc/<claim>``): two
    namespaces' claims of one name on one node share the folder.
    """
    folder = node.claim_dir(claim)
    folder.mkdir(parents=True, exist_ok=True)
    pv = f"{namespace}-{claim}"
    cluster.core.create_persistent_volume({
        "metadata": {"name": pv, "labels": {E2E_LABEL: namespace}},
        "spec": {
            "capacity": {"storage": "10Gi"}, "accessModes": ["ReadWriteMany"],
            "storageClassName": "manual", "persistentVolumeReclaimPolicy": "Retain",
            "hostPath": {"path": str(folder)},
            "claimRef": {"namespace": namespace, "name": claim},
        },
    })  # fmt: skip
    cluster.core.create_namespaced_persistent_volume_claim(namespace, {
        "metadata": {"name": claim},
        "spec": {"accessModes": ["ReadWriteMany"], "storageClassName": "manual",
                 "volumeName": pv, "resources": {"requests": {"storage": "10Gi"}}},
    })  # fmt: skip
    wait_for(
        lambda: (
            cluster.core.read_namespaced_persistent_volume_claim(claim, namespace).status.phase
            == "Bound"
        ),
        30,
        f"PVC {namespace}/{claim} Bound",
    )
    return folder


def place(source: Path, target: Path) -> Path:
    """Copy a model (or file) onto a volume folder."""
    target.parent.mkdir(parents=True, exist_ok=True)
    if source.is_dir():
        shutil.copytree(source, target, dirs_exist_ok=True)
    else:
        shutil.copy2(source, target)
    return target


# ----- the operator -----


@dataclass
class Operator:
    """The operator as a process: its argv, environment and log."""

    argv: list[str]
    env: dict[str, str]
    log: Path
    process: subprocess.Popen[bytes] | None = None

    def start(self) -> Operator:
        assert self.process is None or self.process.poll() is not None
        out = self.log.open("ab")
        self.process = subprocess.Popen(
            self.argv, stdout=out, stderr=subprocess.STDOUT, env=self.env
        )
        return self

    def kill(self) -> None:
        """SIGKILL: the operator dies mid-work, as on a node failure."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(20)
        except subprocess.TimeoutExpired:
            self.kill()

    def output(self) -> str:
        return self.log.read_text(errors="replace")


# Fast enough for tests, slow enough to be a real operator: a resync every 5 s.
OPERATOR_ENV = {
    "QUANTWISE_RESYNC_SECONDS": "5",
    "QUANTWISE_RETRY_BACKOFF_SECONDS": "2",
    "QUANTWISE_QUANTIZER_IMAGE": "ghcr.io/quantwise/quantizer:e2e",
    "QUANTWISE_VLLM_IMAGE": "vllm/vllm-openai:v0.33.0",
}


@pytest.fixture
def run_operator(cluster: Cluster, e2e_workdir: Path) -> Iterator[Callable[..., Operator]]:
    """Start the operator watching namespaces (admin kubeconfig unless one is given)."""
    running: list[Operator] = []

    def start(
        *namespaces: str,
        kubeconfig: str | None = None,
        args: tuple[str, ...] = ("--standalone",),
        env: dict[str, str] | None = None,
    ) -> Operator:
        argv = [sys.executable, "-m", "quantwise.cli", "run", *args, "--liveness", "",
                "--log-format", "plain", "--verbose"]  # fmt: skip
        for ns in namespaces:
            argv += ["--namespace", ns]
        log = e2e_workdir / f"operator-{'-'.join(namespaces)}-{len(running)}.log"
        full_env = {**os.environ, **OPERATOR_ENV, **(env or {}),
                    "KUBECONFIG": kubeconfig or cluster.kubeconfig}  # fmt: skip
        full_env.pop("QUANTWISE_KUBE_SERVER", None)
        operator = Operator(argv, full_env, log).start()
        running.append(operator)
        return operator

    yield start
    for operator in running:
        operator.stop()


# ----- reading what happened -----


def condition(status: dict[str, Any], kind: str) -> dict[str, Any] | None:
    return next((c for c in status.get("conditions") or [] if c["type"] == kind), None)


def events(cluster: Cluster, namespace: str, name: str) -> list[tuple[str, str, str]]:
    """(type, reason, message) of the Events about the QuantizedModel ``name``, oldest first."""
    found = cluster.core.list_namespaced_event(
        namespace, field_selector=f"involvedObject.name={name},involvedObject.kind=QuantizedModel"
    ).items
    found.sort(key=lambda e: e.last_timestamp or e.event_time or e.metadata.creation_timestamp)
    return [(e.type, e.reason, e.message) for e in found]


def printer_columns(cluster: Cluster, namespace: str, name: str) -> dict[str, Any]:
    """The columns `kubectl get qm` prints (the server-side Table of the CRD's printer columns)."""
    table = get_json(cluster, f"/apis/{GROUP}/{VERSION}/namespaces/{namespace}/{PLURAL}/{name}",
                     accept="application/json;as=Table;v=v1;g=meta.k8s.io")  # fmt: skip
    names = [c["name"] for c in table["columnDefinitions"]]
    return dict(zip(names, table["rows"][0]["cells"], strict=True))


def free_port() -> int:
    """A free TCP port on 127.0.0.1 (for the operator's /metrics)."""
    return _free_port("127.0.0.1")


def api_requests(port: int, verb: str, resource: str) -> dict[str, int]:
    """The operator's ``quantwise_api_requests_total`` for one verb and resource, by HTTP code."""
    from prometheus_client.parser import text_string_to_metric_families

    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as resp:
        text = resp.read().decode()
    return {
        sample.labels["code"]: int(sample.value)
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == "quantwise_api_requests_total"
        and (sample.labels["verb"], sample.labels["resource"]) == (verb, resource)
    }


def get_json(cluster: Cluster, path: str, accept: str = "application/json") -> Any:
    """GET ``path`` from the API server, authenticated as the client is, as JSON."""
    method, url, headers, body, _ = cluster.api.param_serialize(
        "GET", path, header_params={"Accept": accept}, auth_settings=["BearerToken"]
    )
    response = cluster.api.call_api(method, url, header_params=headers, body=body)
    response.read()
    return json.loads(response.data)


def create_model(cluster: Cluster, namespace: str, body: dict[str, Any]) -> dict[str, Any]:
    body = {**body, "metadata": {**body["metadata"], "namespace": namespace}}
    created: dict[str, Any] = cluster.custom.create_namespaced_custom_object(
        GROUP, VERSION, namespace, PLURAL, body
    )
    return created


def patch_model(cluster: Cluster, namespace: str, name: str, patch: dict[str, Any]) -> None:
    cluster.custom.patch_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, name, patch)


def service_account_kubeconfig(
    cluster: Cluster, namespace: str, account: str, directory: Path
) -> str:
    """A kubeconfig that authenticates with a token of ``namespace/account`` (TokenRequest)."""
    token = cluster.core.create_namespaced_service_account_token(
        account, namespace, {"spec": {"expirationSeconds": 3600}}
    ).status.token
    conf = cluster.api.configuration
    ca = conf.ssl_ca_cert
    cluster_entry: dict[str, Any] = {"server": conf.host}
    if ca:
        cluster_entry["certificate-authority-data"] = base64.b64encode(
            Path(ca).read_bytes()
        ).decode()
    else:
        cluster_entry["insecure-skip-tls-verify"] = True
    path = directory / f"kubeconfig-{namespace}-{account}"
    path.write_text(yaml.safe_dump({
        "apiVersion": "v1", "kind": "Config", "current-context": "sa",
        "clusters": [{"name": "c", "cluster": cluster_entry}],
        "users": [{"name": "sa", "user": {"token": token}}],
        "contexts": [{"name": "sa", "context": {"cluster": "c", "user": "sa", "namespace": namespace}}],
    }))  # fmt: skip
    return str(path)
