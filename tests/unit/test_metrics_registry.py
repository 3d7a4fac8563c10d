"""The metrics module: phases, plan series removed with their model, Jobs counted once."""

from __future__ import annotations

from quantwise import metrics


def value(metric: str, **labels: str) -> float | None:
    return metrics.REGISTRY.get_sample_value(metric, labels)


def test_phases_and_plans_follow_models_and_are_dropped_with_them() -> None:
    plan = {"tensorParallelSize": 2, "gpuMemoryUtilization": 0.87, "kvCacheTokens": 65536}
    metrics.record_status("t1", "a", {"phase": "Ready", "plan": plan})
    metrics.record_status("t1", "b", {"phase": "Quantizing"})
    ready = value("quantwise_models", phase="Ready") or 0
    assert ready >= 1
    assert value("quantwise_plan_tensor_parallel_size", namespace="t1", name="a") == 2
    assert value("quantwise_plan_kv_cache_tokens", namespace="t1", name="a") == 65536
    assert value("quantwise_plan_tensor_parallel_size", namespace="t1", name="b") is None
    metrics.forget("t1", "a")
    assert value("quantwise_plan_tensor_parallel_size", namespace="t1", name="a") is None
    assert value("quantwise_models", phase="Ready") == ready - 1
    metrics.forget("t1", "b")


def test_quality_and_progress_follow_the_status_and_go_with_the_model() -> None:
    quality = {"baselinePerplexity": 6.14, "perplexity": 6.32, "increasePercent": 2.93}
    metrics.record_status("t2", "q", {"phase": "Quantizing",
                                      "progress": {"stage": "loading"}})  # fmt: skip
    metrics.record_status("t2", "q", {"phase": "Quantizing", "progress": {
        "stage": "calibrating", "percent": 45, "etaSeconds": 300}})  # fmt: skip
    assert value("quantwise_job_progress_percent", namespace="t2", name="q",
                 stage="calibrating") == 45  # fmt: skip
    assert value("quantwise_job_eta_seconds", namespace="t2", name="q") == 300
    metrics.record_status("t2", "q", {"phase": "Ready", "artifact": {"quality": quality}})
    assert value("quantwise_job_progress_percent", namespace="t2", name="q",
                 stage="calibrating") is None  # fmt: skip
    assert value("quantwise_job_eta_seconds", namespace="t2", name="q") is None
    assert value("quantwise_perplexity", namespace="t2", name="q", model="base") == 6.14
    assert value("quantwise_perplexity", namespace="t2", name="q", model="quantized") == 6.32
    assert value("quantwise_perplexity_increase_percent", namespace="t2", name="q") == 2.93
    metrics.forget("t2", "q")
    assert value("quantwise_perplexity", namespace="t2", name="q", model="base") is None
    assert value("quantwise_perplexity_increase_percent", namespace="t2", name="q") is None


def job(uid: str, condition: str, reason: str = "") -> dict[str, object]:
    return {
        "metadata": {
            "uid": uid,
            "name": "j",
            "labels": {"app.kubernetes.io/component": "quantizer"},
        },
        "status": {
            "startTime": "2026-11-22T10:00:00Z",
            "completionTime": "2026-11-22T10:13:32Z",
            "conditions": [{"type": condition, "status": "True", "reason": reason}],
        },
    }


def test_jobs_are_counted_once_with_duration_or_reason() -> None:
    before = value("quantwise_job_duration_seconds_sum", kind="quantizer") or 0
    metrics.record_job(job("u-ok", "Complete"))
    metrics.record_job(job("u-ok", "Complete"))  # the same Job seen again
    assert value("quantwise_job_duration_seconds_sum", kind="quantizer") == before + 812
    failures = value("quantwise_job_failures_total", kind="quantizer", reason="DeadlineExceeded")
    metrics.record_job(job("u-late", "Failed", "DeadlineExceeded"))
    assert (
        value("quantwise_job_failures_total", kind="quantizer", reason="DeadlineExceeded")
        == (failures or 0) + 1
    )
    metrics.record_job({"metadata": {"uid": "u-run"}, "status": {"active": 1}})
    assert value("quantwise_jobs_completed_total", kind="quantizer", result="running") is None
