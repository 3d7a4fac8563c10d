"""The quantization and inspection Jobs: arguments, secrets, volumes, policies; valid Kubernetes."""

from __future__ import annotations

from typing import Any

import kubernetes_validate
import pytest
from test_api import BASE, with_
from test_render import K8S_VERSION, OWNER, spec_of

from quantwise.render.job import EXIT_PERMANENT, quantization_job, quantizer_args
from quantwise.render.names import artifact_hash


def job(obj: dict[str, Any]) -> dict[str, Any]:
    return quantization_job("llama", "ml", spec_of(obj), owner=OWNER)


def container(j: dict[str, Any]) -> dict[str, Any]:
    return j["spec"]["template"]["spec"]["containers"][0]


def test_awq_job_arguments_are_an_argument_list() -> None:
    h = artifact_hash(spec_of(BASE))
    assert quantizer_args("llama", spec_of(BASE)) == [
        "quantize", "--model", "meta-llama/Llama-3.1-8B-Instruct", "--revision", "main",
        "--method", "awq", "--bits", "4", "--group-size", "128", "--asymmetric",
        "--calibration", "HuggingFaceH4/ultrachat_200k", "--samples", "256", "--sequence-length", "512",
        "--ignore", "lm_head",
        # The quality gate, by default on a held-out slice of the calibration data.
        "--eval-dataset", "HuggingFaceH4/ultrachat_200k", "--eval-samples", "128",
        "--eval-sequence-length", "512", "--max-perplexity-increase", "15",
        "--output", f"/artifacts/quantized/llama-{h}", "--report-path", "/dev/termination-log",
    ]  # fmt: skip
    j = job(BASE)
    assert container(j)["command"] == ["quantwise"]
    assert j["metadata"]["name"] == f"llama-quantize-{h}"


def test_fp8_dynamic_needs_no_calibration_and_fp8_kv_gets_scales() -> None:
    obj = with_("spec.quantization", {"method": "fp8-dynamic"})
    obj = with_("spec.serving.kvCacheDtype", "fp8", obj)
    args = quantizer_args("llama", spec_of(obj))
    assert "--calibration" not in args and "--symmetric" not in args and "--group-size" not in args
    assert args[args.index("--kv-cache-dtype") + 1] == "fp8"


def test_method_none_inspects_without_storage() -> None:
    obj = with_("spec.quantization", {"method": "none"})
    obj = with_("spec.storage", ..., obj)
    j = job(obj)
    assert container(j)["args"][:3] == ["inspect", "--model", "meta-llama/Llama-3.1-8B-Instruct"]
    assert j["metadata"]["name"].startswith("llama-inspect-")
    assert not [v for v in j["spec"]["template"]["spec"]["volumes"] if "persistentVolumeClaim" in v]


def test_token_comes_from_the_secret_by_reference() -> None:
    obj = with_("spec.source.huggingFace.tokenSecretRef", {"name": "hf-token", "key": "token"})
    env = container(job(obj))["env"]
    assert {
        "name": "HF_TOKEN",
        "valueFrom": {"secretKeyRef": {"name": "hf-token", "key": "token"}},
    } in env


def test_quantizer_settings_reach_the_job() -> None:
    obj = with_(
        "spec.quantizer",
        {
            "gpus": 2,
            "nodeSelector": {"pool": "a100"},
            "activeDeadlineSeconds": 7200,
            "backoffLimit": 3,
            "tolerations": [{"key": "spot", "operator": "Exists"}],
            "resources": {"requests": {"memory": "200Gi"}},
            "image": "registry.local/quantizer:1",
        },
    )
    j = job(obj)
    pod = j["spec"]["template"]["spec"]
    assert (j["spec"]["activeDeadlineSeconds"], j["spec"]["backoffLimit"]) == (7200, 3)
    assert pod["nodeSelector"] == {"pool": "a100"}
    assert {"key": "spot", "operator": "Exists"} in pod["tolerations"]
    c = container(j)
    assert c["image"] == "registry.local/quantizer:1"
    assert c["resources"]["limits"] == {"nvidia.com/gpu": "2"}
    assert c["resources"]["requests"] == {"memory": "200Gi", "nvidia.com/gpu": "2"}


def test_termination_message_and_failure_policy() -> None:
    j = job(BASE)
    c = container(j)
    assert c["terminationMessagePath"] == "/dev/termination-log"
    assert c["terminationMessagePolicy"] == "FallbackToLogsOnError"
    rules = j["spec"]["podFailurePolicy"]["rules"]
    assert rules[0]["onExitCodes"]["values"] == [EXIT_PERMANENT]
    assert j["spec"]["template"]["spec"]["restartPolicy"] == "Never"
    assert j["metadata"]["ownerReferences"] == [OWNER]
    assert j["spec"]["template"]["spec"]["automountServiceAccountToken"] is False


def test_one_claim_for_source_calibration_and_storage_is_mounted_once() -> None:
    obj = with_("spec.source", {"pvc": {"claimName": "models", "path": "base/llama"}})
    obj = with_(
        "spec.quantization.calibration",
        {"pvc": {"claimName": "models", "path": "cal/data.jsonl"}},
        obj,
    )
    j = job(obj)
    claims = [
        v["persistentVolumeClaim"]
        for v in j["spec"]["template"]["spec"]["volumes"]
        if "persistentVolumeClaim" in v
    ]
    assert claims == [{"claimName": "models", "readOnly": False}]
    args = container(j)["args"]
    assert args[args.index("--model") + 1] == "/artifacts/base/llama"
    assert args[args.index("--calibration") + 1] == "/artifacts/cal/data.jsonl"


