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

import datetime
import threading
from collections import Counter as Tally
from collections.abc import Iterator
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
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

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
API_REQUESTS = Counter(
    "quantwise_api_requests",
    "Requests the operator sent to the Kubernetes API, by verb, resource and HTTP status "
    "(0: no answer); Kopf's watch streams are not counted.",
    ["verb", "resource", "code"],
    registry=REGISTRY,
)

# The gauges of each model, {namespace, name} and the extra labels: metric -> (help, labels).
PER_MODEL: dict[str, tuple[str, tuple[str, ...]]] = {
    "quantwise_plan_tensor_parallel_size": ("vLLM --tensor-parallel-size.", ()),
    "quantwise_plan_pipeline_parallel_size": ("vLLM --pipeline-parallel-size.", ()),
    "quantwise_plan_gpu_memory_utilization": ("vLLM --gpu-memory-utilization planned.", ()),
    "quantwise_plan_kv_cache_tokens": ("KV-cache tokens the plan provides.", ()),
    "quantwise_plan_weight_bytes_per_gpu": ("Weight bytes on one GPU.", ()),
    "quantwise_measured_kv_cache_tokens": (
        "KV-cache tokens vLLM reported at start-up (compare quantwise_plan_kv_cache_tokens).", ()),
    "quantwise_kv_cache_tokens_error_percent": (
        "(measured - planned) / planned x 100 of the KV-cache tokens.", ()),
    "quantwise_perplexity": (
        "Perplexity on the held-out evaluation tokens, of the base and of the quantized model.",
        ("model",)),
    "quantwise_perplexity_increase_percent": (
        "How much higher the served quantized model's perplexity is than the base model's (%).",
        ()),
    "quantwise_job_progress_percent": (
        "Percent done of the running Job's stage (status.progress).", ("stage",)),
    "quantwise_job_eta_seconds": ("Estimated seconds left in the running Job's stage.", ()),
}  # fmt: skip
# Where each comes from in the status: (metric, section of the status, field, extra labels).
_FROM_STATUS: tuple[tuple[str, str, str, tuple[str, ...]], ...] = (
    ("quantwise_plan_tensor_parallel_size", "plan", "tensorParallelSize", ()),
    ("quantwise_plan_pipeline_parallel_size", "plan", "pipelineParallelSize", ()),
    ("quantwise_plan_gpu_memory_utilization", "plan", "gpuMemoryUtilization", ()),
    ("quantwise_plan_kv_cache_tokens", "plan", "kvCacheTokens", ()),
    ("quantwise_plan_weight_bytes_per_gpu", "plan", "weightBytesPerGpu", ()),
    ("quantwise_measured_kv_cache_tokens", "measured", "kvCacheTokens", ()),
    ("quantwise_kv_cache_tokens_error_percent", "measured", "errorPercent", ()),
    ("quantwise_perplexity", "quality", "baselinePerplexity", ("base",)),
    ("quantwise_perplexity", "quality", "perplexity", ("quantized",)),
    ("quantwise_perplexity_increase_percent", "quality", "increasePercent", ()),
    ("quantwise_job_eta_seconds", "progress", "etaSeconds", ()),
)

Sample = tuple[str, tuple[str, ...], float]  # metric, extra label values, value


class _PerModel(Collector):
    """Each model's gauges, made at scrape time from a few numbers kept per model.

    A labelled ``Gauge`` child per model and metric costs ~1 KB; a fleet of a thousand models
    has ~8000 of them (``benchmarks/reconcile.py``, tracemalloc).
    """

    def collect(self) -> Iterator[GaugeMetricFamily]:
        families = {
            metric: GaugeMetricFamily(metric, help_, labels=["namespace", "name", *labels])
            for metric, (help_, labels) in PER_MODEL.items()
        }
        with _lock:
            models = list(_figures.items())
        for (namespace, name), samples in models:
            for metric, labels, value in samples:
                families[metric].add_metric([namespace, name, *labels], value)
        return iter(families.values())


def _samples(status: dict[str, Any]) -> tuple[Sample, ...]:
    """The gauges' values in a model's status (a field that is not a number has none)."""
    plan = status.get("plan") or {}
    progress = status.get("progress") or {}
    sections = {
        "plan": plan,
        "measured": plan.get("measured") or {},
        "quality": (status.get("artifact") or {}).get("quality") or {},
        "progress": progress,
    }
    found = [(metric, labels, sections[section].get(field))
             for metric, section, field, labels in _FROM_STATUS]  # fmt: skip
    if progress.get("stage"):
        found.append(("quantwise_job_progress_percent", (str(progress["stage"]),),
                      progress.get("percent")))  # fmt: skip
    return tuple((metric, labels, float(value)) for metric, labels, value in found
                 if isinstance(value, int | float) and not isinstance(value, bool))  # fmt: skip


_lock = threading.Lock()
_figures: dict[tuple[str, str], tuple[Sample, ...]] = {}  # per model: what _PerModel serves
_phases: dict[tuple[str, str], str] = {}
_counts: Tally[str] = Tally()  # models per phase, kept with _phases (no recount per write)
_jobs_seen: set[str] = set()
REGISTRY.register(_PerModel())


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
    """Record a model's phase, plan, quality and progress from the status just written."""
    samples = _samples(status)
    with _lock:
        _set_phase((namespace, name), str(status.get("phase") or "Pending"))
        if samples:
            _figures[(namespace, name)] = samples
        else:
            _figures.pop((namespace, name), None)


def forget(namespace: str, name: str) -> None:
    """Drop a deleted model's series."""
    with _lock:
        _set_phase((namespace, name), None)
        _figures.pop((namespace, name), None)


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
