"""Updates that finish on a full cluster: a one-GPU node, as most people start with.

The model's server holds the node's only GPU; its quantization changes. Under Recreate the
server stops, the Job runs, the new artifact serves, and the Events record the downtime. Under
RollingUpdate the model keeps serving while the Job waits, the status and a Warning Event say
that the update needs a free GPU; a second node lets it finish.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from harness import Cluster, Nodes, condition, events, patch_model, wait_for
from test_loop import NAME, Watcher, create_model, jobs, manifest, volume

POOL = {"quantwise.dev/e2e-pool": "one-gpu"}


def one_gpu_model(strategy: str, pin: dict[str, str]) -> dict[str, Any]:
    body = manifest("awq", updateStrategy=strategy, nodeSelector=pin)
    body["spec"]["quantizer"] = {"nodeSelector": pin}
    return body


def serving_artifact(cluster: Cluster, namespace: str) -> str:
    dep = cluster.apps.read_namespaced_deployment(NAME, namespace)
    return str(dep.spec.template.metadata.labels["quantwise.dev/artifact"])


def test_recreate_finishes_on_one_gpu(
    cluster: Cluster, namespace: str, nodes: Nodes, tiny_model: Path, calibration: Path,
    run_operator: Any,
) -> None:  # fmt: skip
    node = nodes.start("qw-e2e-1gpu", gpus=1, labels=POOL)
    try:
        volume(cluster, namespace, node, tiny_model, calibration)
        run_operator(namespace)
        pin = {**POOL, "quantwise.dev/e2e-node": node.name}
        watch = Watcher(cluster, namespace)
        create_model(cluster, namespace, one_gpu_model("Recreate", pin))
        watch.until("Ready", timeout=240)
        before = serving_artifact(cluster, namespace)
        patch_model(cluster, namespace, NAME, {"spec": {"quantization": {"groupSize": 64}}})
        wait_for(lambda: len(jobs(cluster, namespace)) == 2, 60, "the second Job")
        wait_for(lambda: serving_artifact(cluster, namespace) != before, 300,
                 "the new artifact served")  # fmt: skip
        status = watch.until("Ready", timeout=240)
        assert status["artifact"]["groupSize"] == 64
        assert condition(status, "Updating")["reason"] == "UpToDate"  # type: ignore[index]
        seen = [(t, r) for t, r, _ in events(cluster, namespace, NAME)]
        assert ("Normal", "Recreating") in seen  # the downtime, in the Events
        assert "Quantizing" in watch.phases  # stopped while the Job ran: not "Ready"
    finally:
        nodes.stop(node)


def test_a_rolling_update_waits_for_a_gpu_serving_and_finishes_when_one_comes(
    cluster: Cluster, namespace: str, nodes: Nodes, tiny_model: Path, calibration: Path,
    run_operator: Any, e2e_workdir: Path,
) -> None:  # fmt: skip
    shared = e2e_workdir / "one-gpu-pool"  # both nodes map the claim to the same folder
    node = nodes.start("qw-e2e-pool-a", gpus=1, labels=POOL, root=shared)
    spare = None
    try:
        volume(cluster, namespace, node, tiny_model, calibration)
        run_operator(namespace)
        watch = Watcher(cluster, namespace)
        create_model(cluster, namespace, one_gpu_model("RollingUpdate", dict(POOL)))
        watch.until("Ready", timeout=240)
        before = serving_artifact(cluster, namespace)
        patch_model(cluster, namespace, NAME, {"spec": {"quantization": {"groupSize": 64}}})

        def waiting() -> dict[str, Any] | None:
            found = condition(watch.look(), "Updating")
            return found if found and found["reason"] == "WaitingForGPU" else None

        updating = wait_for(waiting, 120, "Updating WaitingForGPU")
        assert "Insufficient nvidia.com/gpu" in updating["message"]
        assert "updateStrategy: Recreate" in updating["message"]
        status = watch.look()
        assert status["phase"] == "Ready" and condition(status, "Ready")["status"] == "True"  # type: ignore[index]
        assert serving_artifact(cluster, namespace) == before  # still serving the old one
        assert ("Warning", "WaitingForGPU") in [(t, r) for t, r, _ in
                                                events(cluster, namespace, NAME)]  # fmt: skip

        spare = nodes.start("qw-e2e-pool-b", gpus=1, labels=POOL, root=shared)
        wait_for(lambda: serving_artifact(cluster, namespace) != before, 300,
                 "the new artifact served")  # fmt: skip
        status = watch.until("Ready", timeout=240)
        wait_for(lambda: condition(watch.look(), "Updating")["reason"] == "UpToDate", 120,  # type: ignore[index]
                 "the rollout to finish")  # fmt: skip
        assert watch.look()["artifact"]["groupSize"] == 64
        assert "Pending" not in watch.phases[1:]  # it never stopped saying it serves
    finally:
        for started in (spare, node):
            if started is not None:
                nodes.stop(started)
