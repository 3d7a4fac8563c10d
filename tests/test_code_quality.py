"""ruff and mypy --strict pass on the package (and ruff on the tests)."""

from __future__ import annotations

import os
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


def test_ruff_format() -> None:
    ruff = shutil.which("ruff") or f"{Path(sys.executable).parent}/ruff"
    paths = [p for p in ("operator", "tests", "benchmarks") if (ROOT / p).is_dir()]
    result = run(ruff, "format", "--check", *paths)
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_layers_hold() -> None:
    """import-linter's contracts (pyproject.toml [tool.importlinter]): the layers import only
    downwards, the pure layers use neither Kopf nor the Kubernetes client, nothing imports the
    handlers or the CLI."""
    lint = shutil.which("lint-imports") or f"{Path(sys.executable).parent}/lint-imports"
    result = subprocess.run(
        [lint], cwd=ROOT, capture_output=True, text=True, check=False,
        env={**os.environ, "PYTHONPATH": str(ROOT / "operator")},
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    assert "4 kept, 0 broken" in result.stdout


def test_test_modules_have_unique_names() -> None:
    """The test folders are not packages, so pytest imports each module by its basename
    (rootdir-relative `prepend` mode): two files with one name fail the whole collection."""
    by_name: dict[str, list[str]] = {}
    for path in sorted((ROOT / "tests").rglob("test_*.py")):
        by_name.setdefault(path.name, []).append(str(path.relative_to(ROOT)))
    assert {name: paths for name, paths in by_name.items() if len(paths) > 1} == {}
