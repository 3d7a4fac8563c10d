"""The operator's settings: one object, parsed once at start-up from flags and environment.

``quantwise run`` builds it from its flags (which default to the environment) and hands it to
Kopf in ``memo``; an operator started by Kopf's own CLI (the component tests) builds it from the
environment in its start-up handler. Nothing reads the environment anywhere else, and nothing
writes to it. Every variable is listed once, in :data:`ENVIRONMENT`.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, fields, replace
from typing import Any


@dataclass(frozen=True)
class Settings:
    """Operator-wide defaults and tunables (seconds are wall-clock seconds)."""

    quantizer_image: str | None = None
    """The quantizer image for Jobs whose QuantizedModel names none."""
    vllm_image: str | None = None
    """The vLLM image for models whose spec.serving.image is empty."""
    cluster_wide: bool = False
    """Watching every namespace (Kopf scans namespaces and CRDs; otherwise it does not)."""
    namespaces: tuple[str, ...] = ()
    """The namespaces watched when not cluster-wide."""
    workers: int = 16
    """Threads that reconcile models (different models in parallel, one model at a time)."""
    resync_seconds: float = 600.0
    """Every model is reconciled from the watch caches this often even when no event came: a
    safety net that reads nothing from the API server and writes only what differs."""
    retry_backoff_seconds: float = 15.0
    """The first wait before a reconcile that raised is retried; it doubles up to the max."""
    retry_max_seconds: float = 300.0
    api_retries: int = 5
    """Attempts of an API request answered 429/5xx or timed out, with backoff."""
    api_timeout_seconds: float = 30.0
    """Read timeout of one API request."""
    log_retry_seconds: float = 60.0
    """A serving pod's log that could not be read is read again after this long."""
    progress_interval_seconds: float = 60.0
    """A running Job pod's log tail (its progress lines) is read at most this often: one
    request per running Job per interval, none for models whose Job does not run."""
    progress_stall_seconds: float = 1200.0
    """No progress line for this long is shown as such (status.progress, Quantized
    NoProgress and one Event)."""
    metrics_port: int | None = None
    peering: str | None = None
    """Kopf's peering object (several replicas, one active); None when standalone."""
    identity: str | None = None
    """This replica's identity in the peering object."""
    priority: int = 0
    """This replica's peering priority."""
    kube_server: str | None = None
    """A test API server's URL (TLS not verified) instead of the kubeconfig or service account."""

    @classmethod
    def from_environment(cls, env: Mapping[str, str] | None = None, **flags: Any) -> Settings:
        """The settings the environment gives, with ``flags`` (not None) taking precedence."""
        env = os.environ if env is None else env
        values: dict[str, Any] = {}
        for variable, (name, parse) in ENVIRONMENT.items():
            raw = env.get(variable)
            if raw not in (None, ""):
                values[name] = parse(raw)
        values.update({k: v for k, v in flags.items() if v is not None})
        known = {f.name for f in fields(cls)}
        unknown = set(values) - known
        if unknown:
            raise TypeError(f"unknown settings: {sorted(unknown)}")
        return replace(cls(), **values)


def _flag(value: str) -> bool:
    return value.strip().lower() in ("1", "true", "yes", "on")


ENVIRONMENT: dict[str, tuple[str, Callable[[str], Any]]] = {
    "QUANTWISE_QUANTIZER_IMAGE": ("quantizer_image", str),
    "QUANTWISE_VLLM_IMAGE": ("vllm_image", str),
    "QUANTWISE_CLUSTER_WIDE": ("cluster_wide", _flag),
    "QUANTWISE_WORKERS": ("workers", int),
    "QUANTWISE_RESYNC_SECONDS": ("resync_seconds", float),
    "QUANTWISE_RETRY_BACKOFF_SECONDS": ("retry_backoff_seconds", float),
    "QUANTWISE_API_RETRIES": ("api_retries", int),
    "QUANTWISE_API_TIMEOUT_SECONDS": ("api_timeout_seconds", float),
    "QUANTWISE_LOG_RETRY_SECONDS": ("log_retry_seconds", float),
    "QUANTWISE_PROGRESS_INTERVAL_SECONDS": ("progress_interval_seconds", float),
    "QUANTWISE_PROGRESS_STALL_SECONDS": ("progress_stall_seconds", float),
    "QUANTWISE_METRICS_PORT": ("metrics_port", int),
    "QUANTWISE_KUBE_SERVER": ("kube_server", str),
}
"""Environment variable -> (setting, parser). The chart sets some; tests set others."""
