"""The whole loop on a real control plane: quantize -> validate -> plan -> serve -> Ready.

A real API server, controllers and scheduler; a kubelet stand-in that really runs the Job's
``quantwise quantize`` on the tiny model (on this machine's CPU) and reports vLLM pods Ready; the
operator as a process. Each test asserts on the status, the conditions, the Events and the
objects the real controllers made.
"""

from __future__ import annotations

import contextlib
import copy
import shutil
import time
from pathlib import Path
from typing import Any

import lupa
import pytest
from harness import (
    ON_OUR_NODES,
    ROOT,
    Cluster,
    Node,
    Nodes,
    api_requests,
    condition,
    create_model,
    events,
    free_port,
    make_claim,
    patch_model,
    place,
    printer_columns,
    wait_for,
)

NAME = "tiny"
HEALTH = (ROOT / "deploy" / "argocd" / "health.lua").read_text()


def manifest(method: str = "awq", **serving: Any) -> dict[str, Any]:
    quantization: dict[str, Any] = {"method": method}
    if method != "none":
        quantization["calibration"] = {
            "pvc": {"claimName": "models", "path": "calibration/samples.jsonl"},
            "samples": 8,
            "sequenceLength": 32,
        }
    if method in ("awq", "gptq"):
        quantization["groupSize"] = 32
    spec: dict[str, Any] = {
        "source": {"pvc": {"claimName": "models", "path": "base/tiny-llama"}},
        "quantization": quantization,
        "serving": {"gpu": {"product": "H100-80GB"}, "maxModelLen": 4096, "concurrency": 4,
                    "nodeSelector": dict(ON_OUR_NODES), **serving},
        "quantizer": {"nodeSelector": dict(ON_OUR_NODES)},
    }  # fmt: skip
    if method != "none":
        spec["storage"] = {"pvc": {"claimName": "models", "path": "quantized"}}
    return {"apiVersion": "quantwise.dev/v1alpha1", "kind": "QuantizedModel",
            "metadata": {"name": NAME}, "spec": spec}  # fmt: skip


def volume(cluster: Cluster, namespace: str, node: Node, model: Path, calibration: Path) -> Path:
    """The namespace's "models" claim, holding the base model and the calibration file, and no
    artifact: the stand-in maps a claim by its name, so every test's "models" on one node is one
    folder, and a checkpoint an earlier test published would be found, not made."""
    folder = make_claim(cluster, namespace, node)
    shutil.rmtree(folder / "quantized", ignore_errors=True)
    place(model, folder / "base" / "tiny-llama")
    place(calibration, folder / "calibration" / "samples.jsonl")
    return folder


def health(obj: dict[str, Any]) -> dict[str, Any]:
    """deploy/argocd/health.lua on the object as the API server returned it (as Argo CD runs it)."""
    lua = lupa.LuaRuntime(unpack_returned_tuples=True)
    lua.globals().obj = lua.table_from(obj, recursive=True)
    return dict(lua.execute(HEALTH).items())


class Watcher:
    """Follows a QuantizedModel: every phase it showed, and Argo CD's health at each."""

    def __init__(self, cluster: Cluster, namespace: str, name: str = NAME) -> None:
        self.cluster, self.namespace, self.name = cluster, namespace, name
        self.phases: list[str] = []
        self.health: dict[str, str] = {}

    def look(self) -> dict[str, Any]:
        obj = self.cluster.model(self.namespace, self.name)
        status = obj.get("status") or {}
        phase = status.get("phase")
        if phase and (not self.phases or self.phases[-1] != phase):
            self.phases.append(phase)
            self.health[phase] = health(obj)["status"]
        return dict(status)

    def until(self, phase: str, timeout: float = 180) -> dict[str, Any]:
        return wait_for(lambda: (s := self.look()).get("phase") == phase and s, timeout,
                        f"{self.namespace}/{self.name} phase {phase} (seen {self.phases})",
                        every=0.2)  # fmt: skip


def jobs(cluster: Cluster, namespace: str) -> list[Any]:
    return list(cluster.batch.list_namespaced_job(namespace).items)


