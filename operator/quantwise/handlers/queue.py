"""A work queue of models to reconcile, with the semantics of client-go's workqueue.

A key is in the queue at most once, however many events ask for it (a burst of events for one
model is one reconcile); a key being reconciled is never handed to a second worker (a key added
meanwhile is handed out again when the first is done); a key can be added after a delay (a retry
with backoff, a log to read again later). Workers block on :meth:`WorkQueue.get`.
"""

from __future__ import annotations

import heapq
import itertools
import threading
import time
from collections import deque
from collections.abc import Hashable
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)


class ShutDown(Exception):  # noqa: N818 - a signal, as queue.ShutDown is
    """The queue was shut down: workers stop."""


class WorkQueue(Generic[K]):
    """Deduplicating, per-key serialised, with delayed adds (thread-safe)."""

    def __init__(self) -> None:
        self._ready: deque[K] = deque()
        self._queued: set[K] = set()
        self._busy: set[K] = set()
        self._dirty: set[K] = set()
        self._later: list[tuple[float, int, K]] = []
        self._order = itertools.count()
        self._cond = threading.Condition()
        self._closed = False

    def add(self, key: K) -> None:
        """Reconcile ``key`` soon (once, however often it is added before a worker takes it)."""
        with self._cond:
            self._add(key)

    def _add(self, key: K) -> None:
        if self._closed or key in self._queued:
            return
        if key in self._busy:
            self._dirty.add(key)  # handed out again once the worker on it is done
            return
        self._queued.add(key)
        self._ready.append(key)
        self._cond.notify()

    def add_after(self, key: K, seconds: float) -> None:
        """Reconcile ``key`` after ``seconds`` (an earlier add wins)."""
        if seconds <= 0:
            self.add(key)
            return
        with self._cond:
            heapq.heappush(self._later, (time.monotonic() + seconds, next(self._order), key))
            self._cond.notify()

    def get(self) -> K:
        """The next key to reconcile (blocks); raise ShutDown when the queue is shut down."""
        with self._cond:
            while True:
                if self._closed:
                    raise ShutDown
                now = time.monotonic()
                while self._later and self._later[0][0] <= now:
                    self._add(heapq.heappop(self._later)[2])
                if self._ready:
                    key = self._ready.popleft()
                    self._queued.discard(key)
                    self._busy.add(key)
                    return key
                timeout = self._later[0][0] - now if self._later else None
                self._cond.wait(timeout)

    def done(self, key: K) -> None:
        """The worker on ``key`` is done: a key added meanwhile goes back into the queue."""
        with self._cond:
            self._busy.discard(key)
            if key in self._dirty:
                self._dirty.discard(key)
                self._add(key)

    def shutdown(self) -> None:
        """Stop handing out keys; workers blocked in :meth:`get` raise ShutDown."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()

    def __len__(self) -> int:
        with self._cond:
            return len(self._ready) + len(self._later)
