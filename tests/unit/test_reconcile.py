"""The pure reconcile: each situation gives the expected phase, conditions, actions and Events."""

from __future__ import annotations

import dataclasses
import json
from typing import Any

import pytest
from test_api import BASE, with_
from test_weights import LLAMA_31_8B

from quantwise.api.report import (
    QuantizeError,
    QuantizeReport,
    ReportArtifact,
    ReportQuality,
    ReportQuantization,
    WeightBytes,
    dump_report,
)
from quantwise.api.spec import QuantizedModelSpec
from quantwise.planning.architecture import architecture_from_config
from quantwise.planning.inventory import NodeGpus, pools
from quantwise.planning.weights import WeightFormat, estimate_weights
from quantwise.reconcile.artifact import RETRY_ANNOTATION
from quantwise.reconcile.core import reconcile
from quantwise.reconcile.observe import JobState, WorkloadState, workload_state
from quantwise.reconcile.state import Observation, Outcome
from quantwise.render.names import artifact_hash, job_name
from quantwise.settings import Settings

NOW = "2026-11-22T12:00:00Z"
LATER = "2026-11-22T12:05:00Z"
SPEC = BASE["spec"]
JOB = job_name("llama", QuantizedModelSpec.model_validate(SPEC))
ARCH = architecture_from_config(LLAMA_31_8B)


# What the Job's quality gate measured: Llama 3 8B in 16 bits and AWQ 4-bit on WikiText-2 (the
# seed guide's table), judged against the default limit.
PASSED = ReportQuality(
    baseline_perplexity=6.14, perplexity=6.32, increase_percent=2.93, limit_percent=15,
    samples=128, tokens=65_408, passed=True, duration_seconds=41,
)  # fmt: skip


def report(
    bits: int = 4, group: int = 128, quality: ReportQuality | None = PASSED
) -> QuantizeReport:
    fmt = WeightFormat(bits, group, False)
    weights = estimate_weights(ARCH, fmt)
    h = artifact_hash(QuantizedModelSpec.model_validate(SPEC))
    return QuantizeReport(
        artifact=ReportArtifact(
            path=f"/artifacts/quantized/llama-{h}", weight_bytes=weights.total_bytes,
            digest="sha256:" + "a" * 64, breakdown=WeightBytes.from_breakdown(weights),
        ),
        quantization=ReportQuantization(
            quant_method="compressed-tensors", scheme="wna16", format="pack-quantized", weight_bits=bits,
            group_size=group, symmetric=False, ignore=["lm_head"],
        ),
        architecture=ARCH,
        duration_seconds=812,
        quality=quality,
    )  # fmt: skip


def observe(
    spec: dict[str, Any] = SPEC,
    status: dict[str, Any] | None = None,
    job: JobState | None = None,
    deployment: WorkloadState | None = None,
    annotations: dict[str, str] | None = None,
    generation: int = 1,
    now: str = NOW,
) -> Observation:
    return Observation(
        name="llama", namespace="ml", uid="uid-1", generation=generation, spec=spec,
        status=status or {}, annotations=annotations or {}, job=job, deployment=deployment, now=now,
    )  # fmt: skip


def run(obs: Observation) -> Outcome:
    return reconcile(obs, Settings(quantizer_image="q:1", vllm_image="v:1"))


def cond(outcome: Outcome, type_: str) -> tuple[str, str]:
    c = next(c for c in outcome.status.conditions or [] if c.type == type_)
    return c.status, c.reason


def kinds(outcome: Outcome) -> list[str]:
    return [a.kind for a in outcome.actions]


def succeeded(message: str) -> JobState:
    return JobState(name=JOB, succeeded=True, termination_message=message)


def test_new_model_creates_exactly_one_job() -> None:
    out = run(observe())
    assert out.status.phase == "Quantizing"
    assert cond(out, "Quantized") == ("False", "JobCreated")
    assert kinds(out) == ["create_job", "event"]
    body = out.actions[0].body
    assert body["metadata"]["name"] == JOB
    assert body["metadata"]["ownerReferences"][0]["uid"] == "uid-1"
    assert body["spec"]["template"]["spec"]["containers"][0]["image"] == "q:1"
    assert out.status.observed_generation == 1


