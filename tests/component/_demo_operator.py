"""A tiny Kopf operator that exercises the component-test harness (not quantwise's operator).

It knows nothing of the test: the harness's login handler connects Kopf, and ``KUBECONFIG``
(set by the harness for the run) connects the ``kubernetes`` client.

* on.create of a QuantizedModel: create a Job (sync client, in Kopf's thread pool) owned by the
  model, server-side apply a Service as field manager ``quantwise``, post an Event, and set
  ``status.phase`` / ``status.job`` through Kopf's status patch.
* on.event of its Jobs: when one has succeeded, patch the owner's status to ``Quantized``.
"""

from __future__ import annotations

from typing import Any

import kopf
from kubernetes import client, config
from kubernetes.client.rest import ApiException

GROUP, VERSION, PLURAL = "quantwise.dev", "v1alpha1", "quantizedmodels"
MANAGED_BY = {"app.kubernetes.io/managed-by": "quantwise-demo"}
FIELD_MANAGER = "quantwise"


@kopf.on.startup()
def connect(memo: kopf.Memo, **_: Any) -> None:
    config.load_kube_config()  # KUBECONFIG: the harness points it at kmock
    memo.api = client.ApiClient()


@kopf.on.cleanup()
def disconnect(memo: kopf.Memo, **_: Any) -> None:
    memo.api.close()


def job_for(name: str, namespace: str, uid: str, spec: dict[str, Any]) -> dict[str, Any]:
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {
            "name": f"{name}-quantize",
            "namespace": namespace,
            "labels": {**MANAGED_BY, "quantwise.dev/model": name},
            "ownerReferences": [{
                "apiVersion": f"{GROUP}/{VERSION}", "kind": "QuantizedModel", "name": name,
                "uid": uid, "controller": True, "blockOwnerDeletion": True,
            }],
        },
        "spec": {
            "backoffLimit": 0,
            "template": {"spec": {
                "restartPolicy": "Never",
                "containers": [{
                    "name": "quantizer", "image": "quantizer:demo",
                    "args": ["quantize", "--model", str(spec.get("model", ""))],
                }],
            }},
        },
    }  # fmt: skip


def service_for(name: str, namespace: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": name, "namespace": namespace, "labels": dict(MANAGED_BY)},
        "spec": {
            "selector": {"quantwise.dev/model": name},
            "ports": [{"name": "http", "port": 8000, "targetPort": 8000}],
        },
    }


@kopf.on.create(GROUP, VERSION, PLURAL, backoff=0.2, retries=10)
def model_created(
    body: kopf.Body, spec: kopf.Spec, name: str, namespace: str, uid: str,
    memo: kopf.Memo, patch: kopf.Patch, **_: Any,
) -> None:  # fmt: skip
    job = job_for(name, namespace, uid, dict(spec))
    try:
        client.BatchV1Api(memo.api).create_namespaced_job(namespace, job)
    except ApiException as e:
        if e.status != 409:  # 409: created by an earlier attempt: fine
            raise
    client.CoreV1Api(memo.api).patch_namespaced_service(
        name, namespace, service_for(name, namespace),
        field_manager=FIELD_MANAGER, force=True, _content_type="application/apply-patch+yaml",
    )  # fmt: skip
    kopf.info(body, reason="JobCreated", message=f"created Job {job['metadata']['name']}")
    patch.status["phase"] = "Quantizing"
    patch.status["job"] = job["metadata"]["name"]


@kopf.on.event("batch", "v1", "jobs", labels=MANAGED_BY)
def job_changed(body: kopf.Body, namespace: str, memo: kopf.Memo, **_: Any) -> None:
    if not (body.get("status") or {}).get("succeeded"):
        return
    for ref in body.metadata.get("ownerReferences") or []:
        if ref.get("kind") == "QuantizedModel":
            client.CustomObjectsApi(memo.api).patch_namespaced_custom_object_status(
                GROUP, VERSION, namespace, PLURAL, ref["name"], {"status": {"phase": "Quantized"}}
            )
