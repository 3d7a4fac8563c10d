"""What vLLM says it allocated, read from a serving pod's start-up log (pure).

vLLM logs its KV-cache sizing once the model is loaded and memory profiled
(vllm/v1/core/kv_cache_utils.py and vllm/v1/worker/gpu_worker.py)::

    Available KV cache memory: 43.52 GiB
    GPU KV cache size: 285,200 tokens
    Maximum concurrency for 8,192 tokens per request: 34.81x

Lines carry a logger prefix (and, from the engine process, ``(EngineCore_DP0 pid=N)``); numbers
may have thousands separators. With several GPUs each worker logs its own available memory;
the KV cache size is the engine's (the smallest across workers).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

_NUMBER = r"([0-9][0-9,]*(?:\.[0-9]+)?)"
_AVAILABLE = re.compile(rf"Available KV cache memory:\s*{_NUMBER}\s*GiB")
_TOKENS = re.compile(rf"GPU KV cache size:\s*{_NUMBER}\s*tokens")
_CONCURRENCY = re.compile(
    rf"Maximum concurrency for\s*{_NUMBER}\s*tokens per request:\s*{_NUMBER}\s*x"
)
LOG_LIMIT_BYTES = 4 * 1024 * 1024
"""How much of the log to read: the lines come after loading, before serving starts."""


@dataclass(frozen=True)
class MeasuredKV:
    """The KV cache vLLM reported."""

    kv_cache_tokens: int
    kv_cache_gib: float | None
    max_concurrency: float | None
    tokens_per_request: int | None


def _num(text: str) -> float:
    return float(text.replace(",", ""))


def parse_vllm_log(text: str) -> MeasuredKV | None:
    """The KV-cache numbers of a vLLM start-up log; None until vLLM has logged its KV size."""
    tokens = _TOKENS.findall(text)
    if not tokens:
        return None
    available = [_num(v) for v in _AVAILABLE.findall(text)]
    concurrency = _CONCURRENCY.findall(text)
    return MeasuredKV(
        kv_cache_tokens=int(min(_num(t) for t in tokens)),
        kv_cache_gib=min(available) if available else None,
        max_concurrency=_num(concurrency[-1][1]) if concurrency else None,
        tokens_per_request=int(_num(concurrency[-1][0])) if concurrency else None,
    )