def test_running_job_creates_nothing() -> None:
    first = run(observe())
    out = run(observe(status=first.status.to_api(), job=JobState(name=JOB), now=LATER))
    assert out.status.phase == "Quantizing"
    assert cond(out, "Quantized") == ("False", "JobRunning")
    assert "create_job" not in kinds(out)


def test_pending_pod_is_reported() -> None:
    out = run(
        observe(
            job=JobState(name=JOB, pod_pending=True, pod_pending_message="0/3 nodes have a GPU")
        )
    )
    assert out.status.phase == "Pending"
    _, reason = cond(out, "Quantized")
    assert reason == "JobPending"
    assert "0/3 nodes have a GPU" in out.status.conditions[0].message  # type: ignore[index]


def test_successful_job_validates_plans_and_deploys() -> None:
    out = run(observe(job=succeeded(dump_report(report()))))
    assert cond(out, "Quantized") == ("True", "Quantized")
    assert cond(out, "Validated") == ("True", "Supported")
    assert cond(out, "Planned") == ("True", "Planned")
    assert cond(out, "Deployed") == ("True", "Applied")
    assert cond(out, "Ready") == ("False", "Progressing")
    assert out.status.phase == "Deploying"
    assert out.status.plan is not None and out.status.plan.tensor_parallel_size == 1
    assert out.status.artifact is not None and out.status.artifact.bits == 4
    assert out.status.endpoint == "http://llama.ml.svc:8000/v1"
    applied = [a.body["kind"] for a in out.actions if a.kind == "apply"]
    assert applied == ["Deployment", "Service"]
    dep = next(a.body for a in out.actions if a.kind == "apply")
    args = dep["spec"]["template"]["spec"]["containers"][0]["args"]
    h = artifact_hash(QuantizedModelSpec.model_validate(SPEC))
    assert args[args.index("--model") + 1] == f"/models/quantized/llama-{h}"
    assert out.status.artifact.path == f"pvc://models/quantized/llama-{h}"
    assert dep["spec"]["template"]["spec"]["containers"][0]["image"] == "v:1"


def test_available_deployment_is_ready_and_unavailable_goes_back() -> None:
    deployed = run(observe(job=succeeded(dump_report(report()))))
    ok = WorkloadState(
        available_replicas=1, updated_replicas=1, generation=1, observed_generation=1
    )
    ready = run(observe(status=deployed.status.to_api(), deployment=ok, now=LATER))
    assert ready.status.phase == "Ready"
    assert cond(ready, "Ready") == ("True", "Available")
    assert ready.status.replicas == 1
    assert ready.status.selector == "app.kubernetes.io/name=vllm,app.kubernetes.io/instance=llama"
    gone = run(
        observe(
            status=ready.status.to_api(),
            deployment=WorkloadState(generation=1, observed_generation=1, updated_replicas=1),
        )
    )
    assert cond(gone, "Ready") == ("False", "Unavailable")
    assert gone.status.phase == "Deploying"


def test_a_finished_artifact_is_not_requantized_and_job_need_not_exist() -> None:
    deployed = run(observe(job=succeeded(dump_report(report()))))
    # The Job was garbage-collected; the artifact is in status: nothing to create.
    again = run(observe(status=deployed.status.to_api(), job=None, now=LATER))
    assert "create_job" not in kinds(again)
    assert kinds(again)[:2] == ["apply", "apply"]


def test_serving_change_replans_without_a_new_job() -> None:
    deployed = run(observe(job=succeeded(dump_report(report()))))
    spec = with_("spec.serving.concurrency", 64)["spec"]
    out = run(observe(spec=spec, status=deployed.status.to_api(), generation=2, now=LATER))
    assert "create_job" not in kinds(out)
    assert (
        out.status.plan is not None
        and out.status.plan.kv_cache_budget_bytes
        == 64 * 8192 * out.status.plan.kv_cache_bytes_per_token
    )
    assert out.status.observed_generation == 2
    assert all(c.observed_generation == 2 for c in out.status.conditions or [])


