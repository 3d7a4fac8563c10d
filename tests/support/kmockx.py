"""kmock, closer to a real API server, for quantwise's component tests.

kmock 0.8 is a JSON store behind the Kubernetes URL scheme (see shared TESTING.md). The emulator
here (:class:`ApiServerEmulator`, alias :class:`QuantwiseEmulator`) replaces kmock's write path
with one that behaves like kube-apiserver where operators notice the difference:

* ``metadata.uid`` / ``creationTimestamp`` on create; ``resourceVersion`` from one global counter,
  bumped on every write; ``generation`` starts at 1 and is bumped only when ``spec`` changes.
* ``generateName`` gets a random suffix (Kopf posts its Events with it); neither name -> 422.
* Server-side apply (PATCH ``application/apply-patch+yaml``) creates a missing object (upsert),
  merges into an existing one, needs ``?fieldManager=`` (400 without), records ``managedFields``.
* Status subresource: a write to ``.../status`` changes only ``.status``; a write to the main
  resource leaves ``.status`` alone (for resources declared with ``subresources={"status"}``).
* A strategic-merge patch of a custom resource -> 415, as from a real server.
* PUT (verb ``update``) replaces; a stale ``metadata.resourceVersion`` in a PUT or PATCH -> 409.
  A no-op patch changes nothing and emits no watch event.
* LIST returns the current ``resourceVersion``; WATCH with ``?resourceVersion=N`` replays only the
  events after N (a real server's semantics), so an object is no longer seen twice by Kopf;
  ``timeoutSeconds`` ends the stream.
* 404 / 409 / 422 are answered as API responses, not collected in ``kmock.errors`` (so
  ``@pytest.mark.kmock(strict=True)`` only fails on real emulator errors).
* ``GET /api/v1/namespaces`` no longer answers 500 (kmock's path parser is patched for it).
* ``pods/<name>/log`` serves text from ``emulator.pod_logs[namespace, name]`` (``tailLines``
  and ``limitBytes`` honoured as a kubelet does).
* Every request is recorded as an :class:`ApiCall` (Kubernetes verb, group, version, resource,
  subresource, namespace, name, server-side apply?) in ``emulator.calls`` for RBAC checks.
* Faults: ``emulator.inject(verb, resource, status=..., times=N, retry_after=..., delay=...)``
  answers the next N matching requests with an error (before any state change) or delays them.

Still not a real server: no validation or defaulting, strategic-merge patches are plain merge
patches (lists replaced), SSA does not remove fields the manager stopped applying, no field
ownership conflicts, equality-based label selectors on lists only (not on watches), no field
selectors, no garbage collector, no deletecollection.
"""

from __future__ import annotations

import asyncio
import contextvars
import copy
import datetime
import json
import uuid
from collections.abc import AsyncIterator, Iterable
from typing import Any, NamedTuple

import aiohttp.web
import attrs
import jsonpatch
import kmock
import yaml
from kmock._internal import apps as _kmock_apps
from kmock._internal import dicts as _kmock_dicts
from kmock._internal import parsing as _kmock_parsing

ALL_VERBS = {"get", "list", "watch", "create", "update", "patch", "delete", "deletecollection"}


def _info(
    kind: str, namespaced: bool = True, subresources: Iterable[str] = ()
) -> kmock.ResourceInfo:
    return kmock.ResourceInfo(
        kind=kind, namespaced=namespaced, verbs=set(ALL_VERBS), subresources=set(subresources)
    )


RESOURCES: dict[str, kmock.ResourceInfo] = {
    "quantwise.dev/v1alpha1/quantizedmodels": _info("QuantizedModel", subresources={"status"}),
    "batch/v1/jobs": _info("Job", subresources={"status"}),
    "v1/pods": _info("Pod", subresources={"status", "log"}),
    "apps/v1/deployments": _info("Deployment", subresources={"status", "scale"}),
    "v1/services": _info("Service", subresources={"status"}),
    "v1/events": _info("Event"),
    "v1/namespaces": _info("Namespace", namespaced=False, subresources={"status"}),
    "v1/nodes": _info("Node", namespaced=False, subresources={"status"}),
    "coordination.k8s.io/v1/leases": _info("Lease"),
    "leaderworkerset.x-k8s.io/v1/leaderworkersets": _info("LeaderWorkerSet", subresources={"status", "scale"}),
    "kopf.dev/v1/kopfpeerings": _info("KopfPeering"),
    "kopf.dev/v1/clusterkopfpeerings": _info("ClusterKopfPeering", namespaced=False),
}  # fmt: skip

