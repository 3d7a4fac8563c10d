"""Updates on a full cluster (reconcile/update.py): each strategy, each wait, the phases.

A model serves its artifact; its quantization changes. RollingUpdate keeps the old server and
says when the Job or a new replica waits for a GPU; Recreate stops the old server first and
starts it again if the new artifact cannot be made. Phases tell the truth: a model that serves
is Ready, and Updating says what is under way.
"""

from __future__ import annotations

from typing import Any

import pytest
from test_api import with_
from test_reconcile import JOB, LATER, cond, dump_report, kinds, observe, report, run, succeeded

from quantwise.api.report import QuantizeError
from quantwise.api.spec import QuantizedModelSpec
from quantwise.api.status import PlanStatus
from quantwise.reconcile.observe import JobState, WorkloadState
from quantwise.reconcile.update import gpus_needed
from quantwise.render.names import job_name

SERVING = WorkloadState(available_replicas=1, updated_replicas=1, generation=1,
                        observed_generation=1, desired_replicas=1)  # fmt: skip
STOPPED = WorkloadState(generation=2, observed_generation=2, desired_replicas=0)


def serving_model(strategy: str = "RollingUpdate") -> tuple[dict[str, Any], dict[str, Any]]:
    """A Ready model and the spec of its quantization change (group size 64), with ``strategy``."""
    spec = with_("spec.serving.updateStrategy", strategy)["spec"]
    deployed = run(observe(spec=spec, job=succeeded(dump_report(report()))))
    ready = run(observe(spec=spec, status=deployed.status.to_api(), deployment=SERVING))
    assert ready.status.phase == "Ready"
    changed = {**spec, "quantization": {**spec["quantization"], "groupSize": 64}}
    return ready.status.to_api(), changed


def new_job(spec: dict[str, Any]) -> str:
    return job_name("llama", QuantizedModelSpec.model_validate(spec))


def test_a_rolling_update_serves_on_while_the_new_artifact_is_made() -> None:
    status, spec = serving_model()
    out = run(observe(spec=spec, status=status, deployment=SERVING, generation=2, now=LATER))
    assert kinds(out)[0] == "create_job" and "apply" not in kinds(out) and "scale" not in kinds(out)
    assert out.status.phase == "Ready"
    assert cond(out, "Ready") == ("True", "Available")
    assert cond(out, "Updating") == ("True", "NewArtifact")
    running = run(observe(spec=spec, status=out.status.to_api(), deployment=SERVING,
                          job=JobState(name=new_job(spec)), generation=2, now=LATER))  # fmt: skip
    assert running.status.phase == "Ready" and cond(running, "Quantized")[1] == "JobRunning"


def test_a_rolling_update_whose_job_waits_for_a_gpu_says_so_and_what_to_do() -> None:
    status, spec = serving_model()
    waiting = JobState(name=new_job(spec), pod_pending=True,
                       pod_pending_message="0/1 nodes are available: 1 Insufficient nvidia.com/gpu.")  # fmt: skip
    out = run(observe(spec=spec, status=status, deployment=SERVING, job=waiting, generation=2))
    assert out.status.phase == "Ready"  # it serves: never taken down, never "Pending"
    assert cond(out, "Updating") == ("True", "WaitingForGPU")
    message = next(c.message for c in out.status.conditions or [] if c.type == "Updating")
    assert "Insufficient nvidia.com/gpu" in message and "holds 1 GPUs" in message
    assert "updateStrategy: Recreate" in message
    events = [a for a in out.actions if a.kind == "event" and a.reason == "WaitingForGPU"]
    assert len(events) == 1 and events[0].warning
    again = run(observe(spec=spec, status=out.status.to_api(), deployment=SERVING, job=waiting,
                        generation=2, now=LATER))  # fmt: skip
    assert [a for a in again.actions if a.kind == "event"] == []  # said once


def test_recreate_stops_the_old_server_while_the_new_artifact_is_made() -> None:
    status, spec = serving_model("Recreate")
    out = run(observe(spec=spec, status=status, deployment=SERVING, generation=2, now=LATER))
    scales = [(a.object_kind, a.name, a.replicas) for a in out.actions if a.kind == "scale"]
    assert scales == [("Deployment", "llama", 0)]
    assert cond(out, "Ready") == ("False", "Recreating")
    assert cond(out, "Updating") == ("True", "Recreating")
    assert out.status.phase == "Quantizing"
    event = next(a for a in out.actions if a.kind == "event" and a.reason == "Recreating")
    assert "no service until the new one serves" in event.message  # the downtime, in the Events
    stopped = run(observe(spec=spec, status=out.status.to_api(), deployment=STOPPED,
                          job=JobState(name=new_job(spec)), generation=2, now=LATER))  # fmt: skip
    assert "scale" not in kinds(stopped)  # stopped already: nothing more to do


