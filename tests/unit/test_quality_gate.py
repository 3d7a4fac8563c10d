"""The quality gate in the operator: the Job's verdict becomes QualityVerified; a failed gate
rolls nothing out and an older Deployment keeps serving; the advice follows from the spec."""

from __future__ import annotations

import pytest
from test_api import with_
from test_reconcile import JOB, LATER, PASSED, cond, kinds, observe, report, run, succeeded

from quantwise.api.report import QuantizeError, ReportQuality, dump_report
from quantwise.api.spec import QuantizedModelSpec
from quantwise.quantization.quality import (
    DEFAULT_MAX_PERPLEXITY_INCREASE_PERCENT,
    Asked,
    advice,
    gate_message,
    increase_percent,
    judge,
)
from quantwise.reconcile.observe import JobState, WorkloadState
from quantwise.reconcile.state import PostEvent
from quantwise.render.names import job_name

# Figures over the limit (made up: +34 %), as a Job that failed the gate reports them.
FAILED = ReportQuality(
    baseline_perplexity=6.14, perplexity=8.2, increase_percent=33.55, limit_percent=15,
    samples=128, tokens=65_408, passed=False, duration_seconds=40,
)  # fmt: skip
AVAILABLE = WorkloadState(
    available_replicas=1, updated_replicas=1, generation=1, observed_generation=1
)


def events(out: object) -> list[PostEvent]:
    return [a for a in out.actions if isinstance(a, PostEvent)]  # type: ignore[attr-defined]


def condition_message(out: object, type_: str) -> str:
    conditions = out.status.conditions or []  # type: ignore[attr-defined]
    return next(c.message for c in conditions if c.type == type_)


def gate_failure(job: str = JOB) -> JobState:
    message = gate_message(6.14, 8.2, judge(6.14, 8.2, 15), 15,
                           Asked("gptq", 4, 128, 256, ("lm_head",)))  # fmt: skip
    text = dump_report(QuantizeError(reason="QualityGateFailed", message=message, quality=FAILED))
    return JobState(name=job, failed=True, failure_reason="PodFailurePolicy",
                    termination_message=text)  # fmt: skip


def test_the_default_passes_every_4_bit_cost_of_the_seed_table_and_fails_nonsense() -> None:
    # (16-bit, 4-bit) WikiText-2 perplexities of the guide quantwise started from.
    table = [(6.14, 6.32), (6.14, 6.48), (5.25, 5.41), (5.25, 5.58), (3.32, 3.42)]
    for base, quantized in table:
        assert judge(base, quantized, DEFAULT_MAX_PERPLEXITY_INCREASE_PERCENT).passed
    assert not judge(6.14, 60.0, DEFAULT_MAX_PERPLEXITY_INCREASE_PERCENT).passed
    assert not judge(6.14, float("nan"), 1000).passed  # NaN logits: broken, whatever the limit
    assert increase_percent(6.14, float("inf")) is None
    assert increase_percent(6.14, 6.32) == pytest.approx(2.93, abs=0.01)
    assert judge(6.14, 6.10, 0).passed  # cheaper than free passes even a limit of 0


@pytest.mark.parametrize(
    ("asked", "present", "absent"),
    [
        (Asked("gptq", 4, 128, 256, ("lm_head",)),
         ["samples: 512", "groupSize: 64", "method: awq", "8 bits", "mlp.down_proj"],
         ["leave lm_head", "broken"]),
        (Asked("awq", 4, 64, 512, ()),
         ["leave lm_head", "calibration data like"],
         ["groupSize", "method: awq", "calibration.samples"]),
        (Asked("w8a8-int8", 8, None, 64, ("lm_head",)),
         ["samples: 256"], ["8 bits", "groupSize", "method: awq"]),
        (Asked("fp8-dynamic", 8, None, None, ("lm_head",)),
         ["mlp.down_proj"], ["calibration", "8 bits"]),
        (Asked("none", 4, 128, None, ()),
         ["quantize the base model"], ["groupSize", "calibration"]),
    ],
)  # fmt: skip
def test_advice_follows_from_the_spec(asked: Asked, present: list[str], absent: list[str]) -> None:
    text = "; ".join(advice(asked, 20.0))
    assert all(p in text for p in present), text
    assert not any(a in text for a in absent), text
    assert "broken" in "; ".join(advice(asked, 400.0))


