"""The API seam's pure parts: how a request is named for the request counter."""

from __future__ import annotations

import pytest

from quantwise.k8s import request_of


@pytest.mark.parametrize(
    ("method", "url", "content_type", "expected"),
    [
        ("GET", "https://h/api/v1/namespaces/ml/pods/p-1/log?tailLines=5", "", ("get", "pods/log")),
        ("POST", "https://h/apis/batch/v1/namespaces/ml/jobs", "application/json",
         ("create", "jobs")),
        ("PATCH", "https://h/apis/apps/v1/namespaces/ml/deployments/llama?fieldManager=quantwise",
         "application/apply-patch+yaml", ("apply", "deployments")),
        ("PATCH", "https://h/apis/apps/v1/namespaces/ml/deployments/llama/scale",
         "application/merge-patch+json", ("patch", "deployments/scale")),
        ("PATCH", "https://h/apis/quantwise.dev/v1alpha1/namespaces/ml/quantizedmodels/m/status",
         "application/merge-patch+json", ("patch", "quantizedmodels/status")),
        ("DELETE", "https://h/apis/batch/v1/namespaces/ml/jobs/j", "", ("delete", "jobs")),
        ("GET", "https://h/apis/kopf.dev/v1/clusterkopfpeerings/default", "",
         ("get", "clusterkopfpeerings")),
        ("GET", "https://h/api/v1/nodes", "", ("list", "nodes")),
        ("GET", "https://h/apis/leaderworkerset.x-k8s.io/v1", "", ("get", "/")),  # discovery
    ],
)  # fmt: skip
def test_a_request_is_named_by_its_rbac_verb_and_resource(
    method: str, url: str, content_type: str, expected: tuple[str, str]
) -> None:
    assert request_of(method, url, content_type) == expected
