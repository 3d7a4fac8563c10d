"""The chart on a real API server: install, upgrade, uninstall, and the RBAC it grants.

`helm install` with the real Helm engine (helm-python-sdk) in a namespace that enforces Pod
Security ``restricted``, with one replica and with two (Kopf's peering), watching named
namespaces and every namespace; then the operator run with a token of the chart's
ServiceAccount takes a model to Ready: the chart's RBAC is enough, and the operator asks for
nothing it was not granted.
"""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from harness import (
    ROOT,
    Cluster,
    Node,
    create_model,
    get_json,
    service_account_kubeconfig,
    wait_for,
)
from test_loop import NAME, Watcher, manifest, volume

helm = pytest.importorskip("helm_python", reason="helm-python-sdk (the test extra)")
CHART = ROOT / "charts" / "quantwise"
RESTRICTED = {
    "pod-security.kubernetes.io/enforce": "restricted",
    "pod-security.kubernetes.io/enforce-version": "latest",
}


@contextlib.contextmanager
def release(
    cluster: Cluster, values: dict[str, Any], labels: dict[str, str] | None = None
) -> Iterator[tuple[Any, str, str]]:
    """The chart installed as a fresh release in a fresh namespace; uninstalled afterwards."""
    namespace = f"qw-e2e-sys-{uuid.uuid4().hex[:6]}"
    name = f"quantwise-{uuid.uuid4().hex[:6]}"  # contains the chart name: its full name
    cluster.core.create_namespace(
        {"metadata": {"name": namespace, "labels": {"quantwise.dev/e2e": "true", **(labels or {})}}}
    )
    config = helm.Config(kubeconfig_path=cluster.kubeconfig, namespace=namespace)
    try:
        config.install(helm.Chart.load(CHART), name, values, namespace=namespace, timeout=120)
        yield config, namespace, name
    finally:
        with contextlib.suppress(Exception):
            config.uninstall(name, timeout=60)
        with contextlib.suppress(Exception):
            cluster.core.delete_namespace(namespace)


def operator_pods(cluster: Cluster, namespace: str) -> list[Any]:
    return list(cluster.core.list_namespaced_pod(
        namespace, label_selector="app.kubernetes.io/component=operator").items)  # fmt: skip


@pytest.mark.parametrize("all_namespaces", [False, True], ids=["namespaced", "cluster-wide"])
def test_install_upgrade_to_two_replicas_and_uninstall(
    cluster: Cluster, gpu_node: Node, all_namespaces: bool
) -> None:
    values: dict[str, Any] = {"watch": {"allNamespaces": all_namespaces}}
    with release(cluster, values, RESTRICTED) as (config, namespace, name):
        # Pod Security restricted admits the operator pod (the ReplicaSet could create it).
        wait_for(lambda: operator_pods(cluster, namespace), 60, "the operator pod")
        dep = cluster.apps.read_namespaced_deployment(name, namespace)
        assert "--standalone" in dep.spec.template.spec.containers[0].args
        assert dep.spec.strategy.type == "Recreate"

        # High availability: two replicas, one active through Kopf's peering object.
        config.upgrade(helm.Chart.load(CHART), name, {**values, "replicaCount": 2},
                       namespace=namespace, timeout=120)  # fmt: skip
        dep = cluster.apps.read_namespaced_deployment(name, namespace)
        assert dep.spec.replicas == 2
        assert f"--peering={name}" in dep.spec.template.spec.containers[0].args
        wait_for(lambda: len(operator_pods(cluster, namespace)) == 2, 60, "two operator pods")
        if all_namespaces:
            peering = cluster.custom.get_cluster_custom_object(
                "kopf.dev", "v1", "clusterkopfpeerings", name)  # fmt: skip
        else:
            peering = cluster.custom.get_namespaced_custom_object(
                "kopf.dev", "v1", namespace, "kopfpeerings", name)  # fmt: skip
        assert peering["metadata"]["name"] == name
        pdb = get_json(
            cluster, f"/apis/policy/v1/namespaces/{namespace}/poddisruptionbudgets/{name}"
        )
        assert pdb["spec"]["minAvailable"] == 1

        config.uninstall(name, timeout=60)
        wait_for(
            lambda: not cluster.apps.list_namespaced_deployment(namespace).items,
            60,
            "the operator Deployment gone",
        )
    # Helm never deletes what crds/ installed: the models (and their servers) outlive the chart.
    names = {c.metadata.name for c in cluster.ext.list_custom_resource_definition().items}
    assert {"quantizedmodels.quantwise.dev", "kopfpeerings.kopf.dev",
            "clusterkopfpeerings.kopf.dev"} <= names  # fmt: skip


