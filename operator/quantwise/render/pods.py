"""What every pod quantwise creates shares: a restricted security context and GPU tolerations."""

from __future__ import annotations

from typing import Any

from quantwise.api.spec import Toleration
from quantwise.planning.gpus import GPU_RESOURCE, MIG_RESOURCE_PREFIX, SHARED_GPU_RESOURCE

RUN_AS_USER = 1000
"""Any non-root UID works: the images' caches are pointed at writable emptyDirs."""


def is_gpu_resource(name: str) -> bool:
    """True for the NVIDIA device plugin's GPU resources: whole, shared, MIG slices."""
    return name in (GPU_RESOURCE, SHARED_GPU_RESOURCE) or name.startswith(MIG_RESOURCE_PREFIX)


def container_security() -> dict[str, Any]:
    """A container security context that Pod Security Admission ``restricted`` admits."""
    return {
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": True,
        "runAsNonRoot": True,
        "runAsUser": RUN_AS_USER,
        "capabilities": {"drop": ["ALL"]},
        "seccompProfile": {"type": "RuntimeDefault"},
    }


def pod_security() -> dict[str, Any]:
    """The pod-level security context: non-root, volumes group-owned by the user."""
    return {
        "runAsNonRoot": True,
        "runAsUser": RUN_AS_USER,
        "fsGroup": RUN_AS_USER,
        "seccompProfile": {"type": "RuntimeDefault"},
    }


def tolerations(items: list[Toleration] | None) -> list[dict[str, Any]]:
    """The user's tolerations plus the taint GPU nodes commonly carry (GPU Operator, EKS, GKE)."""
    return [
        {"key": GPU_RESOURCE, "operator": "Exists", "effect": "NoSchedule"},
        *[t.to_api() for t in items or ()],
    ]
