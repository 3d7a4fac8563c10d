"""`kubectl apply --dry-run=client -f crds/` loads the CRD (kmock stands in for the API server)."""

from __future__ import annotations

import asyncio
import shutil
import subprocess
from pathlib import Path
from typing import Any

import kmock
import pytest

ROOT = Path(__file__).parents[2]


@pytest.mark.skipif(shutil.which("kubectl") is None, reason="kubectl is not installed")
async def test_kubectl_dry_run_loads_the_crd(kmock: Any, tmp_path: Path) -> None:
    kmock.resources["apiextensions.k8s.io/v1/customresourcedefinitions"] = kmock_info()
    config = tmp_path / "kubeconfig"
    config.write_text(
        "apiVersion: v1\nkind: Config\ncurrent-context: m\n"
        f"clusters: [{{name: m, cluster: {{server: '{str(kmock.url).rstrip('/')}'}}}}]\n"
        "contexts: [{name: m, context: {cluster: m, user: u}}]\nusers: [{name: u, user: {}}]\n"
    )
    result = await asyncio.to_thread(
        subprocess.run,
        ["kubectl", "--kubeconfig", str(config), "apply", "--dry-run=client", "--validate=false", "-f", str(ROOT / "crds")],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert (
        "customresourcedefinition.apiextensions.k8s.io/quantizedmodels.quantwise.dev created (dry run)"
        in result.stdout
    )


def kmock_info() -> kmock.ResourceInfo:
    return kmock.ResourceInfo(
        kind="CustomResourceDefinition", namespaced=False, verbs={"get", "list", "create", "patch"}
    )