def test_the_chart_rbac_is_enough_for_the_whole_loop(
    cluster: Cluster, namespace: str, gpu_node: Node, tiny_model: Path, calibration: Path,
    run_operator: Any, e2e_workdir: Path,
) -> None:  # fmt: skip
    volume(cluster, namespace, gpu_node, tiny_model, calibration)
    with release(cluster, {"watch": {"namespaces": [namespace]}}) as (_, system, name):
        kubeconfig = service_account_kubeconfig(cluster, system, name, e2e_workdir)
        # The chart's own replica is a pod the stand-in only reports Running: the loop is run by
        # this process, authenticated exactly as that pod would be.
        operator = run_operator(namespace, kubeconfig=kubeconfig)
        watch = Watcher(cluster, namespace)
        create_model(cluster, namespace, manifest("awq"))
        status = watch.until("Ready", timeout=240)
        assert status["replicas"] == 1
        assert cluster.apps.read_namespaced_deployment(NAME, namespace).status.available_replicas
        operator.stop()
        log = operator.output()
        assert "Forbidden" not in log and "(403)" not in log, log[-3000:]


def test_two_replicas_one_acts(
    cluster: Cluster, namespace: str, gpu_node: Node, tiny_model: Path, calibration: Path,
    run_operator: Any, e2e_workdir: Path,
) -> None:  # fmt: skip
    """replicaCount: 2 as the chart runs it: two operators with the chart's token and Kopf's
    peering (each with a priority of its own: replicas of one priority would all pause). The
    model goes Ready, and only one of the two ever wrote."""
    volume(cluster, namespace, gpu_node, tiny_model, calibration)
    values = {"replicaCount": 2, "watch": {"namespaces": [namespace]}}
    with release(cluster, values) as (_, system, name):
        kubeconfig = service_account_kubeconfig(cluster, system, name, e2e_workdir)
        peering = ("--peering", name)
        first = run_operator(namespace, kubeconfig=kubeconfig, args=peering)

        def peers() -> dict[str, Any]:
            body = cluster.custom.get_namespaced_custom_object(
                "kopf.dev", "v1", namespace, "kopfpeerings", name
            )
            return dict(body.get("status") or {})

        wait_for(lambda: len(peers()) == 1, 60, "the first replica in the peering object")
        second = run_operator(namespace, kubeconfig=kubeconfig, args=peering)
        wait_for(lambda: len(peers()) == 2, 60, "both replicas in the peering object")
        # The replica of the higher priority acts. Kopf starts a replica paused and logs only a
        # change: a second replica of the lower priority stays paused without a word, one of the
        # higher resumes and the first then logs "Pausing operations in favour of" the second.
        by_pid = {op.process.pid: op for op in (first, second) if op.process is not None}
        ranked = sorted(peers().items(), key=lambda peer: peer[1]["priority"])
        (_, low), (_, high) = [(ident, by_pid[int(ident.rsplit("/", 1)[1])]) for ident, _ in ranked]
        if low is first:
            wait_for(lambda: "Pausing operations in favour of" in first.output(), 60,
                     "the first replica to pause for the second")  # fmt: skip
        create_model(cluster, namespace, manifest("awq"))
        Watcher(cluster, namespace).until("Ready", timeout=240)
        first.stop()
        second.stop()
        wrote = [op for op in (first, second) if "creating Job" in op.output()]
        assert wrote == [high], [op.output()[-2000:] for op in (first, second)]
        for op in (first, second):
            assert "Forbidden" not in op.output() and "(403)" not in op.output()
