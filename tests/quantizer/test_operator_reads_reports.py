"""The operator trusts what the quantizer reports: real reports through the pure reconcile.

Each method's report, written by a real llm-compressor run, is the termination message of a
succeeded Job; the reconcile must accept it (Quantized), check it against the spec and the
kernel matrix (Validated), size the deployment from its measured bytes (Planned) and apply the
vLLM Deployment.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest

from quantwise.api.report import QuantizeReport
from quantwise.api.spec import QuantizedModelSpec
from quantwise.reconcile.core import reconcile
from quantwise.reconcile.observe import JobState
from quantwise.reconcile.state import Observation
from quantwise.reconcile.validation import kernel_validator
from quantwise.render.names import job_name
from quantwise.settings import Settings

VLLM = "vllm/vllm-openai:v0.33.0"
BASE: dict[str, Any] = {
    "source": {"pvc": {"claimName": "models", "path": "base/tiny-llama"}},
    "storage": {"pvc": {"claimName": "models", "path": "quantized"}},
    "serving": {"gpu": {"product": "H100-80GB"}, "maxModelLen": 256, "concurrency": 4},
}
QUANTIZATION: dict[str, dict[str, Any]] = {
    "awq": {"method": "awq", "groupSize": 32},
    "gptq": {"method": "gptq", "bits": 4, "groupSize": 64},
    "gptq-w8": {"method": "gptq", "bits": 8, "groupSize": -1},
    "fp8-dynamic": {"method": "fp8-dynamic"},
    "w8a8-int8": {"method": "w8a8-int8"},
    "fp8-kv": {"method": "fp8"},
}


@pytest.mark.parametrize("name", list(QUANTIZATION))
def test_real_reports_are_accepted_validated_and_planned(
    artifacts: dict[str, tuple[Path, str, QuantizeReport]], name: str
) -> None:
    _, text, report = artifacts[name]
    spec = copy.deepcopy(BASE) | {"quantization": QUANTIZATION[name]}
    if name == "fp8-kv":
        spec["serving"] = spec["serving"] | {"kvCacheDtype": "fp8"}
    job = job_name("tiny", QuantizedModelSpec.model_validate(spec))
    outcome = reconcile(
        Observation(
            name="tiny", namespace="ml", uid="u", generation=1, spec=spec, status={},
            annotations={}, job=JobState(name=job, succeeded=True, termination_message=text),
            deployment=None, now="2026-11-22T12:00:00Z",
        ),
        Settings(quantizer_image="q:1", vllm_image=VLLM),
        validator=kernel_validator(VLLM),
    )  # fmt: skip
    conditions = {c.type: (c.status, c.reason) for c in outcome.status.conditions or []}
    assert conditions["Quantized"][0] == "True", outcome.status.conditions
    assert conditions["Validated"] == ("True", "FastKernel"), outcome.status.conditions
    assert conditions["Planned"][0] == "True", outcome.status.conditions
    assert not outcome.permanent_failure
    artifact = outcome.status.artifact
    assert artifact is not None
    assert artifact.weight_bytes == report.artifact.weight_bytes
    assert artifact.digest == report.artifact.digest
    plan = outcome.status.plan
    assert plan is not None
    assert plan.tensor_parallel_size == 1
    applied = [a.body["kind"] for a in outcome.actions if a.kind == "apply"]
    assert "Deployment" in applied
