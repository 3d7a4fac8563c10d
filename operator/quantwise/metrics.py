"""Prometheus metrics of the operator, served on ``/metrics`` (``quantwise run --metrics-port``).

- ``quantwise_models{phase}``: QuantizedModels by phase.
- ``quantwise_reconcile_duration_seconds`` / ``quantwise_reconcile_errors_total``.
- ``quantwise_jobs_completed_total{kind,result}``, ``quantwise_job_duration_seconds{kind}``
  (start to completion of quantization and inspection Jobs), ``quantwise_job_failures_total
  {kind,reason}``.
- ``quantwise_api_requests_total{verb,resource,code}``: every request the operator sends to the
  Kubernetes API, retries included (Kopf's watch streams are not counted): what the operator
  costs the API server (``benchmarks/reconcile.py`` reads it).
- ``quantwise_plan_*{namespace,name}``: the plan in each model's ``status.plan`` (tensor- and
  pipeline-parallel size, GPU memory utilization, KV-cache tokens, weight bytes per GPU).
- ``quantwise_perplexity{namespace,name,model}`` (model: base or quantized) and
  ``quantwise_perplexity_increase_percent{namespace,name}``: the quality gate's figures of the
  served artifact (``status.artifact.quality``).
- ``quantwise_job_progress_percent{namespace,name,stage}`` and
  ``quantwise_job_eta_seconds{namespace,name}``: a running Job's ``status.progress``.

Series of a deleted model are removed. The vLLM pods serve their own ``/metrics``
(``vllm:kv_cache_usage_perc``, ``vllm:num_requests_waiting``...): the chart's optional PodMonitor
scrapes them.
"""

from __future__ import annotations

import contextlib
import datetime
import threading
from collections import Counter as Tally
from typing import Any

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    GCCollector,
    Histogram,
    PlatformCollector,
    ProcessCollector,
    start_http_server,
)

from quantwise.api.status import Phase

REGISTRY = CollectorRegistry(auto_describe=True)
ProcessCollector(registry=REGISTRY)
PlatformCollector(registry=REGISTRY)
GCCollector(registry=REGISTRY)

PHASES: tuple[str, ...] = tuple(Phase)
MODELS = Gauge("quantwise_models", "QuantizedModels by phase.", ["phase"], registry=REGISTRY)
RECONCILE_SECONDS = Histogram(
    "quantwise_reconcile_duration_seconds",
    "Time to observe, decide, act and write status for one QuantizedModel.",
    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
    registry=REGISTRY,
)
RECONCILE_ERRORS = Counter(
    "quantwise_reconcile_errors_total", "Reconciles that raised (retried).", registry=REGISTRY
)
JOBS_COMPLETED = Counter(
    "quantwise_jobs_completed_total",
    "Quantization/inspection Jobs that finished.",
    ["kind", "result"],
    registry=REGISTRY,
)
JOB_SECONDS = Histogram(
    "quantwise_job_duration_seconds",
    "Start to completion of the Jobs that succeeded.",
    ["kind"],
    buckets=(30, 60, 300, 600, 1200, 1800, 3600, 7200, 14400, 28800, 86400),
    registry=REGISTRY,
)
JOB_FAILURES = Counter(
    "quantwise_job_failures_total",
    "Jobs that failed, by the Job's failure reason.",
    ["kind", "reason"],
    registry=REGISTRY,
)
_PLAN_FIELDS = {
    "tensorParallelSize": ("quantwise_plan_tensor_parallel_size", "vLLM --tensor-parallel-size."),
    "pipelineParallelSize": (
        "quantwise_plan_pipeline_parallel_size",
        "vLLM --pipeline-parallel-size.",
    ),
    "gpuMemoryUtilization": (
        "quantwise_plan_gpu_memory_utilization",
        "vLLM --gpu-memory-utilization planned.",
    ),
    "kvCacheTokens": ("quantwise_plan_kv_cache_tokens", "KV-cache tokens the plan provides."),
    "weightBytesPerGpu": ("quantwise_plan_weight_bytes_per_gpu", "Weight bytes on one GPU."),
}
PLAN = {
    field: Gauge(metric, help_, ["namespace", "name"], registry=REGISTRY)
    for field, (metric, help_) in _PLAN_FIELDS.items()
}