QM = kmock.resource("quantwise.dev", "v1alpha1", "quantizedmodels")
JOBS = kmock.resource("batch", "v1", "jobs")
PODS = kmock.resource("", "v1", "pods")
DEPLOYMENTS = kmock.resource("apps", "v1", "deployments")
SERVICES = kmock.resource("", "v1", "services")
EVENTS = kmock.resource("", "v1", "events")


def declare_resources(server: Any, resources: dict[str, kmock.ResourceInfo] | None = None) -> None:
    """Declare quantwise's resources (and Kopf's own) so discovery lists them."""
    for name, info in (RESOURCES if resources is None else resources).items():
        server.resources[name] = copy.deepcopy(info)


declare = declare_resources  # the older name, still used by tests/component


def as_resource(resource: Any) -> kmock.resource:
    """``kmock.resource`` from a ``kmock.resource`` or a string like ``batch/v1/jobs``."""
    return resource if isinstance(resource, kmock.resource) else kmock.resource(resource)


def object_url(
    resource: Any, namespace: str | None, name: str | None = None, subresource: str | None = None
) -> str:
    """The API path of a collection, an object or an object's subresource."""
    res = as_resource(resource)
    base = f"/api/{res.version}" if not res.group else f"/apis/{res.group}/{res.version}"
    parts = [base]
    if namespace:
        parts.append(f"namespaces/{namespace}")
    parts.append(str(res.plural))
    if name:
        parts.append(name)
    if subresource:
        parts.append(subresource)
    return "/".join(parts)


# ----- requests as Kubernetes API calls (for RBAC checks) -----


def label_selector(text: str) -> Any:
    """A predicate on labels for a ``labelSelector`` of ``k=v``, ``k==v``, ``k!=v``, ``k``, ``!k``
    terms (the equality-based forms; set-based ``in``/``notin`` are refused)."""
    terms: list[tuple[str, str, str | None]] = []
    for term in filter(None, (t.strip() for t in text.split(","))):
        if " in " in term or " notin " in term:
            raise ValueError(f"set-based label selectors are not emulated: {term!r}")
        if "!=" in term:
            key, value = term.split("!=", 1)
            terms.append(("!=", key.strip(), value.strip()))
        elif "=" in term:
            key, value = term.replace("==", "=").split("=", 1)
            terms.append(("=", key.strip(), value.strip()))
        elif term.startswith("!"):
            terms.append(("absent", term[1:].strip(), None))
        else:
            terms.append(("present", term, None))

    def matches(labels: dict[str, str]) -> bool:
        for op, key, value in terms:
            if op == "=" and labels.get(key) != value:
                return False
            if op == "!=" and labels.get(key) == value:
                return False
            if op == "absent" and key in labels:
                return False
            if op == "present" and key not in labels:
                return False
        return True

    return matches


class ApiCall(NamedTuple):
    """One API request as RBAC sees it. ``apply``: server-side apply; ``upsert``: it created.

    ``user_agent`` tells the operator's requests (``kopf/...``, ``OpenAPI-Generator/...``) from
    the test's own (``kmock/...``, see :func:`operator_calls`).
    """

    verb: str
    group: str
    version: str
    resource: str
    subresource: str | None
    namespace: str | None
    name: str | None = None
    apply: bool = False
    upsert: bool = False
    user_agent: str = ""


def _is_custom(resource: Any) -> bool:
    """A CustomResourceDefinition's group (no strategic merge patches there)."""
    group = resource.group or ""
    return "." in group and not group.endswith(".k8s.io")


def _is_apply(request: Any) -> bool:
    return "apply-patch" in str(request.headers.get("Content-Type", "")).lower()


def api_call(request: Any) -> ApiCall | None:
    """The Kubernetes verb etc. of a kmock request; None for discovery and non-API paths."""
    res = request.resource
    if res is None or not res.plural:
        return None
    method = str(request.method.value if hasattr(request.method, "value") else request.method)
    method = method.upper()
    if method == "GET":
        if str(request.params.get("watch", "")).lower() in ("true", "1"):
            verb = "watch"
        else:
            verb = "get" if request.name else "list"
    elif method == "POST":
        verb = "create"
    elif method == "PUT":
        verb = "update"
    elif method == "PATCH":
        verb = "patch"
    elif method == "DELETE":
        verb = "delete" if request.name else "deletecollection"
    else:
        return None
    return ApiCall(
        verb=verb, group=res.group or "", version=res.version or "", resource=res.plural,
        subresource=request.subresource, namespace=request.namespace, name=request.name,
        apply=verb == "patch" and _is_apply(request),
        user_agent=str(request.headers.get("User-Agent", "")),
    )  # fmt: skip


