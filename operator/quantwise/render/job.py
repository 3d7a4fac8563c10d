"""The quantization (or inspection) Job of a QuantizedModel (pure).

The Job runs ``quantwise quantize`` (or ``quantwise inspect`` for ``method: none``) from the
quantizer image with plain arguments (no shell), writes the artifact to the storage PVC, and its
report to the termination message, where the operator reads it. The Hugging Face token reaches
the container as a ``secretKeyRef``: the operator never reads the Secret.
"""

from __future__ import annotations

from typing import Any

from quantwise.api.spec import QuantizedModelSpec
from quantwise.planning.gpus import GPU_RESOURCE
from quantwise.quantization.methods import METHODS, NONE
from quantwise.render.names import (
    LABEL_ARTIFACT,
    artifact_dir,
    artifact_hash,
    common_labels,
    job_name,
)
from quantwise.render.pods import container_security, pod_security, tolerations

DEFAULT_QUANTIZER_IMAGE = "ghcr.io/quantwise/quantizer:0.1.0"
SOURCE_MOUNT = "/source"
ARTIFACTS_MOUNT = "/artifacts"
CALIBRATION_MOUNT = "/calibration"
EVALUATION_MOUNT = "/evaluation"
BASE_MOUNT = "/base"
TERMINATION_LOG = "/dev/termination-log"
# Exit status of `quantwise quantize` for a failure that retrying cannot fix (a gated model
# without a token, a missing dataset, an unsupported architecture): the Job's pod failure
# policy fails the Job at once instead of burning its backoff limit.
EXIT_PERMANENT = 3


def quantizer_args(name: str, spec: QuantizedModelSpec) -> list[str]:
    """Arguments of ``quantwise quantize`` / ``quantwise inspect`` for this spec."""
    q = spec.quantization
    if spec.source.pvc is not None:
        model = f"{SOURCE_MOUNT}/{spec.source.pvc.path}"
    else:
        assert spec.source.hugging_face is not None
        model = spec.source.hugging_face.repo
    if q.method == "none":
        args = ["inspect", "--model", model]
        if spec.source.hugging_face is not None:
            args += ["--revision", spec.source.hugging_face.revision]
        return [*args, *_evaluation_args(spec), "--report-path", TERMINATION_LOG]
    assert spec.storage is not None
    args = ["quantize", "--model", model]
    if spec.source.hugging_face is not None:
        args += ["--revision", spec.source.hugging_face.revision]
    facts = METHODS[q.method]
    args += ["--method", q.method, "--bits", str(q.effective_bits)]
    if q.effective_group_size is not None:
        args += ["--group-size", str(q.effective_group_size)]
    if facts.symmetric is not None:
        args.append("--symmetric" if q.effective_symmetric else "--asymmetric")
    if facts.calibrated:
        cal = q.calibration
        dataset = f"{CALIBRATION_MOUNT}/{cal.pvc.path}" if cal.pvc else cal.dataset
        args += ["--calibration", dataset]
        if cal.split and not cal.pvc:
            args += ["--split", cal.split]
        args += ["--samples", str(cal.samples), "--sequence-length", str(cal.sequence_length)]
    for module in q.ignore:
        args += ["--ignore", module]
    if spec.serving.kv_cache_dtype.startswith("fp8"):
        args += ["--kv-cache-dtype", "fp8"]
    args += _evaluation_args(spec)
    output = f"{ARTIFACTS_MOUNT}/{spec.storage.pvc.path}/{artifact_dir(name, spec)}"
    return [*args, "--output", output, "--report-path", TERMINATION_LOG]