@pytest.fixture
def setup(
    cluster: Cluster,
    namespace: str,
    gpu_node: Node,
    tiny_model: Path,
    calibration: Path,
    run_operator: Any,
) -> tuple[Cluster, str, Path, Any]:
    folder = volume(cluster, namespace, gpu_node, tiny_model, calibration)
    operator = run_operator(namespace)
    return cluster, namespace, folder, operator


@pytest.mark.parametrize("method", ["awq", "gptq", "w8a8-int8"])
def test_the_whole_loop_from_a_volume(setup: Any, method: str) -> None:
    cluster, namespace, folder, _ = setup
    watch = Watcher(cluster, namespace)
    create_model(cluster, namespace, manifest(method))
    status = watch.until("Ready")

    # Exactly one Job, completed by the real Job controller; the artifact it wrote.
    (job,) = jobs(cluster, namespace)
    assert job.metadata.name.startswith(f"{NAME}-quantize-")
    assert job.status.succeeded == 1
    assert job.metadata.owner_references[0].kind == "QuantizedModel"
    artifact = status["artifact"]
    assert artifact["path"].startswith("pvc://models/quantized/tiny-")
    assert artifact["method"] == method and artifact["weightBytes"] > 0
    assert artifact["bits"] == (8 if method == "w8a8-int8" else 4)
    written = folder / "quantized" / artifact["path"].rsplit("/", 1)[-1]
    assert (written / "config.json").is_file() and list(written.glob("*.safetensors"))

    # Validated, planned, deployed, ready; the plan sized from the reported bytes.
    for kind, reason in [("Quantized", "Quantized"), ("Planned", "Planned"),
                         ("Deployed", "Applied"), ("Ready", "Available")]:  # fmt: skip
        found = condition(status, kind)
        assert found is not None and (found["status"], found["reason"]) == ("True", reason), found
    assert condition(status, "Validated")["status"] == "True"  # type: ignore[index]
    plan = status["plan"]
    assert plan["tensorParallelSize"] == 1 and plan["weightBytesSource"] == "measured"
    assert plan["weightBytes"] == artifact["weightBytes"]
    assert status["endpoint"] == f"http://{NAME}.{namespace}.svc:8000/v1"
    assert status["replicas"] == 1

    # The Deployment and Service the operator applied, as the API server stored them.
    dep = cluster.apps.read_namespaced_deployment(NAME, namespace)
    args = dep.spec.template.spec.containers[0].args
    assert args[args.index("--model") + 1] == f"/models/quantized/{written.name}"
    assert args[args.index("--gpu-memory-utilization") + 1] == f"{plan['gpuMemoryUtilization']:.2f}"
    assert dep.status.available_replicas == 1
    svc = cluster.core.read_namespaced_service(NAME, namespace)
    assert svc.spec.selector == dep.spec.selector.match_labels

    # The vLLM start-up log the stand-in serves was read: vLLM's KV cache holds the budget.
    verified = wait_for(lambda: condition(watch.look(), "KVCacheVerified"), 30, "KVCacheVerified")
    assert (verified["status"], verified["reason"]) == ("True", "AsPlanned")
    assert watch.look()["plan"]["measured"]["kvCacheTokens"] == 2_000_000

    # What `kubectl get qm` prints.
    columns = printer_columns(cluster, namespace, NAME)
    assert columns["Phase"] == "Ready" and columns["Method"] == method
    assert columns["TP"] == 1 and columns["Ready"] == "True"

    # The Events told the story; Argo CD saw progress, then health.
    reasons = [reason for _, reason, _ in events(cluster, namespace, NAME)]
    assert {"JobCreated", "Quantized", "Applied", "Available"} <= set(reasons)
    assert "Quantizing" in watch.phases and watch.phases[-1] == "Ready"
    assert watch.health["Ready"] == "Healthy"
    assert {watch.health[p] for p in watch.phases[:-1]} <= {"Progressing"}