def recorded_calls(server: Any) -> list[ApiCall]:
    """Every API request the server got, in order (the emulator's own record, else kmock's)."""
    calls = getattr(server, "calls", None)
    if calls is not None:
        return list(calls)
    return [c for c in (api_call(r) for r in list(server)) if c is not None]


def operator_calls(server: Any) -> list[ApiCall]:
    """The recorded calls less those the test made through ``kmock.get/post/patch/...``."""
    return [c for c in recorded_calls(server) if not c.user_agent.startswith("kmock/")]


def rbac_rules(calls: Iterable[ApiCall]) -> dict[tuple[str, str], set[str]]:
    """(apiGroup, resource[/subresource]) -> verbs, as a Role needs them.

    A server-side apply that created the object needs ``create`` besides ``patch``.
    """
    rules: dict[tuple[str, str], set[str]] = {}
    for call in calls:
        key = (
            call.group,
            f"{call.resource}/{call.subresource}" if call.subresource else call.resource,
        )
        verbs = rules.setdefault(key, set())
        verbs.add(call.verb)
        if call.upsert:
            verbs.add("create")
    return rules


# ----- faults -----

_REASONS = {
    400: "BadRequest", 401: "Unauthorized", 403: "Forbidden", 404: "NotFound", 409: "Conflict",
    410: "Expired", 422: "Invalid", 429: "TooManyRequests", 500: "InternalError",
    503: "ServiceUnavailable", 504: "Timeout",
}  # fmt: skip


def status_body(
    code: int, message: str, reason: str | None = None, **details: Any
) -> dict[str, Any]:
    """A ``v1 Status`` as kube-apiserver sends with an error."""
    body: dict[str, Any] = {
        "apiVersion": "v1", "kind": "Status", "metadata": {}, "status": "Failure",
        "code": code, "reason": reason or _REASONS.get(code, "Unknown"), "message": message,
    }  # fmt: skip
    if details:
        body["details"] = details
    return body


def _error(
    code: int, message: str, reason: str | None = None, **details: Any
) -> aiohttp.web.Response:
    return aiohttp.web.json_response(status_body(code, message, reason, **details), status=code)


@attrs.define
class Fault:
    """Answer the next ``times`` requests that match with ``status`` (and/or after ``delay`` s).

    ``verb`` is a Kubernetes verb, ``"apply"`` (server-side apply only) or ``"*"``. ``resource``
    is ``kmock.resource`` or a string (``"batch/v1/jobs"``; ``"jobs"`` matches any group/version).
    With ``delay`` and no ``status`` the request is served normally after the delay, as a slow
    server would: a client that timed out meanwhile may still find the write done.
    """

    verb: str
    resource: kmock.resource
    status: int | None = None
    times: int = 1
    retry_after: float | None = None
    delay: float | None = None
    message: str | None = None
    subresource: Any = ...  # ... matches any
    namespace: Any = ...
    name: Any = ...
    hits: list[ApiCall] = attrs.field(factory=list)

    @property
    def remaining(self) -> int:
        return self.times - len(self.hits)

    def matches(self, call: ApiCall) -> bool:
        if self.remaining <= 0:
            return False
        if self.verb == "apply":
            if not call.apply:
                return False
        elif self.verb not in ("*", call.verb):
            return False
        res = kmock.resource(call.group, call.version, call.resource)
        if not self.resource.check(res):
            return False
        for field in ("subresource", "namespace", "name"):
            want = getattr(self, field)
            if want is not ... and want != getattr(call, field):
                return False
        return True

    async def respond(self) -> aiohttp.web.StreamResponse | None:
        if self.delay:
            await asyncio.sleep(self.delay)
        if self.status is None:
            return None
        extra: dict[str, Any] = {}
        headers: dict[str, str] = {}
        if self.retry_after is not None:
            extra["retryAfterSeconds"] = int(self.retry_after)
            headers["Retry-After"] = str(int(self.retry_after))
        message = self.message or f"injected fault {self.status} for {self.verb} {self.resource}"
        body = status_body(self.status, message, **extra)
        return aiohttp.web.json_response(body, status=self.status, headers=headers)


# ----- kmock's path parser: /api/v1/namespaces answers 500 in kmock 0.8 -----

_original_parse_path = _kmock_parsing.parse_path


