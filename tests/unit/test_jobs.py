"""The Job programs' pure parts: recipes, failure classification, artifacts, checkpoint reports.

No torch here: checkpoints are written with safetensors' numpy API, configs come from the real
quantization_config fixtures (tests/fixtures/quantization/).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from safetensors.numpy import save_file

from quantwise.api.report import MAX_REPORT_BYTES, QuantizeReport, dump_report, parse_report
from quantwise.jobs import artifact
from quantwise.jobs.checkpoint import LocalCheckpoint, describe, index_digest
from quantwise.jobs.errors import JobError, classify
from quantwise.planning.weights import TensorInfo
from quantwise.quantization.recipe import QuantizeRequest, RecipeError, recipe_for

FIXTURES = Path(__file__).parents[1] / "fixtures" / "quantization"

# ----- recipes -----


def kinds(request: QuantizeRequest) -> list[str]:
    return [m.kind for m in recipe_for(request)]


def weights(request: QuantizeRequest) -> dict[str, Any]:
    last = recipe_for(request)[-1]
    result: dict[str, Any] = last.kwargs["config_groups"]["group_0"]["weights"]
    return result


def test_awq_is_a_transform_then_quantization() -> None:
    request = QuantizeRequest("awq", 4, group_size=64, symmetric=False)
    assert kinds(request) == ["AWQModifier", "QuantizationModifier"]
    assert weights(request) == {
        "num_bits": 4, "type": "int", "symmetric": False, "strategy": "group", "group_size": 64,
    }  # fmt: skip
    assert recipe_for(request)[-1].kwargs["ignore"] == ["lm_head"]
    assert "kv_cache_scheme" not in recipe_for(request)[-1].kwargs


@pytest.mark.parametrize(
    ("request_", "expected_kinds", "strategy", "activations"),
    [
        (QuantizeRequest("gptq", 4, 128), ["GPTQModifier"], "group", None),
        (QuantizeRequest("gptq", 8, -1), ["GPTQModifier"], "channel", None),
        (QuantizeRequest("w8a8-int8", 8), ["SmoothQuantModifier", "GPTQModifier"], "channel",
         ("int", "token", True)),
        (QuantizeRequest("fp8", 8), ["QuantizationModifier"], "tensor", ("float", "tensor", False)),
        (QuantizeRequest("fp8-dynamic", 8, calibrated=False), ["QuantizationModifier"], "channel",
         ("float", "token", True)),
    ],
)  # fmt: skip
def test_recipe_per_method(
    request_: QuantizeRequest,
    expected_kinds: list[str],
    strategy: str,
    activations: tuple[str, str, bool] | None,
) -> None:
    assert kinds(request_) == expected_kinds
    assert weights(request_)["strategy"] == strategy
    assert weights(request_)["num_bits"] == request_.bits
    group = recipe_for(request_)[-1].kwargs["config_groups"]["group_0"]
    if activations is None:
        assert "input_activations" not in group
    else:
        a = group["input_activations"]
        assert (a["type"], a["strategy"], a["dynamic"]) == activations


def test_kv_cache_fp8_needs_calibration() -> None:
    calibrated = recipe_for(QuantizeRequest("gptq", 4, 128, kv_cache_fp8=True))[-1]
    assert calibrated.kwargs["kv_cache_scheme"]["type"] == "float"
    assert calibrated.kwargs["kv_cache_scheme"]["dynamic"] is False
    dynamic = QuantizeRequest("fp8-dynamic", 8, kv_cache_fp8=True, calibrated=False)
    assert "kv_cache_scheme" not in recipe_for(dynamic)[-1].kwargs
    assert not dynamic.needs_calibration
    assert QuantizeRequest("fp8-dynamic", 8, kv_cache_fp8=True, calibrated=True).needs_calibration
    assert QuantizeRequest("awq", 4).needs_calibration


@pytest.mark.parametrize(
    ("request_", "words"),
    [
        (QuantizeRequest("awq", 8), "awq produces 4-bit"),
        (QuantizeRequest("gptq", 3), "gptq produces 4 or 8-bit"),
        (QuantizeRequest("gptq", 4, 0), "--group-size 0"),
        (QuantizeRequest("fp8", 4), "fp8 produces 8-bit"),
        (QuantizeRequest("none", 4), "--method none"),
    ],
)
def test_recipe_refuses_what_llm_compressor_cannot_make(
    request_: QuantizeRequest, words: str
) -> None:
    with pytest.raises(RecipeError, match=words):
        recipe_for(request_)


# ----- failures -----


def test_classify_prefers_a_job_error_in_the_chain() -> None:
    inner = JobError("DatasetEmpty", "no text")
    outer = RuntimeError("wrapped")
    outer.__cause__ = inner
    assert classify(outer, "m", "x") is inner


@pytest.mark.parametrize(
    ("exc", "stage", "reason", "permanent"),
    [
        (MemoryError(), "calibrating", "OutOfMemory", True),
        (OSError("You are trying to access a gated repo.\\nMake sure to have access"),
         "loading the model", "GatedModel", True),
        (ValueError("Unrecognized configuration class <X> for this kind of AutoModel"),
         "loading the model", "UnsupportedArchitecture", True),
        (KeyError("quantwise-unknown"), "loading the model", "UnsupportedArchitecture", True),
        (ConnectionResetError("peer"), "loading the model", "NetworkError", False),
        (TimeoutError("slow"), "loading calibration data", "NetworkError", False),
        (RuntimeError("CUDA error: an illegal memory access"), "quantizing",
         "QuantizationFailed", False),
    ],
)  # fmt: skip
def test_classify(exc: BaseException, stage: str, reason: str, permanent: bool) -> None:
    failure = classify(exc, "org/model", stage)
    assert (failure.reason, failure.permanent) == (reason, permanent)
    assert "\n" not in failure.message


def test_out_of_memory_says_what_to_change() -> None:
    message = classify(MemoryError(), "org/model", "calibrating").message
    assert "while calibrating" in message
    assert "spec.quantizer.gpus" in message
    assert "calibration.samples" in message


# ----- checkpoints -----

TINY_ARCH = {
    "model_type": "llama",
    "architectures": ["LlamaForCausalLM"],
    "hidden_size": 64,
    "intermediate_size": 128,
    "num_hidden_layers": 1,
    "num_attention_heads": 2,
    "num_key_value_heads": 1,
    "vocab_size": 32,
    "max_position_embeddings": 128,
    "torch_dtype": "float16",
}


def write_checkpoint(
    directory: Path, config: dict[str, Any], tensors: dict[str, np.ndarray], **side: Any
) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "config.json").write_text(json.dumps(config))
    for name, content in side.items():
        (directory / name).write_text(json.dumps(content))
    save_file(tensors, str(directory / "model.safetensors"))
    return directory


def gptq_tensors() -> dict[str, np.ndarray]:
    prefix = "model.layers.0.self_attn."
    return {
        "model.embed_tokens.weight": np.zeros((32, 64), np.float16),
        "lm_head.weight": np.zeros((32, 64), np.float16),
        f"{prefix}q_proj.qweight": np.zeros((8, 64), np.int32),
        f"{prefix}q_proj.scales": np.zeros((1, 64), np.float16),
        f"{prefix}k_proj.qweight": np.zeros((8, 32), np.int32),
        "model.layers.0.input_layernorm.weight": np.zeros((64,), np.float16),
    }


def fixture_block(name: str) -> dict[str, Any]:
    path = next(FIXTURES.glob(f"*/{name}.json"))
    data: dict[str, Any] = json.loads(path.read_text())
    return data


def test_describe_autogptq_with_quantize_config_json(tmp_path: Path) -> None:
    block = fixture_block("TheBloke--Llama-2-13B-chat-GPTQ")
    config = TINY_ARCH | {"quantization_config": block["quantization_config"]}
    directory = write_checkpoint(tmp_path / "gptq", config, gptq_tensors())
    report = describe(LocalCheckpoint(directory), "InspectReport", 0.25)
    tensor_bytes = 32 * 64 * 2 * 2 + 8 * 64 * 4 + 64 * 2 + 8 * 32 * 4 + 64 * 2
    assert report.artifact.weight_bytes == tensor_bytes
    assert report.artifact.files == 1
    assert report.quantization.quant_method == "gptq"
    assert report.quantization.weight_bits == 4
    assert report.architecture.num_key_value_heads == 1
    b = report.artifact.breakdown
    assert b is not None
    assert (b.embedding, b.lm_head, b.layer_kv, b.layer_replicated) == (4096, 4096, 1024, 128)
    assert parse_report(dump_report(report)) == report


@pytest.mark.parametrize(
    ("fixture", "quant_method", "bits", "activation_bits"),
    [
        ("TheBloke--zephyr-7B-alpha-AWQ", "awq", 4, 16),
        ("ModelCloud--Meta-Llama-3.1-8B-Instruct-gptq-4bit", "gptq", 4, 16),
        ("Qwen--Qwen3-32B-FP8", "fp8", 8, 8),
        ("nm-testing--Meta-Llama-3.1-8B-Instruct-FP8-hf", "compressed-tensors", 8, 8),
    ],
)
def test_describe_checkpoints_of_each_producer(
    tmp_path: Path, fixture: str, quant_method: str, bits: int, activation_bits: int
) -> None:
    block = fixture_block(fixture)
    side = {}
    qc = block.get("quantization_config") or block.get("compression_config")
    if block.get("quantize_config"):
        side["quantize_config.json"] = block["quantize_config"]
    config = TINY_ARCH | ({"quantization_config": qc} if qc else {})
    if block.get("quant_config") and not qc:
        side["quant_config.json"] = block["quant_config"]
    directory = write_checkpoint(tmp_path / fixture, config, gptq_tensors(), **side)
    report = describe(LocalCheckpoint(directory), "InspectReport", 0)
    q = report.quantization
    assert (q.quant_method.replace("_", "-"), q.weight_bits, q.activation_bits) == (
        quant_method, bits, activation_bits,
    )  # fmt: skip


def test_long_ignore_lists_are_summarised_under_4096_bytes(tmp_path: Path) -> None:
    ignore = [f"model.layers.{i}.mlp.gate" for i in range(300)]
    qc = fixture_block("nm-testing--Meta-Llama-3.1-8B-Instruct-FP8-hf")
    qc = dict(qc.get("quantization_config") or qc["compression_config"]) | {"ignore": ignore}
    directory = write_checkpoint(
        tmp_path / "m", TINY_ARCH | {"quantization_config": qc}, gptq_tensors()
    )
    report = describe(LocalCheckpoint(directory), "InspectReport", 1)
    text = dump_report(report)
    assert len(text.encode()) <= MAX_REPORT_BYTES
    parsed = parse_report(text)
    assert isinstance(parsed, QuantizeReport)
    assert parsed.quantization.ignore_count == 300
    assert 0 < len(parsed.quantization.ignore) < 300


@pytest.mark.parametrize(
    ("setup", "reason"),
    [("no-config", "NotACheckpoint"), ("no-weights", "NoSafetensors"),
     ("bad-config", "UnsupportedArchitecture"), ("bad-qc", "UnreadableQuantizationConfig"),
     ("truncated", "UnreadableCheckpoint")],
)  # fmt: skip
def test_describe_failures_name_the_problem(tmp_path: Path, setup: str, reason: str) -> None:
    directory = write_checkpoint(tmp_path / "m", TINY_ARCH, gptq_tensors())
    if setup == "no-config":
        (directory / "config.json").unlink()
    elif setup == "no-weights":
        (directory / "model.safetensors").unlink()
    elif setup == "bad-config":
        (directory / "config.json").write_text(json.dumps({"model_type": "llama"}))
    elif setup == "bad-qc":
        config = TINY_ARCH | {"quantization_config": {"quant_method": "mystery"}}
        (directory / "config.json").write_text(json.dumps(config))
    elif setup == "truncated":
        data = (directory / "model.safetensors").read_bytes()
        (directory / "model.safetensors").write_bytes(data[: len(data) // 2])
    with pytest.raises(JobError) as caught:
        describe(LocalCheckpoint(directory), "InspectReport", 0)
    assert caught.value.reason == reason
    assert caught.value.permanent


def test_index_digest_is_canonical() -> None:
    a = TensorInfo("a", "F16", (2, 2), 8)
    b = TensorInfo("b", "I32", (4,), 16)
    assert index_digest({"x.safetensors": [a, b]}) == index_digest({"x.safetensors": [b, a]})
    assert index_digest({"x.safetensors": [a]}) != index_digest({"y.safetensors": [a]})
    changed = TensorInfo("a", "F16", (2, 4), 16)
    assert index_digest({"x.safetensors": [a]}) != index_digest({"x.safetensors": [changed]})


# ----- artifacts -----


def test_staging_is_removed_when_the_work_fails(tmp_path: Path) -> None:
    target = tmp_path / "out"

    def killed_while_saving() -> None:
        with artifact.staging(target) as staged:
            (staged / "model.safetensors").write_bytes(b"partial")
            raise RuntimeError("killed")

    with pytest.raises(RuntimeError, match="killed"):
        killed_while_saving()
    assert list(tmp_path.iterdir()) == []


def test_publish_is_a_rename_of_a_sealed_directory(tmp_path: Path) -> None:
    target = tmp_path / "out"
    inputs = {"method": "gptq", "bits": 4}
    with artifact.staging(target) as staged:
        write_checkpoint(staged, TINY_ARCH, gptq_tensors())
        assert not target.exists()
        report = describe(LocalCheckpoint(staged), "QuantizeReport", 3, path=str(target))
        artifact.publish(staged, target, inputs, report)
    assert not staged.exists()
    assert (target / artifact.MARKER).is_file()
    assert artifact.find_complete(target, inputs) == report
    with pytest.raises(JobError, match="different bits"):
        artifact.find_complete(target, inputs | {"bits": 8})


def test_a_directory_not_written_by_quantwise_is_never_overwritten(tmp_path: Path) -> None:
    target = write_checkpoint(tmp_path / "out", TINY_ARCH, gptq_tensors())
    with pytest.raises(JobError) as caught:
        artifact.find_complete(target, {})
    assert caught.value.reason == "OutputExists"
    assert "spec.storage.pvc.path" in caught.value.message
    assert artifact.find_complete(tmp_path / "absent", {}) is None


def test_stale_staging_directories_are_removed(tmp_path: Path) -> None:
    (tmp_path / ".out.partial-abc").mkdir()
    (tmp_path / ".other.partial-abc").mkdir()
    removed = artifact.remove_stale_staging(tmp_path / "out")
    assert [p.name for p in removed] == [".out.partial-abc"]
    assert (tmp_path / ".other.partial-abc").is_dir()