def test_a_prequantized_checkpoint_is_inspected_then_served(
    cluster: Cluster, namespace: str, gpu_node: Node, tiny_model: Path, calibration: Path,
    run_operator: Any, prequantized: Path,
) -> None:  # fmt: skip
    folder = volume(cluster, namespace, gpu_node, tiny_model, calibration)
    place(prequantized, folder / "base" / "tiny-llama-gptq")
    run_operator(namespace)
    body = manifest("none")
    body["spec"]["source"]["pvc"]["path"] = "base/tiny-llama-gptq"
    watch = Watcher(cluster, namespace)
    create_model(cluster, namespace, body)
    status = watch.until("Ready")
    (job,) = jobs(cluster, namespace)
    assert job.metadata.name.startswith(f"{NAME}-inspect-")
    assert condition(status, "Quantized")["reason"] == "Inspected"  # type: ignore[index]
    assert status["artifact"]["bits"] == 4 and status["artifact"]["groupSize"] == 64
    assert status["artifact"]["path"] == "pvc://models/base/tiny-llama-gptq"
    assert watch.phases[-1] == "Ready" and "Quantizing" not in watch.phases
    dep = cluster.apps.read_namespaced_deployment(NAME, namespace)
    args = dep.spec.template.spec.containers[0].args
    assert args[args.index("--model") + 1] == "/models/base/tiny-llama-gptq"


def test_a_job_that_fails_names_the_field_then_runs_again(setup: Any) -> None:
    cluster, namespace, folder, _ = setup
    body = manifest("awq")
    body["spec"]["source"]["pvc"]["path"] = "base/not-there"
    watch = Watcher(cluster, namespace)
    create_model(cluster, namespace, body)
    status = watch.until("Failed")
    failed = condition(status, "Quantized")
    assert failed is not None and failed["reason"] == "ModelNotFound"
    assert "spec.source.pvc.path" in failed["message"]
    assert watch.health["Failed"] == "Degraded"
    (job,) = jobs(cluster, namespace)
    # exit status 3 (permanent): the pod failure policy failed the Job at once, no retries
    assert job.status.failed == 1
    assert ("Warning", "ModelNotFound") in {(t, r) for t, r, _ in events(cluster, namespace, NAME)}

    # The model appears where the spec said; the retry annotation runs the Job again.
    shutil.copytree(folder / "base" / "tiny-llama", folder / "base" / "not-there")
    patch_model(cluster, namespace, NAME,
                {"metadata": {"annotations": {"quantwise.dev/retry": "1"}}})  # fmt: skip
    watch.until("Ready")
    (again,) = jobs(cluster, namespace)
    assert again.metadata.name == job.metadata.name and again.metadata.uid != job.metadata.uid
    assert watch.look()["retry"] == "1"


def test_an_operator_killed_during_the_job_resumes_without_a_second_job(setup: Any) -> None:
    cluster, namespace, _, operator = setup
    create_model(cluster, namespace, manifest("awq"))
    wait_for(lambda: jobs(cluster, namespace), 60, "the quantization Job")
    operator.kill()
    (job,) = jobs(cluster, namespace)
    wait_for(lambda: cluster.batch.read_namespaced_job(job.metadata.name, namespace).status.succeeded,
             180, "the Job to finish while the operator is down")  # fmt: skip
    assert cluster.status(namespace, NAME)["phase"] in ("Quantizing", "Pending")
    operator.start()
    Watcher(cluster, namespace).until("Ready")
    assert [j.metadata.uid for j in jobs(cluster, namespace)] == [job.metadata.uid]