MEASURED_KV_TOKENS = Gauge(
    "quantwise_measured_kv_cache_tokens",
    "KV-cache tokens vLLM reported at start-up (compare quantwise_plan_kv_cache_tokens).",
    ["namespace", "name"],
    registry=REGISTRY,
)
MEASURED_KV_ERROR = Gauge(
    "quantwise_kv_cache_tokens_error_percent",
    "(measured - planned) / planned x 100 of the KV-cache tokens.",
    ["namespace", "name"],
    registry=REGISTRY,
)
API_REQUESTS = Counter(
    "quantwise_api_requests",
    "Requests the operator sent to the Kubernetes API, by verb, resource and HTTP status "
    "(0: no answer); Kopf's watch streams are not counted.",
    ["verb", "resource", "code"],
    registry=REGISTRY,
)
_MEASURED = {"kvCacheTokens": MEASURED_KV_TOKENS, "errorPercent": MEASURED_KV_ERROR}

PERPLEXITY = Gauge(
    "quantwise_perplexity",
    "Perplexity on the held-out evaluation tokens, of the base and of the quantized model.",
    ["namespace", "name", "model"],
    registry=REGISTRY,
)
PERPLEXITY_INCREASE = Gauge(
    "quantwise_perplexity_increase_percent",
    "How much higher the served quantized model's perplexity is than the base model's (%).",
    ["namespace", "name"],
    registry=REGISTRY,
)
PROGRESS = Gauge(
    "quantwise_job_progress_percent",
    "Percent done of the running Job's stage (status.progress).",
    ["namespace", "name", "stage"],
    registry=REGISTRY,
)
PROGRESS_ETA = Gauge(
    "quantwise_job_eta_seconds",
    "Estimated seconds left in the running Job's stage.",
    ["namespace", "name"],
    registry=REGISTRY,
)
_stages: dict[tuple[str, str], str] = {}

_lock = threading.Lock()
_phases: dict[tuple[str, str], str] = {}
_counts: Tally[str] = Tally()  # models per phase, kept with _phases (no recount per write)
_jobs_seen: set[str] = set()


def _set_phase(key: tuple[str, str], phase: str | None) -> None:
    """Move a model to ``phase`` (None: forget it) and publish the two counts that moved."""
    old = _phases.pop(key, None)
    if old is not None:
        _counts[old] -= 1
        MODELS.labels(old).set(_counts[old])
    if phase is not None:
        _phases[key] = phase
        _counts[phase] += 1
        MODELS.labels(phase).set(_counts[phase])


def _publish_phases() -> None:
    for phase in (*PHASES, *_counts):
        MODELS.labels(phase).set(_counts.get(phase, 0))


def record_status(namespace: str, name: str, status: dict[str, Any]) -> None:
    """Record a model's phase and plan from the status the operator just wrote."""
    with _lock:
        _set_phase((namespace, name), str(status.get("phase") or "Pending"))
    plan = status.get("plan") or {}
    for field, gauge in PLAN.items():
        value = plan.get(field)
        if isinstance(value, int | float):
            gauge.labels(namespace, name).set(value)
        else:
            _remove(gauge, namespace, name)
    measured = plan.get("measured") or {}
    for field, gauge in _MEASURED.items():
        value = measured.get(field)
        if isinstance(value, int | float):
            gauge.labels(namespace, name).set(value)
        else:
            _remove(gauge, namespace, name)
    _record_quality(namespace, name, (status.get("artifact") or {}).get("quality") or {})
    _record_progress(namespace, name, status.get("progress") or {})


