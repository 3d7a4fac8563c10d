"""The one seam between quantwise and the Kubernetes API.

Every API call the operator makes goes through :class:`Kube` or Kopf's watches, so the calls
(and hence the RBAC the operator needs) are listed in one place: :data:`API_CALLS`. Reads come
from the watch caches Kopf keeps (quantwise.handlers.cache): the seam writes, and reads only what
no watch gives (a pod's log, API discovery, the peering object). Writes are idempotent: a create
that finds the object (409) and a delete that does not (404) are success, and children are
written with server-side apply under one field manager, ``quantwise``; each write returns the
object as the API server stored it, which the operator keeps until its caches catch up.

The client is the synchronous ``kubernetes`` client, used from the operator's worker threads, so
the event loop never blocks on the network.
"""

from __future__ import annotations

import json
import time
import urllib.parse
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import urllib3
from kubernetes import client, config
from kubernetes.client.rest import ApiException

from quantwise import API_GROUP, API_VERSION, PLURAL
from quantwise.render.names import FIELD_MANAGER, LWS_GROUP, LWS_PLURAL, LWS_VERSION
from quantwise.settings import Settings

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
    # Watched (list, watch) into caches by Kopf; status written by the operator.
    ApiCall(API_GROUP, PLURAL, ("list", "watch")),
    ApiCall(API_GROUP, f"{PLURAL}/status", ("patch",)),
    ApiCall("batch", "jobs", ("list", "watch", "create", "delete")),
    ApiCall("", "pods", ("list", "watch")),
    ApiCall("", "pods/log", ("get",)),
    ApiCall("apps", "deployments", ("list", "watch", "create", "patch", "delete")),
    ApiCall("apps", "deployments/scale", ("patch",)),
    ApiCall("", "services", ("list", "watch", "create", "patch")),
    ApiCall("", "events", ("create",)),
    ApiCall(LWS_GROUP, LWS_PLURAL, ("list", "watch", "create", "patch", "delete")),
    ApiCall(LWS_GROUP, f"{LWS_PLURAL}/scale", ("patch",)),
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
RETRY_BASE_SECONDS = 0.2
RETRY_MAX_SECONDS = 10.0
CONNECT_TIMEOUT_SECONDS = 10.0


def _retry_after(exc: ApiException) -> float | None:
    value = (exc.headers or {}).get("Retry-After") if exc.headers else None
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None


def _json(response: Any) -> dict[str, Any]:
    # Responses skip the client's typed models (``_preload_content=False``): a field a newer
    # API server adds, or one it leaves out, cannot break the operator.
    result: dict[str, Any] = json.loads(response.data)
    return result


# A callback told of every request the seam sends: verb (RBAC's: get, list, create, patch,
# apply, delete), resource ("pods/log", "deployments/scale") and HTTP status (0: no answer).
OnRequest = Callable[[str, str, int], None]
_VERBS = {"GET": "get", "POST": "create", "PUT": "update", "PATCH": "patch", "DELETE": "delete"}


def request_of(method: str, url: str, content_type: str = "") -> tuple[str, str]:
    """The verb and resource of a request to the API, from its method and URL.

    ``/api/v1/namespaces/ml/pods/x/log`` is ``get pods/log``; a PATCH as server-side apply
    (``application/apply-patch+yaml``) is ``apply``; a GET without a name is ``list``.
    """
    path = urllib.parse.urlsplit(url).path.strip("/").split("/")
    parts = path[2:] if path[:1] == ["api"] else path[3:]  # drop api/v1, apis/GROUP/VERSION
    if parts[:1] == ["namespaces"] and len(parts) > 2:
        parts = parts[2:]
    resource = "/".join(parts[:1] + parts[2:3]) or "/"
    verb = _VERBS.get(method.upper(), method.lower())
    if verb == "patch" and "apply-patch" in content_type:
        verb = "apply"
    elif verb == "get" and len(parts) == 1:
        verb = "list"
    return verb, resource


def _counted(request: Callable[..., Any], on_request: OnRequest) -> Callable[..., Any]:
    def send(method: str, url: str, *args: Any, **kwargs: Any) -> Any:
        headers = kwargs.get("headers") or (args[0] if args else None) or {}
        verb, resource = request_of(method, url, str(headers.get("Content-Type", "")))
        status = 0
        try:
            response = request(method, url, *args, **kwargs)
            status = int(getattr(response, "status", 0) or 0)
            return response
        except ApiException as exc:
            status = int(exc.status or 0)
            raise
        finally:
            on_request(verb, resource, status)

    return send