def _parse_path(path: str) -> Any:
    """kmock's parser, fixed for the ``namespaces`` resource itself (only where it was wrong)."""
    parts = path.strip("/").split("/")
    core = len(parts) >= 2 and parts[0] == "api"
    named = len(parts) >= 3 and parts[0] == "apis"
    if core or named:
        group = "" if core else parts[1]
        version = parts[1] if core else parts[2]
        rest = parts[2:] if core else parts[3:]
        if (
            rest
            and rest[0] == "namespaces"
            and (len(rest) <= 2 or (len(rest) == 3 and rest[2] in ("status", "finalize")))
        ):
            return _kmock_parsing.ParsedPath(
                group=group, version=version, plural="namespaces", namespace=None,
                name=rest[1] if len(rest) >= 2 else None,
                subresource=rest[2] if len(rest) == 3 else None,
            )  # fmt: skip
    return _original_parse_path(path)


if getattr(_kmock_parsing.parse_path, "__name__", "") != "_parse_path":
    _kmock_parsing.parse_path = _parse_path


# ----- the emulator -----


@attrs.frozen
class ApiAnswer(kmock.KubernetesError):
    """An error answer a real API server gives (404, 409...): not collected in ``kmock.errors``."""


def _now() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


_current_call: contextvars.ContextVar[ApiCall | None] = contextvars.ContextVar("call", default=None)


# ApiServerEmulator replaces this private method of kmock's (a faster lookup, same result).
assert hasattr(kmock.KubernetesEmulator, "_KubernetesEmulator__get_objs"), "kmock changed"