def _evaluation_args(spec: QuantizedModelSpec) -> list[str]:
    """The quality gate's flags: the data, its size, the limit.

    For a pre-quantized checkpoint, also the base model to compare it with; ``--no-eval`` when
    a quantizing Job skips the gate.
    """
    q = spec.quantization
    e = q.evaluation
    if not q.evaluated:
        return ["--no-eval"] if q.method != NONE else []
    args: list[str] = []
    base = e.base_model
    if base is not None and base.pvc is not None:
        args += ["--base-model", f"{BASE_MOUNT}/{base.pvc.path}"]
    elif base is not None and base.hugging_face is not None:
        args += ["--base-model", base.hugging_face.repo,
                 "--base-revision", base.hugging_face.revision]  # fmt: skip
    cal = q.calibration
    split = e.split
    if e.pvc is not None:
        dataset, split = f"{EVALUATION_MOUNT}/{e.pvc.path}", None
    elif e.dataset is not None:
        dataset = e.dataset
    elif cal.pvc is not None:  # a held-out slice of the calibration data, the Job's default
        dataset = f"{CALIBRATION_MOUNT}/{cal.pvc.path}"
    else:
        dataset, split = cal.dataset, split or cal.split
    args += ["--eval-dataset", dataset] + (["--eval-split", split] if split else [])
    return [*args, "--eval-samples", str(e.samples),
            "--eval-sequence-length", str(e.sequence_length),
            "--max-perplexity-increase", f"{e.max_perplexity_increase_percent:g}"]  # fmt: skip


def _data_claims(spec: QuantizedModelSpec) -> list[tuple[str, str]]:
    """(mount, claim) of the read-only data volumes: calibration, evaluation, base model."""
    q = spec.quantization
    e = q.evaluation
    roles: list[tuple[str, str]] = []
    cal = q.calibration.pvc
    evaluated_on_calibration = q.evaluated and e.pvc is None and e.dataset is None
    if cal is not None and (METHODS[q.method].calibrated or evaluated_on_calibration):
        roles.append((CALIBRATION_MOUNT, cal.claim_name))
    if q.evaluated and e.pvc is not None:
        roles.append((EVALUATION_MOUNT, e.pvc.claim_name))
    if q.evaluated and e.base_model is not None and e.base_model.pvc is not None:
        roles.append((BASE_MOUNT, e.base_model.pvc.claim_name))
    return roles


QUANTIZER_CONTAINER = "quantizer"


