"""The benchmarks run, at a small size, the way the README says to run them (not timed)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

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


def test_planner_times_one_plan_and_a_fleet() -> None:
    out = bench("benchmarks.planner", "--fleet", "30", "--repeat", "5")
    assert re.search(r"\| one plan .* \| [0-9.]+ ms \|", out)
    assert re.search(r"\| fleet of 30 \(\d+ planned, \d+ refused with a reason\)", out)


@pytest.mark.slow
def test_reconcile_runs_the_operator_against_the_mock_server() -> None:
    out = bench("benchmarks.reconcile", "--n", "0", "3")
    row = next(line for line in out.splitlines() if line.startswith("| 3 |"))
    requests_per_model = float(row.split("|")[3])
    assert 10 <= requests_per_model <= 40, row
