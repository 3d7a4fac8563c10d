"""Pure layers never import kopf or kubernetes, and never do network I/O."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).parents[2] / "operator" / "quantwise"
PURE = ("api", "planning", "render")
FORBIDDEN = (
    "kopf",
    "kubernetes",
    "requests",
    "urllib",
    "http",
    "socket",
    "aiohttp",
    "httpx",
    "huggingface_hub",
)


def imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split(".")[0])
    return names


@pytest.mark.parametrize("layer", PURE)
def test_pure_layers_import_no_cluster_or_network_client(layer: str) -> None:
    files = sorted((PACKAGE / layer).rglob("*.py"))
    assert files
    offenders = {str(f.relative_to(PACKAGE)): sorted(imports(f) & set(FORBIDDEN)) for f in files}
    assert {k: v for k, v in offenders.items() if v} == {}


def test_every_module_has_a_docstring() -> None:
    missing = [
        str(f.relative_to(PACKAGE))
        for f in PACKAGE.rglob("*.py")
        if ast.get_docstring(ast.parse(f.read_text())) is None
    ]
    assert missing == []


def function_lengths() -> dict[str, int]:
    """Lines of every function in the package (``def`` to its last line), by module:name."""
    lengths: dict[str, int] = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                name = f"{path.relative_to(PACKAGE)}:{node.name}"
                lengths[name] = max(lengths.get(name, 0), (node.end_lineno or 0) - node.lineno + 1)
    return lengths


def test_functions_stay_short_and_reconcile_reads_as_its_stages() -> None:
    lengths = function_lengths()
    assert len(lengths) > 500
    assert {name: n for name, n in lengths.items() if n > 80} == {}
    assert lengths["reconcile/core.py:reconcile"] <= 60
