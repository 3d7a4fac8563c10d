"""Configure Kopf once, at start-up; start the worker threads; stop them at the end."""

from __future__ import annotations

import logging
import threading
from typing import Any

import kopf

import quantwise.metrics as metrics
from quantwise.handlers.runtime import Runtime
from quantwise.handlers.worker import resync, work
from quantwise.k8s import Kube
from quantwise.settings import Settings


@kopf.on.startup()
def configure(settings: kopf.OperatorSettings, memo: Any, **_: Any) -> None:
    """Kopf's settings; the shared runtime in memo; the workers, resync and metrics."""
    # `quantwise run` hands its settings in memo; an operator started by Kopf's own CLI (the
    # component tests) reads them from the environment, once, here.
    ours: Settings = getattr(memo, "settings", None) or Settings.from_environment()
    # Kopf writes nothing to the QuantizedModels (quantwise's handlers only watch): its storage
    # settings matter only if a future handler records progress, and then under quantwise.dev.
    settings.persistence.finalizer = "quantwise.dev/finalizer"
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix="quantwise.dev")
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix="quantwise.dev", key="last-handled-configuration"
    )
    settings.posting.level = logging.WARNING
    # Kopf runs a worker task per object with events, kept for idle_timeout after its last one
    # (5 s by default; Kopf docs, "Configuration: Queueing"). A fleet's children come in bursts:
    # at a thousand models the idle workers were most of the peak memory (147 MiB, 108 MiB at
    # 0.5 s; benchmarks/reconcile.py). The handlers only fill caches and wake models, so a worker
    # made again for a later event costs little.
    settings.queueing.idle_timeout = 0.5
    # Watches end and restart every few minutes: a connection dropped silently by a load
    # balancer would otherwise stall events forever (Kopf docs, "Configuration: API timeouts").
    settings.watching.server_timeout = 300
    settings.watching.client_timeout = 330
    settings.watching.connect_timeout = 30
    # Watching named namespaces needs no watch on Namespaces or CRDs (and no RBAC for them):
    # the CRDs are installed before the operator starts.
    if not ours.cluster_wide:
        settings.scanning.disabled = True
    runtime = Runtime(Kube.from_environment(ours, metrics.record_request), ours)
    memo.runtime = runtime
    if ours.metrics_port and not getattr(memo, "metrics_served", False):
        metrics.serve(ours.metrics_port)
        memo.metrics_served = True
    memo.stop = threading.Event()
    memo.threads = [
        threading.Thread(target=work, args=(runtime,), name=f"quantwise-worker-{i}", daemon=True)
        for i in range(max(1, ours.workers))
    ]
    memo.threads.append(threading.Thread(
        target=resync, args=(runtime, memo.stop), name="quantwise-resync", daemon=True
    ))  # fmt: skip
    for thread in memo.threads:
        thread.start()


@kopf.on.cleanup()
def close(memo: Any, **_: Any) -> None:
    """Stop the workers and release the API client."""
    stop = getattr(memo, "stop", None)
    if stop is not None:
        stop.set()
    runtime: Runtime | None = getattr(memo, "runtime", None)
    if runtime is not None:
        runtime.shutdown()
        runtime.kube.close()
