"""The API models and the CRD agree on what is valid, and errors name the field."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import ValidationError

from quantwise.api.spec import QuantizedModelSpec
from support.crdcheck import admission_errors, defaulted

EXAMPLES = sorted(Path(__file__).parents[2].joinpath("examples").glob("*.yaml"))

BASE: dict[str, Any] = {
    "apiVersion": "quantwise.dev/v1alpha1",
    "kind": "QuantizedModel",
    "metadata": {"name": "llama", "namespace": "ml"},
    "spec": {
        "source": {"huggingFace": {"repo": "meta-llama/Llama-3.1-8B-Instruct"}},
        "quantization": {"method": "awq"},
        "storage": {"pvc": {"claimName": "models", "path": "quantized"}},
        "serving": {"gpu": {"product": "H100-80GB"}},
    },
}


def with_(path: str, value: Any, base: dict[str, Any] = BASE) -> dict[str, Any]:
    """A copy of ``base`` with the dotted ``path`` set to ``value`` (``...`` deletes it)."""
    obj = copy.deepcopy(base)
    node = obj
    *parents, last = path.split(".")
    for key in parents:
        node = node.setdefault(key, {})
    if value is ...:
        node.pop(last, None)
    else:
        node[last] = value
    return obj


def pydantic_error(obj: dict[str, Any]) -> str | None:
    try:
        QuantizedModelSpec.model_validate(obj["spec"])
    except ValidationError as exc:
        return str(exc)
    return None


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_examples_are_valid_for_both(path: Path) -> None:
    doc = yaml.safe_load(path.read_text())
    assert admission_errors(doc) == []
    assert pydantic_error(doc) is None


def test_there_are_examples() -> None:
    assert len(EXAMPLES) >= 3


# (description, object, text both error messages must contain)
INVALID = [
    ("no source", with_("spec.source", {}), "exactly one of spec.source"),
    (
        "two sources",
        with_("spec.source.pvc", {"claimName": "m", "path": "base"}),
        "exactly one of spec.source",
    ),
    ("awq 8 bits", with_("spec.quantization.bits", 8), "bits"),
    ("fp8 4 bits", with_("spec.quantization", {"method": "fp8", "bits": 4}), "bits"),
    ("gptq 3 bits", with_("spec.quantization", {"method": "gptq", "bits": 3}), "bits"),
    (
        "group size on fp8",
        with_("spec.quantization", {"method": "fp8", "groupSize": 128}),
        "groupSize",
    ),
    ("group size 100", with_("spec.quantization.groupSize", 100), "groupSize"),
    ("unknown method", with_("spec.quantization.method", "int3"), "method"),
    ("no storage for awq", with_("spec.storage", ...), "spec.storage is required"),
    (
        "utilization above 1",
        with_("spec.serving.maxGpuMemoryUtilization", 1.5),
        "maxGpuMemoryUtilization",
    ),
    (
        "utilization zero",
        with_("spec.serving.maxGpuMemoryUtilization", 0),
        "maxGpuMemoryUtilization",
    ),
    ("zero concurrency", with_("spec.serving.concurrency", 0), "concurrency"),
    ("absurd context", with_("spec.serving.maxModelLen", 100_000_000), "maxModelLen"),
    ("unknown GPU", with_("spec.serving.gpu", {"product": "H100"}), "not in the catalog"),
    (
        "GPU product and custom",
        with_("spec.serving.gpu", {"product": "L4", "memoryGiB": 20}),
        "set either product",
    ),
    (
        "custom GPU incomplete",
        with_("spec.serving.gpu", {"memoryGiB": 20, "bandwidthGBps": 300}),
        "set either product",
    ),
    (
        "planned flag in extraArgs",
        with_("spec.serving.extraArgs", ["--max-model-len=4096"]),
        "extraArgs",
    ),
    ("tp flag in extraArgs", with_("spec.serving.extraArgs", ["-tp", "2"]), "extraArgs"),
    ("path escapes volume", with_("spec.storage.pvc.path", "a/../../etc"), "path"),
    ("absolute path", with_("spec.storage.pvc.path", "/etc"), "path"),
    ("bad repo", with_("spec.source.huggingFace.repo", "not a repo"), "repo"),
    ("kv dtype", with_("spec.serving.kvCacheDtype", "int2"), "kvCacheDtype"),
    ("negative replicas", with_("spec.serving.replicas", -1), "replicas"),
    ("unknown field", with_("spec.serving.maxModelLength", 4096), "maxModelLength"),
    (
        "unknown MIG slice",
        with_("spec.serving.gpu", {"product": "H100-80GB-MIG-5g.50gb"}),
        "H100-80GB-MIG-{1g.10gb, 1g.20gb, 2g.20gb, 3g.40gb, 4g.40gb, 7g.80gb}",
    ),
    (
        "MIG profile of another GPU",
        with_("spec.serving.gpu", {"product": "L4-MIG-1g.10gb"}),
        "not in the catalog",
    ),
    ("shared by none", with_("spec.serving.gpu.sharedBy", 0), "sharedBy"),
    ("shared by too many", with_("spec.serving.gpu.sharedBy", 65), "sharedBy"),
    ("unknown memory policy", with_("spec.serving.memoryPolicy", "all"), "memoryPolicy"),
]


@pytest.mark.parametrize(
    ("obj", "expected"), [(o, e) for _, o, e in INVALID], ids=[d for d, _, _ in INVALID]
)
def test_invalid_specs_are_refused_by_both(obj: dict[str, Any], expected: str) -> None:
    crd = admission_errors(obj)
    model = pydantic_error(obj)
    assert crd, "the CRD admitted it"
    assert model is not None, "pydantic accepted it"
    assert any(expected in e for e in crd), crd
    assert expected in model, model


@pytest.mark.parametrize(
    ("name", "expected"),
    [("9llama", "DNS-1035"), ("llama.v2", "DNS-1035"), ("a" * 46, "at most 45")],
)
def test_names_that_cannot_name_children_are_refused(name: str, expected: str) -> None:
    errors = admission_errors(with_("metadata.name", name))
    assert any(expected in e for e in errors), errors


def test_gpu_product_is_case_insensitive() -> None:
    obj = with_("spec.serving.gpu", {"product": "h100-80gb"})
    assert admission_errors(obj) == []
    assert pydantic_error(obj) is None


@pytest.mark.parametrize(
    "gpu",
    [
        {"product": "H100-80GB-MIG-3g.40gb"},
        {"product": "a100-40gb-mig-1G.5GB"},
        {"product": "B200-MIG-7g.180gb", "sharedBy": 2},
        {"product": "L4", "sharedBy": 4},
        {"name": "rtx", "memoryGiB": 47.5, "bandwidthGBps": 960, "computeCapability": "8.9",
         "sharedBy": 2},
    ],
)  # fmt: skip
def test_mig_slices_and_shared_gpus_are_accepted_by_both(gpu: dict[str, Any]) -> None:
    obj = with_("spec.serving.gpu", gpu)
    obj["spec"]["serving"]["memoryPolicy"] = "budget"
    assert admission_errors(obj) == []
    assert pydantic_error(obj) is None


def test_defaults_match_between_crd_and_models() -> None:
    """What the API server stores after defaulting is what pydantic fills in."""
    minimal = with_("spec.serving", ...)
    stored = defaulted(minimal)["spec"]
    parsed = QuantizedModelSpec.model_validate(minimal["spec"]).to_api()
    assert stored == parsed


def test_effective_defaults_per_method() -> None:
    awq = QuantizedModelSpec.model_validate(BASE["spec"]).quantization
    assert (awq.effective_bits, awq.effective_group_size, awq.effective_symmetric) == (
        4,
        128,
        False,
    )
    fp8 = QuantizedModelSpec.model_validate(
        with_("spec.quantization", {"method": "fp8"})["spec"]
    ).quantization
    assert (fp8.effective_bits, fp8.effective_group_size, fp8.effective_symmetric) == (
        8,
        None,
        True,
    )
    none = QuantizedModelSpec.model_validate(
        with_("spec.quantization", {"method": "none"})["spec"]
    ).quantization
    assert none.effective_bits is None


def test_the_api_offers_exactly_the_methods_of_the_table() -> None:
    from typing import get_args

    from quantwise.api.spec import Method
    from quantwise.quantization.methods import METHODS

    assert list(get_args(Method)) == list(METHODS)
