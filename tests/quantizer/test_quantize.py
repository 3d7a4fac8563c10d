"""`quantwise quantize` for real: llm-compressor on a tiny Llama on the CPU.

Each method's checkpoint is checked three ways: the quantization_config llm-compressor wrote,
the tensors' dtypes and shapes read with the safetensors library, and the report (weight bytes
equal to the bytes in the files, smaller than the model's; parsed by the operator's model).
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import struct
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from safetensors import safe_open

from quantwise.api.progress import parse_line
from quantwise.api.report import MAX_REPORT_BYTES, QuantizeError, QuantizeReport, parse_report
from quantwise.cli import main
from quantwise.jobs.artifact import MARKER
from support.fakehub import FakeHub, fake_hub
from support.quantizer import quantize

HIDDEN, INTERMEDIATE, KV_HEADS, HEAD_DIM = 128, 256, 2, 32


def data_bytes(directory: Path) -> int:
    """Bytes of tensor data in the directory's safetensors files: file size - 8 - header."""
    total = 0
    for path in directory.glob("*.safetensors"):
        with path.open("rb") as handle:
            (header_len,) = struct.unpack("<Q", handle.read(8))
        total += path.stat().st_size - 8 - header_len
    return total


def tensors(directory: Path) -> dict[str, tuple[str, list[int]]]:
    result: dict[str, tuple[str, list[int]]] = {}
    for path in directory.glob("*.safetensors"):
        with safe_open(str(path), framework="pt") as handle:
            for name in handle.keys():  # noqa: SIM118 - safe_open is not a Mapping
                piece = handle.get_slice(name)
                result[name] = (piece.get_dtype(), list(piece.get_shape()))
    return result


def qc(directory: Path) -> dict[str, Any]:
    config: dict[str, Any] = json.loads((directory / "config.json").read_text())
    return config["quantization_config"]


def weights_args(directory: Path) -> dict[str, Any]:
    groups = qc(directory)["config_groups"]
    assert len(groups) == 1
    return next(iter(groups.values()))


