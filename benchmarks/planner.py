"""Planner speed: one model, and a fleet of N (default 1000) specs planned one after another.

The planner is pure arithmetic over a handful of (TP, PP) candidates, so a plan should take
microseconds to a millisecond; this prints how long it really takes. Run:
``python -m benchmarks.planner [--fleet 1000] [--repeat 200]``.
"""

from __future__ import annotations

import argparse
import itertools
import json
import statistics
import sys
import time
from pathlib import Path

from quantwise.planning.architecture import architecture_from_config
from quantwise.planning.gpus import lookup_gpu
from quantwise.planning.planner import Budget, PlanError, plan
from quantwise.planning.weights import UNQUANTIZED, WeightFormat, estimate_weights

MODELS = Path(__file__).resolve().parents[1] / "examples" / "models"
FLEET_MODELS = (
    "meta-llama--Llama-3.1-8B-Instruct", "meta-llama--Llama-3.1-70B-Instruct",
    "Qwen--Qwen3-30B-A3B", "mistralai--Mixtral-8x7B-Instruct-v0.1",
    "deepseek-ai--DeepSeek-V2-Lite", "google--gemma-2-9b-it",
)  # fmt: skip
AWQ = WeightFormat(bits=4, group_size=128, symmetric=True)


def _arch(folder: str):  # type: ignore[no-untyped-def]
    return architecture_from_config(json.loads((MODELS / folder / "config.json").read_text()))


def time_one(repeat: int) -> list[float]:
    """Seconds per plan of Llama-3.1-8B AWQ on an H100 (8192 x 16), ``repeat`` times."""
    arch = _arch("meta-llama--Llama-3.1-8B-Instruct")
    weights, gpu, budget = estimate_weights(arch, AWQ), lookup_gpu("H100-80GB"), Budget(8192, 16)
    out = []
    for _ in range(repeat):
        start = time.perf_counter()
        plan(arch, weights, gpu, budget, AWQ)
        out.append(time.perf_counter() - start)
    return out


def time_fleet(size: int) -> tuple[float, int, int]:
    """Seconds to plan ``size`` specs (models x formats x GPUs x budgets); plans, refusals."""
    combos = itertools.cycle(itertools.product(
        FLEET_MODELS, (UNQUANTIZED, AWQ), ("L4", "A100-80GB", "H100-80GB"),
        (Budget(4096, 8), Budget(8192, 32, max_nodes=2), Budget(32768, 4)),
    ))  # fmt: skip
    archs = {m: _arch(m) for m in FLEET_MODELS}
    weights = {
        (m, f): estimate_weights(archs[m], f) for m in FLEET_MODELS for f in (UNQUANTIZED, AWQ)
    }
    planned = refused = 0
    start = time.perf_counter()
    for model, fmt, gpu, budget in itertools.islice(combos, size):
        try:
            plan(archs[model], weights[(model, fmt)], lookup_gpu(gpu), budget, fmt)
            planned += 1
        except PlanError:
            refused += 1  # a refusal with its message costs the same work
    return time.perf_counter() - start, planned, refused


def main(argv: list[str] | None = None) -> int:
    """Print the timings."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fleet", type=int, default=1000)
    parser.add_argument("--repeat", type=int, default=200)
    args = parser.parse_args(argv)
    one = time_one(args.repeat)
    seconds, planned, refused = time_fleet(args.fleet)
    print("| what | time |")
    print("|---|---|")
    print(f"| one plan (Llama-3.1-8B AWQ, H100), median of {args.repeat} | "
          f"{statistics.median(one) * 1e3:.2f} ms |")  # fmt: skip
    print(f"| one plan, p99 | {sorted(one)[int(0.99 * (len(one) - 1))] * 1e3:.2f} ms |")
    print(f"| fleet of {args.fleet} ({planned} planned, {refused} refused with a reason) | "
          f"{seconds:.2f} s ({seconds / max(1, args.fleet) * 1e3:.2f} ms each) |")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
