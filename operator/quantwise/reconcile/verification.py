"""The verification stage: the KV cache vLLM allocated, read from its start-up log, vs the plan.

The measurement is optional: a log that cannot be read says so in KVCacheVerified (Unknown) and
never holds Ready back. vLLM's logged maximum concurrency decides when there is one (its own
per-sequence bound, right for sliding-window and hybrid models too), the tokens otherwise. The
budget is the floor: with memory policy fill vLLM is meant to hold more (status.plan.kvCacheTokens
predicts how much), which is as planned, never a finding.
"""

from __future__ import annotations

from quantwise.api.spec import QuantizedModelSpec
from quantwise.api.status import ConditionType, MeasuredStatus, PlanStatus, Reason
from quantwise.reconcile.measured import parse_vllm_log
from quantwise.reconcile.state import Decision

KV = ConditionType.KV_CACHE_VERIFIED
# vLLM prints the maximum concurrency with two decimals: half a hundredth is rounding.
CONCURRENCY_ROUNDING = 0.005


def measured(d: Decision, plan: PlanStatus) -> MeasuredStatus | None:
    """What vLLM reported, from the log just read, or kept from before for the same plan."""
    if d.obs.vllm_log is not None:
        pod, text = d.obs.vllm_log
        kv = parse_vllm_log(text)
        if kv is not None:
            predicted = plan.kv_cache_tokens
            error = (kv.kv_cache_tokens - predicted) / predicted * 100 if predicted else 0.0
            return MeasuredStatus(
                pod=pod,
                kv_cache_tokens=kv.kv_cache_tokens,
                kv_cache_gib=kv.kv_cache_gib,
                max_concurrency=kv.max_concurrency,
                predicted_kv_cache_tokens=predicted,
                error_percent=round(error, 2),
            )
    before = d.current.plan.measured if d.current.plan else None
    if before is not None and before.predicted_kv_cache_tokens == plan.kv_cache_tokens:
        return before
    return None


def verify_kv(
    d: Decision, spec: QuantizedModelSpec, plan: PlanStatus, found: MeasuredStatus | None
) -> None:
    """KVCacheVerified: whether vLLM's KV cache holds the budget (Unknown: not read)."""
    if found is None:
        if d.obs.vllm_log_error is not None:
            d.set(KV, None, Reason.LOG_UNAVAILABLE,
                  f"vLLM's start-up log was not read: {d.obs.vllm_log_error}")  # fmt: skip
        return
    per_token = plan.kv_cache_bytes_per_token
    budget_tokens = plan.kv_cache_budget_bytes // per_token if per_token else 0
    numbers = (
        f"vLLM allocated {found.kv_cache_tokens:,} KV-cache tokens on pod {found.pod}; the plan "
        f"predicted {found.predicted_kv_cache_tokens:,} ({found.error_percent:+.1f}%); the "
        f"budget (concurrency {spec.serving.concurrency} x maxModelLen {plan.max_model_len:,}) "
        f"needs {budget_tokens:,}"
    )
    if found.max_concurrency is not None:
        # vLLM 0.33 derives a sliding-window or hybrid model's token count from the concurrency
        # (vllm/v1/core/kv_cache_utils.py): the concurrency is the figure to trust.
        numbers += f"; vLLM holds {found.max_concurrency:g} sequences of that length"
        enough = found.max_concurrency + CONCURRENCY_ROUNDING >= spec.serving.concurrency
    else:
        enough = found.kv_cache_tokens >= budget_tokens
    if plan.memory_policy == "fill":
        numbers += (
            "; memory policy fill: the budget is a floor, the rest of the GPU's cap is KV cache"
        )
    if enough:
        d.set(KV, True, Reason.AS_PLANNED, numbers)
    else:
        d.set(KV, False, Reason.BELOW_BUDGET,
              numbers + ": lower spec.serving.concurrency or maxModelLen, or raise "
              "maxGpuMemoryUtilization")  # fmt: skip
