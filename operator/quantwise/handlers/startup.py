"""Configure Kopf once, at start-up: storage, posting, watching, workers; the API client."""

from __future__ import annotations

import logging
import os
import threading
from typing import Any

import kopf

import quantwise.metrics as metrics
from quantwise.handlers.models import Runtime, drift_loop
from quantwise.k8s import Kube
from quantwise.reconcile.core import Settings


@kopf.on.startup()
def configure(settings: kopf.OperatorSettings, memo: Any, **_: Any) -> None:
    """Project-owned annotations and finalizer; bounded watches; the shared runtime in memo."""
    # Kopf's own bookkeeping goes to annotations under quantwise.dev, not to status: the CRD's
    # structural schema would prune an unknown status.kopf field.
    settings.persistence.finalizer = "quantwise.dev/finalizer"
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix="quantwise.dev")
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix="quantwise.dev", key="last-handled-configuration"
    )
    # quantwise posts its own Events for each step; Kopf's per-handler log lines would be noise.
    settings.posting.level = logging.WARNING
    # Watches end and restart every few minutes: a connection dropped silently by a load
    # balancer would otherwise stall events forever (Kopf docs, "Configuration: API timeouts").
    settings.watching.server_timeout = 300
    settings.watching.client_timeout = 330
    settings.watching.connect_timeout = 30
    # Watching named namespaces needs no watch on Namespaces or CRDs (and no RBAC for them):
    # the CRD is installed before the operator starts.
    if os.environ.get("QUANTWISE_CLUSTER_WIDE") == "0":
        settings.scanning.disabled = True
    # Handlers are synchronous (the kubernetes client); Kopf runs them in this many threads.
    settings.execution.max_workers = int(os.environ.get("QUANTWISE_WORKERS", "16"))
    memo.runtime = Runtime(
        Kube.from_environment(),
        Settings(
            quantizer_image=os.environ.get("QUANTWISE_QUANTIZER_IMAGE") or None,
            vllm_image=os.environ.get("QUANTWISE_VLLM_IMAGE") or None,
        ),
    )
    port = os.environ.get("QUANTWISE_METRICS_PORT")
    if port and not getattr(memo, "metrics_served", False):
        metrics.serve(int(port))
        memo.metrics_served = True
    memo.stop_drift = threading.Event()
    memo.drift = threading.Thread(
        target=drift_loop,
        args=(memo.runtime, memo.stop_drift, logging.getLogger("quantwise.drift")),
        name="quantwise-drift",
        daemon=True,
    )
    memo.drift.start()


@kopf.on.cleanup()
def close(memo: Any, **_: Any) -> None:
    """Release the API client."""
    stop = getattr(memo, "stop_drift", None)
    if stop is not None:
        stop.set()
    runtime = getattr(memo, "runtime", None)
    if runtime is not None:
        runtime.kube.close()
