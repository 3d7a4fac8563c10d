"""Quantization configs of each producer normalise to one model; contradictions name both fields."""

from __future__ import annotations

from typing import Any

import pytest

from quantwise.quantization.config import QuantizationConfigError, parse_quantization_config

W4A16 = {"quant_method": "compressed-tensors", "format": "pack-quantized", "ignore": ["lm_head"],
         "config_groups": {"group_0": {"targets": ["Linear"], "input_activations": None,
                                       "weights": {"num_bits": 4, "type": "int", "symmetric": True, "strategy": "group", "group_size": 128}}}}  # fmt: skip


@pytest.mark.parametrize(
    ("qc", "expected"),
    [
        (None, "unquantized"),
        ({"quant_method": "awq", "bits": 4, "group_size": 128, "zero_point": True, "version": "gemm"}, "awq W4A16 g128 asym"),
        ({"quant_method": "awq", "w_bit": 4, "q_group_size": 64, "zero_point": False}, "awq W4A16 g64 sym"),
        ({"quant_method": "gptq", "bits": 8, "group_size": -1, "desc_act": False, "sym": True}, "gptq W8A16 per-channel sym"),
        ({"quant_method": "gptq", "bits": 4, "group_size": 128, "desc_act": True, "sym": True}, "gptq W4A16 g128 sym act-order static"),
        (W4A16, "wna16 W4A16 g128 sym"),
        ({"quant_method": "fp8", "activation_scheme": "dynamic", "weight_block_size": [128, 128]}, "w8a8-fp8 W8A8 block 128x128 sym"),
        ({"quant_method": "bitsandbytes", "load_in_4bit": True, "bnb_4bit_quant_type": "nf4"}, "bnb-4bit W4A16 g64 sym"),
        ({"quant_method": "modelopt", "quant_algo": "NVFP4", "group_size": 16}, "nvfp4 W4A4 g16 sym"),
    ],
)  # fmt: skip
def test_summaries(qc: dict[str, Any] | None, expected: str) -> None:
    assert parse_quantization_config(qc).summary() == expected


def test_gptqmodel_is_told_apart_from_autogptq() -> None:
    q = parse_quantization_config({"quant_method": "gptq", "bits": 4, "group_size": 128, "checkpoint_format": "gptq_v2",
                                   "meta": {"quantizer": ["gptqmodel:2.0.0"]}})  # fmt: skip
    assert (q.producer, q.checkpoint_format) == ("gptqmodel", "gptq_v2")


def test_separate_quantize_config_json() -> None:
    q = parse_quantization_config(
        None, {"bits": 4, "group_size": 32, "desc_act": False, "sym": True}
    )
    assert (q.producer, q.group_size) == ("gptq", 32)


def test_unknown_keys_are_kept() -> None:
    q = parse_quantization_config(
        {
            "quant_method": "awq",
            "bits": 4,
            "group_size": 128,
            "zero_point": True,
            "shiny_new_key": 1,
        }
    )
    assert q.unknown_keys == {"shiny_new_key": 1}


@pytest.mark.parametrize(
    ("qc", "quantize_config", "message"),
    [
        ({"quant_method": "awq", "bits": 4, "w_bit": 8}, None, "quantization_config.bits (4) contradicts quantization_config.w_bit (8)"),
        ({"quant_method": "gptq", "bits": 4, "group_size": 128}, {"bits": 8}, "quantization_config.bits (4) contradicts quantize_config.json bits (8)"),
        ({"quant_method": "bitsandbytes", "load_in_4bit": True, "load_in_8bit": True}, None, "load_in_4bit (true) contradicts"),
        ({**W4A16, "format": "float-quantized"}, None, "format (float-quantized) contradicts"),
        ({"quant_method": "fp8", "activation_scheme": "static", "weight_block_size": [128, 128]}, None, "weight_block_size contradicts"),
        ({"quant_method": "turbo"}, None, "quant_method 'turbo' is not one quantwise reads"),
    ],
)  # fmt: skip
def test_contradictions_name_both_fields(
    qc: dict[str, Any], quantize_config: dict[str, Any] | None, message: str
) -> None:
    with pytest.raises(QuantizationConfigError) as err:
        parse_quantization_config(qc, quantize_config)
    assert message in str(err.value)
