"""The one seam between quantwise and the Kubernetes API.

Every API call the operator makes goes through :class:`Kube`, so the calls (and hence the RBAC
the operator needs) are listed in one place: :data:`API_CALLS`. Writes are idempotent: a
create that finds the object (409) and a delete that does not (404) are success, and children
are written with server-side apply under one field manager, ``quantwise``.

The client is the synchronous ``kubernetes`` client; the handlers that use it are synchronous,
so Kopf runs them in its thread pool and the event loop never blocks on the network.
"""

from __future__ import annotations

import json
import os
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import urllib3
from kubernetes import client, config
from kubernetes.client.rest import ApiException

from quantwise import API_GROUP, API_VERSION, PLURAL

FIELD_MANAGER = "quantwise"
LWS_GROUP, LWS_VERSION, LWS_PLURAL = "leaderworkerset.x-k8s.io", "v1", "leaderworkersets"
T = TypeVar("T")


@dataclass(frozen=True)
class ApiCall:
    """One kind of request the operator makes: the RBAC rule it needs."""

    group: str
    resource: str
    verbs: tuple[str, ...]
    cluster_scoped: bool = False  # a cluster-scoped resource: a ClusterRole even when namespaced


# The RBAC rules the operator needs, derived from the methods below (the chart renders exactly
# these; a test records the requests of the component tests and compares).
# Server-side apply of an object that does not exist yet creates it: the API server's PATCH
# handler then admits and authorizes it as a create, so the Role needs ``create`` besides
# ``patch`` for what is applied (Deployments, Services).
API_CALLS: tuple[ApiCall, ...] = (
    ApiCall(API_GROUP, PLURAL, ("get", "list", "watch", "patch")),
    ApiCall(API_GROUP, f"{PLURAL}/status", ("patch",)),
    ApiCall("batch", "jobs", ("get", "list", "watch", "create", "delete")),
    ApiCall("", "pods", ("list",)),
    ApiCall("", "pods/log", ("get",)),
    ApiCall("apps", "deployments", ("get", "list", "watch", "create", "patch", "delete")),
    ApiCall("", "services", ("create", "patch")),
    ApiCall("", "events", ("create",)),
    ApiCall(
        "leaderworkerset.x-k8s.io",
        "leaderworkersets",
        ("get", "list", "watch", "create", "patch", "delete"),
    ),
    # GPU inventory: Kopf indexes the nodes that GPU Feature Discovery labelled.
    ApiCall("", "nodes", ("list", "watch"), cluster_scoped=True),
)

# What Kopf itself calls, besides the resources it serves (Kopf docs, "Deployment: RBAC").
# Peering (several replicas, one active): KopfPeering objects in each watched namespace, or one
# ClusterKopfPeering when watching every namespace.
KOPF_PEERING_NAMESPACED: tuple[ApiCall, ...] = (
    ApiCall("kopf.dev", "kopfpeerings", ("get", "list", "watch", "patch")),
)
KOPF_PEERING_CLUSTER: tuple[ApiCall, ...] = (
    ApiCall("kopf.dev", "clusterkopfpeerings", ("get", "list", "watch", "patch"), True),
)
# Watching every namespace: Kopf observes namespaces and CRDs appearing and going (scanning).
# Watching named namespaces, quantwise turns scanning off and needs neither.
KOPF_CLUSTER_WIDE: tuple[ApiCall, ...] = (
    ApiCall("", "namespaces", ("list", "watch"), True),
    ApiCall("apiextensions.k8s.io", "customresourcedefinitions", ("list", "watch"), True),
)


class LogUnavailableError(Exception):
    """A pod's log could not be read (no permission, kubelet unreachable, pod gone, rotated)."""


def _missing(exc: ApiException) -> bool:
    return bool(exc.status == 404)


# Answers worth retrying (API server overloaded or restarting), and how: attempts with
# exponential backoff from RETRY_BASE_SECONDS, honouring Retry-After up to RETRY_MAX_SECONDS.
RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})
RETRY_ATTEMPTS = int(os.environ.get("QUANTWISE_API_RETRIES", "5"))
RETRY_BASE_SECONDS = 0.2
RETRY_MAX_SECONDS = 10.0
# Every request has a deadline: a hung connection must not hold a handler thread forever.
# (connect, read) seconds; QUANTWISE_API_TIMEOUT_SECONDS sets the read timeout.
REQUEST_TIMEOUT = (10.0, float(os.environ.get("QUANTWISE_API_TIMEOUT_SECONDS", "30")))


def _retry_after(exc: ApiException) -> float | None:
    value = (exc.headers or {}).get("Retry-After") if exc.headers else None
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None


