"""Verdicts of the support matrix: kernel, speed and findings per GPU and vLLM version."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from test_quantization_config import W4A16

from quantwise.cli import main
from quantwise.planning.architecture import architecture_from_config
from quantwise.planning.gpus import lookup_gpu
from quantwise.quantization.config import parse_quantization_config
from quantwise.quantization.matrix import TABLE
from quantwise.quantization.validate import marlin_tp_blocker, validate
from quantwise.vllm import version_of as vllm_version

ROOT = Path(__file__).parents[2]
AWQ = {"quant_method": "awq", "bits": 4, "group_size": 128, "zero_point": True, "version": "gemm"}
GPTQ = {"quant_method": "gptq", "bits": 4, "group_size": 128, "desc_act": False, "sym": True}
GPTQ_ACT = {**GPTQ, "desc_act": True}
GPTQ_ASYM = {**GPTQ, "sym": False}
FP8 = {"quant_method": "fp8", "activation_scheme": "dynamic"}
INT8 = {"quant_method": "compressed-tensors", "format": "int-quantized", "config_groups": {"g": {"weights": {"num_bits": 8, "type": "int", "strategy": "channel"}, "input_activations": {"num_bits": 8, "type": "int", "strategy": "token", "dynamic": True}}}}  # fmt: skip
CT_ACT_GROUP = json.loads(json.dumps(W4A16))
CT_ACT_GROUP["config_groups"]["group_0"]["weights"]["actorder"] = "group"
BNB = {"quant_method": "bitsandbytes", "load_in_4bit": True, "bnb_4bit_quant_type": "nf4"}


def ct_wna16(**weights: Any) -> dict[str, Any]:
    """A compressed-tensors W4A16 config with some weight arguments changed."""
    qc = json.loads(json.dumps(W4A16))
    qc["config_groups"]["group_0"]["weights"].update(weights)
    return qc


W3A16 = ct_wna16(num_bits=3)
W8A16_ASYM = ct_wna16(num_bits=8, symmetric=False)
W4A8 = {"quant_method": "compressed-tensors", "format": "int-quantized", "config_groups": {"g": {"weights": {"num_bits": 4, "type": "int", "symmetric": True, "strategy": "group", "group_size": 128}, "input_activations": {"num_bits": 8, "type": "float", "strategy": "token", "dynamic": True, "symmetric": True}}}}  # fmt: skip
W4A8_G64 = json.loads(json.dumps(W4A8))
W4A8_G64["config_groups"]["g"]["weights"]["group_size"] = 64

# (config, GPU, vLLM) -> (verdict, kernel)
CASES: list[tuple[str, dict[str, Any], str, str, str, str | None]] = [
    ("awq", AWQ, "A100-80GB", "0.33", "fast", "Marlin"),
    ("awq", AWQ, "H100-80GB", "0.11", "fast", "Marlin"),
    ("awq", AWQ, "T4", "0.11", "slow", "AWQ GEMM"),
    ("awq", AWQ, "T4", "0.33", "fast", "Marlin"),  # Marlin runs on Turing from 0.20.
    # Each row below was checked against the vLLM 0.11.0 / 0.20.0 / 0.33.0 wheels' sources.
    ("awq 8-bit", {**AWQ, "bits": 8}, "A100-80GB", "0.11", "unsupported", None),
    ("awq", AWQ, "H100-80GB", "0.20", "fast", "Machete"),  # The picker, zero points uint4.
    ("awq no zero point", {**AWQ, "zero_point": False}, "A100-80GB", "0.33", "slow", "AWQ GEMM"),
    ("awq 8-bit", {**AWQ, "bits": 8}, "A100-80GB", "0.33", "unsupported", None),
    ("awq", AWQ, "A10G", "0.20", "fast", "Marlin"),
    ("gptq", GPTQ, "H100-80GB", "0.33", "fast", "Machete"),
    ("gptq", GPTQ, "L4", "0.20", "fast", "Marlin"),
    ("gptq", GPTQ, "T4", "0.11", "slow", "ExLlama"),
    ("gptq", GPTQ, "T4", "0.20", "fast", "Marlin"),
    ("gptq", GPTQ, "T4", "0.33", "fast", "Marlin"),
    ("gptq 3-bit", {**GPTQ, "bits": 3}, "T4", "0.33", "unsupported", None),
    ("gptq act-order", GPTQ_ACT, "A100-80GB", "0.20", "fast", "Marlin"),
    ("gptq act-order", GPTQ_ACT, "A100-80GB", "0.33", "unsupported", None),
    ("gptq asym", GPTQ_ASYM, "A100-80GB", "0.11", "slow", "ExLlama"),
    ("gptq asym", GPTQ_ASYM, "A100-80GB", "0.33", "unsupported", None),
    ("w4a16", W4A16, "H100-80GB", "0.33", "fast", "Machete"),
    ("w4a16", W4A16, "A100-80GB", "0.33", "fast", "Marlin"),
    ("w4a16", W4A16, "T4", "0.33", "fast", "Marlin"),  # The scheme needs 7.5 from 0.20.
    ("w4a16", W4A16, "T4", "0.11", "unsupported", None),  # 8.0 in 0.11.
    ("w4a16", W4A16, "H100-80GB", "0.11", "fast", "Machete"),
    ("w3a16", W3A16, "A100-80GB", "0.20", "unsupported", None),
    ("w3a16", W3A16, "A100-80GB", "0.33", "slow", "Humming"),
    ("w8a16 asym", W8A16_ASYM, "A100-80GB", "0.20", "unsupported", None),  # Marlin zp: uint4.
    ("w8a16 asym", W8A16_ASYM, "H100-80GB", "0.20", "fast", "Machete"),
    ("w8a16 asym", W8A16_ASYM, "A100-80GB", "0.33", "slow", "Humming"),
    ("w4a8", W4A8, "H100-80GB", "0.11", "fast", "CUTLASS W4A8"),
    ("w4a8 g64", W4A8_G64, "H100-80GB", "0.33", "unsupported", None),
    ("w4a16 actorder group", CT_ACT_GROUP, "A100-80GB", "0.20", "fast", "Marlin"),
    ("w4a16 actorder group", CT_ACT_GROUP, "A100-80GB", "0.33", "unsupported", None),
    ("int8", INT8, "T4", "0.33", "fast", "CUTLASS W8A8"),
    ("fp8", FP8, "L4", "0.33", "fast", "FP8 tensor cores (CUTLASS)"),
    ("fp8", FP8, "H100-80GB", "0.11", "fast", "FP8 tensor cores (CUTLASS)"),
    ("fp8", FP8, "A100-80GB", "0.33", "slow", "FP8 Marlin (weight-only)"),
    ("fp8", FP8, "T4", "0.11", "unsupported", None),
    ("fp8", FP8, "T4", "0.33", "slow", "FP8 Marlin (weight-only)"),
    ("bnb", BNB, "A10G", "0.20", "slow", "bitsandbytes"),
    ("bnb", BNB, "A10G", "0.28", "unsupported", None),  # A plugin from 0.28.
]


@pytest.mark.parametrize(
    ("qc", "gpu", "version", "verdict", "kernel"),
    [c[1:] for c in CASES],
    ids=[f"{c[0]}-{c[2]}-{c[3]}" for c in CASES],
)
def test_verdicts(
    qc: dict[str, Any], gpu: str, version: str, verdict: str, kernel: str | None
) -> None:
    result = validate(parse_quantization_config(qc), lookup_gpu(gpu), vllm_version(None, version))
    assert (result.verdict, result.kernel) == (verdict, kernel), result.findings
    if verdict == "unsupported":
        assert any(f.severity == "error" for f in result.findings)
    if verdict == "slow":
        assert any(f.severity == "warning" for f in result.findings)


def test_findings_name_the_field_and_the_fix() -> None:
    result = validate(parse_quantization_config(GPTQ_ACT), lookup_gpu("A100-80GB"), (0, 33))
    assert any(
        f.field == "quantization_config.desc_act" and "grouped quantization" in f.message
        for f in result.findings
    )
    bnb = validate(parse_quantization_config(BNB), lookup_gpu("A10G"), (0, 33))
    assert bnb.findings[0].field == "quantization_config.quant_method"
    assert "no longer loads bitsandbytes" in bnb.findings[0].message  # No plugin replaces it.
    assert "older vLLM" in bnb.findings[0].message
    sym_awq = validate(parse_quantization_config({**AWQ, "zero_point": False}), lookup_gpu("A100-80GB"), (0, 33))  # fmt: skip
    assert any(
        f.field == "quantization_config.zero_point" and f.severity == "warning"
        for f in sym_awq.findings
    )
    humming = validate(parse_quantization_config(W3A16), lookup_gpu("L4"), (0, 33))
    assert any("Humming" in f.message and "4-bit" in f.message for f in humming.findings)
    t4 = validate(parse_quantization_config(AWQ), lookup_gpu("T4"), (0, 11))
    assert any("compute capability >= 8.0; T4 has 7.5" in f.message for f in t4.findings)
    # A Hopper-only kernel is no advice for a T4, unless nothing else could load the checkpoint.
    assert not any("Machete" in f.message for f in t4.findings)
    w4a8 = validate(parse_quantization_config(W4A8), lookup_gpu("A100-80GB"), (0, 33))
    assert w4a8.verdict == "unsupported"
    assert any("CUTLASS W4A8 needs compute capability >= 9.0" in f.message for f in w4a8.findings)


def test_vllm_version_from_the_image_tag_with_override() -> None:
    assert vllm_version("vllm/vllm-openai:v0.20.1") == (0, 20)
    assert vllm_version("vllm/vllm-openai:latest") == (0, 33)
    assert vllm_version("vllm/vllm-openai:v0.20.1", "0.11") == (0, 11)
    assert vllm_version(None) == (0, 33)


def test_every_rule_cites_its_source() -> None:
    assert all(rule.source for rule in TABLE)


def test_marlin_shapes_per_tp() -> None:
    arch = architecture_from_config({"model_type": "qwen2", "hidden_size": 3584, "intermediate_size": 18944, "num_attention_heads": 28,
                                     "num_key_value_heads": 4, "num_hidden_layers": 28, "vocab_size": 152064, "max_position_embeddings": 32768})  # fmt: skip
    q = parse_quantization_config(GPTQ)
    assert marlin_tp_blocker(arch, q, 4) is None
    assert "not a multiple of 128" in str(marlin_tp_blocker(arch, q, 8))
    # vLLM 0.33 pads tiles: 18944 / 8 = 2368 loads, but a 128-group split across ranks does not.
    assert marlin_tp_blocker(arch, q, 8, pads_tiles=True) is not None
    assert "split across tensor-parallel ranks" in str(
        marlin_tp_blocker(arch, q, 8, pads_tiles=True)
    )
    g64 = parse_quantization_config({**GPTQ, "group_size": 64})
    assert marlin_tp_blocker(arch, g64, 8, pads_tiles=True) is None
    assert marlin_tp_blocker(arch, g64, 8) is not None
    verdict = validate(q, lookup_gpu("A100-80GB"), (0, 33), arch)
    assert verdict.marlin_shapes and verdict.marlin_pads_tiles
    assert verdict.tp_blocker(arch, q, 8) is not None and verdict.tp_blocker(arch, q, 4) is None


def test_cli_validate_awq_json_and_exit_codes(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    model = ROOT / "examples" / "models" / "hugging-quants--Meta-Llama-3.1-8B-Instruct-AWQ-INT4"
    assert main(["validate", str(model), "--gpu", "H100-80GB", "-o", "json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert (data["verdict"], data["kernel"]) == ("fast", "Machete")
    assert main(["validate", str(model), "--gpu", "A100-80GB", "-o", "json"]) == 0
    assert json.loads(capsys.readouterr().out)["kernel"] == "Marlin"
    assert main(["validate", str(model / "config.json"), "--gpu", "T4", "--vllm", "0.11"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("SLOW:") and "AWQ GEMM" in out and "T4 has 7.5" in out
    bare = tmp_path / "qc.json"
    bare.write_text(json.dumps(GPTQ_ACT))
    assert main(["validate", str(bare), "--gpu", "A100-80GB", "--vllm", "0.33"]) == 1
    assert "UNSUPPORTED" in capsys.readouterr().out