def test_updates_and_deletion(setup: Any) -> None:
    cluster, namespace, _, _ = setup
    watch = Watcher(cluster, namespace)
    create_model(cluster, namespace, manifest("awq"))
    watch.until("Ready")
    dep = cluster.apps.read_namespaced_deployment(NAME, namespace)
    (first_job,) = jobs(cluster, namespace)

    # A serving-only change: the same Deployment is updated in place, no new Job.
    patch_model(cluster, namespace, NAME, {"spec": {"serving": {"maxModelLen": 2048}}})

    def args() -> list[str]:
        return list(cluster.apps.read_namespaced_deployment(NAME, namespace)
                    .spec.template.spec.containers[0].args)  # fmt: skip

    wait_for(lambda: args()[args().index("--max-model-len") + 1] == "2048", 60, "the new context")
    updated = cluster.apps.read_namespaced_deployment(NAME, namespace)
    assert updated.metadata.uid == dep.metadata.uid
    assert updated.metadata.generation > dep.metadata.generation
    assert [j.metadata.uid for j in jobs(cluster, namespace)] == [first_job.metadata.uid]
    watch.until("Ready")

    # A quantization change: a second Job; the old artifact serves until the new one is made.
    old_artifact = updated.spec.template.metadata.labels["quantwise.dev/artifact"]
    patch_model(cluster, namespace, NAME, {"spec": {"quantization": {"groupSize": 64}}})
    wait_for(lambda: len(jobs(cluster, namespace)) == 2, 60, "a second Job")
    deadline = time.monotonic() + 180
    while True:  # while the new Job runs, the Deployment serves the old artifact, available
        assert time.monotonic() < deadline, "the second Job did not finish"
        serving = cluster.apps.read_namespaced_deployment(NAME, namespace)
        new_job = next(
            j for j in jobs(cluster, namespace) if j.metadata.uid != first_job.metadata.uid
        )
        if new_job.status.succeeded:
            break
        assert serving.spec.template.metadata.labels["quantwise.dev/artifact"] == old_artifact
        assert serving.status.available_replicas == 1
        time.sleep(0.3)
    wait_for(lambda: cluster.apps.read_namespaced_deployment(NAME, namespace)
             .spec.template.metadata.labels["quantwise.dev/artifact"] != old_artifact,
             120, "the Deployment to serve the new artifact")  # fmt: skip
    status = watch.until("Ready")
    assert status["artifact"]["groupSize"] == 64

    # Deletion: the garbage collector removes every child (no finalizer holds the model).
    cluster.custom.delete_namespaced_custom_object(
        "quantwise.dev", "v1alpha1", namespace, "quantizedmodels", NAME
    )

    def children() -> list[str]:
        selector = f"quantwise.dev/model={NAME}"
        return [
            *(f"job/{j.metadata.name}" for j in jobs(cluster, namespace)),
            *(f"deployment/{d.metadata.name}" for d in
              cluster.apps.list_namespaced_deployment(namespace).items),
            *(f"service/{s.metadata.name}" for s in
              cluster.core.list_namespaced_service(namespace, label_selector=selector).items),
            *(f"pod/{p.metadata.name}" for p in
              cluster.core.list_namespaced_pod(namespace).items),
        ]  # fmt: skip

    with contextlib.suppress(AssertionError):
        wait_for(lambda: not children(), 120, "every child garbage-collected", every=1)
    assert children() == []


def test_an_unreadable_pod_log_does_not_hold_ready(
    cluster: Cluster, namespace: str, nodes: Nodes, tiny_model: Path, calibration: Path,
    run_operator: Any,
) -> None:  # fmt: skip
    """A node whose kubelet serves no logs: pods/log answers 500. The model is Ready in the
    reconcile that read the log once (before, the operator retried it for ~100 s with Ready held
    back); KVCacheVerified says the log could not be read, and it is read again a minute later."""
    node = nodes.start("qw-e2e-nologs", logs=False)
    try:
        volume(cluster, namespace, node, tiny_model, calibration)
        port = free_port()
        # The running Job's log is read for its progress at most once (the next read is an hour
        # away), so the reads of pods/log are that one, if the Job was seen running, and vLLM's.
        run_operator(namespace, args=("--standalone", "--metrics-port", str(port)),
                     env={"QUANTWISE_PROGRESS_INTERVAL_SECONDS": "3600"})  # fmt: skip
        pin = {**ON_OUR_NODES, "quantwise.dev/e2e-node": node.name}
        body = manifest("awq", nodeSelector=pin)
        body["spec"]["quantizer"] = {"nodeSelector": pin}
        create_model(cluster, namespace, body)
        status = Watcher(cluster, namespace).until("Ready", timeout=300)
        verified = condition(status, "KVCacheVerified")
        assert verified is not None and verified["status"] == "Unknown"
        assert verified["reason"] == "LogUnavailable" and "500" in verified["message"]
        assert "measured" not in status["plan"]
        # One attempt at vLLM's log, answered 500, and Ready with it: no retry loop.
        reads = api_requests(port, "get", "pods/log")
        assert set(reads) == {"500"} and 1 <= reads["500"] <= 2, reads
    finally:
        nodes.stop(node)