def _call(function: Callable[..., T], *args: Any, attempts: int | None = None, **kwargs: Any) -> T:
    """Call the API, retrying 429/5xx answers and timeouts with backoff; raise what remains.

    Every call the seam makes is idempotent (reads, server-side apply, a create whose 409 is
    success, a delete whose 404 is success), so repeating one after a timeout is safe.
    ``attempts`` (default RETRY_ATTEMPTS) is 1 for reads that are optional and retried later.
    """
    kwargs.setdefault("_request_timeout", REQUEST_TIMEOUT)
    attempts = RETRY_ATTEMPTS if attempts is None else attempts
    for attempt in range(attempts):
        last = attempt == attempts - 1
        try:
            return function(*args, **kwargs)
        except ApiException as exc:
            if exc.status not in RETRY_STATUSES or last:
                raise
            delay = _retry_after(exc)
        except (urllib3.exceptions.TimeoutError, urllib3.exceptions.ProtocolError):
            if last:
                raise
            delay = None
        backoff = RETRY_BASE_SECONDS * 2**attempt
        time.sleep(min(RETRY_MAX_SECONDS, max(backoff, delay or 0.0)))
    raise AssertionError("unreachable")  # pragma: no cover


class Kube:
    """Typed access to the objects quantwise reads and writes."""

    def __init__(self, api: client.ApiClient) -> None:
        self.api = api
        self.core = client.CoreV1Api(api)
        self.batch = client.BatchV1Api(api)
        self.apps = client.AppsV1Api(api)
        self.custom = client.CustomObjectsApi(api)

    @classmethod
    def from_environment(cls) -> Kube:
        """In a pod: the service account; elsewhere: the kubeconfig (``KUBECONFIG``).

        ``QUANTWISE_KUBE_SERVER`` (a URL, TLS not verified) points it at a test API server.
        """
        server = os.environ.get("QUANTWISE_KUBE_SERVER")
        if server:
            configuration = client.Configuration()
            configuration.host = server.rstrip("/")
            configuration.verify_ssl = False
            return cls(client.ApiClient(configuration))
        try:
            config.load_incluster_config()
        except config.ConfigException:
            config.load_kube_config()
        return cls(client.ApiClient())

    @staticmethod
    def _call(function: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        return _call(function, *args, **kwargs)

    def close(self) -> None:
        """Release the client's connection pool."""
        self.api.close()

    @staticmethod
    def _json(response: Any) -> dict[str, Any]:
        # Reads skip the client's typed models (``_preload_content=False``): a field a newer
        # API server adds, or one it leaves out, cannot break the operator's reads.
        result: dict[str, Any] = json.loads(response.data)
        return result

    # ----- QuantizedModels -----

    def get_model(self, namespace: str, name: str) -> dict[str, Any] | None:
        """The QuantizedModel, or None when it is gone."""
        try:
            obj = self._json(
                self._call(
                    self.custom.get_namespaced_custom_object,
                    API_GROUP,
                    API_VERSION,
                    namespace,
                    PLURAL,
                    name,
                    _preload_content=False,
                )
            )
        except ApiException as exc:
            if _missing(exc):
                return None
            raise
        return obj

    def patch_model_status(self, namespace: str, name: str, status: dict[str, Any]) -> None:
        """Merge-patch the status subresource (keys set to None are removed)."""
        self._call(
            self.custom.patch_namespaced_custom_object_status,
            API_GROUP,
            API_VERSION,
            namespace,
            PLURAL,
            name,
            {"status": status},
        )

    # ----- Jobs and their pods -----

    def get_job(self, namespace: str, name: str) -> dict[str, Any] | None:
        """The Job, or None."""
        try:
            return self._json(
                self._call(self.batch.read_namespaced_job, name, namespace, _preload_content=False)
            )
        except ApiException as exc:
            if _missing(exc):
                return None
            raise

    def create_job(self, namespace: str, body: dict[str, Any]) -> None:
        """Create the Job; one that exists already (409) is the same Job (deterministic name)."""
        try:
            self._call(self.batch.create_namespaced_job, namespace, body)
        except ApiException as exc:
            if exc.status != 409:
                raise

    def delete_job(self, namespace: str, name: str) -> None:
        """Delete the Job and, in the background, its pods; a missing Job (404) is success."""
        try:
            self._call(
                self.batch.delete_namespaced_job, name, namespace, propagation_policy="Background"
            )
        except ApiException as exc:
            if not _missing(exc):
                raise

    def job_pods(self, namespace: str, job: str) -> list[dict[str, Any]]:
        """The Job's pods, newest first."""
        pods = self._json(
            self._call(
                self.core.list_namespaced_pod,
                namespace,
                label_selector=f"job-name={job}",
                _preload_content=False,
            )
        )
        items: list[dict[str, Any]] = [
            p
            for p in pods.get("items") or []
            if p["metadata"].get("labels", {}).get("job-name") == job
        ]
        items.sort(key=lambda p: p.get("metadata", {}).get("creationTimestamp") or "", reverse=True)
        return items

    # ----- events -----

    def create_event(
        self, obj: dict[str, Any], type_: str, reason: str, message: str, now: str
    ) -> None:
        """Post a core/v1 Event about ``obj`` (from any thread; Kopf's posting needs its own)."""
        meta = obj["metadata"]
        body = {
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": {
                "name": f"{meta['name']}.{uuid.uuid4().hex[:16]}",
                "namespace": meta["namespace"],
            },
            "involvedObject": {
                "apiVersion": obj.get("apiVersion") or f"{API_GROUP}/{API_VERSION}",
                "kind": obj.get("kind") or "QuantizedModel",
                "name": meta["name"],
                "namespace": meta["namespace"],
                "uid": meta.get("uid"),
                "resourceVersion": meta.get("resourceVersion"),
            },
            "type": type_,
            "reason": reason,
            "message": message[:1024],
            "source": {"component": "quantwise"},
            "reportingComponent": "quantwise.dev/operator",
            "firstTimestamp": now,
            "lastTimestamp": now,
            "count": 1,
        }
        self._call(self.core.create_namespaced_event, meta["namespace"], body)

    # ----- serving -----

    def get_deployment(self, namespace: str, name: str) -> dict[str, Any] | None:
        """The Deployment, or None."""
        try:
            return self._json(
                self._call(
                    self.apps.read_namespaced_deployment, name, namespace, _preload_content=False
                )
            )
        except ApiException as exc:
            if _missing(exc):
                return None
            raise

    def apply(self, body: dict[str, Any]) -> None:
        """Server-side apply ``body`` (a Deployment or Service) as field manager ``quantwise``."""
        meta = body["metadata"]
        kwargs: dict[str, Any] = {
            "field_manager": FIELD_MANAGER,
            "force": True,
            "_content_type": "application/apply-patch+yaml",
        }
        kind = body["kind"]
        if kind == "Deployment":
            self._call(
                self.apps.patch_namespaced_deployment,
                meta["name"],
                meta["namespace"],
                body,
                **kwargs,
            )
        elif kind == "Service":
            self._call(
                self.core.patch_namespaced_service, meta["name"], meta["namespace"], body, **kwargs
            )
        elif kind == "LeaderWorkerSet":
            self._call(
                self.custom.patch_namespaced_custom_object,
                LWS_GROUP, LWS_VERSION, meta["namespace"], LWS_PLURAL, meta["name"], body,
                **kwargs,
            )  # fmt: skip
        else:
            raise ValueError(f"quantwise does not apply {kind} objects")

    def delete(self, kind: str, namespace: str, name: str) -> None:
        """Delete a Deployment or LeaderWorkerSet (gone already is success); pods follow."""
        try:
            if kind == "Deployment":
                self._call(
                    self.apps.delete_namespaced_deployment,
                    name, namespace, propagation_policy="Background",
                )  # fmt: skip
            elif kind == "LeaderWorkerSet":
                self._call(
                    self.custom.delete_namespaced_custom_object,
                    LWS_GROUP, LWS_VERSION, namespace, LWS_PLURAL, name,
                    propagation_policy="Background",
                )  # fmt: skip
            else:
                raise ValueError(f"quantwise does not delete {kind} objects")
        except ApiException as exc:
            if not _missing(exc):
                raise

    def get_leader_worker_set(self, namespace: str, name: str) -> dict[str, Any] | None:
        """The LeaderWorkerSet, or None (also when its CRD is not installed)."""
        try:
            return self._json(
                self._call(
                    self.custom.get_namespaced_custom_object,
                    LWS_GROUP,
                    LWS_VERSION,
                    namespace,
                    LWS_PLURAL,
                    name,
                    _preload_content=False,
                )
            )
        except ApiException as exc:
            if _missing(exc):
                return None
            raise

    def api_group_served(self, group: str, version: str) -> bool:
        """Whether the API server serves ``group/version`` (discovery; no RBAC needed)."""
        try:
            self._call(self.custom.get_api_resources, group, version, _preload_content=False)
        except ApiException as exc:
            if _missing(exc):
                return False
            raise
        return True

    def serving_pods(self, namespace: str, selector: str) -> list[dict[str, Any]]:
        """Pods matching the label ``selector`` (the model's serving pods, or its leaders)."""
        response = self._json(
            self._call(
                self.core.list_namespaced_pod,
                namespace,
                label_selector=selector,
                _preload_content=False,
            )
        )
        items: list[dict[str, Any]] = response.get("items") or []
        return items

    def pod_log(self, namespace: str, name: str, container: str, limit_bytes: int) -> str:
        """The first ``limit_bytes`` of a container's log (vLLM logs its KV cache early).

        One attempt, no retries: the API server proxies the read to the node's kubelet, and a
        kubelet that cannot be reached (a node down, a firewall) answers 500 for as long as it
        lasts. Callers treat the log as optional and read it again later.
        """
        try:
            response = self._call(
                self.core.read_namespaced_pod_log, name, namespace, attempts=1,
                container=container, limit_bytes=limit_bytes, _preload_content=False,
            )  # fmt: skip
        except ApiException as exc:
            raise LogUnavailableError(f"HTTP {exc.status} {exc.reason}".strip()) from exc
        except (urllib3.exceptions.HTTPError, OSError) as exc:
            raise LogUnavailableError(str(exc) or type(exc).__name__) from exc
        data = response.data
        return data.decode("utf-8", "replace") if isinstance(data, bytes) else str(data)
