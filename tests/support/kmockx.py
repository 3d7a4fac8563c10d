"""kmock, closer to a real API server for quantwise's component tests.

kmock 0.8 is a JSON store behind the Kubernetes URL scheme (see shared TESTING.md). This subclass
adds what the operator relies on: server-side apply upserts (a real server creates a missing
object on an apply PATCH), ``uid`` / ``generation`` / ``creationTimestamp`` on create, and
``generateName`` (Kopf posts Events with it).
"""

from __future__ import annotations

import datetime
import json
import uuid
from typing import Any

import kmock

RESOURCES: dict[str, kmock.ResourceInfo] = {
    "quantwise.dev/v1alpha1/quantizedmodels": kmock.ResourceInfo(
        kind="QuantizedModel", namespaced=True, subresources={"status"},
        verbs={"get", "list", "watch", "create", "update", "patch", "delete"},
    ),
    "batch/v1/jobs": kmock.ResourceInfo(kind="Job", namespaced=True, verbs={"get", "list", "watch", "create", "patch", "delete"}),
    "v1/pods": kmock.ResourceInfo(kind="Pod", namespaced=True, verbs={"get", "list", "watch", "create", "patch"}),
    "apps/v1/deployments": kmock.ResourceInfo(kind="Deployment", namespaced=True, subresources={"status"}, verbs={"get", "list", "watch", "create", "patch", "delete"}),
    "v1/services": kmock.ResourceInfo(kind="Service", namespaced=True, verbs={"get", "list", "watch", "create", "patch"}),
    "v1/events": kmock.ResourceInfo(kind="Event", namespaced=True, verbs={"create", "list"}),
    "v1/namespaces": kmock.ResourceInfo(kind="Namespace", namespaced=False, verbs={"get", "list", "watch"}),
}  # fmt: skip


class QuantwiseEmulator(kmock.KubernetesEmulator):
    """KubernetesEmulator with apply-upserts, server-set metadata and generateName."""

    async def _handle(self, request: Any) -> Any:
        if request.resource is not None and isinstance(request.data, dict):
            meta = request.data.setdefault("metadata", {})
            if request.action == kmock.action.CREATE:
                if not meta.get("name") and meta.get("generateName"):
                    meta["name"] = meta["generateName"] + uuid.uuid4().hex[:5]
                meta.setdefault("uid", str(uuid.uuid4()))
                meta.setdefault("generation", 1)
                meta.setdefault("resourceVersion", "1")
                meta.setdefault(
                    "creationTimestamp",
                    datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
                )
            elif request.action == kmock.action.UPDATE and "apply-patch" in str(
                request.headers.get("Content-Type", "")
            ):
                key = (request.resource, request.namespace, request.name)
                async with self._lock:
                    if key not in self._objects or self._objects[key].deleted:
                        body = json.loads(json.dumps(request.data))
                        body["metadata"].setdefault("uid", str(uuid.uuid4()))
                        body["metadata"].setdefault("generation", 1)
                        if key in self._objects:
                            self._objects[key].create(body)
                        else:
                            self._objects[key] = body
                        await self._buses[request.resource].put({"type": "ADDED", "object": body})
        return await super()._handle(request)


def declare(server: Any) -> None:
    """Declare every resource the operator touches, so discovery lists them."""
    for name, info in RESOURCES.items():
        server.resources[name] = info