def test_quantization_change_makes_a_new_artifact_and_keeps_serving_the_old() -> None:
    deployed = run(observe(job=succeeded(dump_report(report()))))
    spec = with_("spec.quantization.groupSize", 64)["spec"]
    out = run(observe(spec=spec, status=deployed.status.to_api(), generation=2, now=LATER))
    assert kinds(out)[0] == "create_job"
    assert out.actions[0].name != JOB
    assert "apply" not in kinds(
        out
    )  # The old Deployment keeps serving until the new artifact is ready.
    assert out.status.artifact == deployed.status.artifact
    assert out.status.phase == "Quantizing"


@pytest.mark.parametrize(
    ("job", "reason", "text"),
    [
        (
            JobState(
                name=JOB,
                failed=True,
                failure_reason="BackoffLimitExceeded",
                failure_message="Job has reached the specified backoff limit",
            ),
            "BackoffLimitExceeded",
            "backoff limit",
        ),
        (
            JobState(
                name=JOB,
                failed=True,
                failure_reason="DeadlineExceeded",
                failure_message="Job was active longer than specified deadline",
            ),
            "DeadlineExceeded",
            "deadline",
        ),
        (
            JobState(
                name=JOB,
                failed=True,
                failure_reason="PodFailurePolicy",
                termination_message=dump_report(
                    QuantizeError(
                        reason="GatedModel",
                        message="meta-llama/Llama-3.1-8B-Instruct is gated: set spec.source.huggingFace.tokenSecretRef",
                    )
                ),
            ),
            "GatedModel",
            "tokenSecretRef",
        ),
        (
            JobState(
                name=JOB,
                failed=True,
                failure_reason="BackoffLimitExceeded",
                termination_message="Traceback...\ntorch.OutOfMemoryError: CUDA out of memory",
            ),
            "BackoffLimitExceeded",
            "CUDA out of memory",
        ),
        (
            JobState(
                name=JOB,
                failed=True,
                failure_reason="BackoffLimitExceeded",
                termination_message="Loading checkpoint shards: 40%",
                oom_killed=True,
            ),
            "OutOfMemory",
            "spec.quantizer.resources.limits.memory",
        ),
    ],
)
def test_failed_jobs_end_in_a_clear_condition(job: JobState, reason: str, text: str) -> None:
    out = run(observe(job=job))
    assert out.status.phase == "Failed"
    assert cond(out, "Quantized") == ("False", reason)
    assert text in next(c.message for c in out.status.conditions or [] if c.type == "Quantized")
    assert out.permanent_failure
    events = [a for a in out.actions if a.kind == "event"]
    assert len(events) == 1 and events[0].warning and events[0].reason == reason


@pytest.mark.parametrize(
    ("message", "reason"),
    [
        (None, "ReportMissing"),
        ('{"version":1,"kind":"QuantizeReport","artifact":{"path":"/a"', "ReportTruncated"),
        ("x" * 5000, "ReportTooLarge"),
        ('{"version": 1, "kind": "QuantizeReport"}', "ReportInvalid"),
        ("not json at all", "ReportMalformed"),
    ],
)
def test_bad_reports_fail_clearly(message: str | None, reason: str) -> None:
    out = run(
        observe(
            job=succeeded(message) if message is not None else JobState(name=JOB, succeeded=True)
        )
    )
    assert out.status.phase == "Failed"
    assert cond(out, "Quantized") == ("False", reason)


def test_report_that_does_not_match_the_spec_is_refused() -> None:
    out = run(observe(job=succeeded(dump_report(report(bits=8, group=128)))))
    assert cond(out, "Validated") == ("False", "Mismatch")
    assert (
        "8-bit weights but spec.quantization asks for 4"
        in (out.status.conditions or [])[-1].message
    )
    assert "apply" not in kinds(out)


