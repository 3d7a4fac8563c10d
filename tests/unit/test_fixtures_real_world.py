"""Real quantization configs of public checkpoints (tests/fixtures/quantization/<producer>/).

Each fixture is a published config block, with its source recorded in the file. They must all
parse into the producer they come from, and give the verdict and kernel the matrix says on the
GPUs people serve on, across vLLM 0.11, 0.20 and 0.33.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from quantwise.planning.gpus import lookup_gpu
from quantwise.quantization.config import CheckpointQuantization, parse_quantization_config
from quantwise.quantization.validate import validate

FIXTURES = Path(__file__).parents[1] / "fixtures" / "quantization"
FILES = sorted(FIXTURES.glob("*/*.json"))
GPUS = ("T4", "A10G", "L4", "A100-80GB", "H100-80GB")
VERSIONS = ((0, 11), (0, 20), (0, 33))
# The parser's producer name for each fixture folder (AutoGPTQ-exported auto-round is gptq).
PRODUCER = {"awq": {"awq"}, "gptq": {"gptq"}, "gptqmodel": {"gptqmodel"}, "compressed-tensors": {"compressed-tensors"},
            "fp8": {"fp8"}, "bitsandbytes": {"bitsandbytes"}, "modelopt": {"modelopt"}}  # fmt: skip


def load(path: Path) -> CheckpointQuantization:
    data: dict[str, Any] = json.loads(path.read_text())
    qc = (
        data.get("quantization_config")
        or data.get("compression_config")
        or data.get("hf_quant_config")
    )
    return parse_quantization_config(qc, data.get("quantize_config"), data.get("quant_config"))


def fixture(name: str) -> CheckpointQuantization:
    return load(next(p for p in FILES if p.stem == name))


def test_every_producer_has_at_least_two_real_fixtures() -> None:
    counts = {folder: sum(1 for p in FILES if p.parent.name == folder) for folder in PRODUCER}
    assert all(n >= 2 for n in counts.values()), counts


@pytest.mark.parametrize("path", FILES, ids=lambda p: f"{p.parent.name}/{p.stem}")
def test_fixture_parses_into_its_producer_and_has_a_source(path: Path) -> None:
    data = json.loads(path.read_text())
    assert data["source"] and data["repo"]
    q = load(path)
    assert q.producer in PRODUCER[path.parent.name], q.producer
    assert q.scheme != "none"


@pytest.mark.parametrize("path", FILES, ids=lambda p: f"{p.parent.name}/{p.stem}")
def test_every_fixture_gets_a_verdict_everywhere(path: Path) -> None:
    q = load(path)
    for gpu in GPUS:
        for version in VERSIONS:
            verdict = validate(q, lookup_gpu(gpu), version)
            if verdict.verdict == "unsupported":
                assert verdict.kernel is None
                assert any(f.severity == "error" for f in verdict.findings)
            else:
                assert verdict.kernel


# (fixture, GPU, vLLM version) -> (verdict, kernel)
EXPECTED = [
    ("TheBloke--zephyr-7B-alpha-AWQ", "A100-80GB", (0, 33), "fast", "Marlin"),
    ("TheBloke--zephyr-7B-alpha-AWQ", "T4", (0, 11), "slow", "AWQ GEMM"),
    ("solidrust--Meta-Llama-3-8B-AWQ", "H100-80GB", (0, 20), "fast", "Machete"),  # zero points uint4
    ("solidrust--Meta-Llama-3-8B-AWQ", "H100-80GB", (0, 11), "fast", "Marlin"),
    ("TheBloke--Llama-2-13B-chat-GPTQ", "H100-80GB", (0, 33), "fast", "Machete"),
    ("TheBloke--Llama-2-13B-chat-GPTQ", "A10G", (0, 20), "fast", "Marlin"),
    ("TheBloke--Wizard-Vicuna-30B-Uncensored-GPTQ", "A100-80GB", (0, 20), "fast", "Marlin"),
    ("TheBloke--Wizard-Vicuna-30B-Uncensored-GPTQ", "A100-80GB", (0, 33), "unsupported", None),
    ("TheBloke--Genz-70b-GPTQ", "A100-80GB", (0, 11), "slow", "ExLlama"),  # 3-bit
    ("TheBloke--Genz-70b-GPTQ", "A100-80GB", (0, 33), "unsupported", None),
    ("QuantTrio--KAT-Dev-GPTQ-Int8", "L4", (0, 33), "fast", "Marlin"),
    ("moonshotai--Kimi-K2.5", "H100-80GB", (0, 33), "fast", "Marlin"),  # g32: not a Machete size
    ("nm-testing--Meta-Llama-3-8B-Instruct-W8A8-Static-Per-Tensor-Asym", "T4", (0, 33), "fast", "CUTLASS W8A8"),
    ("nm-testing--Meta-llama3-8b-Instruct-quant-FP8", "A100-80GB", (0, 33), "slow", "FP8 Marlin (weight-only)"),
    ("deepseek-ai--DeepSeek-V3", "H100-80GB", (0, 11), "fast", "FP8 tensor cores (CUTLASS)"),
    ("deepseek-ai--DeepSeek-V3", "T4", (0, 11), "unsupported", None),
    ("nvidia--Llama-3.1-70B-Instruct-FP8", "L4", (0, 33), "fast", "FP8 tensor cores (CUTLASS)"),
    ("nvidia--Qwen3-235B-A22B-NVFP4", "H100-80GB", (0, 33), "slow", "FP4 Marlin (weight-only)"),
    ("nvidia--Qwen3-235B-A22B-NVFP4", "H100-80GB", (0, 11), "slow", "FP4 Marlin (weight-only)"),  # modelopt.py: 8.0
    ("nvidia--Qwen3-235B-A22B-NVFP4", "T4", (0, 11), "unsupported", None),
    ("Hlias11--Storm3BStudent", "A10G", (0, 20), "slow", "bitsandbytes"),
    ("Hlias11--Storm3BStudent", "A10G", (0, 33), "unsupported", None),
]  # fmt: skip


@pytest.mark.parametrize(
    ("name", "gpu", "version", "verdict", "kernel"),
    EXPECTED,
    ids=[f"{e[0]}-{e[1]}-{e[2][1]}" for e in EXPECTED],
)
def test_verdicts_for_real_checkpoints(
    name: str, gpu: str, version: tuple[int, int], verdict: str, kernel: str | None
) -> None:
    result = validate(fixture(name), lookup_gpu(gpu), version)
    assert (result.verdict, result.kernel) == (verdict, kernel), result.findings


def test_mixed_precision_and_producer_details() -> None:
    assert fixture("nvidia--Qwen3.6-27B-NVFP4").mixed_precision
    assert fixture("ModelCloud--Meta-Llama-3.1-8B-Instruct-gptq-4bit").producer == "gptqmodel"
    assert (
        fixture("luchenyu--codestral-22b-v0.1").producer == "gptq"
    )  # AutoGPTQ writes checkpoint_format too
    assert fixture("amd--Llama-3.1-8B-Instruct-FP8-KV").activation_dynamic is False