def _record_quality(namespace: str, name: str, quality: dict[str, Any]) -> None:
    for model, field in (("base", "baselinePerplexity"), ("quantized", "perplexity")):
        value = quality.get(field)
        if isinstance(value, int | float):
            PERPLEXITY.labels(namespace, name, model).set(value)
        else:
            with contextlib.suppress(KeyError):
                PERPLEXITY.remove(namespace, name, model)
    increase = quality.get("increasePercent")
    if isinstance(increase, int | float):
        PERPLEXITY_INCREASE.labels(namespace, name).set(increase)
    else:
        _remove(PERPLEXITY_INCREASE, namespace, name)


def _record_progress(namespace: str, name: str, progress: dict[str, Any]) -> None:
    stage = progress.get("stage")
    with _lock:
        before = _stages.pop((namespace, name), None)
        if stage:
            _stages[(namespace, name)] = str(stage)
    if before is not None and before != stage:
        with contextlib.suppress(KeyError):
            PROGRESS.remove(namespace, name, before)
    percent = progress.get("percent")
    if stage and isinstance(percent, int | float):
        PROGRESS.labels(namespace, name, str(stage)).set(percent)
    elif stage:
        with contextlib.suppress(KeyError):
            PROGRESS.remove(namespace, name, str(stage))
    eta = progress.get("etaSeconds")
    if isinstance(eta, int | float):
        PROGRESS_ETA.labels(namespace, name).set(eta)
    else:
        _remove(PROGRESS_ETA, namespace, name)


def _remove(gauge: Gauge, namespace: str, name: str) -> None:
    with contextlib.suppress(KeyError):
        gauge.remove(namespace, name)


def forget(namespace: str, name: str) -> None:
    """Drop a deleted model's series."""
    with _lock:
        _set_phase((namespace, name), None)
    for gauge in (*PLAN.values(), *_MEASURED.values(), PERPLEXITY_INCREASE, PROGRESS_ETA):
        _remove(gauge, namespace, name)
    _record_quality(namespace, name, {})
    _record_progress(namespace, name, {})


def _time(value: Any) -> datetime.datetime | None:
    if not isinstance(value, str):
        return None
    try:
        return datetime.datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None


def record_job(job: dict[str, Any]) -> None:
    """Count a finished Job once (by uid, or name): its duration, or its failure reason."""
    meta = job.get("metadata") or {}
    status = job.get("status") or {}
    key = str(meta.get("uid") or f"{meta.get('namespace')}/{meta.get('name')}")
    kind = str((meta.get("labels") or {}).get("app.kubernetes.io/component") or "quantizer")
    conditions = {
        c.get("type"): c for c in status.get("conditions") or [] if c.get("status") == "True"
    }
    if "Complete" not in conditions and "Failed" not in conditions:
        return
    with _lock:
        if key in _jobs_seen:
            return
        _jobs_seen.add(key)
    if "Failed" in conditions:
        JOBS_COMPLETED.labels(kind, "failed").inc()
        JOB_FAILURES.labels(kind, str(conditions["Failed"].get("reason") or "Unknown")).inc()
        return
    JOBS_COMPLETED.labels(kind, "succeeded").inc()
    started, finished = _time(status.get("startTime")), _time(status.get("completionTime"))
    if started and finished and finished >= started:
        JOB_SECONDS.labels(kind).observe((finished - started).total_seconds())


def record_request(verb: str, resource: str, status: int) -> None:
    """Count one request to the Kubernetes API (quantwise.k8s calls this for each)."""
    API_REQUESTS.labels(verb, resource, str(status)).inc()


def serve(port: int, address: str = "0.0.0.0") -> None:  # noqa: S104 - a pod's metrics port
    """Serve ``/metrics`` on ``address:port`` in a background thread."""
    _publish_phases()
    start_http_server(port, addr=address, registry=REGISTRY)
