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
