"""ruff and mypy --strict pass on the package (and ruff on the tests)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[1]

pytestmark = pytest.mark.slow


def run(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, check=False)


def test_ruff() -> None:
    ruff = shutil.which("ruff") or f"{Path(sys.executable).parent}/ruff"
    paths = [p for p in ("operator", "tests", "benchmarks") if (ROOT / p).is_dir()]
    result = run(ruff, "check", *paths)
    assert result.returncode == 0, result.stdout + result.stderr


def test_mypy_strict() -> None:
    result = run(sys.executable, "-m", "mypy", "--strict", "operator/quantwise")
    assert result.returncode == 0, result.stdout + result.stderr
