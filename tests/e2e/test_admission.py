"""The real API server refuses every invalid QuantizedModel of the unit corpus, naming the field.

The same files tests/unit/test_invalid_corpus.py checks offline (jsonschema + cel-python and the
operator's pydantic models) are sent to kube-apiserver as a server-side dry run: the CRD's
structural schema and CEL rules must refuse each with a 422 whose message holds the text the
file's ``# expect:`` line names, and admit every example.
"""

from __future__ import annotations

from pathlib import Path

import yaml
from harness import ROOT, Cluster

INVALID = sorted((ROOT / "tests" / "fixtures" / "invalid").glob("*.yaml"))
EXAMPLES = sorted((ROOT / "examples").glob("*.yaml"))


def _expected(path: Path) -> str:
    return next(
        line.removeprefix("# expect: ").strip()
        for line in path.read_text().splitlines()
        if line.startswith("# expect: ")
    )


def test_the_api_server_refuses_the_invalid_corpus(cluster: Cluster, namespace: str) -> None:
    from kubernetes import client

    admitted, wrong = [], []
    for path in INVALID:
        body = yaml.safe_load(path.read_text())
        body["metadata"]["namespace"] = namespace
        try:
            cluster.custom.create_namespaced_custom_object(
                "quantwise.dev", "v1alpha1", namespace, "quantizedmodels", body,
                dry_run="All", field_validation="Strict",
            )  # fmt: skip
        except client.ApiException as exc:
            # 422 Invalid (schema, CEL) or 400 BadRequest (strict decoding of an unknown field)
            if exc.status not in (400, 422) or _expected(path) not in str(exc.body):
                wrong.append((path.name, exc.status, exc.body))
            continue
        admitted.append(path.name)
    assert len(INVALID) >= 63
    assert admitted == []
    assert wrong == []


def test_the_api_server_admits_every_example(cluster: Cluster, namespace: str) -> None:
    for path in EXAMPLES:
        for body in yaml.safe_load_all(path.read_text()):
            if not body or body.get("kind") != "QuantizedModel":
                continue
            body["metadata"]["namespace"] = namespace
            cluster.custom.create_namespaced_custom_object(
                "quantwise.dev", "v1alpha1", namespace, "quantizedmodels", body,
                dry_run="All", field_validation="Strict",
            )  # fmt: skip
