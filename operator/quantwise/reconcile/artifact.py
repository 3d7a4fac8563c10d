"""The artifact stage: the Job state machine that makes (or inspects) the served checkpoint.

A known artifact for this spec (``status.artifact`` with the spec's hash) ends the stage at once.
Otherwise the Job named after the hash is created, followed, retried on request, and its report
turned into ``status.artifact``; a Job that fails, vanishes or reports nonsense ends the
reconcile with a condition that says why and what to change.
"""

from __future__ import annotations

from dataclasses import dataclass

from quantwise.api.report import QuantizeError, QuantizeReport, ReportError, parse_report
from quantwise.api.spec import QuantizedModelSpec
from quantwise.api.status import ArtifactStatus, ConditionType, Phase, Reason
from quantwise.planning.gpus import GPU
from quantwise.reconcile.observe import JobState
from quantwise.reconcile.progress import job_running
from quantwise.reconcile.quality import gate_failed
from quantwise.reconcile.state import (
    CreateJob,
    Decision,
    DeleteJob,
    Validator,
    owner_reference,
)
from quantwise.render.job import quantization_job
from quantwise.render.names import artifact_dir, job_name
from quantwise.render.serving import serving_location
from quantwise.settings import Settings

RETRY_ANNOTATION = "quantwise.dev/retry"
"""Set (to any new value) on a Failed QuantizedModel to run its failed Job again."""
QUANTIZED = ConditionType.QUANTIZED
# Reasons under which the Quantized condition names a Job that should be there.
_JOB_EXPECTED = frozenset({Reason.JOB_CREATED, Reason.JOB_RUNNING, Reason.JOB_PENDING,
                           Reason.JOB_DELETED})  # fmt: skip


@dataclass(frozen=True)
class Waiting:
    """The artifact is not there yet (or cannot be made): the phase meanwhile, and why."""

    phase: Phase
    permanent: bool = False
    retry: str | None = None
    job_pending: str | None = None
    """The scheduler's message when the Job's pod waits for a node."""


def artifact_stage(
    d: Decision,
    spec: QuantizedModelSpec,
    hash_: str,
    settings: Settings,
    validator: Validator | None,
    gpu: GPU | None,
) -> ArtifactStatus | Waiting:
    """The artifact to serve, or how things stand while it is made (or why it cannot be)."""
    known = d.current.artifact
    if known is not None and known.hash == hash_:
        done = d.condition(QUANTIZED)
        if done is not None and done.status == "True":
            d.set(QUANTIZED, True, done.reason, done.message)
        else:
            d.set(QUANTIZED, True, Reason.QUANTIZED, f"artifact at {known.path}")
        return known
    job = job_name(d.obs.name, spec)
    state = d.obs.job
    retry = d.obs.annotations.get(RETRY_ANNOTATION)
    retry_requested = retry is not None and retry != d.current.retry
    working = Phase.VALIDATING if spec.quantization.method == "none" else Phase.QUANTIZING
    if state is not None and state.failed and retry_requested:
        d.act(DeleteJob(name=job))
        d.set(QUANTIZED, False, Reason.JOB_RETRYING, f"deleting failed Job {job} to run it again")
        return Waiting(working, retry=retry)
    if state is None:
        return _create_job(
            d, spec, job, settings, validator, gpu, retry if retry_requested else None
        )
    if state.failed:
        reason, message = job_failure(state)
        if reason == Reason.QUALITY_GATE_FAILED:
            gate_failed(d, message)
        else:
            d.set(QUANTIZED, False, reason, message)
        return Waiting(Phase.FAILED, permanent=True)
    verb = "inspect" if spec.quantization.method == "none" else "quantize"
    if not state.succeeded:
        if state.pod_pending:
            detail = f": {state.pod_pending_message}" if state.pod_pending_message else ""
            d.set(QUANTIZED, False, Reason.JOB_PENDING,
                  f"Job {job} is waiting for its pod to start{detail}")  # fmt: skip
            return Waiting(Phase.PENDING, job_pending=state.pod_pending_message)
        job_running(d, job, verb, settings)
        return Waiting(working)
    return _from_report(d, spec, hash_, job, state.termination_message)


def _create_job(
    d: Decision,
    spec: QuantizedModelSpec,
    job: str,
    settings: Settings,
    validator: Validator | None,
    gpu: GPU | None,
    retry: str | None,
) -> Waiting:
    """No Job: create it, unless it was deleted by someone or vLLM could not load the result."""
    quantized = d.condition(QUANTIZED)
    deleted = (
        quantized is not None and Reason.of(quantized.reason) in _JOB_EXPECTED
        and job in quantized.message
    )  # fmt: skip
    if deleted and retry is None:
        d.set(QUANTIZED, False, Reason.JOB_DELETED,
              f"Job {job} was deleted before it finished; set the annotation "
              f"{RETRY_ANNOTATION} to any new value to run it again")  # fmt: skip
        return Waiting(Phase.FAILED, permanent=True)
    preflight = validator(spec, None, gpu) if validator is not None else None
    if preflight is not None and preflight.verdict == "unsupported":
        d.set(ConditionType.VALIDATED, False, Reason.UNSUPPORTED,
              "not quantized: the serving vLLM could not load the result; "
              + "; ".join(preflight.messages))  # fmt: skip
        return Waiting(Phase.FAILED, permanent=True)
    obs = d.obs
    body = quantization_job(obs.name, obs.namespace, spec, settings.quantizer_image,
                            owner_reference(obs))  # fmt: skip
    d.act(CreateJob(name=job, body=body))
    verb = "inspect" if spec.quantization.method == "none" else "quantize"
    d.set(QUANTIZED, False, Reason.JOB_CREATED, f"created Job {job} to {verb} the model")
    working = Phase.VALIDATING if spec.quantization.method == "none" else Phase.QUANTIZING
    return Waiting(working, retry=retry)