@pytest.mark.parametrize(
    ("name", "bits", "group", "symmetric", "fmt"),
    [
        ("awq", 4, 32, False, "pack-quantized"),
        ("gptq", 4, 64, True, "pack-quantized"),
        ("gptq-w8", 8, None, True, "pack-quantized"),
    ],
)
def test_weight_only_checkpoints(
    artifacts: dict[str, tuple[Path, str, QuantizeReport]],
    name: str,
    bits: int,
    group: int | None,
    symmetric: bool,
    fmt: str,
) -> None:
    directory, _, report = artifacts[name]
    config = qc(directory)
    assert config["quant_method"] == "compressed-tensors"
    assert config["format"] == fmt
    assert config["ignore"] == ["lm_head"]
    w = weights_args(directory)
    assert w["targets"] == ["Linear"]
    assert w["input_activations"] is None
    assert w["weights"]["num_bits"] == bits
    assert w["weights"]["type"] == "int"
    assert w["weights"]["symmetric"] is symmetric
    assert w["weights"]["strategy"] == ("group" if group else "channel")
    assert w["weights"]["group_size"] == group

    t = tensors(directory)
    per_int32 = 32 // bits
    q_proj = "model.layers.0.self_attn.q_proj"
    # Packed: out_features rows of in_features / (32 / bits) int32 words.
    assert t[f"{q_proj}.weight_packed"] == ("I32", [HIDDEN, HIDDEN // per_int32])
    down = "model.layers.1.mlp.down_proj"
    assert t[f"{down}.weight_packed"] == ("I32", [HIDDEN, INTERMEDIATE // per_int32])
    scales = INTERMEDIATE // group if group else 1
    assert t[f"{down}.weight_scale"] == ("BF16", [HIDDEN, scales])
    assert (f"{down}.weight_zero_point" in t) is not symmetric
    # Ignored and non-linear tensors stay 16-bit.
    assert t["lm_head.weight"] == ("BF16", [512, HIDDEN])
    assert t["model.embed_tokens.weight"] == ("BF16", [512, HIDDEN])
    assert f"{q_proj}.weight" not in t

    q = report.quantization
    assert (q.quant_method, q.scheme, q.format) == ("compressed-tensors", "wna16", fmt)
    assert (q.weight_bits, q.activation_bits, q.symmetric) == (bits, 16, symmetric)
    assert q.group_size == (group if group else -1)
    assert q.ignore == ["lm_head"]


def test_fp8_dynamic_checkpoint(artifacts: dict[str, tuple[Path, str, QuantizeReport]]) -> None:
    directory, _, report = artifacts["fp8-dynamic"]
    w = weights_args(directory)
    assert qc(directory)["format"] == "float-quantized"
    assert w["weights"] | {"observer": None} == w["weights"] | {
        "num_bits": 8, "type": "float", "strategy": "channel", "symmetric": True, "observer": None,
    }  # fmt: skip
    assert w["input_activations"]["dynamic"] is True
    assert w["input_activations"]["strategy"] == "token"
    t = tensors(directory)
    assert t["model.layers.0.mlp.gate_proj.weight"] == ("F8_E4M3", [INTERMEDIATE, HIDDEN])
    assert t["model.layers.0.mlp.gate_proj.weight_scale"] == ("BF16", [INTERMEDIATE, 1])
    assert "model.layers.0.mlp.gate_proj.input_scale" not in t
    assert (report.quantization.weight_bits, report.quantization.activation_bits) == (8, 8)
    assert report.quantization.kv_cache_scheme is None


def test_w8a8_int8_checkpoint(artifacts: dict[str, tuple[Path, str, QuantizeReport]]) -> None:
    directory, _, report = artifacts["w8a8-int8"]
    w = weights_args(directory)
    assert qc(directory)["format"] == "int-quantized"
    assert (w["weights"]["num_bits"], w["weights"]["type"], w["weights"]["strategy"]) == (
        8, "int", "channel",
    )  # fmt: skip
    assert (w["input_activations"]["type"], w["input_activations"]["dynamic"]) == ("int", True)
    t = tensors(directory)
    assert t["model.layers.0.self_attn.o_proj.weight"] == ("I8", [HIDDEN, HIDDEN])
    assert (report.quantization.weight_bits, report.quantization.activation_bits) == (8, 8)


def test_fp8_static_with_kv_cache_scales(
    artifacts: dict[str, tuple[Path, str, QuantizeReport]],
) -> None:
    directory, _, report = artifacts["fp8-kv"]
    config = qc(directory)
    assert config["kv_cache_scheme"]["num_bits"] == 8
    assert config["kv_cache_scheme"]["type"] == "float"
    w = weights_args(directory)
    assert w["input_activations"]["dynamic"] is False
    t = tensors(directory)
    attn = "model.layers.1.self_attn"
    assert t[f"{attn}.q_proj.weight"] == ("F8_E4M3", [HIDDEN, HIDDEN])
    assert t[f"{attn}.q_proj.input_scale"][1] == [1]
    # Calibrated KV-cache scales vLLM reads for --kv-cache-dtype fp8.
    assert t[f"{attn}.k_scale"][1] == [1]
    assert t[f"{attn}.v_scale"][1] == [1]
    assert report.quantization.kv_cache_scheme is not None


@pytest.mark.parametrize("name", ["awq", "gptq", "gptq-w8", "fp8-dynamic", "w8a8-int8", "fp8-kv"])
def test_report_is_measured_and_round_trips(
    artifacts: dict[str, tuple[Path, str, QuantizeReport]], tiny_llama: Path, name: str
) -> None:
    directory, text, report = artifacts[name]
    assert len(text.encode()) <= MAX_REPORT_BYTES
    # weightBytes is what the files hold, and less than the bf16 model.
    assert report.artifact.weight_bytes == data_bytes(directory)
    assert report.artifact.weight_bytes < data_bytes(tiny_llama)
    assert report.artifact.path == str(directory)
    assert report.artifact.files == 1
    assert report.artifact.digest.startswith("sha256:")
    assert report.kind == "QuantizeReport"
    assert not report.reused
    assert report.architecture.num_hidden_layers == 2
    assert report.architecture.num_key_value_heads == KV_HEADS
    assert report.architecture.head_dim == HEAD_DIM
    # The same model the operator reads it with, and the breakdown adds up.
    assert parse_report(text) == report
    assert report.artifact.breakdown is not None
    assert report.artifact.breakdown.to_breakdown().total_bytes == report.artifact.weight_bytes
    # The tokenizer is saved with the checkpoint; the marker records the inputs.
    assert (directory / "tokenizer.json").is_file()
    marker = json.loads((directory / MARKER).read_text())
    assert marker["report"]["artifact"]["digest"] == report.artifact.digest
    # Readable by the serving pods' user.
    assert all(p.stat().st_mode & 0o044 == 0o044 for p in directory.iterdir())


def test_weight_bytes_shrink_with_bits(
    artifacts: dict[str, tuple[Path, str, QuantizeReport]],
) -> None:
    w4 = artifacts["gptq"][2].artifact.weight_bytes
    w8 = artifacts["gptq-w8"][2].artifact.weight_bytes
    fp8 = artifacts["fp8-dynamic"][2].artifact.weight_bytes
    assert w4 < w8
    assert w4 < fp8


def test_inspect_gives_the_same_measurements(
    artifacts: dict[str, tuple[Path, str, QuantizeReport]], tmp_path: Path
) -> None:
    directory, _, quantized = artifacts["awq"]
    report_path = tmp_path / "inspect.json"
    assert main(["inspect", "--model", str(directory), "--report-path", str(report_path)]) == 0
    inspected = parse_report(report_path.read_text())
    assert isinstance(inspected, QuantizeReport)
    assert inspected.kind == "InspectReport"
    assert inspected.artifact.weight_bytes == quantized.artifact.weight_bytes
    assert inspected.artifact.digest == quantized.artifact.digest
    assert inspected.quantization == quantized.quantization
    assert inspected.architecture == quantized.architecture


def test_second_run_reuses_the_artifact_without_quantizing(
    artifacts: dict[str, tuple[Path, str, QuantizeReport]],
    tiny_llama: Path,
    calibration_file: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    directory, _, first = artifacts["awq"]
    before = {p.name: p.stat().st_mtime_ns for p in directory.iterdir()}
    # Any attempt to quantize or load the model would now fail to import.
    for module in ("llmcompressor", "transformers", "torch"):
        monkeypatch.setitem(sys.modules, module, None)
    rc, _, second = quantize(
        tiny_llama, directory, "awq", "--group-size", "32", calibration=calibration_file
    )
    assert rc == 0
    assert isinstance(second, QuantizeReport)
    assert second.reused
    assert second.model_copy(update={"reused": False}) == first
    assert {p.name: p.stat().st_mtime_ns for p in directory.iterdir()} == before


def test_other_inputs_never_overwrite_an_artifact(
    artifacts: dict[str, tuple[Path, str, QuantizeReport]],
    tiny_llama: Path,
    calibration_file: Path,
) -> None:
    directory, _, _ = artifacts["gptq"]
    rc, _, report = quantize(
        tiny_llama, directory, "gptq", "--group-size", "32", calibration=calibration_file
    )
    assert rc == 3
    assert isinstance(report, QuantizeError)
    assert report.reason == "OutputExists"
    assert "groupSize" in report.message
    assert (directory / MARKER).is_file()


def test_interrupted_run_leaves_no_artifact_and_is_cleaned_up(
    tiny_llama: Path, tmp_path: Path
) -> None:
    output = tmp_path / "out"
    # What a Job killed half-way through saving leaves behind: a staging directory only.
    stale = tmp_path / ".out.partial-killed"
    stale.mkdir()
    (stale / "model.safetensors").write_bytes(b"\x10\x00\x00")
    rc, _, report = quantize(tiny_llama, output, "fp8-dynamic")
    assert rc == 0
    assert isinstance(report, QuantizeReport)
    assert not stale.exists()
    assert sorted(p.name for p in tmp_path.iterdir() if p.is_dir()) == ["out"]


def test_corrupted_artifact_is_moved_aside_and_made_again(tiny_llama: Path, tmp_path: Path) -> None:
    output = tmp_path / "out"
    rc, _, first = quantize(tiny_llama, output, "fp8-dynamic")
    assert rc == 0
    # Someone replaced the weights with a different (bf16) file.
    shutil.copy(tiny_llama / "model.safetensors", output / "model.safetensors")
    rc, _, second = quantize(tiny_llama, output, "fp8-dynamic")
    assert rc == 0
    assert isinstance(first, QuantizeReport)
    assert isinstance(second, QuantizeReport)
    assert not second.reused
    assert second.artifact.digest == first.artifact.digest
    kept = [p for p in tmp_path.iterdir() if p.name.startswith("out.corrupt-")]
    assert len(kept) == 1
    assert (kept[0] / "model.safetensors").is_file()


@pytest.mark.parametrize(
    ("setup", "args", "reason", "rc", "words"),
    [
        ("none", ["--method", "awq", "--calibration", "/nonexistent/cal.jsonl"],
         "DatasetNotFound", 3, "spec.quantization.calibration"),
        ("none", ["--method", "gptq"], "DatasetNotFound", 3, "needs calibration data"),
        ("unknown-arch", ["--method", "fp8-dynamic"], "UnsupportedArchitecture", 3,
         "quantwise-unknown"),
        ("missing-dir", ["--method", "fp8-dynamic"], "ModelNotFound", 3, "spec.source.pvc.path"),
        ("empty-cal", ["--method", "awq", "--calibration", "CAL"], "DatasetEmpty", 3,
         "'text', 'messages'"),
    ],
)  # fmt: skip
def test_clear_failures(
    tiny_llama: Path,
    tmp_path: Path,
    setup: str,
    args: list[str],
    reason: str,
    rc: int,
    words: str,
) -> None:
    model = tiny_llama
    if setup == "unknown-arch":
        model = tmp_path / "odd"
        model.mkdir()
        config = json.loads((tiny_llama / "config.json").read_text())
        (model / "config.json").write_text(json.dumps(config | {"model_type": "quantwise-unknown"}))
        shutil.copy(tiny_llama / "tokenizer.json", model)
        shutil.copy(tiny_llama / "tokenizer_config.json", model)
    elif setup == "missing-dir":
        model = tmp_path / "no-such-model"
    cal = tmp_path / "empty.jsonl"
    cal.write_text('{"title": "no text field"}\n')
    args = [str(cal) if a == "CAL" else a for a in args]
    report_path = tmp_path / "report"
    code = main(
        ["quantize", "--model", str(model), "--output", str(tmp_path / "out"),
         "--report-path", str(report_path), *args]
    )  # fmt: skip
    report = parse_report(report_path.read_text())
    assert isinstance(report, QuantizeError), report
    assert (code, report.reason) == (rc, reason)
    assert words in report.message
    assert "\n" not in report.message
    assert not (tmp_path / "out").exists()


@pytest.fixture
def hub(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[FakeHub]:
    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub-cache"))
    with fake_hub() as server:
        monkeypatch.setenv("HF_ENDPOINT", server.url)
        yield server


@pytest.mark.parametrize(
    ("status", "code", "reason", "rc", "words"),
    [
        (403, "GatedRepo", "GatedModel", 3, "spec.source.huggingFace.tokenSecretRef"),
        (404, "RepoNotFound", "ModelNotFound", 3, "spec.source.huggingFace.repo"),
        (503, "", "QuantizationFailed", 1, "HfHubHTTPError"),
    ],
)
def test_hub_access_is_checked_before_any_download(
    hub: FakeHub,
    tmp_path: Path,
    status: int,
    code: str,
    reason: str,
    rc: int,
    words: str,
) -> None:
    """Against a local stand-in for huggingface.co answering as it does for gated/missing repos."""
    hub.refuse = (status, code)
    report_path = tmp_path / "report"
    exit_code = main(
        ["quantize", "--model", "meta-llama/Llama-3.1-8B-Instruct", "--method", "fp8-dynamic",
         "--output", str(tmp_path / "out"), "--report-path", str(report_path)]
    )  # fmt: skip
    report = parse_report(report_path.read_text())
    assert isinstance(report, QuantizeError)
    assert (exit_code, report.reason) == (rc, reason)
    assert words in report.message
    # The access check was made, and nothing was downloaded.
    assert "GET /api/models/meta-llama/Llama-3.1-8B-Instruct/auth-check" in hub.requests
    assert not [r for r in hub.requests if "/resolve/" in r]


def test_inspect_a_hub_repository_reads_headers_only(
    hub: FakeHub, artifacts: dict[str, tuple[Path, str, QuantizeReport]], tmp_path: Path
) -> None:
    """method: none on a Hugging Face source: config files downloaded, headers by range requests."""
    directory, _, quantized = artifacts["gptq"]
    hub.files = directory
    report_path = tmp_path / "report"
    code = main(["inspect", "--model", "org/tiny-gptq", "--report-path", str(report_path)])
    report = parse_report(report_path.read_text())
    assert code == 0, report
    assert isinstance(report, QuantizeReport)
    assert report.kind == "InspectReport"
    assert report.artifact.path == "hf://org/tiny-gptq@main"
    assert report.artifact.weight_bytes == quantized.artifact.weight_bytes
    assert report.artifact.digest == quantized.artifact.digest
    assert report.quantization == quantized.quantization
    weights = [r for r in hub.requests if "model.safetensors" in r and r.startswith("GET")]
    assert weights  # the header was fetched, and only a range of the file:
    size = (directory / "model.safetensors").stat().st_size
    assert size > 100_001  # the client asks for the first 100 kB


def test_quantize_a_gated_hub_model_with_its_token(
    hub: FakeHub, tiny_llama: Path, tmp_path: Path
) -> None:
    """The Job's path for a Hugging Face source: access check, download with HF_TOKEN, quantize."""
    hub.files, hub.token = tiny_llama, "hf_secret"
    output, report_path = tmp_path / "out", tmp_path / "report"
    env = {**os.environ, "HF_TOKEN": "hf_secret", "HF_ENDPOINT": hub.url}
    done = subprocess.run(
        [sys.executable, "-m", "quantwise.cli", "quantize", "--model", "org/tiny-llama",
         "--revision", "main", "--method", "fp8-dynamic", "--output", str(output),
         "--report-path", str(report_path)],
        capture_output=True, text=True, check=False, timeout=600, env=env,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    report = parse_report(report_path.read_text())
    assert isinstance(report, QuantizeReport)
    assert report.quantization.weight_bits == 8
    assert "GET /org/tiny-llama/resolve/main/model.safetensors" in hub.requests
    # The download is a stage of its own, counted in bytes of the weights (their headers read
    # first, by range requests).
    stages = [p for p in map(parse_line, done.stdout.splitlines()) if p is not None]
    downloading = next(p for p in stages if p.stage == "downloading")
    assert (downloading.step, downloading.steps) == (0, data_bytes(tiny_llama))
    # Without the token the same repository is gated, and the Job says what to do.
    env.pop("HF_TOKEN")
    done = subprocess.run(
        [sys.executable, "-m", "quantwise.cli", "quantize", "--model", "org/tiny-llama",
         "--method", "fp8-dynamic", "--output", str(tmp_path / "other"),
         "--report-path", str(report_path)],
        capture_output=True, text=True, check=False, timeout=600, env=env,
    )  # fmt: skip
    failure = parse_report(report_path.read_text())
    assert isinstance(failure, QuantizeError)
    assert (done.returncode, failure.reason) == (3, "GatedModel")


def test_unreachable_hub_is_a_retryable_failure(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{port}")
    report_path = tmp_path / "report"
    code = main(
        ["inspect", "--model", "Qwen/Qwen3-8B", "--report-path", str(report_path)]
    )  # fmt: skip
    report = parse_report(report_path.read_text())
    assert isinstance(report, QuantizeError)
    assert (code, report.reason) == (1, "NetworkError")


def test_console_script_prints_the_report(tiny_llama: Path, tmp_path: Path) -> None:
    """The image's entrypoint, as the Job runs it: stdout and the report file agree."""
    output = tmp_path / "out"
    report_path = tmp_path / "termination-log"
    done = subprocess.run(
        [sys.executable, "-m", "quantwise.cli", "quantize", "--model", str(tiny_llama),
         "--method", "fp8-dynamic", "--output", str(output), "--report-path", str(report_path)],
        capture_output=True, text=True, check=False, timeout=600,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip().splitlines()[-1] == report_path.read_text()
    assert "quantwise.jobs: published" in done.stderr
    report = parse_report(report_path.read_text())
    assert isinstance(report, QuantizeReport)


# What each of the conftest's runs asked quantwise quantize for.
REQUESTS = {
    "awq": dict(method="awq", bits=4, group_size=32, symmetric=False),
    "gptq": dict(method="gptq", bits=4, group_size=64, symmetric=True),
    "gptq-w8": dict(method="gptq", bits=8, group_size=-1, symmetric=True),
    "fp8-dynamic": dict(method="fp8-dynamic", bits=8, calibrated=False),
    "w8a8-int8": dict(method="w8a8-int8", bits=8),
    "fp8-kv": dict(method="fp8", bits=8, kv_cache_fp8=True),
}  # fmt: skip


@pytest.mark.parametrize("name", list(REQUESTS))
def test_the_recipe_declares_the_checkpoint_llm_compressor_writes(
    artifacts: dict[str, tuple[Path, str, QuantizeReport]], name: str
) -> None:
    """The kernel check before a Job reads the checkpoint off the recipe (checkpoint_of); it
    must be the quantization_config llm-compressor really writes for that recipe."""
    from quantwise.quantization.config import parse_quantization_config
    from quantwise.quantization.recipe import QuantizeRequest, checkpoint_of, recipe_for

    directory, _, _ = artifacts[name]
    written = parse_quantization_config(
        json.loads((directory / "config.json").read_text())["quantization_config"]
    )
    declared = checkpoint_of(recipe_for(QuantizeRequest(**REQUESTS[name])))  # type: ignore[arg-type]
    fields = ("scheme", "weight_bits", "weight_type", "activation_bits", "group_size",
              "symmetric", "format", "kv_cache_scheme")  # fmt: skip
    assert {f: getattr(declared, f) for f in fields} == {f: getattr(written, f) for f in fields}
