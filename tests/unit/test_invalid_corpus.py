"""The invalid corpus (tests/fixtures/invalid/): every file is refused at admission, naming the
field, by the CRD's schema and CEL rules (offline: jsonschema + cel-python) and by the operator's
own model; and generated specs are valid or invalid for both alike (hypothesis).
"""

from __future__ import annotations

import copy
import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError
from test_api import BASE

from quantwise.api.spec import QuantizedModelSpec
from support.crdcheck import admission_errors

CORPUS = sorted((Path(__file__).parents[1] / "fixtures" / "invalid").glob("*.yaml"))


def load(path: Path) -> tuple[dict[str, Any], str, bool]:
    text = path.read_text()
    match = re.search(r"^# expect: (.+)$", text, re.M)
    assert match, f"{path.name} says what the error must name (# expect: ...)"
    return yaml.safe_load(text), match.group(1).strip(), "# admission-only" in text


def model_error(obj: dict[str, Any]) -> str | None:
    try:
        QuantizedModelSpec.model_validate(obj.get("spec"))
    except ValidationError as exc:
        return str(exc)
    return None


def test_the_corpus_is_large_enough() -> None:
    assert len(CORPUS) >= 40


@pytest.mark.parametrize("path", CORPUS, ids=[p.stem for p in CORPUS])
def test_refused_at_admission_naming_the_field(path: Path) -> None:
    obj, expected, admission_only = load(path)
    errors = admission_errors(obj)
    assert errors, f"the CRD admits {path.name}"
    assert any(expected in e for e in errors), errors
    if not admission_only:
        message = model_error(obj)
        assert message is not None, f"the operator's model accepts {path.name}"
        assert expected in message, message


# ----- property: the CRD and the model agree on what is valid -----

VALUES = {
    "spec.quantization.method": st.sampled_from(["awq", "gptq", "w8a8-int8", "fp8", "fp8-dynamic",
                                                 "none", "int3", ""]),
    "spec.quantization.bits": st.one_of(st.none(), st.sampled_from([2, 3, 4, 8, 16, 5, 0])),
    "spec.quantization.groupSize": st.one_of(st.none(), st.sampled_from([-1, 32, 64, 128, 0, 100])),
    "spec.quantization.symmetric": st.one_of(st.none(), st.booleans()),
    "spec.serving.concurrency": st.integers(-2, 5000),
    "spec.serving.maxModelLen": st.one_of(st.none(), st.integers(-1, 20_000_000)),
    "spec.serving.maxGpuMemoryUtilization": st.floats(-0.5, 1.5, allow_nan=False),
    "spec.serving.replicas": st.integers(-1, 1001),
    "spec.serving.gpusPerNode": st.integers(0, 65),
    "spec.serving.kvCacheDtype": st.sampled_from(["auto", "fp8", "fp8_e4m3", "int2", "bfloat16"]),
    "spec.serving.extraArgs": st.one_of(st.none(), st.lists(st.sampled_from(
        ["--enable-prefix-caching", "--max-model-len=4096", "-tp", "2", "--swap-space=4"]),
        max_size=4)),
    "spec.storage": st.sampled_from([..., {"pvc": {"claimName": "models", "path": "q"}},
                                     {"pvc": {"claimName": "models", "path": "../q"}}]),
    "spec.serving.gpu": st.sampled_from([{"product": "L4"}, {"product": "h200"},
                                         {"product": "H100"}, {"memoryGiB": 40},
                                         {"memoryGiB": 40, "bandwidthGBps": 900,
                                          "computeCapability": "8.9"}]),
}  # fmt: skip


def mutate(changes: dict[str, Any]) -> dict[str, Any]:
    obj = copy.deepcopy(BASE)
    for path, value in changes.items():
        node = obj
        *parents, last = path.split(".")
        for key in parents:
            node = node.setdefault(key, {})
        if value is ... or value is None:
            node.pop(last, None)
        else:
            node[last] = value
    return obj


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.fixed_dictionaries({}, optional=VALUES))
def test_crd_and_model_agree_on_generated_specs(changes: dict[str, Any]) -> None:
    obj = mutate(changes)
    crd = admission_errors(obj)
    model = model_error(obj)
    assert bool(crd) == (model is not None), (changes, crd, model)
