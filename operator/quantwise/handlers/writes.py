"""What the operator wrote, so that it writes nothing twice and only what differs.

The operator reads from watch caches, which show its own writes a moment later. Between a write
and the watch event that reports it, a reconcile would see the object as it was, and write
again (a second Job create, a second apply, the same Events twice). :class:`Ledger` keeps, per
object, the view of the object that the API server returned from the operator's last write, and
serves it instead of the cache's until the cache has caught up (client-go's controllers keep
"expectations" for the same reason). Resource versions are compared as the integers an
etcd-backed API server gives; where one is not an integer the cache is trusted.

:func:`needs_apply` decides whether an applied object (Deployment, LeaderWorkerSet, Service) must
be applied again: when it is missing, when the body quantwise wants differs from the one it last
applied (a hash in the ``quantwise.dev/applied`` annotation), or when someone edited it since.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from quantwise.reconcile.observe import Applied

V = TypeVar("V")
Key = tuple[str, str, str]  # (kind, namespace, name)


def _version(resource_version: str | None) -> int | None:
    text = str(resource_version or "")
    return int(text) if text.isdigit() else None


@dataclass(frozen=True)
class Written(Generic[V]):
    """The server's answer to a write: the object's resource version and view (None: deleted)."""

    resource_version: int
    view: V | None


class Ledger:
    """The views of the operator's own writes that the caches may not show yet (thread-safe)."""

    def __init__(self) -> None:
        self._written: dict[Key, Written[Any]] = {}
        self._applied: dict[Key, tuple[str, str]] = {}
        self._lock = threading.Lock()

    def wrote(self, key: Key, resource_version: str | None, view: Any) -> None:
        """Record a write; ``view`` is the object as the server returned it (None: deleted)."""
        version = _version(resource_version)
        with self._lock:
            if version is None:
                self._written.pop(key, None)
            else:
                self._written[key] = Written(version, view)

    def fresher(self, key: Key, cached_version: str | None, cached: V | None) -> V | None:
        """The cache's view of ``key``, or the operator's own newer write of it."""
        with self._lock:
            mine = self._written.get(key)
            if mine is None:
                return cached
            version = _version(cached_version)
            if cached is not None and (version is None or version >= mine.resource_version):
                del self._written[key]  # the cache has caught up
                return cached
            view: V | None = mine.view
            return view

    def drop(self, key: Key) -> None:
        """Forget ``key``: it was deleted (a write of it no longer stands in for the cache)."""
        with self._lock:
            self._written.pop(key, None)
            self._applied.pop(key, None)

    def applied(self, key: Key) -> tuple[str, str] | None:
        """(hash of the body, digest of the object) after the operator's last apply of ``key``."""
        with self._lock:
            return self._applied.get(key)

    def remember_apply(self, key: Key, desired: str, digest: str) -> None:
        """Record that ``key`` was applied with body hash ``desired`` and came out as ``digest``."""
        with self._lock:
            self._applied[key] = (desired, digest)

    def forget(self, namespace: str, name: str) -> None:
        """Drop what is known of a deleted model's objects."""
        with self._lock:
            for store in (self._written, self._applied):
                for key in [k for k in store if k[1] == namespace and k[2] == name]:
                    del store[key]


def needs_apply(desired: str, live: Applied | None, ledger: Ledger, key: Key) -> bool:
    """Whether the body with hash ``desired`` must be applied to the object ``live`` is.

    Missing, or last applied with another body: yes. Applied with this body: yes only if it was
    edited since (its digest moved away from what the apply left; after an operator restart,
    when that digest is not known, another field manager wrote it after the apply).
    """
    if live is None or live.applied != desired:
        return True
    mine = ledger.applied(key)
    if mine is not None and mine[0] == desired:
        return live.digest != mine[1]
    if live.edited:
        return True
    ledger.remember_apply(key, desired, live.digest)  # adopt what is there: it is ours
    return False