def test_recreate_starts_the_old_server_again_when_the_new_artifact_cannot_be_made() -> None:
    status, spec = serving_model("Recreate")
    failed = JobState(name=new_job(spec), failed=True, termination_message=dump_report(
        QuantizeError(reason="QuantizationFailed", message="boom")))  # fmt: skip
    out = run(observe(spec=spec, status=status, deployment=STOPPED, job=failed, generation=2))
    scales = [(a.name, a.replicas) for a in out.actions if a.kind == "scale"]
    assert scales == [("llama", 1)]
    assert out.status.phase == "Failed" and out.permanent_failure
    assert cond(out, "Updating") == ("False", "UpdateFailed")


def test_a_rolling_update_that_fails_keeps_serving_the_old_artifact() -> None:
    status, spec = serving_model()
    failed = JobState(name=new_job(spec), failed=True, failure_reason="BackoffLimitExceeded")
    out = run(observe(spec=spec, status=status, deployment=SERVING, job=failed, generation=2))
    assert "scale" not in kinds(out) and "apply" not in kinds(out)
    assert out.status.phase == "Failed"
    assert cond(out, "Ready") == ("True", "Available")  # the old artifact still serves
    assert cond(out, "Updating") == ("False", "UpdateFailed")


@pytest.mark.parametrize(
    ("strategy", "pending", "reason"),
    [
        ("RollingUpdate", "0/1 nodes are available: 1 Insufficient nvidia.com/gpu.",
         "RolloutWaitingForGPU"),
        ("RollingUpdate", None, "RollingOut"),
        ("Recreate", None, "RollingOut"),
    ],
)  # fmt: skip
def test_a_rollout_that_waits_for_gpus_is_ready_while_the_old_replica_serves(
    strategy: str, pending: str | None, reason: str
) -> None:
    import dataclasses

    status, spec = serving_model(strategy)
    done = run(observe(spec=spec, status=status, deployment=SERVING, generation=2,
                       job=succeeded(dump_report(report(group=64)))))  # fmt: skip
    assert [a.body["kind"] for a in done.actions if a.kind == "apply"] == ["Deployment", "Service"]
    rolling = WorkloadState(available_replicas=1, updated_replicas=0, generation=2,
                            observed_generation=2, desired_replicas=1)  # fmt: skip
    obs = dataclasses.replace(
        observe(spec=spec, status=done.status.to_api(), deployment=rolling, generation=2,
                job=succeeded(dump_report(report(group=64))), now=LATER),
        serving_pending=pending,
    )  # fmt: skip
    out = run(obs)
    assert out.status.phase == "Ready" and cond(out, "Ready") == ("True", "Available")
    assert cond(out, "Updating") == ("True", reason)
    finished = run(observe(spec=spec, status=out.status.to_api(), deployment=SERVING,
                           generation=2, job=succeeded(dump_report(report(group=64)))))  # fmt: skip
    assert cond(finished, "Updating") == ("False", "UpToDate")


def test_the_plan_says_how_many_gpus_an_update_needs() -> None:
    out = run(observe(job=succeeded(dump_report(report()))))
    assert out.status.plan is not None
    reason = out.status.plan.reasons[-1]
    assert reason.startswith("updates: RollingUpdate (no downtime) needs up to 2 ")
    assert "Recreate (downtime) needs 1" in reason
    plan = out.status.plan.model_copy(update={"tensor_parallel_size": 4})
    two = QuantizedModelSpec.model_validate(with_("spec.serving.replicas", 2)["spec"])
    assert gpus_needed(two, PlanStatus.model_validate(plan.model_dump())) == (8, 12, 8)


def test_the_deployment_and_the_leader_worker_set_follow_the_strategy() -> None:
    from test_render_lws import render, spec_405b

    recreate = with_("spec.serving.updateStrategy", "Recreate")["spec"]
    out = run(observe(spec=recreate, job=succeeded(dump_report(report()))))
    dep = next(a.body for a in out.actions if a.kind == "apply")
    assert dep["spec"]["strategy"] == {"type": "Recreate"}
    default = run(observe(job=succeeded(dump_report(report()))))
    dep = next(a.body for a in default.actions if a.kind == "apply")
    assert dep["spec"]["strategy"]["rollingUpdate"] == {"maxSurge": 1, "maxUnavailable": 0}
    lws, _ = render(spec_405b(updateStrategy="Recreate"))
    assert lws["spec"]["rolloutStrategy"]["rollingUpdateConfiguration"] == {
        "maxSurge": 0,
        "maxUnavailable": "100%",
    }
    assert JOB