@attrs.define(kw_only=True)
class ApiServerEmulator(kmock.KubernetesEmulator):
    """``kmock.KubernetesEmulator`` with an API server's metadata, SSA, status and watch rules.

    Use it with ``@pytest.mark.kmock(cls=ApiServerEmulator)``.
    """

    calls: list[ApiCall] = attrs.field(factory=list, init=False)
    faults: list[Fault] = attrs.field(factory=list, init=False)
    pod_logs: dict[tuple[str | None, str], str] = attrs.field(factory=dict, init=False)
    # (namespace, pod) -> HTTP status its log read answers (500: a kubelet that is down).
    pod_log_failures: dict[tuple[str | None, str], int] = attrs.field(factory=dict, init=False)
    # kmock keeps every request and, for each one, scans them all (once per reaction) to find
    # its reaction: time grows with the square of the requests. A load test keeps only the
    # newest this many (at least 1) in kmock's list; ``calls`` keeps them all. kmock's DSL views
    # (``server["get", ...]``) then see only those: a test that sets this asserts on ``calls``.
    history_limit: int | None = attrs.field(default=None, init=False)
    _rv: int = attrs.field(default=1000, init=False)
    _log: list[tuple[int, kmock.resource, dict[str, Any]]] = attrs.field(factory=list, init=False)

    # ----- lookups -----

    def _KubernetesEmulator__get_objs(self, request: Any, strict: bool) -> list[Any]:
        """kmock's object lookup, with the same result, comparing names before resources.

        kmock compares every stored object's resource (an attrs object) with the request's
        before its name, on every request: a fleet of N models costs N^2 comparisons of the
        slow kind, and the mock server, not the operator, set the pace of a load test.
        """
        name, namespace = request.name, request.namespace
        found = []
        for (resource, ns, obj_name), obj in self._objects._objects.items():
            if name is not None and obj_name != name:
                continue
            if (strict or namespace is not None) and ns != namespace:
                continue
            if resource == request.resource:
                found.append(obj)
        return found

    # ----- public helpers -----

    @property
    def resource_version(self) -> int:
        """The latest resourceVersion handed out (a real server's etcd revision)."""
        return self._rv

    def inject(
        self, verb: str, resource: Any, *, status: int | None = None, times: int = 1,
        retry_after: float | None = None, delay: float | None = None, message: str | None = None,
        subresource: Any = ..., namespace: Any = ..., name: Any = ...,
    ) -> Fault:  # fmt: skip
        """Answer the next ``times`` matching requests with a fault (see :class:`Fault`)."""
        if status is None and delay is None:
            raise ValueError("a fault needs a status, a delay or both")
        fault = Fault(
            verb=verb, resource=as_resource(resource), status=status, times=times,
            retry_after=retry_after, delay=delay, message=message,
            subresource=subresource, namespace=namespace, name=name,
        )  # fmt: skip
        self.faults.append(fault)
        return fault

    # ----- request handling -----

    async def _handle(self, request: Any) -> aiohttp.web.StreamResponse:
        call = api_call(request)
        if call is None:  # discovery, /version, non-API paths: kmock as it is
            return await _kmock_apps.RawHandler._handle(self, request)
        index = len(self.calls)
        self.calls.append(call)
        if self.history_limit is not None and len(self._requests) > self.history_limit:
            del self._requests[: -max(1, self.history_limit)]
        for fault in self.faults:
            if fault.matches(call):
                fault.hits.append(call)
                response = await fault.respond()
                if response is not None:
                    return response
                break
        if call.resource == "pods" and call.subresource == "log" and call.verb == "get":
            return await self._serve_pod_log(request)
        if call.verb == "create" and call.subresource is None:
            error = await self._create(request)
        elif call.verb == "patch":
            error = await self._patch(request, index)
        elif call.verb == "update":
            return await self._put(request)
        elif call.verb == "delete":
            error = await self._delete(request)
        else:
            error = None
        if error is not None:
            return error
        # Reactions the test declared, then kmock's fallbacks (which serve the stored state).
        return await _kmock_apps.RawHandler._handle(self, request)

    def resource_info(self, resource: kmock.resource) -> kmock.ResourceInfo | None:
        for res in list(self.resources):
            if res == resource:
                return self.resources[res]  # type: ignore[no-any-return]
        return None

    def _has_status(self, resource: kmock.resource) -> bool:
        info = self.resource_info(resource)
        return info is not None and "status" in info.subresources

    def _next_rv(self) -> str:
        self._rv += 1
        return str(self._rv)

    async def _emit(self, resource: kmock.resource, kind: str, obj: dict[str, Any]) -> None:
        event = {"type": kind, "object": copy.deepcopy(obj)}
        self._log.append((int(obj["metadata"]["resourceVersion"]), resource, event))
        await self._buses[resource].put(event)

    def _key(self, request: Any, namespace: str | None = None, name: str | None = None) -> Any:
        return (request.resource, request.namespace or namespace, request.name or name)

    def _live(self, key: Any) -> bool:
        return key in self._objects and not self._objects[key].deleted

    def _store(self, key: Any, body: dict[str, Any]) -> None:
        if key in self._objects:
            self._objects[key].history.append(body)
        else:
            self._objects[key] = body

    async def _create(self, request: Any) -> aiohttp.web.StreamResponse | None:
        body = request.data
        if not isinstance(body, dict):
            return _error(400, "the body of a create must be a JSON object")
        meta = body.setdefault("metadata", {})
        if request.namespace:
            meta["namespace"] = request.namespace
        async with self._lock:
            if not meta.get("name"):
                if not meta.get("generateName"):
                    return _error(422, "metadata.name or metadata.generateName is required")
                for _ in range(100):
                    meta["name"] = meta["generateName"] + uuid.uuid4().hex[:5]
                    if not self._live(self._key(request, meta.get("namespace"), meta["name"])):
                        break
            key = self._key(request, meta.get("namespace"), meta["name"])
            if self._live(key):
                return _error(
                    409,
                    f'{request.resource.plural} "{meta["name"]}" already exists',
                    "AlreadyExists",
                )
            for field in ("deletionTimestamp", "deletionGracePeriodSeconds", "managedFields"):
                meta.pop(field, None)
            meta["uid"] = str(uuid.uuid4())
            meta["creationTimestamp"] = _now()
            meta["generation"] = 1
            meta["resourceVersion"] = self._next_rv()
            self._store(key, body)
            await self._emit(request.resource, "ADDED", body)
        return None

    def _body(self, request: Any) -> Any:
        if request.data is not None:
            return request.data
        if _is_apply(request) and request.text:
            return yaml.safe_load(request.text)
        return None

    def _scope_patch(self, request: Any, patch: Any) -> Any:
        """Keep only ``status`` for ``/status``; drop it from main writes if status is separate."""
        if request.subresource == "status":
            if isinstance(patch, dict):
                return {"status": patch.get("status")} if "status" in patch else {}
            return [op for op in patch if str(op.get("path", "")).startswith("/status")]
        if request.subresource is None and self._has_status(request.resource):
            if isinstance(patch, dict):
                return {k: v for k, v in patch.items() if k != "status"}
            return [op for op in patch if not str(op.get("path", "")).startswith("/status")]
        return patch

    def _finish(self, old: dict[str, Any] | None, new: dict[str, Any], request: Any) -> None:
        """Server-owned metadata after a write: immutable fields kept, generation, resourceVersion."""
        meta = new.setdefault("metadata", {})
        old_meta = (old or {}).get("metadata", {})
        for field in ("uid", "creationTimestamp", "name", "namespace", "deletionTimestamp"):
            if field in old_meta:
                meta[field] = old_meta[field]
        generation = int(old_meta.get("generation", 1))
        if old is not None and new.get("spec") != old.get("spec"):
            generation += 1
        meta["generation"] = generation

    async def _patch(self, request: Any, index: int) -> aiohttp.web.StreamResponse | None:
        apply = _is_apply(request)
        try:
            patch = self._body(request)
        except yaml.YAMLError as e:
            return _error(400, f"the apply body is not YAML: {e}")
        if not isinstance(patch, (dict, list)):
            return _error(400, "the body of a patch must be a JSON object or a JSON patch list")
        content_type = str(request.headers.get("Content-Type", "")).lower()
        if "strategic-merge-patch" in content_type and _is_custom(request.resource):
            return _error(
                415,
                "strategic merge patch is not supported for custom resources",
                "UnsupportedMediaType",
            )
        if apply:
            manager = request.params.get("fieldManager")
            if not manager:
                return _error(400, "PATCH with apply requires the fieldManager parameter")
            if not isinstance(patch, dict) or not patch.get("apiVersion") or not patch.get("kind"):
                return _error(400, "an applied object needs apiVersion and kind")
        key = self._key(request)
        async with self._lock:
            exists = self._live(key)
            if not exists and not apply:
                return _error(404, f'{request.resource.plural} "{request.name}" not found')
            old = copy.deepcopy(self._objects[key].raw) if exists else None
            scoped = self._scope_patch(request, patch)
            if isinstance(scoped, dict):
                wanted_rv = (scoped.get("metadata") or {}).get("resourceVersion")
                if (
                    old is not None
                    and wanted_rv
                    and str(wanted_rv) != old["metadata"].get("resourceVersion")
                ):
                    return _error(
                        409,
                        "the object has been modified; please apply your changes to the latest version and try again",
                    )
            try:
                new = dict(_kmock_dicts.patch_dict(old or {}, scoped))
            except (
                ValueError,
                TypeError,
                jsonpatch.JsonPatchException,
                jsonpatch.JsonPointerException,
            ) as e:
                return _error(422, f"the patch cannot be applied: {e}")
            new = copy.deepcopy(new)
            self._finish(old, new, request)
            meta = new["metadata"]
            if old is not None:
                meta["resourceVersion"] = old["metadata"].get("resourceVersion")
                if new == old:
                    # A no-op (an apply of what is there already): a real API server keeps the
                    # object as it is, managedFields' time included, and sends no event.
                    return None
            if apply:
                fields = [
                    f
                    for f in meta.get("managedFields", []) or []
                    if f.get("manager") != manager or f.get("operation") != "Apply"
                ]
                fields.append(
                    {
                        "manager": manager,
                        "operation": "Apply",
                        "apiVersion": patch.get("apiVersion"),
                        "time": _now(),
                        "fieldsType": "FieldsV1",
                    }
                )
                meta["managedFields"] = fields
            if old is None:  # server-side apply of a missing object creates it
                meta["name"] = request.name
                if request.namespace:
                    meta["namespace"] = request.namespace
                meta["uid"] = str(uuid.uuid4())
                meta["creationTimestamp"] = _now()
                meta["generation"] = 1
                meta["resourceVersion"] = self._next_rv()
                self.calls[index] = self.calls[index]._replace(upsert=True)
                self._store(key, new)
                await self._emit(request.resource, "ADDED", new)
                return None
            meta["resourceVersion"] = self._next_rv()
            self._store(key, new)
            await self._emit(request.resource, "MODIFIED", new)
            if meta.get("deletionTimestamp") and not meta.get("finalizers"):
                self._objects[key].delete()
                await self._emit(request.resource, "DELETED", new)
        return None

    async def _put(self, request: Any) -> aiohttp.web.StreamResponse:
        body = request.data
        if not isinstance(body, dict):
            return _error(400, "the body of an update must be a JSON object")
        key = self._key(request)
        async with self._lock:
            if not self._live(key):
                return _error(404, f'{request.resource.plural} "{request.name}" not found')
            old = copy.deepcopy(self._objects[key].raw)
            wanted_rv = (body.get("metadata") or {}).get("resourceVersion")
            if wanted_rv and str(wanted_rv) != old["metadata"].get("resourceVersion"):
                return _error(
                    409,
                    "the object has been modified; please apply your changes to the latest version and try again",
                )
            new = copy.deepcopy(body)
            if request.subresource == "status":
                new = dict(old, status=new.get("status"))
            elif self._has_status(request.resource):
                new.pop("status", None)
                if "status" in old:
                    new["status"] = old["status"]
            self._finish(old, new, request)
            new["metadata"]["resourceVersion"] = old["metadata"].get("resourceVersion")
            if new != old:
                new["metadata"]["resourceVersion"] = self._next_rv()
                self._store(key, new)
                await self._emit(request.resource, "MODIFIED", new)
                if new["metadata"].get("deletionTimestamp") and not new["metadata"].get(
                    "finalizers"
                ):
                    self._objects[key].delete()
                    await self._emit(request.resource, "DELETED", new)
        return aiohttp.web.json_response(new)

    async def _delete(self, request: Any) -> aiohttp.web.StreamResponse | None:
        key = self._key(request)
        async with self._lock:
            if not self._live(key):
                return _error(404, f'{request.resource.plural} "{request.name}" not found')
            new = copy.deepcopy(self._objects[key].raw)
            meta = new.setdefault("metadata", {})
            if meta.get("deletionTimestamp"):
                return None  # already being deleted
            meta["resourceVersion"] = self._next_rv()
            if meta.get("finalizers"):
                meta["deletionTimestamp"] = _now()
                meta["deletionGracePeriodSeconds"] = 0
                self._store(key, new)
                await self._emit(request.resource, "MODIFIED", new)
            else:
                self._store(key, new)
                self._objects[key].delete()
                await self._emit(request.resource, "DELETED", new)
        return None

    async def _serve_pod_log(self, request: Any) -> aiohttp.web.StreamResponse:
        key = (request.resource, request.namespace, request.name)
        if not self._live(key):
            return _error(404, f'pods "{request.name}" not found')
        failure = self.pod_log_failures.get((request.namespace, request.name))
        if failure is not None:  # as the API server answers when the kubelet is unreachable
            return _error(failure, 'Get "https://node:10250/containerLogs/...": refused')
        data = self.pod_logs.get((request.namespace, request.name), "").encode()
        # As a kubelet answers: the last tailLines lines, then at most limitBytes of them.
        if (tail := request.params.get("tailLines")) is not None:
            data = b"".join(data.splitlines(keepends=True)[-int(tail) :])
        if (limit := request.params.get("limitBytes")) is not None:
            data = data[: int(limit)]
        return aiohttp.web.Response(body=data, content_type="text/plain")

    # ----- reads (kmock registers these bound methods as its fallbacks) -----

    async def _serve_fetch(self, request: Any) -> Any:
        # NB: returning kmock.Response(status=404) here would be wrong: kmock copies that status
        # onto the fallback reaction itself, and every later GET would answer 404 too.
        key = (request.resource, request.namespace, request.name)
        async with self._lock:
            if not self._live(key):
                raise ApiAnswer(
                    404, "NotFound", f'{request.resource.plural} "{request.name}" not found'
                )
            return self._objects[key].raw

    async def _render_error(self, exc: Exception) -> aiohttp.web.StreamResponse:
        if isinstance(exc, ApiAnswer):  # an API answer, not an emulator failure: not in .errors
            if self._errors and self._errors[-1] and self._errors[-1][-1] is exc:
                self._errors[-1].pop()
            return _error(exc.status, exc.message or "", exc.reason)
        return await super()._render_error(exc)

    def _matching(self, request: Any, namespace: str | None, name: str | None) -> bool:
        return bool(
            (request.namespace is None or namespace == request.namespace)
            and (request.name is None or name == request.name)
        )

    async def _serve_list(self, request: Any) -> Any:
        if not any(res == request.resource for res in self._get_resources()):
            raise kmock.KubernetesResourceNotFoundError()
        selector = label_selector(str(request.params.get("labelSelector") or ""))
        async with self._lock:
            items = [
                obj.raw
                for (res, ns, name), obj in self._objects.items()
                if res == request.resource and not obj.deleted
                if self._matching(request, ns, name)
                if selector((obj.raw.get("metadata") or {}).get("labels") or {})
            ]
            rv = str(self._rv)
        return {
            "kind": "List",
            "apiVersion": "v1",
            "metadata": {"resourceVersion": rv},
            "items": items,
        }

    async def _serve_watch(self, request: Any) -> AsyncIterator[Any]:
        yield b""  # send the headers now, as kmock does
        since = str(request.params.get("resourceVersion") or "0")
        timeout = request.params.get("timeoutSeconds")
        bus = self._buses[request.resource]
        async with self._lock:
            mark = await bus.mark()
            if since in ("0", "") or not since.isdigit():
                events = [
                    {"type": "ADDED", "object": copy.deepcopy(obj.raw)}
                    for (res, ns, name), obj in self._objects.items()
                    if res == request.resource
                    and not obj.deleted
                    and self._matching(request, ns, name)
                ]
            else:
                events = [
                    copy.deepcopy(event)
                    for rv, res, event in self._log
                    if res == request.resource and rv > int(since)
                    if self._matching(
                        request,
                        event["object"]["metadata"].get("namespace"),
                        event["object"]["metadata"].get("name"),
                    )
                ]
        try:
            for event in events:
                yield event
            async with asyncio.timeout(float(timeout) if timeout else None):
                async for event in bus.stream(since=mark):
                    meta = event.get("object", {}).get("metadata", {})
                    if self._matching(request, meta.get("namespace"), meta.get("name")):
                        yield event
        except TimeoutError:
            return
        finally:
            await bus.unmark(mark)


