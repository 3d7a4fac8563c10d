"""Measured feedback: vLLM's start-up KV-cache lines, parsed, and compared with the plan."""

from __future__ import annotations

import dataclasses

from test_reconcile import cond, deployed_observation, run

from quantwise.reconcile.measured import parse_vllm_log
from quantwise.reconcile.observe import WorkloadState

# As vLLM prints them (the engine-core prefix, thousands separators).
LOG = """\
INFO 11-22 12:00:01 [__init__.py:216] Automatically detected platform cuda.
(EngineCore_DP0 pid=271) INFO 11-22 12:01:10 [gpu_worker.py:298] Available KV cache memory: 43.52 GiB
(EngineCore_DP0 pid=271) INFO 11-22 12:01:10 [kv_cache_utils.py:1087] GPU KV cache size: 356,512 tokens
(EngineCore_DP0 pid=271) INFO 11-22 12:01:10 [kv_cache_utils.py:1091] Maximum concurrency for 8,192 tokens per request: 43.52x
INFO 11-22 12:01:40 [api_server.py:1880] Starting vLLM API server 0 on http://0.0.0.0:8000
"""


def test_the_three_numbers_are_read() -> None:
    kv = parse_vllm_log(LOG)
    assert kv is not None
    assert kv.kv_cache_tokens == 356_512
    assert kv.kv_cache_gib == 43.52
    assert kv.max_concurrency == 43.52
    assert kv.tokens_per_request == 8192


def test_several_workers_the_smallest_counts_and_one_line_forms_parse() -> None:
    text = (
        "(RayWorkerWrapper pid=1) Available KV cache memory: 40.00 GiB\n"
        "(RayWorkerWrapper pid=2) Available KV cache memory: 38.50 GiB\n"
        "GPU KV cache size: 1,000,000 tokens, Maximum concurrency for 4,096 tokens per "
        "request: 244.14x\n"
    )
    kv = parse_vllm_log(text)
    assert kv is not None and kv.kv_cache_gib == 38.5 and kv.kv_cache_tokens == 1_000_000
    assert kv.max_concurrency == 244.14 and kv.tokens_per_request == 4096


def test_a_log_without_the_kv_line_is_not_a_measurement() -> None:
    assert parse_vllm_log("INFO Loading weights took 12.3 seconds\n") is None
    assert parse_vllm_log("") is None


AVAILABLE = WorkloadState(available_replicas=1, updated_replicas=1)
SERVING = {"gpu": {"product": "H100-80GB"}, "maxModelLen": 8192, "concurrency": 32}


def log_with(tokens: int) -> str:
    return f"GPU KV cache size: {tokens:,} tokens\nAvailable KV cache memory: 30.00 GiB\n"


def test_measured_next_to_predicted_and_verified_when_it_holds_the_budget() -> None:
    first = run(deployed_observation(SERVING, deployment=AVAILABLE))
    plan = first.status.plan
    assert plan is not None and plan.measured is None
    predicted = plan.kv_cache_tokens
    out = run(
        deployed_observation(
            SERVING, deployment=AVAILABLE, vllm_log=("llama-7d9f-abcde", log_with(predicted - 1000))
        )
    )
    measured = out.status.plan.measured if out.status.plan else None
    assert measured is not None
    assert measured.pod == "llama-7d9f-abcde"
    assert measured.kv_cache_tokens == predicted - 1000
    assert measured.predicted_kv_cache_tokens == predicted
    assert measured.error_percent == round(-1000 / predicted * 100, 2)
    assert cond(out, "KVCacheVerified") == ("True", "AsPlanned")
    # Kept on later reconciles without reading the log again.
    later = dataclasses.replace(
        deployed_observation(SERVING, deployment=AVAILABLE), status=out.status.to_api()
    )
    again = run(later)
    assert again.status.plan is not None and again.status.plan.measured == measured


def test_below_the_budget_the_condition_gives_both_numbers() -> None:
    out = run(deployed_observation(SERVING, deployment=AVAILABLE, vllm_log=("p", log_with(5000))))
    assert cond(out, "KVCacheVerified") == ("False", "BelowBudget")
    message = next(c.message for c in out.status.conditions or [] if c.type == "KVCacheVerified")
    assert "5,000 KV-cache tokens" in message and "needs 262,144" in message
    assert any(a.kind == "event" and a.warning and a.reason == "BelowBudget" for a in out.actions)


def test_vllms_maximum_concurrency_decides_when_it_logs_one() -> None:
    # Tokens to spare, but vLLM says only 31.5 sequences of maxModelLen fit at once (a sliding-window
    # or hybrid model, whose per-sequence bound is not tokens x bytes): below the budget of 32.
    short = log_with(10_000_000) + "Maximum concurrency for 8,192 tokens per request: 31.50x\n"
    out = run(deployed_observation(SERVING, deployment=AVAILABLE, vllm_log=("p", short)))
    assert cond(out, "KVCacheVerified") == ("False", "BelowBudget")
    message = next(c.message for c in out.status.conditions or [] if c.type == "KVCacheVerified")
    assert "vLLM holds 31.5 sequences of that length" in message
    # Exactly the budget, as printed with two decimals: verified.
    enough = log_with(5000) + "Maximum concurrency for 8,192 tokens per request: 32.00x\n"
    out = run(deployed_observation(SERVING, deployment=AVAILABLE, vllm_log=("p", enough)))
    assert cond(out, "KVCacheVerified") == ("True", "AsPlanned")