def test_a_plan_across_nodes_is_a_leader_worker_set(
    cluster: Cluster, namespace: str, gpu_node: Node, tiny_model: Path, calibration: Path,
    run_operator: Any, lws_crd: None,
) -> None:  # fmt: skip
    """With the LeaderWorkerSet CRD applied: a model that needs two L4 nodes is served by a
    LeaderWorkerSet the real schema accepts; its readiness and replicas reach the status."""
    volume(cluster, namespace, gpu_node, tiny_model, calibration)
    run_operator(namespace)
    # 320 sequences of 131072 tokens: 20 GiB of KV cache; one L4 per node, up to two nodes.
    body = manifest("awq", gpu={"product": "L4"}, gpusPerNode=1, maxNodes=2,
                    maxModelLen=131072, concurrency=320)  # fmt: skip
    watch = Watcher(cluster, namespace)
    create_model(cluster, namespace, body)
    lws = wait_for(lambda: cluster.custom.get_namespaced_custom_object(
        "leaderworkerset.x-k8s.io", "v1", namespace, "leaderworkersets", NAME), 240,
        "the LeaderWorkerSet")  # fmt: skip
    status = watch.until("Deploying")
    plan = status["plan"]
    assert (plan["tensorParallelSize"], plan["pipelineParallelSize"]) == (1, 2)
    group = lws["spec"]["leaderWorkerTemplate"]
    assert group["size"] == 2
    assert lws["metadata"]["ownerReferences"][0]["kind"] == "QuantizedModel"
    leader = group["leaderTemplate"]["spec"]["containers"][0]
    assert leader["args"][leader["args"].index("--nnodes") + 1] == "2"
    assert cluster.core.read_namespaced_service(NAME, namespace).spec.selector[
        "quantwise.dev/role"] == "leader"  # fmt: skip
    assert cluster.apps.list_namespaced_deployment(namespace).items == []
    # No LWS controller runs here: report its groups as the controller would.
    cluster.custom.patch_namespaced_custom_object_status(
        "leaderworkerset.x-k8s.io", "v1", namespace, "leaderworkersets", NAME,
        {"status": {"replicas": 1, "readyReplicas": 1, "updatedReplicas": 1}},
    )  # fmt: skip
    status = watch.until("Ready", timeout=60)
    assert status["replicas"] == 1
    scale = cluster.custom.get_namespaced_custom_object_scale(
        "quantwise.dev", "v1alpha1", namespace, "quantizedmodels", NAME
    )
    assert scale["status"]["replicas"] == 1


@pytest.fixture(scope="session")
def prequantized(e2e_workdir: Path, tiny_model: Path, calibration: Path) -> Path:
    """The tiny model quantized once (GPTQ, group 64) by `quantwise quantize`, as a checkpoint
    someone else made and a QuantizedModel serves with method none."""
    from support.quantizer import quantize

    output = e2e_workdir / "prequantized" / "tiny-llama-gptq"
    code, text, _ = quantize(tiny_model, output, "gptq", "--group-size", "64",
                             calibration=calibration)  # fmt: skip
    assert code == 0, text
    return output


@pytest.fixture(scope="session")
def lws_crd(cluster: Cluster) -> None:
    """The LeaderWorkerSet CRD (QUANTWISE_E2E_LWS_CRD: its YAML, from kubernetes-sigs/lws)."""
    import os

    import yaml

    path = os.environ.get("QUANTWISE_E2E_LWS_CRD")
    if not path or not Path(path).is_file():
        pytest.skip("set QUANTWISE_E2E_LWS_CRD to leaderworkerset.x-k8s.io_leaderworkersets.yaml")
    cluster.apply_crd(copy.deepcopy(yaml.safe_load(Path(path).read_text())))
