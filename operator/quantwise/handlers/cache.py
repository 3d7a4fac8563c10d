"""Kopf's watches: the operator's caches, and the model each event wakes.

Every resource quantwise reads is watched by Kopf into an index (Kopf lists it once, then
follows its watch stream), holding only what reconcile reads: a trimmed Job or pod, the state
and applied hash of a Deployment, LeaderWorkerSet or Service, a model's spec and status. Kopf
fills every index before it calls any handler, so the first reconcile already sees every child
(client-go's "wait for cache sync"). An event that changes what reconcile reads of an object
puts its model in the work queue; a relist or the operator's own writes that change nothing
reconcile reads wake nobody.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import kopf

import quantwise.metrics as metrics
from quantwise import API_GROUP, API_VERSION, KIND, PLURAL
from quantwise.planning.inventory import LABEL_PRODUCT, NodeGpus, node_gpus
from quantwise.reconcile.observe import Applied, applied_view, trim_job, trim_pod
from quantwise.render.names import (
    FIELD_MANAGER,
    LABEL_COMPONENT,
    LABEL_MANAGED_BY,
    LABEL_MODEL,
    LWS_GROUP,
    LWS_PLURAL,
    LWS_VERSION,
    MANAGED_BY,
)

MANAGED = {LABEL_MANAGED_BY: MANAGED_BY}
GPU_INDEX_KEY = "gpu"
ModelKey = tuple[str, str]  # (namespace, name)


@dataclass(frozen=True)
class ModelView:
    """What the cache keeps of a QuantizedModel.

    The spec and status are kept as compact JSON text and parsed when read (a reconcile reads
    each a few times): a model's status (plan, reasons, conditions, artifact) takes ~4 KB as
    text and ~30 KB as Python objects, most of an operator's memory at a thousand models
    (``benchmarks/reconcile.py``, tracemalloc). Each read gives a fresh dict.
    """

    namespace: str
    name: str
    uid: str
    generation: int
    resource_version: str
    spec_json: str
    status_json: str
    annotations: dict[str, str]
    deleting: bool

    @property
    def spec(self) -> dict[str, Any]:
        """The spec, parsed."""
        spec: dict[str, Any] = json.loads(self.spec_json)
        return spec

    @property
    def status(self) -> dict[str, Any]:
        """The status, parsed."""
        status: dict[str, Any] = json.loads(self.status_json)
        return status

    @property
    def body(self) -> dict[str, Any]:
        """Enough of the object to post an Event about it."""
        return {
            "apiVersion": f"{API_GROUP}/{API_VERSION}",
            "kind": KIND,
            "metadata": {"name": self.name, "namespace": self.namespace, "uid": self.uid,
                         "resourceVersion": self.resource_version},
        }  # fmt: skip


def model_view(body: Any) -> ModelView:
    """A QuantizedModel (a Kopf body or the API's JSON) as the cache keeps it."""
    meta = body.get("metadata") or {}
    return ModelView(
        namespace=str(meta.get("namespace")),
        name=str(meta.get("name")),
        uid=str(meta.get("uid") or ""),
        generation=int(meta.get("generation") or 0),
        resource_version=str(meta.get("resourceVersion") or ""),
        spec_json=_compact(body.get("spec") or {}),
        status_json=_compact(body.get("status") or {}),
        annotations=dict(meta.get("annotations") or {}),
        deleting=bool(meta.get("deletionTimestamp")),
    )


def _compact(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), default=str)


def owner_of(body: Any) -> str | None:
    """The name of the QuantizedModel that controls this object, if one does."""
    for ref in (body.get("metadata") or {}).get("ownerReferences") or []:
        if ref.get("kind") == KIND and str(ref.get("apiVersion", "")).startswith(API_GROUP):
            return str(ref["name"])
    return None


def _plain(body: Any) -> dict[str, Any]:
    """A Kopf body as a plain dict, without a copy.

    Kopf hands every event a body of its own and never changes one, and the caches keep only
    parts of it that nothing changes either.
    """
    return dict(body)


# ----- the indexes (Kopf calls these for every event, before any handler) -----


@kopf.index(API_GROUP, API_VERSION, PLURAL)
async def models(body: kopf.Body, **_: Any) -> dict[ModelKey, ModelView]:
    """Every QuantizedModel, by (namespace, name)."""
    view = model_view(body)
    return {(view.namespace, view.name): view}


@kopf.index("batch", "v1", "jobs", labels=MANAGED)
async def jobs(
    body: kopf.Body, namespace: str | None, labels: kopf.Labels, **_: Any
) -> dict[ModelKey, Any] | None:
    """Each model's Jobs (trimmed), by (namespace, model): one per artifact it was asked for.

    By the model's label, not the owner: a Job a crashed operator created is found by its
    deterministic name even before its model has a uid to own it by.
    """
    model = labels.get(LABEL_MODEL)
    return {(str(namespace), model): trim_job(_plain(body))} if model else None


@kopf.index("", "v1", "pods", labels=MANAGED)
async def pods(
    body: kopf.Body, namespace: str | None, labels: kopf.Labels, **_: Any
) -> dict[tuple[str, str, str], Any] | None:
    """Pods (trimmed), by ("job", namespace, job) or ("serving", namespace, model)."""
    if job := labels.get("job-name"):
        return {("job", str(namespace), job): trim_pod(_plain(body))}
    if labels.get(LABEL_COMPONENT) == "server" and (model := labels.get(LABEL_MODEL)):
        return {("serving", str(namespace), model): trim_pod(_plain(body))}
    return None