MERGE_PATCH = "application/merge-patch+json"
APPLY_PATCH = "application/apply-patch+yaml"  # server-side apply (JSON is YAML)


def _path(
    group: str,
    version: str,
    plural: str,
    namespace: str | None = None,
    name: str | None = None,
    subresource: str | None = None,
) -> str:
    """The API path of a collection, an object or its subresource."""
    parts = ["/api/v1" if not group else f"/apis/{group}/{version}"]
    if namespace:
        parts.append(f"namespaces/{namespace}")
    parts += [p for p in (plural, name, subresource) if p]
    return "/".join(parts)


def _served(kind: str) -> tuple[str, str, str]:
    """(group, version, plural) of a kind quantwise applies."""
    served = {
        "Deployment": ("apps", "v1", "deployments"),
        "Service": ("", "v1", "services"),
        "LeaderWorkerSet": (LWS_GROUP, LWS_VERSION, LWS_PLURAL),
    }
    if kind not in served:
        raise ValueError(f"quantwise does not apply {kind} objects")
    return served[kind]


class Kube:
    """Typed access to the objects quantwise writes, and the few reads no watch gives."""

    def __init__(
        self,
        api: client.ApiClient,
        settings: Settings | None = None,
        on_request: OnRequest | None = None,
    ) -> None:
        settings = settings or Settings()
        self.api = api
        if on_request is not None:  # every request, retries included (the metrics count them)
            rest = api.rest_client
            rest.request = _counted(rest.request, on_request)
        self.attempts = max(1, settings.api_retries)
        # Every request has a deadline: a hung connection must not hold a worker forever.
        self.timeout = (CONNECT_TIMEOUT_SECONDS, settings.api_timeout_seconds)

    @classmethod
    def from_environment(
        cls, settings: Settings | None = None, on_request: OnRequest | None = None
    ) -> Kube:
        """In a pod: the service account; elsewhere: the kubeconfig (``KUBECONFIG``).

        ``settings.kube_server`` (a URL, TLS not verified) points it at a test API server.
        """
        settings = settings or Settings.from_environment()
        server = settings.kube_server
        if server:
            configuration = client.Configuration()
            configuration.host = server.rstrip("/")
            configuration.verify_ssl = False
            return cls(client.ApiClient(configuration), settings, on_request)
        try:
            config.load_incluster_config()
        except config.ConfigException:
            config.load_kube_config()
        return cls(client.ApiClient(), settings, on_request)

    def close(self) -> None:
        """Release the client's connection pool."""
        self.api.close()

    def _call(
        self, function: Callable[..., T], *args: Any, attempts: int | None = None, **kwargs: Any
    ) -> T:
        """Call the API, retrying 429/5xx answers and timeouts with backoff; raise what remains.

        Every call the seam makes is idempotent (server-side apply, a create whose 409 is
        success, a delete whose 404 is success, a status patch of computed values), so repeating
        one after a timeout is safe. ``attempts`` is 1 for reads that are retried later anyway.
        """
        kwargs.setdefault("_request_timeout", self.timeout)
        attempts = self.attempts if attempts is None else attempts
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

    def _request(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        query: dict[str, str] | None = None,
        content_type: str = "application/json",
        _request_timeout: Any = None,
    ) -> Any:
        """One request through the client's transport; the raw response, or ApiException.

        The transport is the client's (auth, TLS, proxy, User-Agent; ``.data`` of the response
        is the body); a status outside 2xx raises ApiException as the client does. Its
        generated API classes are not used: building their pydantic call validators costs ~40
        MiB per process (CoreV1Api alone 21 MiB, kubernetes 37), more than a thousand models'
        caches; the few paths quantwise calls are written here.
        """
        headers = {"Accept": "application/json", "Content-Type": content_type}
        request = self.api.param_serialize(
            method, path, query_params=list((query or {}).items()), header_params=headers,
            body=body, auth_settings=["BearerToken"],
        )  # fmt: skip
        response = self.api.call_api(*request, _request_timeout=_request_timeout)
        if not 200 <= response.status <= 299:
            response.read()
            raise ApiException.from_response(http_resp=response, body=None, data=None)
        return response.response

    # ----- QuantizedModels -----

    def patch_model_status(
        self, namespace: str, name: str, status: dict[str, Any]
    ) -> dict[str, Any] | None:
        """Merge-patch the status subresource (None removes a key); the object, None if gone."""
        path = _path(API_GROUP, API_VERSION, PLURAL, namespace, name, "status")
        try:
            return _json(self._call(self._request, "PATCH", path, {"status": status},
                                    content_type=MERGE_PATCH))  # fmt: skip
        except ApiException as exc:
            if _missing(exc):
                return None
            raise

    # ----- Jobs -----

    def create_job(self, namespace: str, body: dict[str, Any]) -> dict[str, Any] | None:
        """Create the Job; the Job as created, None when it existed (409: the same Job)."""
        try:
            return _json(self._call(self._request, "POST", _path("batch", "v1", "jobs", namespace),
                                    body))  # fmt: skip
        except ApiException as exc:
            if exc.status != 409:
                raise
        return None

    def delete_job(self, namespace: str, name: str) -> None:
        """Delete the Job and, in the background, its pods; a missing Job (404) is success."""
        self._delete(_path("batch", "v1", "jobs", namespace, name))

    def _delete(self, path: str) -> None:
        """Delete an object, its dependents in the background; gone already (404) is success."""
        try:
            self._call(self._request, "DELETE", path, query={"propagationPolicy": "Background"})
        except ApiException as exc:
            if not _missing(exc):
                raise

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
        self._call(self._request, "POST", _path("", "v1", "events", meta["namespace"]), body)

    # ----- serving -----

    def apply(self, body: dict[str, Any]) -> dict[str, Any]:
        """Server-side apply ``body`` as field manager ``quantwise``; the object after it.

        ``body`` is a Deployment, LeaderWorkerSet or Service.
        """
        meta = body["metadata"]
        path = _path(*_served(body["kind"]), meta["namespace"], meta["name"])
        query = {"fieldManager": FIELD_MANAGER, "force": "true"}
        return _json(self._call(self._request, "PATCH", path, body, query=query,
                                content_type=APPLY_PATCH))  # fmt: skip

    def scale(self, kind: str, namespace: str, name: str, replicas: int) -> None:
        """Set a Deployment's or LeaderWorkerSet's replicas (the scale subresource)."""
        if kind not in ("Deployment", "LeaderWorkerSet"):
            raise ValueError(f"quantwise does not scale {kind} objects")
        path = _path(*_served(kind), namespace, name, "scale")
        self._call(self._request, "PATCH", path, {"spec": {"replicas": replicas}},
                   content_type=MERGE_PATCH)  # fmt: skip

    def delete(self, kind: str, namespace: str, name: str) -> None:
        """Delete a Deployment or LeaderWorkerSet (gone already is success); pods follow."""
        if kind not in ("Deployment", "LeaderWorkerSet"):
            raise ValueError(f"quantwise does not delete {kind} objects")
        self._delete(_path(*_served(kind), namespace, name))

    # ----- reads no watch gives -----

    def api_group_served(self, group: str, version: str) -> bool:
        """Whether the API server serves ``group/version`` (discovery; no RBAC needed)."""
        try:
            self._call(self._request, "GET", f"/apis/{group}/{version}")
        except ApiException as exc:
            if _missing(exc):
                return False
            raise
        return True

    def pod_log(
        self,
        namespace: str,
        name: str,
        container: str,
        limit_bytes: int,
        tail_lines: int | None = None,
    ) -> str:
        """The first ``limit_bytes`` of a container's log, or of its last ``tail_lines`` lines.

        vLLM logs its KV cache early; a Job's latest progress is at the end.

        One attempt, no retries: the API server proxies the read to the node's kubelet, and a
        kubelet that cannot be reached (a node down, a firewall) answers 500 for as long as it
        lasts. Callers treat the log as optional and read it again later.
        """
        path = _path("", "v1", "pods", namespace, name, "log")
        query = {"container": container, "limitBytes": str(limit_bytes)}
        if tail_lines is not None:
            query["tailLines"] = str(tail_lines)
        try:
            response = self._call(self._request, "GET", path, query=query, attempts=1)
        except ApiException as exc:
            raise LogUnavailableError(f"HTTP {exc.status} {exc.reason}".strip()) from exc
        except (urllib3.exceptions.HTTPError, OSError) as exc:
            raise LogUnavailableError(str(exc) or type(exc).__name__) from exc
        data = response.data
        return data.decode("utf-8", "replace") if isinstance(data, bytes) else str(data)

    def peering_status(self, name: str, namespace: str | None) -> dict[str, Any] | None:
        """The ``status`` of Kopf's peering object: the replicas and their priorities.

        A ClusterKopfPeering when ``namespace`` is None. None when it does not exist.
        """
        plural = "kopfpeerings" if namespace else "clusterkopfpeerings"
        try:
            body = self._call(
                self._request, "GET", _path("kopf.dev", "v1", plural, namespace, name)
            )
        except ApiException as exc:
            if _missing(exc):
                return None
            raise
        status: dict[str, Any] = _json(body).get("status") or {}
        return status
