"""Rendered Deployment and Service: the planned flags, GPUs, probes, volumes; valid Kubernetes."""

from __future__ import annotations

from typing import Any

import kubernetes_validate
import pytest
from test_api import BASE, with_
from test_planner import AWQ, LLAMA_8B

from quantwise.api.sizing import plan_spec
from quantwise.api.spec import QuantizedModelSpec
from quantwise.api.status import PlanStatus
from quantwise.planning.weights import estimate_weights
from quantwise.render.names import artifact_dir, artifact_hash, dns_label, job_name
from quantwise.render.serving import deployment, endpoint, service, serving_location

K8S_VERSION = "1.33.0"
OWNER = {
    "apiVersion": "quantwise.dev/v1alpha1",
    "kind": "QuantizedModel",
    "name": "llama",
    "uid": "0b5c7a9e-1111-2222-3333-444455556666",
    "controller": True,
    "blockOwnerDeletion": True,
}


def spec_of(obj: dict[str, Any]) -> QuantizedModelSpec:
    return QuantizedModelSpec.model_validate(obj["spec"])


def render(obj: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    spec = spec_of(obj)
    status = PlanStatus.from_plan(plan_spec(spec, LLAMA_8B, estimate_weights(LLAMA_8B, AWQ), AWQ))
    subdir = artifact_dir("llama", spec) if spec.quantization.method != "none" else None
    location = serving_location(spec, subdir)
    return (
        deployment("llama", "ml", spec, status, location, owner=OWNER),
        service("llama", "ml", owner=OWNER),
    )


def args_of(dep: dict[str, Any]) -> dict[str, str]:
    args = dep["spec"]["template"]["spec"]["containers"][0]["args"]
    return {args[i]: args[i + 1] for i in range(0, len(args) - 1, 2) if args[i].startswith("--")}


def test_deployment_carries_the_plan() -> None:
    dep, _ = render(BASE)
    args = args_of(dep)
    assert args["--model"] == f"/models/quantized/llama-{artifact_hash(spec_of(BASE))}"
    assert args["--tensor-parallel-size"] == "1"
    # The pod owns its H100: memory policy fill gives vLLM the cap (it was what the budget needed,
    # 0.31, before the memory policy).
    assert args["--gpu-memory-utilization"] == "0.90"
    assert args["--max-model-len"] == "8192"
    assert args["--max-num-seqs"] == "256"
    assert args["--kv-cache-dtype"] == "auto"
    assert args["--served-model-name"] == "llama"
    assert "--pipeline-parallel-size" not in args
    assert "--quantization" not in args  # vLLM reads quantization_config and picks Marlin itself.
    container = dep["spec"]["template"]["spec"]["containers"][0]
    assert container["resources"]["limits"]["nvidia.com/gpu"] == "1"
    assert container["command"] == ["vllm", "serve"]


def test_pod_has_probes_shm_and_a_read_only_model_volume() -> None:
    dep, _ = render(BASE)
    pod = dep["spec"]["template"]["spec"]
    container = pod["containers"][0]
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert container[probe]["httpGet"] == {"path": "/health", "port": "http"}
    assert container["ports"] == [{"name": "http", "containerPort": 8000, "protocol": "TCP"}]
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert volumes["shm"]["emptyDir"] == {"medium": "Memory", "sizeLimit": "8Gi"}
    assert volumes["model"]["persistentVolumeClaim"] == {"claimName": "models", "readOnly": True}
    mounts = {m["name"]: m for m in container["volumeMounts"]}
    assert mounts["shm"]["mountPath"] == "/dev/shm"
    assert mounts["model"] == {"name": "model", "mountPath": "/models", "readOnly": True}
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert container["securityContext"]["capabilities"] == {"drop": ["ALL"]}
    assert pod["automountServiceAccountToken"] is False
    assert {"name": "HF_HUB_OFFLINE", "value": "1"} in container["env"]


def test_owner_labels_and_selector() -> None:
    dep, svc = render(BASE)
    assert dep["metadata"]["ownerReferences"] == [OWNER]
    assert svc["metadata"]["ownerReferences"] == [OWNER]
    selector = dep["spec"]["selector"]["matchLabels"]
    assert selector == svc["spec"]["selector"]
    assert selector.items() <= dep["spec"]["template"]["metadata"]["labels"].items()
    assert svc["spec"]["ports"] == [
        {"name": "http", "port": 8000, "targetPort": "http", "protocol": "TCP"}
    ]
    assert endpoint("llama", "ml") == "http://llama.ml.svc:8000/v1"


def test_hugging_face_source_served_as_is_gets_the_token_from_the_secret() -> None:
    obj = with_("spec.quantization", {"method": "none"})
    obj = with_(
        "spec.source.huggingFace",
        {
            "repo": "hugging-quants/Meta-Llama-3.1-8B-Instruct-AWQ-INT4",
            "revision": "v2",
            "tokenSecretRef": {"name": "hf", "key": "token"},
        },
        obj,
    )
    dep, _ = render(obj)
    args = args_of(dep)
    assert args["--model"] == "hugging-quants/Meta-Llama-3.1-8B-Instruct-AWQ-INT4"
    assert args["--revision"] == "v2"
    env = dep["spec"]["template"]["spec"]["containers"][0]["env"]
    assert {
        "name": "HF_TOKEN",
        "valueFrom": {"secretKeyRef": {"name": "hf", "key": "token"}},
    } in env
    assert "model" not in {v["name"] for v in dep["spec"]["template"]["spec"]["volumes"]}


def test_user_scheduling_and_extra_args_are_passed_through() -> None:
    obj = with_(
        "spec.serving",
        {
            "gpu": {"product": "H100-80GB"},
            "nodeSelector": {"pool": "gpu"},
            "tolerations": [
                {"key": "dedicated", "operator": "Equal", "value": "ml", "effect": "NoSchedule"}
            ],
            "extraArgs": ["--enable-prefix-caching"],
            "resources": {"limits": {"memory": "64Gi"}, "requests": {"cpu": "8"}},
            "replicas": 3,
        },
    )
    dep, _ = render(obj)
    pod = dep["spec"]["template"]["spec"]
    assert pod["nodeSelector"] == {"pool": "gpu"}
    assert {"key": "dedicated", "operator": "Equal", "value": "ml", "effect": "NoSchedule"} in pod[
        "tolerations"
    ]
    assert pod["containers"][0]["args"][-1] == "--enable-prefix-caching"
    assert pod["containers"][0]["resources"]["limits"] == {"memory": "64Gi", "nvidia.com/gpu": "1"}
    assert dep["spec"]["replicas"] == 3


@pytest.mark.parametrize(
    "obj", [BASE, with_("spec.quantization", {"method": "none"})], ids=["awq", "none"]
)
def test_rendered_objects_validate_against_kubernetes_schemas(obj: dict[str, Any]) -> None:
    for manifest in render(obj):
        kubernetes_validate.validate(manifest, K8S_VERSION, strict=True)


def test_a_pipeline_parallel_plan_is_not_rendered_as_a_deployment() -> None:
    spec = spec_of(BASE)
    status = PlanStatus.from_plan(plan_spec(spec, LLAMA_8B, estimate_weights(LLAMA_8B, AWQ), AWQ))
    status = status.model_copy(update={"pipeline_parallel_size": 2})
    with pytest.raises(ValueError, match="LeaderWorkerSet"):
        deployment("llama", "ml", spec, status, serving_location(spec, "x"))


def test_names_are_deterministic_and_follow_the_artifact() -> None:
    spec = spec_of(BASE)
    assert job_name("llama", spec) == f"llama-quantize-{artifact_hash(spec)}"
    # A serving change keeps the artifact; a quantization change makes a new one.
    assert artifact_hash(spec_of(with_("spec.serving.concurrency", 4))) == artifact_hash(spec)
    assert artifact_hash(spec_of(with_("spec.quantization.groupSize", 64))) != artifact_hash(spec)
    # Defaults hash like their explicit values.
    assert artifact_hash(spec_of(with_("spec.quantization.bits", 4))) == artifact_hash(spec)
    none = spec_of(with_("spec.quantization", {"method": "none"}))
    assert job_name("llama", none).startswith("llama-inspect-")


@pytest.mark.parametrize(
    ("value", "expected_prefix"),
    [("llama", "llama"), ("Llama_3.1", "llama-3-1-"), ("x" * 80, "x" * 56)],
)
def test_dns_labels_are_sanitised_and_length_limited(value: str, expected_prefix: str) -> None:
    label = dns_label(value)
    assert label.startswith(expected_prefix)
    assert len(label) <= 63
    assert label == dns_label(value)  # Stable.
    assert all(c.isalnum() or c == "-" for c in label)
    if value != "llama":
        assert dns_label(value) != dns_label(value + "y")