@kopf.index("apps", "v1", "deployments", labels=MANAGED)
async def deployments(body: kopf.Body, **_: Any) -> dict[ModelKey, Applied]:
    """Deployments quantwise applied, by (namespace, name)."""
    view = applied_view(_plain(body), FIELD_MANAGER)
    return {(view.namespace, view.name): view}


@kopf.index("", "v1", "services", labels=MANAGED)
async def services(body: kopf.Body, **_: Any) -> dict[ModelKey, Applied]:
    """Services quantwise applied, by (namespace, name)."""
    view = applied_view({**_plain(body), "kind": "Service"}, FIELD_MANAGER)
    return {(view.namespace, view.name): view}


# Kopf watches LeaderWorkerSets only where their CRD is installed (else it warns and goes on).
@kopf.index(LWS_GROUP, LWS_VERSION, LWS_PLURAL, labels=MANAGED)
async def leaderworkersets(body: kopf.Body, **_: Any) -> dict[ModelKey, Applied]:
    """LeaderWorkerSets quantwise applied, by (namespace, name)."""
    view = applied_view({**_plain(body), "kind": "LeaderWorkerSet"}, FIELD_MANAGER)
    return {(view.namespace, view.name): view}


@kopf.index("", "v1", "nodes", labels={LABEL_PRODUCT: kopf.PRESENT})
async def gpu_nodes(name: str, labels: kopf.Labels, **_: Any) -> dict[str, NodeGpus] | None:
    """The GPU nodes GPU Feature Discovery labelled."""
    node = node_gpus(name, dict(labels))
    return {GPU_INDEX_KEY: node} if node is not None else None


# ----- wake-ups -----


def _fingerprint(value: Any) -> str:
    return json.dumps(value, sort_keys=True, default=str)


def _wake(memo: Any, kwargs: dict[str, Any], kind: str, body: Any, model: ModelKey,
          essence: Any, deleted: bool) -> None:  # fmt: skip
    runtime = memo.runtime
    runtime.attach(kwargs)
    meta = body.get("metadata") or {}
    key = (kind, str(meta.get("namespace")), str(meta.get("name")))
    if deleted:
        runtime.ledger.drop(key)  # gone: no write of the operator's stands in for it any more
    if runtime.changed(key, None if deleted else _fingerprint(essence)):
        runtime.wake(model)


@kopf.on.event(API_GROUP, API_VERSION, PLURAL)
async def model_event(body: kopf.Body, event: kopf.RawEvent, memo: Any, **kwargs: Any) -> None:
    """A QuantizedModel was created, changed, deleted, or listed at start-up."""
    meta = body.get("metadata") or {}
    essence = [meta.get("uid"), meta.get("generation"), meta.get("annotations"),
               meta.get("deletionTimestamp")]  # fmt: skip
    key = (str(meta.get("namespace")), str(meta.get("name")))
    _wake(memo, kwargs, KIND, body, key, essence, event.get("type") == "DELETED")


@kopf.on.event("batch", "v1", "jobs", labels=MANAGED)
@kopf.on.event("apps", "v1", "deployments", labels=MANAGED)
@kopf.on.event("", "v1", "services", labels=MANAGED)
@kopf.on.event(LWS_GROUP, LWS_VERSION, LWS_PLURAL, labels=MANAGED)
async def child_event(
    body: kopf.Body,
    event: kopf.RawEvent,
    namespace: str | None,
    resource: kopf.Resource,
    memo: Any,
    **kwargs: Any,
) -> None:
    """A Job, Deployment, Service or LeaderWorkerSet of a model changed: wake the model."""
    kind = str(resource.kind)
    labels = (body.get("metadata") or {}).get("labels") or {}
    owner = labels.get(LABEL_MODEL) if kind == "Job" else owner_of(body)  # as in `jobs` above
    if owner is None or namespace is None:
        return
    if kind == "Job":
        metrics.record_job(_plain(body))
        essence: Any = trim_job(_plain(body))["status"]
    else:
        index = {"Deployment": "deployments", "Service": "services"}.get(kind, "leaderworkersets")
        found = kwargs[index].get((namespace, str(body.get("metadata", {}).get("name"))))
        view = next(iter(found), None) if found is not None else None  # what the index made
        essence = None if view is None else [view.applied, view.digest, view.edited, view.workload]
    _wake(memo, kwargs, kind, body, (namespace, owner), essence, event.get("type") == "DELETED")


@kopf.on.event("", "v1", "pods", labels=MANAGED)
async def pod_event(
    body: kopf.Body, event: kopf.RawEvent, namespace: str | None, labels: kopf.Labels, memo: Any,
    **kwargs: Any,
) -> None:  # fmt: skip
    """A model's Job pod or serving pod changed (scheduled, running, terminated, ready)."""
    model = labels.get(LABEL_MODEL)
    if model is None or namespace is None:
        return
    essence = trim_pod(_plain(body))["status"]
    _wake(memo, kwargs, "Pod", body, (namespace, model), essence, event.get("type") == "DELETED")
