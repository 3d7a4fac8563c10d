"""The RBAC rules the operator needs, derived from the API calls its code makes.

:data:`quantwise.k8s.API_CALLS` (every call of the :class:`~quantwise.k8s.Kube` seam) and Kopf's
own needs become Role/ClusterRole ``rules``. ``quantwise chart-files`` writes them to
``charts/quantwise/files/rbac-rules.yaml``, which the chart's templates read, so the chart grants
exactly what the code calls; a test fails when the file is stale, and the component tests check
that the requests the operator really sends are covered.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from quantwise.k8s import (
    API_CALLS,
    KOPF_CLUSTER_WIDE,
    KOPF_PEERING_CLUSTER,
    KOPF_PEERING_NAMESPACED,
    ApiCall,
)

VERB_ORDER = ("get", "list", "watch", "create", "update", "patch", "delete")


def rules(calls: Iterable[ApiCall]) -> list[dict[str, Any]]:
    """RBAC ``rules``: one per API group and verb set, resources sorted (deterministic)."""
    merged: dict[tuple[str, str], set[str]] = {}
    for call in calls:
        merged.setdefault((call.group, call.resource), set()).update(call.verbs)
    grouped: dict[tuple[str, tuple[str, ...]], list[str]] = {}
    for (group, resource), verbs in sorted(merged.items()):
        ordered = tuple(v for v in VERB_ORDER if v in verbs) + tuple(
            sorted(verbs - set(VERB_ORDER))
        )
        grouped.setdefault((group, ordered), []).append(resource)
    return [
        {"apiGroups": [group], "resources": sorted(resources), "verbs": list(verbs)}
        for (group, verbs), resources in sorted(grouped.items())
    ]


def chart_rules() -> dict[str, list[dict[str, Any]]]:
    """The rule sets the chart combines, by when it needs them.

    ``namespaced``: the operator's calls on namespaced resources (a Role per watched namespace,
    or the ClusterRole when watching all). ``cluster``: calls on cluster-scoped resources (always
    a ClusterRole). ``clusterWide``: Kopf's scanning when watching all namespaces.
    ``peeringNamespaced`` / ``peeringCluster``: Kopf's peering, with more than one replica.
    """
    return {
        "namespaced": rules(c for c in API_CALLS if not c.cluster_scoped),
        "cluster": rules(c for c in API_CALLS if c.cluster_scoped),
        "clusterWide": rules(KOPF_CLUSTER_WIDE),
        "peeringNamespaced": rules(KOPF_PEERING_NAMESPACED),
        "peeringCluster": rules(KOPF_PEERING_CLUSTER),
    }
