"""What the operator reads from a Job and its pods (handlers.models.job_state)."""

from __future__ import annotations

from typing import Any

from quantwise.reconcile.observe import job_state


def pod(terminated: dict[str, Any], created: str = "2026-01-01T00:00:00Z") -> dict[str, Any]:
    return {
        "metadata": {"name": "p", "creationTimestamp": created, "labels": {"job-name": "j"}},
        "status": {
            "phase": "Failed",
            "containerStatuses": [{"name": "quantizer", "state": {"terminated": terminated}}],
        },
    }


FAILED_JOB = {
    "metadata": {"name": "j"},
    "status": {
        "failed": 1,
        "conditions": [{"type": "Failed", "status": "True", "reason": "BackoffLimitExceeded"}],
    },
}


def test_an_oom_killed_quantizer_is_recognised() -> None:
    killed = pod({"exitCode": 137, "reason": "OOMKilled", "message": "Loading shards 40%"})
    state = job_state(FAILED_JOB, [killed])
    assert state.failed
    assert state.oom_killed
    assert state.termination_message == "Loading shards 40%"
    assert state.failure_reason == "BackoffLimitExceeded"


def test_an_ordinary_failure_is_not_out_of_memory() -> None:
    state = job_state(FAILED_JOB, [pod({"exitCode": 3, "reason": "Error", "message": "{}"})])
    assert state.failed
    assert not state.oom_killed