def finished_job_for(spec: dict[str, Any]) -> JobState:
    """A succeeded Job whose report's artifact path matches ``spec``'s artifact hash."""
    h = artifact_hash(QuantizedModelSpec.model_validate(spec))
    rep = report()
    artifact = rep.artifact.model_copy(update={"path": f"/artifacts/quantized/llama-{h}"})
    return JobState(
        name=job_name("llama", QuantizedModelSpec.model_validate(spec)),
        succeeded=True,
        termination_message=dump_report(rep.model_copy(update={"artifact": artifact})),
    )


def test_plan_that_cannot_fit_fails_with_the_planner_message() -> None:
    spec = with_(
        "spec.serving",
        {"gpu": {"product": "T4"}, "gpusPerNode": 1, "maxModelLen": 131072, "concurrency": 64},
    )["spec"]
    out = run(observe(spec=spec, job=finished_job_for(spec)))
    assert cond(out, "Planned") == ("False", "DoesNotFit")
    assert out.status.phase == "Failed"
    assert "does not fit on T4" in (out.status.conditions or [])[-1].message


def test_kv_cache_dtype_the_serving_vllm_lacks_fails_validation() -> None:
    from quantwise.reconcile.validation import kernel_validator

    spec = with_(
        "spec.serving", {**SPEC["serving"], "kvCacheDtype": "nvfp4", "vllmVersion": "0.11"}
    )["spec"]
    out = reconcile(
        observe(spec=spec, job=finished_job_for(spec)), Settings(), validator=kernel_validator(None)
    )
    assert cond(out, "Validated") == ("False", "Unsupported")
    assert out.status.phase == "Failed" and out.permanent_failure
    message = next(c.message for c in out.status.conditions or [] if c.type == "Validated")
    assert "kvCacheDtype nvfp4 is not in vLLM 0.11" in message
    assert "apply" not in kinds(out)


def test_deleted_job_fails_then_retry_annotation_recreates_it() -> None:
    created = run(observe())
    out = run(observe(status=created.status.to_api(), job=None, now=LATER))
    assert cond(out, "Quantized") == ("False", "JobDeleted")
    assert out.status.phase == "Failed" and out.permanent_failure
    retried = run(
        observe(
            status=out.status.to_api(), job=None, annotations={RETRY_ANNOTATION: "1"}, now=LATER
        )
    )
    assert kinds(retried)[0] == "create_job"
    assert retried.status.retry == "1"
    # The same annotation value is acted on once.
    again = run(
        observe(
            status=retried.status.to_api(),
            job=JobState(name=JOB),
            annotations={RETRY_ANNOTATION: "1"},
        )
    )
    assert "create_job" not in kinds(again)


def test_failed_job_is_deleted_on_retry() -> None:
    failed = run(
        observe(job=JobState(name=JOB, failed=True, failure_reason="BackoffLimitExceeded"))
    )
    out = run(
        observe(
            status=failed.status.to_api(),
            job=JobState(name=JOB, failed=True),
            annotations={RETRY_ANNOTATION: "a"},
        )
    )
    assert [a.kind for a in out.actions if a.kind != "event"] == ["delete_job"]
    assert cond(out, "Quantized") == ("False", "JobRetrying")


def test_invalid_spec_fails_once_with_the_field() -> None:
    spec = with_("spec.quantization.bits", 3)["spec"]
    out = run(observe(spec=spec))
    assert out.status.phase == "Failed" and out.permanent_failure
    assert cond(out, "Ready") == ("False", "InvalidSpec")
    assert "bits 3 is not allowed" in (out.status.conditions or [])[0].message
    assert kinds(out) == ["event"]
    # Reconciling again changes nothing and posts no second Event.
    again = run(observe(spec=spec, status=out.status.to_api(), now=LATER))
    assert kinds(again) == []
    assert (again.status.conditions or [])[0].last_transition_time == NOW


MULTI_NODE = {
    "gpu": {"product": "L4"}, "gpusPerNode": 1, "maxNodes": 4, "maxModelLen": 8192,
    "concurrency": 32,
}  # fmt: skip