def test_a_passing_job_shows_quality_verified_with_the_figures_and_serves() -> None:
    out = run(observe(job=succeeded(dump_report(report()))))
    assert cond(out, "QualityVerified") == ("True", "WithinLimit")
    message = condition_message(out, "QualityVerified")
    for figure in ("6.32 vs 6.14", "+2.9 %", "limit 15 %", "128 held-out samples", "65,408"):
        assert figure in message
    assert out.status.artifact is not None and out.status.artifact.quality == PASSED
    assert [a.body["kind"] for a in out.actions if a.kind == "apply"] == ["Deployment", "Service"]
    assert "WithinLimit" not in [e.reason for e in events(out)]  # quiet: Quantized said it


def test_a_failed_gate_fails_the_model_and_rolls_nothing_out() -> None:
    out = run(observe(job=gate_failure()))
    assert out.status.phase == "Failed" and out.permanent_failure
    assert cond(out, "QualityVerified") == ("False", "QualityGateFailed")
    assert cond(out, "Quantized") == ("False", "QualityGateFailed")
    message = condition_message(out, "QualityVerified")
    assert "8.2 after quantization vs 6.14" in message and "+33.6 %" in message
    assert "groupSize: 64" in message and "quantwise.dev/retry" in message
    assert kinds(out) == ["event"]  # nothing applied, nothing created
    (event,) = events(out)
    assert (event.reason, event.warning) == ("QualityGateFailed", True)
    again = run(observe(status=out.status.to_api(), job=gate_failure(), now=LATER))
    assert kinds(again) == []  # no second Event, no retry storm


def test_a_failed_gate_on_a_new_artifact_keeps_the_old_deployment_serving() -> None:
    deployed = run(observe(job=succeeded(dump_report(report()))))
    ready = run(observe(status=deployed.status.to_api(), deployment=AVAILABLE, now=LATER))
    assert ready.status.phase == "Ready"
    spec = with_("spec.quantization.groupSize", 64)["spec"]
    new_job = job_name("llama", QuantizedModelSpec.model_validate(spec))
    out = run(observe(spec=spec, status=ready.status.to_api(), job=gate_failure(new_job),
                      deployment=AVAILABLE, generation=2, now=LATER))  # fmt: skip
    assert cond(out, "QualityVerified") == ("False", "QualityGateFailed")
    assert not [a for a in out.actions if a.kind in ("apply", "delete", "create_job")]
    assert out.status.artifact == ready.status.artifact  # the served one, unchanged


def test_a_report_that_did_not_pass_is_never_served() -> None:
    # A Job reports a failed gate as a failure; a success saying passed: false is refused too.
    out = run(observe(job=succeeded(dump_report(report(quality=FAILED)))))
    assert out.status.phase == "Failed"
    assert cond(out, "QualityVerified") == ("False", "QualityGateFailed")
    assert "apply" not in kinds(out) and out.status.artifact is None


@pytest.mark.parametrize(
    ("quantization", "quality", "words"),
    [
        ({"method": "awq", "evaluation": {"enabled": False}}, None, "enabled is false"),
        ({"method": "none"}, None, "set spec.quantization.evaluation.baseModel"),
        ({"method": "awq"}, None, "reported no quality figures"),
        ({"method": "awq"}, ReportQuality(not_measured="no samples left"), "no samples left"),
    ],
)
def test_not_measured_says_why(
    quantization: dict[str, object], quality: ReportQuality | None, words: str
) -> None:
    spec = with_("spec.quantization", quantization)["spec"]
    if quantization["method"] == "none":
        spec = with_("spec.storage", ..., {"spec": spec})["spec"]
    job = job_name("llama", QuantizedModelSpec.model_validate(spec))
    kind = "InspectReport" if quantization["method"] == "none" else "QuantizeReport"
    text = dump_report(report(quality=quality).model_copy(update={"kind": kind}))
    out = run(observe(spec=spec, job=JobState(name=job, succeeded=True, termination_message=text)))
    assert cond(out, "QualityVerified") == ("Unknown", "NotMeasured")
    assert words in condition_message(out, "QualityVerified")
    assert "apply" in kinds(out)  # not measured is not a failure: it is served