def quantization_job(
    name: str,
    namespace: str,
    spec: QuantizedModelSpec,
    image: str | None = None,
    owner: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Return the batch/v1 Job that quantizes (or inspects) the model."""
    quantizer = spec.quantizer
    labels = {**common_labels(name, "quantizer"), LABEL_ARTIFACT: artifact_hash(spec)}
    volumes, mounts, claims, env = _storage(spec)
    container = {
        "name": QUANTIZER_CONTAINER,
        "image": image or quantizer.image or DEFAULT_QUANTIZER_IMAGE,
        "command": ["quantwise"],
        "args": _remap(quantizer_args(name, spec), claims, spec),
        "env": env + _token(spec),
        "resources": _resources(spec),
        "volumeMounts": mounts,
        "terminationMessagePath": TERMINATION_LOG,
        # A pod killed before writing its report (out of memory) still explains itself.
        "terminationMessagePolicy": "FallbackToLogsOnError",
        "securityContext": container_security(),
    }
    pod_spec: dict[str, Any] = {
        "restartPolicy": "Never",
        "automountServiceAccountToken": False,
        "enableServiceLinks": False,
        "securityContext": pod_security(),
        "containers": [container],
        "volumes": volumes,
        "tolerations": tolerations(quantizer.tolerations),
    }
    if quantizer.node_selector:
        pod_spec["nodeSelector"] = dict(quantizer.node_selector)
    metadata: dict[str, Any] = {"name": job_name(name, spec), "namespace": namespace,
                                "labels": labels}  # fmt: skip
    if owner:
        metadata["ownerReferences"] = [owner]
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": metadata,
        "spec": {
            "backoffLimit": quantizer.backoff_limit,
            "activeDeadlineSeconds": quantizer.active_deadline_seconds,
            "podFailurePolicy": {"rules": _failure_policy()},
            "template": {"metadata": {"labels": labels}, "spec": pod_spec},
        },
    }


def _storage(
    spec: QuantizedModelSpec,
) -> tuple[list[dict[str, Any]], list[dict[str, Any]], dict[str, tuple[str, bool]],
           list[dict[str, Any]]]:  # fmt: skip
    """Volumes, mounts, claims (claim -> (mount, read-only)) and environment of the Job."""
    env: list[dict[str, Any]] = [
        {"name": "HOME", "value": "/tmp"},  # noqa: S108 - an emptyDir, not the host's /tmp.
        {"name": "PYTHONUNBUFFERED", "value": "1"},
        {"name": "HF_HUB_DISABLE_TELEMETRY", "value": "1"},
        # llm-compressor's progress bars redraw many times a second; in a pod log that is
        # noise. quantwise logs each calibrated layer itself.
        {"name": "TQDM_MININTERVAL", "value": "30"},
    ]
    volumes: list[dict[str, Any]] = [
        {"name": "tmp", "emptyDir": {}},
        {"name": "shm", "emptyDir": {"medium": "Memory", "sizeLimit": "8Gi"}},
    ]
    mounts: list[dict[str, Any]] = [
        {"name": "tmp", "mountPath": "/tmp"},  # noqa: S108
        {"name": "shm", "mountPath": "/dev/shm"},  # noqa: S108
    ]
    claims: dict[str, tuple[str, bool]] = {}  # claim -> (mount path, read-only)
    if spec.storage is not None and spec.quantization.method != NONE:
        claims[spec.storage.pvc.claim_name] = (ARTIFACTS_MOUNT, False)
        # Downloads persist on the storage volume, so a retried Job does not fetch again.
        env.append({"name": "HF_HOME", "value": f"{ARTIFACTS_MOUNT}/.cache/huggingface"})
    else:
        env.append({"name": "HF_HOME", "value": "/tmp/huggingface"})  # noqa: S108
    if spec.source.pvc is not None:
        claims.setdefault(spec.source.pvc.claim_name, (SOURCE_MOUNT, True))
    for mount, claim in _data_claims(spec):
        claims.setdefault(claim, (mount, True))
    for index, (claim, (path, read_only)) in enumerate(claims.items()):
        volume = f"data-{index}"
        volumes.append(
            {"name": volume, "persistentVolumeClaim": {"claimName": claim, "readOnly": read_only}}
        )
        mounts.append({"name": volume, "mountPath": path, "readOnly": read_only})
    return volumes, mounts, claims, env


def _token(spec: QuantizedModelSpec) -> list[dict[str, Any]]:
    """HF_TOKEN from the spec's Secret (by reference: the operator never reads it)."""
    hf = spec.source.hugging_face
    base = spec.quantization.evaluation.base_model
    if (
        (hf is None or hf.token_secret_ref is None)
        and base is not None
        and spec.quantization.evaluated
    ):
        hf = base.hugging_face  # the base model compared with is the gated one
    if hf is None or hf.token_secret_ref is None:
        return []
    ref = {"name": hf.token_secret_ref.name, "key": hf.token_secret_ref.key}
    return [{"name": "HF_TOKEN", "valueFrom": {"secretKeyRef": ref}}]


def _resources(spec: QuantizedModelSpec) -> dict[str, dict[str, str]]:
    """The spec's CPU and memory, and its GPUs (as strings: the typed client wants them so)."""
    quantizer = spec.quantizer
    resources: dict[str, dict[str, Any]] = {"limits": {}, "requests": {}}
    if quantizer.resources is not None:
        resources["limits"].update(quantizer.resources.limits or {})
        resources["requests"].update(quantizer.resources.requests or {})
    if quantizer.gpus:
        resources["limits"][GPU_RESOURCE] = quantizer.gpus
        resources["requests"][GPU_RESOURCE] = quantizer.gpus
    return {kind: {k: str(v) for k, v in values.items()} for kind, values in resources.items()
            if values}  # fmt: skip


def _failure_policy() -> list[dict[str, Any]]:
    return [
        {
            "action": "FailJob",
            "onExitCodes": {
                "containerName": QUANTIZER_CONTAINER,
                "operator": "In",
                "values": [EXIT_PERMANENT],
            },
        },
        # A node drained or preempted is not the Job's fault.
        {"action": "Ignore", "onPodConditions": [{"type": "DisruptionTarget", "status": "True"}]},
    ]


def _remap(
    args: list[str], claims: dict[str, tuple[str, bool]], spec: QuantizedModelSpec
) -> list[str]:
    """Point paths at the mount of their claim when one claim serves several roles."""
    roles: list[tuple[str, str]] = []
    if spec.source.pvc is not None:
        roles.append((SOURCE_MOUNT, spec.source.pvc.claim_name))
    roles += _data_claims(spec)
    result = list(args)
    for mount, claim in roles:
        actual = claims.get(claim, (mount, True))[0]
        if actual != mount:
            result = [
                a.replace(f"{mount}/", f"{actual}/", 1) if a.startswith(f"{mount}/") else a
                for a in result
            ]
    return result
