"""The Helm chart, rendered and linted by the real Helm engine (helm-python-sdk, no binary).

Every object the chart renders, with the default values and with each documented option,
validates against the Kubernetes schemas; its RBAC is exactly the rules derived from the
operator's API calls; bad values are refused by values.schema.json naming the key.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import helm_python as helm
import kubernetes_validate
import pytest
import yaml

from quantwise.cli import chart_files
from quantwise.rbac import chart_rules

ROOT = Path(__file__).parents[2]
CHART = ROOT / "charts" / "quantwise"
K8S_VERSION = "1.33.0"
NAMESPACE = "quantwise-system"
# Kinds of CRDs the Kubernetes schemas do not know (Prometheus Operator, Kopf): checked by hand.
FOREIGN = {"ServiceMonitor", "PodMonitor", "KopfPeering", "ClusterKopfPeering"}

OPTIONS: dict[str, dict[str, Any]] = {
    "defaults": {},
    "all-namespaces": {"watch": {"allNamespaces": True}},
    "named-namespaces": {"watch": {"namespaces": ["ml", "research"]}},
    "replicas-3": {"replicaCount": 3},
    "replicas-3-all-namespaces": {"replicaCount": 3, "watch": {"allNamespaces": True}},
    "no-metrics": {"metrics": {"enabled": False}},
    "monitors": {
        "metrics": {"serviceMonitor": {"enabled": True, "labels": {"release": "prom"}}},
        "vllmPodMonitor": {"enabled": True, "interval": "15s"},
    },
    "scheduling": {
        "nodeSelector": {"kubernetes.io/os": "linux"},
        "tolerations": [{"key": "ops", "operator": "Exists", "effect": "NoSchedule"}],
        "affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {
            "nodeSelectorTerms": [{"matchExpressions": [
                {"key": "kubernetes.io/arch", "operator": "In", "values": ["amd64"]}]}]}}},
        "priorityClassName": "system-cluster-critical",
        "podAnnotations": {"a": "b"},
        "podLabels": {"team": "ml"},
    },
    "images": {
        "image": {"repository": "registry.local/quantwise", "tag": "dev", "pullPolicy": "Always"},
        "imagePullSecrets": [{"name": "regcred"}],
        "defaults": {"quantizerImage": "registry.local/q:1", "vllmImage": "registry.local/v:1"},
    },
    "existing-service-account": {"serviceAccount": {"create": False, "name": "ops"}},
    "no-rbac": {"rbac": {"create": False}},
    "plain-logs": {"logFormat": "plain", "verbose": True, "workers": 4},
}  # fmt: skip


def render(values: dict[str, Any]) -> list[dict[str, Any]]:
    chart = helm.Chart.load(CHART)
    out = chart.render(values, name="quantwise", namespace=NAMESPACE, is_install=True)
    objects = [
        doc
        for path, text in sorted(out.items())
        if not path.endswith("NOTES.txt")
        for doc in yaml.safe_load_all(text)
        if doc
    ]
    return objects + [doc for c in chart.crds for doc in yaml.safe_load_all(c["data"]) if doc]


def by_kind(objects: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [o for o in objects if o["kind"] == kind]


def test_lint_is_clean() -> None:
    report = helm.lint(CHART, strict=True, kube_version=f"v{K8S_VERSION}")
    assert report["errors"] == []
    assert report["messages"] == []


@pytest.mark.parametrize("option", list(OPTIONS))
def test_every_object_validates(option: str) -> None:
    objects = render(OPTIONS[option])
    assert by_kind(objects, "Deployment")
    for obj in objects:
        if obj["kind"] in FOREIGN:
            assert obj["metadata"]["name"]
            continue
        kubernetes_validate.validate(obj, K8S_VERSION, strict=True)


def test_the_chart_crds_are_the_generated_ones() -> None:
    files = chart_files()
    for relative, text in files.items():
        assert (CHART / relative).read_text() == text, f"run `quantwise chart-files` ({relative})"
    crds = helm.Chart.load(CHART).crds
    assert [list(yaml.safe_load_all(c["data"])) for c in crds] == [
        list(yaml.safe_load_all((ROOT / "crds" / Path(c["filename"]).name).read_text()))
        for c in crds
    ]


def rules_of(objects: list[dict[str, Any]], kind: str) -> list[list[dict[str, Any]]]:
    return [o["rules"] for o in by_kind(objects, kind)]


def flat(rule_sets: list[list[dict[str, Any]]]) -> set[tuple[str, str, str]]:
    return {
        (group, resource, verb)
        for rules in rule_sets
        for rule in rules
        for group in rule["apiGroups"]
        for resource in rule["resources"]
        for verb in rule["verbs"]
    }


def test_namespaced_rbac_is_exactly_the_derived_rules() -> None:
    derived = chart_rules()
    objects = render(OPTIONS["named-namespaces"])
    roles = by_kind(objects, "Role")
    assert sorted(r["metadata"]["namespace"] for r in roles) == ["ml", "research"]
    for role in roles:
        assert role["rules"] == derived["namespaced"]
    assert rules_of(objects, "ClusterRole") == ([derived["cluster"]] if derived["cluster"] else [])
    bindings = by_kind(objects, "RoleBinding")
    assert {b["subjects"][0]["name"] for b in bindings} == {"quantwise"}


def test_all_namespaces_rbac_is_one_cluster_role() -> None:
    derived = chart_rules()
    objects = render(OPTIONS["all-namespaces"])
    assert by_kind(objects, "Role") == []
    (cluster,) = rules_of(objects, "ClusterRole")
    assert cluster == derived["namespaced"] + derived["cluster"] + derived["clusterWide"]


def test_peering_rules_only_with_several_replicas() -> None:
    derived = chart_rules()
    single = flat(rules_of(render({}), "Role"))
    assert not {r for r in single if r[0] == "kopf.dev"}
    several = render(OPTIONS["replicas-3"])
    (role,) = rules_of(several, "Role")
    assert role == derived["namespaced"] + derived["peeringNamespaced"]
    assert [p["metadata"]["name"] for p in by_kind(several, "KopfPeering")] == ["quantwise"]
    deployment = by_kind(several, "Deployment")[0]
    args = deployment["spec"]["template"]["spec"]["containers"][0]["args"]
    assert "--peering=quantwise" in args
    assert "--standalone" not in args
    assert by_kind(several, "PodDisruptionBudget")[0]["spec"]["minAvailable"] == 1
    assert by_kind(render({}), "PodDisruptionBudget") == []


@pytest.mark.parametrize("option", list(OPTIONS))
def test_no_wildcards_anywhere_in_rbac(option: str) -> None:
    objects = render(OPTIONS[option])
    for group, resource, verb in flat(rules_of(objects, "Role") + rules_of(objects, "ClusterRole")):
        assert "*" not in (group, resource, verb)
    # The operator never reads Secrets (the Job's pod gets the token by secretKeyRef).
    assert not {r for r in flat(rules_of(objects, "Role") + rules_of(objects, "ClusterRole"))
                if r[1] == "secrets"}  # fmt: skip


def test_no_rbac_and_an_existing_service_account() -> None:
    objects = render(OPTIONS["no-rbac"])
    assert not {o["kind"] for o in objects} & {"Role", "ClusterRole", "RoleBinding"}
    objects = render(OPTIONS["existing-service-account"])
    assert by_kind(objects, "ServiceAccount") == []
    pod = by_kind(objects, "Deployment")[0]["spec"]["template"]["spec"]
    assert pod["serviceAccountName"] == "ops"
    assert by_kind(objects, "RoleBinding")[0]["subjects"][0]["name"] == "ops"


def test_operator_pod_is_admitted_by_pod_security_restricted() -> None:
    """The checks of Pod Security Admission's ``restricted`` profile (kubernetes.io/docs,
    "Pod Security Standards"), on the rendered pod."""
    for option in OPTIONS:
        pod = by_kind(render(OPTIONS[option]), "Deployment")[0]["spec"]["template"]["spec"]
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert pod["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault"
        assert not pod.get("hostNetwork") and not pod.get("hostPID") and not pod.get("hostIPC")
        for volume in pod.get("volumes", []):
            assert set(volume) - {"name"} <= {"emptyDir", "configMap", "secret", "projected"}
        for container in pod["containers"]:
            sc = container["securityContext"]
            assert sc["allowPrivilegeEscalation"] is False
            assert sc["capabilities"]["drop"] == ["ALL"]
            assert not sc["capabilities"].get("add")
            assert sc["readOnlyRootFilesystem"] is True
            assert sc.get("privileged") is not True
            assert container["securityContext"]["runAsNonRoot"] is True


def test_options_reach_the_operator() -> None:
    objects = render(OPTIONS["images"] | OPTIONS["named-namespaces"] | OPTIONS["plain-logs"])
    container = by_kind(objects, "Deployment")[0]["spec"]["template"]["spec"]["containers"][0]
    assert container["image"] == "registry.local/quantwise:dev"
    assert container["args"][:3] == ["run", "--namespace=ml", "--namespace=research"]
    assert "--log-format=plain" in container["args"]
    assert "--verbose" in container["args"]
    env = {e["name"]: e["value"] for e in container["env"]}
    assert env["QUANTWISE_QUANTIZER_IMAGE"] == "registry.local/q:1"
    assert env["QUANTWISE_VLLM_IMAGE"] == "registry.local/v:1"
    assert env["QUANTWISE_WORKERS"] == "4"


def test_the_operator_arguments_parse() -> None:
    from quantwise.cli import build_parser

    for option in OPTIONS:
        container = by_kind(render(OPTIONS[option]), "Deployment")[0]["spec"]["template"]["spec"][
            "containers"
        ][0]
        args = build_parser().parse_args(container["args"])
        assert args.command == "run"


def test_monitors() -> None:
    objects = render(OPTIONS["monitors"])
    (monitor,) = by_kind(objects, "ServiceMonitor")
    assert monitor["metadata"]["labels"]["release"] == "prom"
    (service,) = by_kind(objects, "Service")
    assert monitor["spec"]["selector"]["matchLabels"].items() <= service["spec"]["selector"].items()
    (pods,) = by_kind(objects, "PodMonitor")
    assert pods["spec"]["selector"]["matchLabels"] == {
        "app.kubernetes.io/name": "vllm",
        "app.kubernetes.io/managed-by": "quantwise",
    }
    assert pods["spec"]["podMetricsEndpoints"][0]["port"] == "http"
    assert by_kind(render(OPTIONS["no-metrics"]), "Service") == []


@pytest.mark.parametrize(
    ("values", "words"),
    [
        ({"replicaCount": 0}, "replicaCount"),
        ({"logFormat": "xml"}, "logFormat"),
        ({"image": {"pullPolicy": "Sometimes"}}, "pullPolicy"),
        ({"watch": {"namespaces": ["Bad_Namespace"]}}, "namespaces"),
        ({"metrics": {"port": 80}}, "port"),
        ({"resources": {"limits": {"memory": "lots"}}}, "memory"),
        ({"imagePullSecret": "typo"}, "imagePullSecret"),
        ({"vllmPodMonitor": {"interval": "often"}}, "interval"),
    ],
)
def test_bad_values_are_refused_naming_the_key(values: dict[str, Any], words: str) -> None:
    chart = helm.Chart.load(CHART)
    merged = copy.deepcopy(values)
    with pytest.raises(helm.HelmError) as caught:
        chart.render(merged, name="quantwise", namespace=NAMESPACE, is_install=True)
    assert words in str(caught.value)


def test_notes_tell_how_to_apply_a_first_model() -> None:
    out = helm.Chart.load(CHART).render({}, name="quantwise", namespace=NAMESPACE, is_install=True)
    notes = next(text for path, text in out.items() if path.endswith("NOTES.txt"))
    assert "kubectl -n quantwise-system apply -f" in notes
    assert "examples/llama-3.1-8b-awq.yaml" in notes
    assert "Helm does not upgrade CRDs" in notes


def templates(values: dict[str, Any]) -> list[dict[str, Any]]:
    """What the chart's templates render (not its crds/ folder, which Helm installs first)."""
    out = helm.Chart.load(CHART).render(
        values, name="quantwise", namespace=NAMESPACE, is_install=True
    )
    return [doc for path, text in out.items() if not path.endswith("NOTES.txt")
            for doc in yaml.safe_load_all(text) if doc]  # fmt: skip


@pytest.mark.parametrize("option", list(OPTIONS))
def test_no_template_renders_an_object_of_a_crd_the_chart_installs(option: str) -> None:
    """Helm installs crds/ before the templates; a CRD among the templates next to an object
    of its kind fails at `helm install` on a real API server ("no matches for kind
    KopfPeering"), as replicaCount: 2 did. Every CRD is in crds/, none in the templates."""
    rendered = templates(OPTIONS[option])
    assert by_kind(rendered, "CustomResourceDefinition") == []
    crds = {
        doc["spec"]["names"]["kind"]
        for c in helm.Chart.load(CHART).crds
        for doc in yaml.safe_load_all(c["data"])
    }
    assert {"QuantizedModel", "KopfPeering", "ClusterKopfPeering"} <= crds
    peering = by_kind(rendered, "KopfPeering") + by_kind(rendered, "ClusterKopfPeering")
    assert bool(peering) == (OPTIONS[option].get("replicaCount", 1) > 1)
