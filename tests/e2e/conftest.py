"""The e2e fixtures (tests/e2e/harness.py holds them and the helpers the tests import).

The helpers live in a module of their own name: every test folder has a ``conftest`` module, and
``from conftest import ...`` would find whichever was imported first in a whole-suite run.
"""

from harness import (
    calibration,
    cluster,
    e2e_workdir,
    gpu_node,
    namespace,
    nodes,
    pytest_collection_modifyitems,
    run_operator,
    tiny_model,
)

__all__ = [
    "calibration", "cluster", "e2e_workdir", "gpu_node", "namespace", "nodes",
    "pytest_collection_modifyitems", "run_operator", "tiny_model",
]  # fmt: skip