def deployed_observation(serving: dict[str, Any], **kwargs: Any) -> Observation:
    """A model whose Job succeeded, with ``spec.serving`` as given."""
    spec = with_("spec.serving", serving)["spec"]
    sp = QuantizedModelSpec.model_validate(spec)
    rep = report()
    path = f"/artifacts/quantized/llama-{artifact_hash(sp)}"
    rep = rep.model_copy(update={"artifact": rep.artifact.model_copy(update={"path": path})})
    obs = observe(
        spec=spec,
        job=JobState(name=job_name("llama", sp), succeeded=True, termination_message=dump_report(rep)),
    )  # fmt: skip
    return dataclasses.replace(obs, **kwargs)


def test_a_plan_across_nodes_applies_a_leader_worker_set() -> None:
    out = run(deployed_observation(MULTI_NODE, lws_installed=True))
    assert out.status.plan is not None and out.status.plan.pipeline_parallel_size > 1
    applied = [a.body for a in out.actions if a.kind == "apply"]
    assert [b["kind"] for b in applied] == ["LeaderWorkerSet", "Service"]
    lws, svc = applied
    assert lws["spec"]["leaderWorkerTemplate"]["size"] == out.status.plan.pipeline_parallel_size
    assert svc["spec"]["selector"]["quantwise.dev/role"] == "leader"
    assert cond(out, "Deployed") == ("True", "Applied")
    assert "LeaderWorkerSet llama" in next(
        c.message for c in out.status.conditions or [] if c.type == "Deployed"
    )
    assert cond(out, "Ready") == ("False", "Progressing")
    assert out.status.phase == "Deploying"


def test_a_plan_across_nodes_without_the_lws_crd_says_how_to_install_it() -> None:
    out = run(deployed_observation(MULTI_NODE, lws_installed=False))
    assert cond(out, "Deployed") == ("False", "LeaderWorkerSetMissing")
    message = next(c.message for c in out.status.conditions or [] if c.type == "Deployed")
    assert "lws.sigs.k8s.io/docs/installation" in message and "spec.serving.maxNodes" in message
    assert [a.kind for a in out.actions if a.kind != "event"] == []  # nothing applied
    assert out.status.phase == "Deploying" and out.permanent_failure
    assert out.status.plan is not None  # the plan is still shown


def test_the_leader_worker_set_becomes_ready_and_a_left_deployment_is_deleted() -> None:
    ready = WorkloadState(available_replicas=1, updated_replicas=1)
    out = run(deployed_observation(
        MULTI_NODE, lws_installed=True, leader_worker_set=ready, deployment=ready,
    ))  # fmt: skip
    assert cond(out, "Ready") == ("True", "Available")
    deletes = [(a.name, a.object_kind) for a in out.actions if a.kind == "delete"]
    assert deletes == [("llama", "Deployment")]


def test_back_on_one_node_the_leader_worker_set_is_deleted() -> None:
    single = {"gpu": {"product": "H100-80GB"}}
    left = WorkloadState(available_replicas=1, updated_replicas=1)
    out = run(deployed_observation(single, leader_worker_set=left))
    assert [a.body["kind"] for a in out.actions if a.kind == "apply"] == ["Deployment", "Service"]
    assert [(a.name, a.object_kind) for a in out.actions if a.kind == "delete"] == [
        ("llama", "LeaderWorkerSet")
    ]


POOLS = pools([
    NodeGpus("l4-a", "NVIDIA-L4", 1, 23034, (8, 9)),
    NodeGpus("h100-a", "NVIDIA-H100-80GB-HBM3", 8, 81559, (9, 0)),
    NodeGpus("h100-b", "NVIDIA-H100-80GB-HBM3", 8, 81559, (9, 0)),
])  # fmt: skip


def test_without_a_gpu_the_smallest_gpu_in_the_cluster_that_fits_is_chosen() -> None:
    # 8B AWQ with a 32 x 8192 budget needs more than one L4 (24 GB): an H100 node.
    serving = {"maxModelLen": 8192, "concurrency": 32}
    out = run(deployed_observation(serving, inventory=POOLS))
    plan = out.status.plan
    assert plan is not None and plan.gpu == "H100-80GB"
    assert plan.gpu_source == "inventory" and plan.gpu_product == "NVIDIA-H100-80GB-HBM3"
    assert "NVIDIA-L4" in plan.reasons[0] and "smallest" in plan.reasons[0]
    (dep,) = [a.body for a in out.actions if a.kind == "apply" and a.body["kind"] == "Deployment"]
    pod = dep["spec"]["template"]["spec"]
    assert pod["nodeSelector"]["nvidia.com/gpu.product"] == "NVIDIA-H100-80GB-HBM3"