QuantwiseEmulator = ApiServerEmulator  # the older name, still used by tests/component


# ----- helpers for tests -----


async def eventually(check: Any, timeout: float = 10.0, interval: float = 0.05) -> Any:
    """Poll ``check()`` until it returns something truthy; AssertionError after ``timeout`` s."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        try:
            result = check()
        except (KeyError, IndexError, TypeError, ValueError):
            result = None
        if result:
            return result
        if loop.time() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {check}")
        await asyncio.sleep(interval)


def watches(server: Any, resource: Any) -> int:
    """How many WATCH requests for ``resource`` the server has got so far."""
    res = as_resource(resource)
    calls = getattr(server, "calls", None)
    if calls is not None:  # the emulator's full record (kmock's own list may be trimmed)
        return sum(
            1 for c in calls if c.verb == "watch" and c.resource == res.plural
            and (not res.group or c.group == res.group)
        )  # fmt: skip
    return sum(
        1
        for r in list(server)
        if r.action == kmock.action.WATCH and r.resource is not None and res.check(r.resource)
    )


async def wait_for_watch(
    server: Any, resource: Any, *, after: int = 0, timeout: float = 10.0
) -> None:
    """Wait until more than ``after`` WATCH requests for ``resource`` have arrived (Kopf's)."""
    await eventually(lambda: watches(server, resource) > after, timeout=timeout)


def objects(server: Any, resource: Any, namespace: str | None = None) -> dict[str, dict[str, Any]]:
    """name -> body of the live objects of ``resource`` (optionally in one namespace)."""
    res = as_resource(resource)
    wanted = (res.group, res.version, res.plural)
    return {
        name: obj.raw
        for (r, ns, name), obj in list(server.objects.items())
        if (namespace is None or ns == namespace)
        and (r.group, r.version, r.plural) == wanted
        and not obj.deleted
    }


def get_object(
    server: Any, resource: Any, namespace: str | None, name: str
) -> dict[str, Any] | None:
    """The live object, or None."""
    key = (as_resource(resource), namespace, name)
    if key not in server.objects or server.objects[key].deleted:
        return None
    return server.objects[key].raw  # type: ignore[no-any-return]


async def _check(response: Any) -> dict[str, Any]:
    text = await response.text()
    if response.status >= 300:
        raise AssertionError(f"{response.method} {response.url} -> {response.status}: {text}")
    return json.loads(text) if text else {}


async def create_object(server: Any, resource: Any, body: dict[str, Any]) -> dict[str, Any]:
    """POST ``body`` through the server (watchers see it); returns the stored object."""
    namespace = (body.get("metadata") or {}).get("namespace")
    info = server.resource_info(as_resource(resource)) if hasattr(server, "resource_info") else None
    if info is not None and info.namespaced is False:
        namespace = None
    return await _check(await server.post(object_url(resource, namespace), json=body))


async def patch_object(
    server: Any, resource: Any, namespace: str | None, name: str, patch: dict[str, Any],
    subresource: str | None = None,
) -> dict[str, Any]:  # fmt: skip
    """Merge-patch an object through the server, so that watchers get the event."""
    url = object_url(resource, namespace, name, subresource)
    headers = {"Content-Type": "application/merge-patch+json"}
    return await _check(await server.patch(url, json=patch, headers=headers))


async def patch_status(
    server: Any, resource: Any, namespace: str | None, name: str, status: dict[str, Any]
) -> dict[str, Any]:
    """Merge ``status`` into the object's status through the server (play a controller)."""
    res = as_resource(resource)
    sub = "status" if getattr(server, "_has_status", lambda _: True)(res) else None
    return await patch_object(server, res, namespace, name, {"status": status}, subresource=sub)


def inject_fault(server: Any, verb: str, resource: Any, **kwargs: Any) -> Fault:
    """``server.inject(...)``: fail (or delay) the next N requests for a verb and resource."""
    return server.inject(verb, resource, **kwargs)  # type: ignore[no-any-return]
