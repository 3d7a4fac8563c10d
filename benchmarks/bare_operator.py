"""The baseline of benchmarks/reconcile.py: a bare Kopf operator that makes quantwise's writes.

On a QuantizedModel's creation it creates a Job and patches the model's status; when the Job
completes it applies a Deployment and a Service (quantwise's own manifests, rendered once) and
patches the status again. Kopf's idioms, nothing more: an ``on.create`` handler (with Kopf's own
bookkeeping annotations), an ``on.event`` handler on Jobs, the kubernetes client for the writes.
Run as ``kopf run --standalone -n ml benchmarks/bare_operator.py``.
"""

from __future__ import annotations

import copy
from typing import Any

import kopf
from kubernetes import client, config

from quantwise.api.sizing import plan_spec
from quantwise.api.spec import QuantizedModelSpec
from quantwise.api.status import PlanStatus
from quantwise.planning.architecture import architecture_from_config
from quantwise.planning.weights import UNQUANTIZED, estimate_weights
from quantwise.render.job import quantization_job
from quantwise.render.serving import serving_objects

_API: dict[str, Any] = {}
LLAMA = {
    "hidden_size": 4096, "intermediate_size": 14336, "num_hidden_layers": 32,
    "num_attention_heads": 32, "num_key_value_heads": 8, "vocab_size": 128256,
    "max_position_embeddings": 131072, "torch_dtype": "bfloat16",
}  # fmt: skip


@kopf.on.startup()
def configure(settings: kopf.OperatorSettings, **_: Any) -> None:
    """Watching one named namespace needs no namespace scanning (quantwise turns it off too)."""
    settings.scanning.disabled = True


def _clients() -> tuple[Any, Any, Any, Any]:
    if not _API:
        config.load_kube_config()
        api = client.ApiClient()
        _API.update(core=client.CoreV1Api(api), batch=client.BatchV1Api(api),
                    apps=client.AppsV1Api(api), custom=client.CustomObjectsApi(api))  # fmt: skip
    return _API["core"], _API["batch"], _API["apps"], _API["custom"]


def _status(namespace: str, name: str, status: dict[str, Any]) -> None:
    custom = _clients()[3]
    custom.patch_namespaced_custom_object_status(
        "quantwise.dev", "v1alpha1", namespace, "quantizedmodels", name, {"status": status}
    )


@kopf.on.create("quantwise.dev", "v1alpha1", "quantizedmodels")
def created(spec: Any, name: str, namespace: str, uid: str, **_: Any) -> None:
    """Create the Job; say so in the status."""
    owner = {"apiVersion": "quantwise.dev/v1alpha1", "kind": "QuantizedModel", "name": name,
             "uid": uid, "controller": True}  # fmt: skip
    body = quantization_job(name, namespace, QuantizedModelSpec.model_validate(dict(spec)),
                            "quantizer:bench", owner)  # fmt: skip
    try:
        _clients()[1].create_namespaced_job(namespace, body)
    except client.ApiException as exc:
        if exc.status != 409:
            raise
    _status(namespace, name, {"phase": "Quantizing"})


@kopf.on.event("batch", "v1", "jobs")
def job_changed(body: Any, namespace: str, **_: Any) -> None:
    """A Job completed: apply the Deployment and the Service; say so in the status."""
    conditions = (body.get("status") or {}).get("conditions") or []
    if not any(c.get("type") == "Complete" and c.get("status") == "True" for c in conditions):
        return
    owner = next(iter(body["metadata"].get("ownerReferences") or []), None)
    if owner is None:
        return
    name = owner["name"]
    model = _clients()[3].get_namespaced_custom_object(
        "quantwise.dev", "v1alpha1", namespace, "quantizedmodels", name
    )
    spec = QuantizedModelSpec.model_validate(model["spec"])
    arch = architecture_from_config(LLAMA)
    plan = PlanStatus.from_plan(plan_spec(spec, arch, estimate_weights(arch), UNQUANTIZED))
    core, _, apps, _ = _clients()
    for obj in serving_objects(name, namespace, spec, plan, "vllm:bench", copy.deepcopy(owner)):
        kwargs = {"field_manager": "bare", "force": True,
                  "_content_type": "application/apply-patch+yaml"}  # fmt: skip
        if obj["kind"] == "Deployment":
            apps.patch_namespaced_deployment(name, namespace, obj, **kwargs)
        else:
            core.patch_namespaced_service(name, namespace, obj, **kwargs)
    _status(namespace, name, {"phase": "Deploying"})