def test_without_a_gpu_a_small_budget_lands_on_the_smallest_gpu() -> None:
    out = run(deployed_observation({"maxModelLen": 2048, "concurrency": 1}, inventory=POOLS))
    assert out.status.plan is not None and out.status.plan.gpu == "L4"
    assert out.status.plan.gpu_product == "NVIDIA-L4"


def test_without_a_gpu_and_no_labelled_nodes_it_says_what_to_do() -> None:
    out = run(deployed_observation({"maxModelLen": 2048}, inventory=()))
    assert cond(out, "Planned") == ("False", "NoGPU")
    message = next(c.message for c in out.status.conditions or [] if c.type == "Planned")
    assert "spec.serving.gpu" in message and "nvidia.com/gpu.product" in message


def test_without_a_gpu_when_nothing_fits_every_pool_is_named() -> None:
    small = pools([NodeGpus("l4-a", "NVIDIA-L4", 1, 23034, (8, 9))])
    out = run(deployed_observation({"maxModelLen": 131072, "concurrency": 64}, inventory=small))
    assert cond(out, "Planned") == ("False", "DoesNotFit")
    message = next(c.message for c in out.status.conditions or [] if c.type == "Planned")
    assert "NVIDIA-L4 (1 nodes x 1)" in message


def test_status_round_trips_through_json() -> None:
    out = run(observe(job=succeeded(dump_report(report()))))
    data = json.loads(json.dumps(out.status.to_api()))
    assert run(observe(status=data, now=LATER)).status.artifact == out.status.artifact


def test_kernel_validation_names_the_kernel() -> None:
    from quantwise.reconcile.validation import kernel_validator

    out = reconcile(
        observe(job=succeeded(dump_report(report()))),
        Settings(),
        validator=kernel_validator("vllm/vllm-openai:v0.33.0"),
    )
    status, reason = cond(out, "Validated")
    assert (status, reason) == ("True", "FastKernel")
    assert "Machete" in next(
        c.message for c in out.status.conditions or [] if c.type == "Validated"
    )
    # Machete serves W4A16 on Hopper in every release checked (0.11.0, 0.20.0, 0.33.0 wheels).
    old = reconcile(
        observe(job=succeeded(dump_report(report()))),
        Settings(),
        validator=kernel_validator("vllm/vllm-openai:v0.11.0"),
    )
    assert "Machete" in next(
        c.message for c in old.status.conditions or [] if c.type == "Validated"
    )


def test_a_checkpoint_the_serving_vllm_cannot_load_is_not_quantized() -> None:
    from quantwise.reconcile.validation import kernel_validator

    serving = {**SPEC["serving"], "gpu": {"product": "T4"}, "vllmVersion": "0.11"}
    spec = with_("spec.serving", serving)["spec"]
    out = reconcile(observe(spec=spec), Settings(), validator=kernel_validator(None))
    assert "create_job" not in kinds(out)
    assert cond(out, "Validated") == ("False", "Unsupported")
    assert out.status.phase == "Failed" and out.permanent_failure
    message = next(c.message for c in out.status.conditions or [] if c.type == "Validated")
    assert message.startswith("not quantized: ") and "T4 has 7.5" in message
    # Once vLLM 0.20 serves it (Marlin from compute capability 7.5), the Job is created.
    newer = with_("spec.serving", {**serving, "vllmVersion": "0.20"})["spec"]
    again = reconcile(
        observe(spec=newer, generation=2), Settings(), validator=kernel_validator(None)
    )
    assert "create_job" in kinds(again)
    # A pre-quantized model is inspected first: nothing to check before its Job.
    inspect = with_("spec.quantization", {"method": "none"})["spec"]
    inspect["serving"] = serving
    assert "create_job" in kinds(
        reconcile(observe(spec=inspect), Settings(), validator=kernel_validator(None))
    )


