"""The committed CRD is the generated one, is structural, and is a valid Kubernetes object."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from quantwise.api.crd import CRD_FILENAME, build_crd, render_crd_yaml
from quantwise.planning.gpus import GPU_NAMES
from quantwise.planning.kvcache import KV_CACHE_DTYPES

ROOT = Path(__file__).parents[2]
COMMITTED = ROOT / "crds" / CRD_FILENAME
K8S_VERSION = "1.33.0"


def schema() -> dict[str, Any]:
    return build_crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]


def walk(node: dict[str, Any], path: str = "") -> list[tuple[str, dict[str, Any]]]:
    out = [(path, node)]
    for key, prop in node.get("properties", {}).items():
        out += walk(prop, f"{path}.{key}")
    if isinstance(node.get("items"), dict):
        out += walk(node["items"], f"{path}[]")
    if isinstance(node.get("additionalProperties"), dict):
        out += walk(node["additionalProperties"], f"{path}{{}}")
    return out


def test_committed_crd_is_the_generated_one() -> None:
    assert COMMITTED.read_text() == render_crd_yaml(), "crds/ is stale: run `quantwise crd`"


def test_crd_validates_against_kubernetes_schema() -> None:
    crd = yaml.safe_load(COMMITTED.read_text())
    kubernetes_validate.validate(crd, K8S_VERSION, strict=True)


def test_schema_is_structural() -> None:
    for path, node in walk(schema()):
        assert "$ref" not in node, path
        assert "title" not in node, path
        assert "anyOf" not in node or node.get("x-kubernetes-int-or-string"), path
        assert "type" in node or node.get("x-kubernetes-int-or-string"), f"{path} has no type"
        assert node.get("type") != "null", path
        assert "default" not in node or node["default"] is not None, path
        if "exclusiveMinimum" in node:
            assert isinstance(node["exclusiveMinimum"], bool), path


def test_every_spec_field_is_described() -> None:
    """`kubectl explain quantizedmodel.spec...` has something to say for every field."""
    spec = schema()["properties"]["spec"]
    missing = [
        p
        for p, n in walk(spec, ".spec")[1:]
        if "description" not in n and not p.endswith(("[]", "}"))
    ]
    assert missing == []


def test_names_subresources_and_columns() -> None:
    crd = build_crd()
    names = crd["spec"]["names"]
    assert names["shortNames"] == ["qm"]
    assert "quantwise" in names["categories"]
    version = crd["spec"]["versions"][0]
    assert version["subresources"]["status"] == {}
    assert version["subresources"]["scale"] == {
        "specReplicasPath": ".spec.serving.replicas",
        "statusReplicasPath": ".status.replicas",
        "labelSelectorPath": ".status.selector",
    }
    columns = {c["name"]: c["jsonPath"] for c in version["additionalPrinterColumns"]}
    assert columns["Phase"] == ".status.phase"
    assert columns["Method"] == ".spec.quantization.method"
    assert columns["Bits"] == ".status.artifact.bits"
    assert columns["TP"] == ".status.plan.tensorParallelSize"
    assert columns["GPU-Util"] == ".status.plan.gpuMemoryUtilization"
    assert columns["Ready"] == '.status.conditions[?(@.type=="Ready")].status'
    assert columns["Age"] == ".metadata.creationTimestamp"


def test_enums_and_defaults_come_from_the_code() -> None:
    props = schema()["properties"]["spec"]["properties"]
    serving = props["serving"]["properties"]
    assert serving["kvCacheDtype"]["enum"] == list(KV_CACHE_DTYPES)
    assert serving["kvCacheDtype"]["default"] == "auto"
    assert serving["maxGpuMemoryUtilization"] == {
        **serving["maxGpuMemoryUtilization"],
        "minimum": 0,
        "exclusiveMinimum": True,
        "maximum": 1,
        "default": 0.9,
    }
    gpu_rules = " ".join(r["rule"] for r in serving["gpu"]["x-kubernetes-validations"])
    for name in GPU_NAMES:
        assert name.lower() in gpu_rules
    assert props["quantization"]["properties"]["method"]["enum"] == [
        "awq",
        "gptq",
        "w8a8-int8",
        "fp8",
        "fp8-dynamic",
        "none",
    ]
    # Nested objects default to {} so that their own defaults apply.
    assert props["serving"]["default"] == {}
    assert props["quantizer"]["default"] == {}
    assert props["quantization"]["properties"]["calibration"]["default"] == {}


def test_scale_path_always_exists_after_defaulting() -> None:
    """The scale subresource reads spec.serving.replicas, which defaulting always sets."""
    serving = schema()["properties"]["spec"]["properties"]["serving"]
    assert serving["default"] == {}
    assert serving["properties"]["replicas"]["default"] == 1


def test_status_conditions_are_a_map_keyed_by_type() -> None:
    conditions = schema()["properties"]["status"]["properties"]["conditions"]
    assert conditions["x-kubernetes-list-type"] == "map"
    assert conditions["x-kubernetes-list-map-keys"] == ["type"]
    assert "type" in conditions["items"]["required"]


@pytest.mark.parametrize("rule_holder", ["spec", "source", "quantization", "gpu", "extraArgs"])
def test_cel_rules_carry_messages(rule_holder: str) -> None:
    found = [
        n for p, n in walk(schema()) if p.endswith(rule_holder) and "x-kubernetes-validations" in n
    ]
    assert found, rule_holder
    for node in found:
        for rule in node["x-kubernetes-validations"]:
            assert rule["message"] and rule["rule"]