def test_separate_claims_are_mounted_read_only_where_only_read() -> None:
    obj = with_("spec.source", {"pvc": {"claimName": "base-models", "path": "llama"}})
    j = job(obj)
    mounts = {
        m["mountPath"]: m["readOnly"]
        for m in container(j)["volumeMounts"]
        if m["name"].startswith("data-")
    }
    assert mounts == {"/artifacts": False, "/source": True}


def evaluation(value: dict[str, Any], obj: dict[str, Any] = BASE) -> dict[str, Any]:
    return with_("spec.quantization.evaluation", value, obj)


def test_the_quality_gate_reaches_the_job_and_not_the_artifact_hash() -> None:
    obj = evaluation({"samples": 64, "sequenceLength": 1024, "maxPerplexityIncreasePercent": 7.5,
                      "dataset": "Salesforce/wikitext", "split": "test"})  # fmt: skip
    args = quantizer_args("llama", spec_of(obj))
    tail = args[args.index("--eval-dataset") : args.index("--output")]
    assert tail == ["--eval-dataset", "Salesforce/wikitext", "--eval-split", "test",
                    "--eval-samples", "64", "--eval-sequence-length", "1024",
                    "--max-perplexity-increase", "7.5"]  # fmt: skip
    # The gate judges the artifact without changing it: same hash, same Job, same directory.
    assert artifact_hash(spec_of(obj)) == artifact_hash(spec_of(BASE))
    assert job(obj)["metadata"]["name"] == job(BASE)["metadata"]["name"]


def test_evaluation_disabled_is_no_eval_and_mounts_nothing() -> None:
    obj = evaluation({"enabled": False, "pvc": {"claimName": "eval", "path": "wiki.txt"}})
    j = job(obj)
    args = container(j)["args"]
    assert "--no-eval" in args and "--eval-dataset" not in args
    assert "/evaluation" not in {m["mountPath"] for m in container(j)["volumeMounts"]}


def test_evaluation_file_on_its_own_claim_is_mounted_read_only() -> None:
    obj = evaluation({"pvc": {"claimName": "eval-data", "path": "held/out.jsonl"}})
    j = job(obj)
    args = container(j)["args"]
    assert args[args.index("--eval-dataset") + 1] == "/evaluation/held/out.jsonl"
    assert "--eval-split" not in args
    mounts = {m["mountPath"]: m["readOnly"] for m in container(j)["volumeMounts"]
              if m["name"].startswith("data-")}  # fmt: skip
    assert mounts == {"/artifacts": False, "/evaluation": True}


def test_fp8_dynamic_evaluates_on_the_calibration_file_it_does_not_calibrate_on() -> None:
    obj = with_("spec.quantization", {"method": "fp8-dynamic", "calibration": {
        "pvc": {"claimName": "cal", "path": "data.jsonl"}}})  # fmt: skip
    j = job(obj)
    args = container(j)["args"]
    assert "--calibration" not in args
    assert args[args.index("--eval-dataset") + 1] == "/calibration/data.jsonl"
    assert "/calibration" in {m["mountPath"] for m in container(j)["volumeMounts"]}


def test_a_prequantized_checkpoint_is_compared_with_its_base_model() -> None:
    obj = with_("spec.quantization", {"method": "none", "evaluation": {
        "baseModel": {"pvc": {"claimName": "models", "path": "base/llama"}}}})  # fmt: skip
    obj = with_("spec.source", {"pvc": {"claimName": "models", "path": "awq/llama"}}, obj)
    obj = with_("spec.storage", ..., obj)
    j = job(obj)
    args = container(j)["args"]
    assert args[:3] == ["inspect", "--model", "/source/awq/llama"]
    # One claim for the checkpoint and the base model: mounted once, both paths on it.
    assert args[args.index("--base-model") + 1] == "/source/base/llama"
    assert args[args.index("--eval-dataset") + 1] == "HuggingFaceH4/ultrachat_200k"
    # Without a base model a pre-quantized checkpoint is not evaluated: no flags at all.
    plain = with_("spec.quantization", {"method": "none"})
    assert not [a for a in container(job(plain))["args"] if "eval" in a or "base" in a]


def test_a_gated_base_model_gets_its_token() -> None:
    obj = with_("spec.quantization", {"method": "none", "evaluation": {"baseModel": {
        "huggingFace": {"repo": "meta-llama/Llama-3.1-8B",
                        "tokenSecretRef": {"name": "hf", "key": "token"}}}}})  # fmt: skip
    obj = with_("spec.source", {"huggingFace": {"repo": "org/llama-awq"}}, obj)
    c = container(job(obj))
    assert c["args"][c["args"].index("--base-model") + 1] == "meta-llama/Llama-3.1-8B"
    assert {"name": "HF_TOKEN",
            "valueFrom": {"secretKeyRef": {"name": "hf", "key": "token"}}} in c["env"]  # fmt: skip


@pytest.mark.parametrize(
    "obj",
    [
        BASE,
        with_("spec.quantization", {"method": "none"}),
        with_("spec.source", {"pvc": {"claimName": "m", "path": "b"}}),
    ],
    ids=["awq-hf", "none", "pvc-source"],
)
def test_jobs_validate_against_kubernetes_schemas(obj: dict[str, Any]) -> None:
    kubernetes_validate.validate(job(obj), K8S_VERSION, strict=True)