def test_a_checkpoint_being_inspected_is_validating() -> None:
    """Phase Validating is what a pre-quantized model shows while its inspection Job runs (it
    validates a checkpoint that exists); a quantization Job shows Quantizing."""
    spec = with_("spec.quantization", {"method": "none"})["spec"]
    job = job_name("llama", QuantizedModelSpec.model_validate(spec))
    created = run(observe(spec=spec))
    assert created.status.phase == "Validating"
    assert cond(created, "Quantized") == ("False", "JobCreated")
    running = run(observe(spec=spec, status=created.status.to_api(), job=JobState(name=job)))
    assert running.status.phase == "Validating"
    assert cond(running, "Quantized") == ("False", "JobRunning")
    assert run(observe(job=JobState(name=JOB))).status.phase == "Quantizing"


def test_a_leader_worker_set_model_reports_its_ready_groups_as_replicas() -> None:
    """status.replicas (the scale subresource) counts the LeaderWorkerSet's ready groups, not
    the Deployment a model served by an LWS does not have (it said 0 when Ready)."""
    two = WorkloadState(available_replicas=2, updated_replicas=2)
    out = run(deployed_observation(
        {**MULTI_NODE, "replicas": 2}, lws_installed=True, leader_worker_set=two,
    ))  # fmt: skip
    assert out.status.phase == "Ready"
    assert out.status.replicas == 2
    assert out.status.selector is not None


# Statuses as the real controllers write them: a Deployment's first rollout (its pod created,
# not yet available), the same Deployment done, then a pod lost (kube-controller-manager 1.36).
ROLLING = {"type": "Progressing", "status": "True", "reason": "ReplicaSetUpdated"}
DONE = {"type": "Progressing", "status": "True", "reason": "NewReplicaSetAvailable"}


def deployment_body(available: int, progressing: dict[str, str]) -> dict[str, Any]:
    return {
        "kind": "Deployment", "metadata": {"generation": 1}, "spec": {"replicas": 1},
        "status": {"observedGeneration": 1, "replicas": 1, "updatedReplicas": 1,
                   "availableReplicas": available, "conditions": [progressing]},
    }  # fmt: skip


@pytest.mark.parametrize(
    ("body", "ready"),
    [
        (deployment_body(0, ROLLING), ("False", "Progressing")),  # the first rollout: no warning
        (deployment_body(1, DONE), ("True", "Available")),
        (deployment_body(0, DONE), ("False", "Unavailable")),  # a pod lost after the rollout
        (deployment_body(0, {"type": "Progressing", "status": "False",
                             "reason": "ProgressDeadlineExceeded"}), ("False", "Unavailable")),
    ],
)  # fmt: skip
def test_a_rollout_under_way_is_progressing_and_a_lost_replica_is_unavailable(
    body: dict[str, Any], ready: tuple[str, str]
) -> None:
    deployed = run(observe(job=succeeded(dump_report(report()))))
    out = run(observe(status=deployed.status.to_api(), deployment=workload_state(body), now=LATER))
    assert cond(out, "Ready") == ready


@pytest.mark.parametrize(
    ("conditions", "rolling"),
    [
        ([{"type": "Progressing", "status": "True"}], True),  # groups being created
        ([{"type": "Available", "status": "True"}], False),
        ([{"type": "Available", "status": "False"}, {"type": "Progressing", "status": "True"}],
         False),  # was available, a group lost
        ([{"type": "Available", "status": "False"}, {"type": "UpdateInProgress", "status": "True"},
          {"type": "Progressing", "status": "True"}], True),  # an update
    ],
)  # fmt: skip
def test_a_leader_worker_set_rolls_out_until_first_available_or_while_updating(
    conditions: list[dict[str, str]], rolling: bool
) -> None:
    body = {"kind": "LeaderWorkerSet", "metadata": {"generation": 2}, "spec": {"replicas": 1},
            "status": {"readyReplicas": 0, "updatedReplicas": 1, "conditions": conditions}}  # fmt: skip
    assert workload_state(body).progressing is rolling