def _from_report(
    d: Decision, spec: QuantizedModelSpec, hash_: str, job: str, message: str | None
) -> ArtifactStatus | Waiting:
    """The artifact a succeeded Job reported, or why its report cannot be used."""
    try:
        report = parse_report(message)
    except ReportError as exc:
        d.set(QUANTIZED, False, exc.reason, f"Job {job} succeeded but its report is bad: {exc}")
        return Waiting(Phase.FAILED, permanent=True)
    if isinstance(report, QuantizeError):
        d.set(QUANTIZED, False, report.reason, report.message)
        return Waiting(Phase.FAILED, permanent=True)
    artifact = artifact_from_report(report, spec, hash_, job, artifact_location(d.obs.name, spec))
    inspected = spec.quantization.method == "none"
    took = "" if report.reused else f" in {report.duration_seconds:.0f} s"
    gigabytes = report.artifact.weight_bytes / 1e9
    d.set(QUANTIZED, True, Reason.INSPECTED if inspected else Reason.QUANTIZED,
          f"{gigabytes:.2f} GB of weights at {artifact.path}{took}")  # fmt: skip
    return artifact


def artifact_location(name: str, spec: QuantizedModelSpec) -> str:
    """Where the served checkpoint lives, in the user's terms (pvc://CLAIM/PATH or hf://REPO)."""
    subdir = artifact_dir(name, spec) if spec.quantization.method != "none" else None
    return serving_location(spec, subdir).uri


def artifact_from_report(
    report: QuantizeReport, spec: QuantizedModelSpec, hash_: str, job: str, location: str
) -> ArtifactStatus:
    """``status.artifact`` from a Job's report."""
    q = report.quantization
    return ArtifactStatus(
        path=location,
        digest=report.artifact.digest,
        method=spec.quantization.method,
        bits=q.weight_bits,
        group_size=q.group_size,
        weight_bytes=report.artifact.weight_bytes,
        format=q.format,
        hash=hash_,
        job_name=job,
        scheme=q.scheme,
        symmetric=q.symmetric,
        activation_bits=q.activation_bits,
        act_order=q.act_order,
        kv_cache_scheme=q.kv_cache_scheme,
        weight_breakdown=report.artifact.breakdown,
        architecture=report.architecture,
        quality=report.quality,
    )


def check_artifact_matches_spec(spec: QuantizedModelSpec, artifact: ArtifactStatus) -> list[str]:
    """Reasons the reported checkpoint is not what the spec asked for (empty: it is).

    For ``method: none`` the spec's bits and group size, when given, are what the checkpoint is
    expected to hold; for a method that quantizes, what the Job was asked to produce.
    """
    q = spec.quantization
    expected = q.method == "none"
    bits = q.bits if expected else q.effective_bits
    group = q.group_size if expected else q.effective_group_size
    problems: list[str] = []
    if bits is not None and artifact.bits is not None and artifact.bits != bits:
        problems.append(
            f"spec.quantization.bits is {bits} but the checkpoint holds {artifact.bits}-bit weights"
            if expected
            else f"the Job reported {artifact.bits}-bit weights but spec.quantization asks for "
            f"{bits}"
        )
    if group is not None and artifact.group_size is not None and artifact.group_size != group:
        problems.append(
            f"spec.quantization.groupSize is {group} but the checkpoint uses {artifact.group_size}"
            if expected
            else f"the Job reported group size {artifact.group_size} but spec.quantization asks "
            f"for {group}"
        )
    return problems


def job_failure(state: JobState) -> tuple[str, str]:
    """Reason and message of a failed Job, preferring the pod's own QuantizeError."""
    if state.termination_message:
        try:
            report = parse_report(state.termination_message)
        except ReportError:
            report = None
        if isinstance(report, QuantizeError):
            return report.reason, report.message
    if state.oom_killed:
        # The kernel killed the container before it could write a report.
        return Reason.OUT_OF_MEMORY, (
            f"Job {state.name}: the quantizer was killed for using more host memory than its "
            "limit (OOMKilled): raise spec.quantizer.resources.limits.memory (the base model is "
            "loaded into host memory first), or lower spec.quantization.calibration.samples"
        )
    reason = state.failure_reason or Reason.JOB_FAILED
    detail = state.failure_message or "the Job failed"
    tail = ""
    if state.termination_message and not state.termination_message.lstrip().startswith("{"):
        tail = f"; last output: {state.termination_message.strip()[-300:]}"
    return reason, f"Job {state.name}: {detail}{tail}"
