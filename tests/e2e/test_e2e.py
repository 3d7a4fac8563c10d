"""End to end against a real cluster named by KUBECONFIG (kind on a laptop).

Applies the CRD, runs the operator in-process, applies a QuantizedModel and checks that it goes
to Quantizing (or Pending, without a GPU node) with exactly one Job, as specified. When
QUANTWISE_E2E_WAIT_FOR_JOB=1 and the cluster can run the quantizer image, it also waits for the
Job to finish and the Deployment to be applied. Skipped, with the reason, when no cluster is
reachable; refuses contexts that do not look like a test cluster.
"""

from __future__ import annotations

import os
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
import yaml

pytestmark = pytest.mark.e2e
ROOT = Path(__file__).parents[2]
TEST_CONTEXT_PREFIXES = ("kind-", "minikube", "k3d-", "docker-desktop", "rancher-desktop")


def _client() -> Any:
    if not os.environ.get("KUBECONFIG"):
        pytest.skip("no KUBECONFIG: the e2e tests need a cluster (see README: e2e on kind)")
    try:
        from kubernetes import client, config

        _, active = config.list_kube_config_contexts()
        name = active["name"]
        if not name.startswith(TEST_CONTEXT_PREFIXES) and not os.environ.get(
            "QUANTWISE_E2E_ANY_CONTEXT"
        ):
            pytest.skip(
                f"context {name!r} does not look like a test cluster; set QUANTWISE_E2E_ANY_CONTEXT=1 to allow it"
            )
        config.load_kube_config()
        api = client.ApiClient()
        client.VersionApi(api).get_code(_request_timeout=5)
    except Exception as exc:  # Any failure to reach the cluster means skip.
        pytest.skip(f"the cluster named by KUBECONFIG is not reachable: {exc}")
    return api


def test_model_gets_exactly_one_job() -> None:
    api = _client()
    from kopf.testing import KopfRunner
    from kubernetes import client

    crd = yaml.safe_load((ROOT / "crds" / "quantizedmodels.quantwise.dev.yaml").read_text())
    ext = client.ApiextensionsV1Api(api)
    try:
        ext.create_custom_resource_definition(crd)
    except client.ApiException as exc:
        if exc.status != 409:
            raise
        ext.patch_custom_resource_definition(crd["metadata"]["name"], crd)
    namespace = f"qw-e2e-{uuid.uuid4().hex[:6]}"
    core = client.CoreV1Api(api)
    core.create_namespace({"metadata": {"name": namespace}})
    custom = client.CustomObjectsApi(api)
    try:
        time.sleep(2)  # The CRD becomes established.
        with KopfRunner(
            ["run", "--standalone", "--namespace", namespace, "-m", "quantwise.handlers"]
        ) as runner:
            body = yaml.safe_load(
                (ROOT / "examples" / "llama-3.1-8b-awq-prequantized.yaml").read_text()
            )
            body["metadata"]["namespace"] = namespace
            custom.create_namespaced_custom_object(
                "quantwise.dev", "v1alpha1", namespace, "quantizedmodels", body
            )
            batch = client.BatchV1Api(api)
            deadline = time.time() + 60
            jobs: list[Any] = []
            phase = None
            while time.time() < deadline:
                jobs = batch.list_namespaced_job(namespace).items
                obj = custom.get_namespaced_custom_object(
                    "quantwise.dev",
                    "v1alpha1",
                    namespace,
                    "quantizedmodels",
                    body["metadata"]["name"],
                )
                phase = (obj.get("status") or {}).get("phase")
                if jobs and phase in ("Quantizing", "Pending"):
                    break
                time.sleep(1)
            assert len(jobs) == 1, [j.metadata.name for j in jobs]
            assert jobs[0].metadata.name.startswith("llama-31-8b-awq-hub-inspect-")
            assert phase in ("Quantizing", "Pending")
            if os.environ.get("QUANTWISE_E2E_WAIT_FOR_JOB"):
                apps = client.AppsV1Api(api)
                deadline = time.time() + 1800
                while (
                    time.time() < deadline and not apps.list_namespaced_deployment(namespace).items
                ):
                    time.sleep(5)
                assert apps.list_namespaced_deployment(namespace).items
        assert runner.exit_code == 0
    finally:
        core.delete_namespace(namespace)


INVALID = sorted((ROOT / "tests" / "fixtures" / "invalid").glob("*.yaml"))


def test_the_api_server_refuses_the_invalid_corpus() -> None:
    """Each invalid QuantizedModel is refused by the real API server (server-side dry run),
    with a message naming the field, as the offline check in tests/unit says."""
    api = _client()
    from kubernetes import client

    crd = yaml.safe_load((ROOT / "crds" / "quantizedmodels.quantwise.dev.yaml").read_text())
    ext = client.ApiextensionsV1Api(api)
    try:
        ext.create_custom_resource_definition(crd)
        time.sleep(2)
    except client.ApiException as exc:
        if exc.status != 409:
            raise
    custom = client.CustomObjectsApi(api)
    admitted, wrong = [], []
    for path in INVALID:
        text = path.read_text()
        expected = next(
            line.removeprefix("# expect: ").strip()
            for line in text.splitlines()
            if line.startswith("# expect: ")
        )
        body = yaml.safe_load(text)
        try:
            custom.create_namespaced_custom_object(
                "quantwise.dev", "v1alpha1", "default", "quantizedmodels", body, dry_run="All"
            )
        except client.ApiException as exc:
            if exc.status != 422 or expected not in str(exc.body):
                wrong.append((path.name, exc.status, exc.body))
            continue
        admitted.append(path.name)
    assert admitted == []
    assert wrong == []
