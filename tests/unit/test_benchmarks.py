"""The benchmarks run, at a small size, the way the README says to run them (not timed)."""

from __future__ import annotations

import csv
import importlib.util
import re
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parents[2]


def bench(*args: str) -> str:
    result = subprocess.run(
        [sys.executable, "-m", *args], cwd=ROOT, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-4000:]
    return result.stdout


def test_sizing_matches_vllms_kv_formula_on_every_architecture() -> None:
    out = bench("benchmarks.sizing", "--markdown")
    assert "KV bytes per token, error vs vLLM's formula: mean 0.0, max 0" in out
    assert "KV tokens at 10 GiB, error vs vLLM's formula: mean 0.0, max 0" in out
    for kind in ("dense GQA", "MQA", "MoE", "MLA + MoE", "sliding window", "MHA"):
        assert f"| {kind} |" in out or f"| {kind}," in out, kind


def sizing_module() -> ModuleType:
    spec = importlib.util.spec_from_file_location("sizing_bench", ROOT / "benchmarks" / "sizing.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses resolve annotations through sys.modules
    spec.loader.exec_module(module)
    return module


def test_sizing_agrees_with_every_measured_vllm_run() -> None:
    out = bench("benchmarks.sizing")
    within = re.search(r"(\d+) of (\d+) single-stage runs within the log's rounding", out)
    assert within, out[-2000:]
    assert within.group(1) == within.group(2) and int(within.group(1)) >= 35, within.group(0)
    for name in ("fit", "check"):
        weights = re.search(
            rf"{name} set: weights vs \"Model loading took\" on (\d+) runs: "
            r"MAE ([0-9.]+) %, max ([0-9.]+) %",
            out,
        )
        assert weights, out[-3000:]
        assert int(weights.group(1)) >= 10
        assert float(weights.group(2)) <= 0.5 and float(weights.group(3)) <= 1.0, weights.group(0)
        pool = re.search(
            rf"{name} set: KV pool vs \"Available KV cache memory\" on (\d+) runs: "
            r"MAE ([0-9.]+) %, max ([0-9.]+) %, from ([-+][0-9.]+) % to ([-+][0-9.]+) %; "
            r"over-promising: (\d+) \(more than 0.5 %: (\d+)\)",
            out,
        )
        assert pool, out[-3000:]
        assert int(pool.group(1)) >= 9
        assert float(pool.group(2)) <= 2.0, pool.group(0)
        # The planner never promised more KV memory than vLLM found (the benchmark itself allows
        # 0.5 %, issue #15's limit, before it fails).
        assert float(pool.group(5)) < 0 and pool.group(6) == pool.group(7) == "0", pool.group(0)
        concurrency = re.search(
            rf"{name} set: maximum concurrency vs the log on (\d+) runs: MAE ([0-9.]+) %", out
        )
        assert concurrency and float(concurrency.group(2)) <= 3.0, out[-3000:]
    assert "CONTRADICTED" not in out


def measured(**changes: str) -> dict[str, str]:
    """The first single-stage H100 row of measured.csv, with ``changes``."""
    with (ROOT / "benchmarks" / "data" / "measured.csv").open(newline="") as f:
        row = next(r for r in csv.DictReader(f) if r["gpu"] == "H100-80GB" and r["pp"] == "1")
    return {**row, **changes}


def test_a_measured_run_that_contradicts_quantwise_is_reported() -> None:
    sizing = sizing_module()
    row = measured()
    assert sizing.measured_failures([sizing.measure(row)]) == []
    # 1 % more tokens than the logged memory holds: a KV layout quantwise would get wrong.
    more_tokens = measured(measured_kv_tokens=str(int(int(row["measured_kv_tokens"]) * 1.01)))
    # vLLM found far less KV memory than the planner leaves: the plan over-promises.
    less_memory = measured(available_kv_gib="20.00", max_concurrency="")
    less_memory["measured_kv_tokens"] = str(sizing.measure(less_memory).tokens)
    failures = sizing.measured_failures([sizing.measure(more_tokens), sizing.measure(less_memory)])
    assert any("KV tokens" in f for f in failures), failures
    assert any("exceeds vLLM's 20.00 GiB" in f for f in failures), failures


def test_each_accuracy_limit_of_the_benchmark_can_fail() -> None:
    sizing = sizing_module()
    row = measured()
    logged = float(row["available_kv_gib"])

    def failures(**changes: str) -> list[str]:
        return list(sizing.measured_failures([sizing.measure(measured(**changes))]))

    # Weights 2 % off "Model loading took": the MAE and the max limits both trip.
    heavier = f"{float(row['model_loading_gib']) * 1.02:.2f}"
    assert [f.split(":")[0] for f in failures(model_loading_gib=heavier)] == ["weights"] * 2
    # A check-set run whose KV pool the planner under-counts by 3 %: no over-promise, but the
    # check set's MAE is past 2 % (and the same run in the fit set is not held to it).
    more = measured(available_kv_gib=f"{logged * 1.03:.2f}", max_concurrency="")
    more["measured_kv_tokens"] = str(sizing.measure(more).tokens)
    more["set"] = "check"
    found = sizing.measured_failures([sizing.measure(more)])
    assert found and all(f.startswith("check set: KV-pool MAE") for f in found), found
    assert sizing.measured_failures([sizing.measure({**more, "set": "fit"})]) == []
    # The logged concurrency 4 % above what the plan gives.
    concurrency = f"{float(row['max_concurrency']) * 1.04:.2f}"
    found = failures(max_concurrency=concurrency)
    assert found and found[0].startswith("maximum concurrency: MAE"), found


def test_planner_times_one_plan_and_a_fleet() -> None:
    out = bench("benchmarks.planner", "--fleet", "30", "--repeat", "5")
    assert re.search(r"\| one plan .* \| [0-9.]+ ms \|", out)
    assert re.search(r"\| fleet of 30 \(\d+ planned, \d+ refused with a reason\)", out)


@pytest.mark.slow
def test_reconcile_runs_the_operator_and_the_baseline_against_the_mock_server() -> None:
    """quantwise gets 3 models to their Deployments in at most 10 requests each (Events
    included) and makes none with the fleet at rest; the bare Kopf baseline runs beside it."""
    out = bench("benchmarks.reconcile", "--n", "3", "--rest", "4")
    rows = {
        cells[2]: cells
        for line in out.splitlines()
        if line.startswith("| 3 |") and (cells := [c.strip() for c in line.split("|")])
    }
    assert set(rows) == {"quantwise", "bare-kopf"}, out
    quantwise = rows["quantwise"]
    assert 5 <= float(quantwise[4]) <= 10, quantwise  # requests per model to the Deployment
    assert float(quantwise[5]) == 0, quantwise  # requests per model per hour at rest
    assert "create jobs 1.0" in out and "apply deployments 1.0" in out
