"""Argo CD's view of a QuantizedModel: deploy/argocd/health.lua, run with lupa on statuses the
operator's own reconcile writes (Progressing, Healthy, Degraded, Suspended)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import lupa
import pytest
import yaml
from test_reconcile import JOB, LATER, observe, report, run, succeeded

from quantwise.api.report import QuantizeError, dump_report
from quantwise.reconcile.observe import JobState, WorkloadState

ROOT = Path(__file__).parents[2]
SCRIPT = (ROOT / "deploy" / "argocd" / "health.lua").read_text()
AVAILABLE = WorkloadState(
    available_replicas=1, updated_replicas=1, generation=1, observed_generation=1
)


def health(obj: dict[str, Any]) -> dict[str, Any]:
    """Run the script as Argo CD does: ``obj`` global, the returned table is the health."""
    lua = lupa.LuaRuntime(unpack_returned_tuples=True)
    lua.globals().obj = lua.table_from(obj, recursive=True)
    result = lua.execute(SCRIPT)
    return dict(result.items())


def model(status: dict[str, Any] | None, generation: int = 1) -> dict[str, Any]:
    obj: dict[str, Any] = {
        "apiVersion": "quantwise.dev/v1alpha1",
        "kind": "QuantizedModel",
        "metadata": {"name": "llama", "namespace": "ml", "generation": generation},
        "spec": {},
    }
    if status is not None:
        obj["status"] = status
    return obj


def test_new_model_is_progressing() -> None:
    assert health(model(None))["status"] == "Progressing"


def test_quantizing_is_progressing_with_the_step() -> None:
    quantizing = run(observe(job=JobState(name=JOB))).status.to_api()
    result = health(model(quantizing))
    assert result["status"] == "Progressing"
    assert result["message"].startswith("Quantizing: Quantized JobRunning")


def test_deploying_is_progressing() -> None:
    deploying = run(observe(job=succeeded(dump_report(report())))).status.to_api()
    result = health(model(deploying))
    assert result["status"] == "Progressing"
    assert "Ready Progressing" in result["message"]


def test_ready_is_healthy_with_the_endpoint() -> None:
    deployed = run(observe(job=succeeded(dump_report(report()))))
    ready = run(observe(status=deployed.status.to_api(), deployment=AVAILABLE, now=LATER))
    result = health(model(ready.status.to_api()))
    assert result == {"status": "Healthy", "message": "Serving at http://llama.ml.svc:8000/v1"}


def test_failed_is_degraded_with_the_condition_message() -> None:
    failure = QuantizeError(
        reason="GatedModel",
        message="meta-llama/x is gated: set spec.source.huggingFace.tokenSecretRef",
    )
    failed = run(
        observe(job=JobState(name=JOB, failed=True, termination_message=dump_report(failure)))
    ).status.to_api()
    result = health(model(failed))
    assert result["status"] == "Degraded"
    assert result["message"].startswith("Quantized GatedModel: meta-llama/x is gated")


def test_a_running_job_is_progressing_with_its_stage() -> None:
    from test_progress import RUNNING, line, log

    obs = observe(job=RUNNING, now="2026-11-22T11:06:00Z")
    obs = obs.__class__(**{**obs.__dict__, "job_log": log(line("calibrating", 36, 80, 360, 200))})
    result = health(model(run(obs).status.to_api()))
    assert result == {"status": "Progressing",
                      "message": "Quantizing: calibrating 45% ~5m left"}  # fmt: skip


def test_a_failed_quality_gate_is_degraded_with_both_perplexities() -> None:
    from test_quality_gate import gate_failure

    result = health(model(run(observe(job=gate_failure())).status.to_api()))
    assert result["status"] == "Degraded"
    assert result["message"].startswith("QualityVerified QualityGateFailed: perplexity 8.2 after")


def test_a_newer_generation_not_yet_observed_is_progressing() -> None:
    deployed = run(observe(job=succeeded(dump_report(report()))))
    ready = run(observe(status=deployed.status.to_api(), deployment=AVAILABLE, now=LATER))
    result = health(model(ready.status.to_api(), generation=2))
    assert result["status"] == "Progressing"
    assert "generation 2" in result["message"]


@pytest.mark.parametrize("replicas", [0])
def test_scaled_to_zero_is_suspended(replicas: int) -> None:
    spec = {**observe().spec, "serving": {**observe().spec["serving"], "replicas": replicas}}
    deployed = run(observe(spec=spec, job=succeeded(dump_report(report())))).status.to_api()
    assert health(model(deployed))["status"] == "Suspended"


def test_argocd_cm_snippet_carries_the_script() -> None:
    cm = yaml.safe_load((ROOT / "deploy" / "argocd" / "argocd-cm.yaml").read_text())
    assert cm["data"]["resource.customizations.health.quantwise.dev_QuantizedModel"] == SCRIPT
    assert set(cm["data"]) == {"resource.customizations.health.quantwise.dev_QuantizedModel"}


def test_crds_apply_before_the_models() -> None:
    crd = yaml.safe_load((ROOT / "crds" / "quantizedmodels.quantwise.dev.yaml").read_text())
    assert int(crd["metadata"]["annotations"]["argocd.argoproj.io/sync-wave"]) < 0
    apps = list(yaml.safe_load_all((ROOT / "examples" / "argocd" / "application.yaml").read_text()))
    assert [a["metadata"]["name"] for a in apps] == ["quantwise", "quantwise-models"]
    chart_wave = int(apps[0]["metadata"]["annotations"]["argocd.argoproj.io/sync-wave"])
    assert chart_wave < int(apps[1]["metadata"].get("annotations", {}).get(
        "argocd.argoproj.io/sync-wave", "0"))  # fmt: skip
    assert (ROOT / apps[0]["spec"]["source"]["path"] / "Chart.yaml").is_file()
    assert (ROOT / apps[1]["spec"]["source"]["path"] / "llama-3.1-8b-awq.yaml").is_file()
