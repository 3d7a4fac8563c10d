"""Architecture from config.json: every spelling of the fields, nesting, and clear errors."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from test_weights import LLAMA_31_8B

from quantwise.planning.architecture import ArchitectureError, architecture_from_config

MODELS = Path(__file__).parents[2] / "examples" / "models"


def test_llama() -> None:
    a = architecture_from_config(LLAMA_31_8B)
    assert (
        a.num_hidden_layers,
        a.hidden_size,
        a.num_attention_heads,
        a.num_key_value_heads,
        a.head_dim,
    ) == (32, 4096, 32, 8, 128)
    assert a.max_position_embeddings == 131072  # llama3 RoPE scaling is already in the number.
    assert not a.is_mla and not a.is_moe and a.num_sliding_window_layers == 0


@pytest.mark.parametrize(
    ("overrides", "kv_heads"),
    [
        ({"num_key_value_heads": 4}, 4),
        ({"num_key_value_heads": None, "n_head_kv": 2}, 2),
        ({"num_key_value_heads": None, "num_kv_heads": 16}, 16),
        ({"num_key_value_heads": None, "multi_query_group_num": 2}, 2),  # ChatGLM
        ({"num_key_value_heads": None}, 32),  # Multi-head attention: as many as query heads.
        ({"num_key_value_heads": None, "attn_config": {"kv_n_heads": 8}}, 8),  # MPT, DBRX
    ],
)
def test_every_spelling_of_kv_heads(overrides: dict[str, Any], kv_heads: int) -> None:
    config = {k: v for k, v in {**LLAMA_31_8B, **overrides}.items() if v is not None}
    assert architecture_from_config(config).num_key_value_heads == kv_heads


def test_falcon_multi_query_means_one_kv_head() -> None:
    falcon = {
        "model_type": "falcon",
        "hidden_size": 4544,
        "n_head": 71,
        "n_layer": 32,
        "vocab_size": 65024,
        "multi_query": True,
        "new_decoder_architecture": False,
        "max_position_embeddings": 2048,
    }
    a = architecture_from_config(falcon)
    assert (a.num_key_value_heads, a.num_attention_heads, a.head_dim) == (1, 71, 64)
    assert a.intermediate_size == 4 * 4544 and not a.gated_mlp
    # Falcon 40B/180B's new decoder architecture uses num_kv_heads instead.
    big = {
        **falcon,
        "new_decoder_architecture": True,
        "num_kv_heads": 8,
        "n_head": 128,
        "hidden_size": 8192,
    }
    assert architecture_from_config(big).num_key_value_heads == 8


def test_head_dim_spellings() -> None:
    assert architecture_from_config({**LLAMA_31_8B, "head_dim": 256}).head_dim == 256
    assert architecture_from_config({**LLAMA_31_8B, "kv_channels": 64}).head_dim == 64
    assert architecture_from_config(LLAMA_31_8B).head_dim == 4096 // 32


def test_layer_and_size_spellings() -> None:
    gpt2 = {
        "model_type": "gpt2",
        "n_layer": 12,
        "n_embd": 768,
        "n_head": 12,
        "vocab_size": 50257,
        "n_positions": 1024,
    }
    a = architecture_from_config(gpt2)
    assert (
        a.num_hidden_layers,
        a.hidden_size,
        a.num_attention_heads,
        a.max_position_embeddings,
    ) == (12, 768, 12, 1024)
    assert a.intermediate_size == 3072


def test_nested_text_config_of_multimodal_models() -> None:
    config = {
        "model_type": "gemma3",
        "torch_dtype": "bfloat16",
        "vision_config": {"hidden_size": 1152, "num_hidden_layers": 27},
        "text_config": {
            "model_type": "gemma3_text",
            "hidden_size": 5376,
            "intermediate_size": 21504,
            "num_attention_heads": 32,
            "num_key_value_heads": 16,
            "head_dim": 128,
            "num_hidden_layers": 62,
            "vocab_size": 262208,
            "max_position_embeddings": 131072,
            "sliding_window": 1024,
            "sliding_window_pattern": 6,
        },
    }
    a = architecture_from_config(config)
    assert (a.model_type, a.num_hidden_layers, a.hidden_size, a.head_dim, a.torch_dtype) == (
        "gemma3_text",
        62,
        5376,
        128,
        "bfloat16",
    )
    # Every 6th layer is global: 62 layers -> 10 global, 52 sliding.
    assert (a.sliding_window, a.num_sliding_window_layers) == (1024, 52)


def test_sliding_window_rules() -> None:
    gemma2 = {
        "model_type": "gemma2",
        "hidden_size": 3584,
        "intermediate_size": 14336,
        "num_attention_heads": 16,
        "num_key_value_heads": 8,
        "head_dim": 256,
        "num_hidden_layers": 42,
        "vocab_size": 256000,
        "max_position_embeddings": 8192,
        "sliding_window": 4096,
    }
    assert architecture_from_config(gemma2).num_sliding_window_layers == 21
    layer_types = ["sliding_attention", "full_attention"] * 2
    explicit = {
        **LLAMA_31_8B,
        "num_hidden_layers": 4,
        "sliding_window": 128,
        "layer_types": layer_types,
    }
    assert architecture_from_config(explicit).num_sliding_window_layers == 2
    # Qwen2 ships sliding_window but disables it.
    qwen = {
        **LLAMA_31_8B,
        "model_type": "qwen2",
        "sliding_window": 131072,
        "use_sliding_window": False,
    }
    assert architecture_from_config(qwen).sliding_window is None
    # Without layer_types vLLM makes the window the cache's and every layer slides
    # (engine/arg_utils.py in the 0.20.0 and 0.33.0 wheels): Mistral v0.1.
    mistral = {**LLAMA_31_8B, "model_type": "mistral", "sliding_window": 4096}
    assert architecture_from_config(mistral).num_sliding_window_layers == 32
    # Qwen2 sliding only its upper layers: vLLM's qwen2.py refuses it.
    partial = {**qwen, "use_sliding_window": True, "sliding_window": 4096, "max_window_layers": 28}
    with pytest.raises(ArchitectureError, match="slides only some layers"):
        architecture_from_config(partial)
    every = {**partial, "max_window_layers": 0}
    assert architecture_from_config(every).num_sliding_window_layers == 32
    with pytest.raises(
        ArchitectureError, match="layer_types has 4 entries but num_hidden_layers is 32"
    ):
        architecture_from_config({**LLAMA_31_8B, "sliding_window": 128, "layer_types": layer_types})


def test_deepseek_mla_and_moe() -> None:
    v3 = {
        "model_type": "deepseek_v3",
        "hidden_size": 7168,
        "intermediate_size": 18432,
        "moe_intermediate_size": 2048,
        "num_attention_heads": 128,
        "num_key_value_heads": 128,
        "num_hidden_layers": 61,
        "vocab_size": 129280,
        "kv_lora_rank": 512,
        "q_lora_rank": 1536,
        "qk_rope_head_dim": 64,
        "qk_nope_head_dim": 128,
        "v_head_dim": 128,
        "n_routed_experts": 256,
        "n_shared_experts": 1,
        "num_experts_per_tok": 8,
        "first_k_dense_replace": 3,
        "moe_layer_freq": 1,
        "max_position_embeddings": 163840,
        "rope_scaling": {"type": "yarn", "factor": 40, "original_max_position_embeddings": 4096},
    }
    a = architecture_from_config(v3)
    assert a.is_mla and a.head_dim == 576 and a.mla_kv_width == 576
    assert a.is_moe and (a.num_experts, a.num_experts_per_tok, a.num_dense_layers) == (256, 8, 3)
    assert a.shared_expert_intermediate_size == 2048
    assert a.max_position_embeddings == 163840  # YaRN: max_position_embeddings is already scaled


@pytest.mark.parametrize(
    ("model_type", "rope", "max_positions", "expected"),
    [
        # Qwen3 with YaRN turned on: vLLM 0.33 keeps 40960 (older ones said 32768 x 4).
        ("qwen3", {"rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": 32768}, 40960, 40960),
        ("llama", {"rope_type": "linear", "factor": 2.0}, 4096, 8192),
        ("llama", {"rope_type": "dynamic", "factor": 4.0}, 4096, 16384),
        ("llama", {"rope_type": "llama3", "factor": 8.0, "original_max_position_embeddings": 8192}, 131072, 131072),
        ("gemma3_text", {"rope_type": "linear", "factor": 8.0}, 131072, 131072),  # Already scaled.
    ],
)  # fmt: skip
def test_max_len_follows_vllm_rope_scaling(
    model_type: str, rope: dict[str, Any], max_positions: int, expected: int
) -> None:
    config = {**LLAMA_31_8B, "model_type": model_type, "max_position_embeddings": max_positions}
    config["rope_scaling"] = rope
    assert architecture_from_config(config).max_position_embeddings == expected


def test_mixtral_experts_use_intermediate_size() -> None:
    mixtral = {
        **LLAMA_31_8B,
        "model_type": "mixtral",
        "num_local_experts": 8,
        "num_experts_per_tok": 2,
    }
    a = architecture_from_config(mixtral)
    assert (a.num_experts, a.moe_intermediate_size, a.num_dense_layers) == (8, 14336, 0)


def test_transformers_5_dtype_key() -> None:
    assert (
        architecture_from_config(
            {**{k: v for k, v in LLAMA_31_8B.items() if k != "torch_dtype"}, "dtype": "float16"}
        ).torch_dtype
        == "float16"
    )


@pytest.mark.parametrize(
    ("config", "message"),
    [
        (
            {k: v for k, v in LLAMA_31_8B.items() if k != "num_hidden_layers"},
            "no num_hidden_layers (nor n_layer, num_layers, n_layers)",
        ),
        ({k: v for k, v in LLAMA_31_8B.items() if k != "hidden_size"}, "no hidden_size"),
        ({k: v for k, v in LLAMA_31_8B.items() if k != "vocab_size"}, "no vocab_size"),
        (
            {k: v for k, v in LLAMA_31_8B.items() if k != "intermediate_size"},
            "no intermediate_size",
        ),
        ({**LLAMA_31_8B, "num_key_value_heads": 5}, "not a multiple of num_key_value_heads 5"),
        ({**LLAMA_31_8B, "num_hidden_layers": "32"}, "num_hidden_layers is '32'"),
        ({**LLAMA_31_8B, "kv_lora_rank": 512}, "kv_lora_rank"),
        ({**LLAMA_31_8B, "num_local_experts": 8}, "num_experts_per_tok"),
        ({**LLAMA_31_8B, "torch_dtype": "int8"}, "torch_dtype 'int8'"),
    ],
)
def test_errors_name_the_field(config: dict[str, Any], message: str) -> None:
    with pytest.raises(ArchitectureError, match=message.replace("(", r"\(").replace(")", r"\)")):
        architecture_from_config(config)


def test_report_form_is_camel_case_without_nulls() -> None:
    report = architecture_from_config(LLAMA_31_8B).to_report()
    assert report["numHiddenLayers"] == 32 and report["numKeyValueHeads"] == 8
    assert "kvLoraRank" not in report
    assert json.loads(json.dumps(report)) == report


def test_no_context_length_key_means_vllms_2048() -> None:
    config = {
        k: v for k, v in LLAMA_31_8B.items() if k not in ("max_position_embeddings", "rope_scaling")
    }
    assert architecture_from_config(config).max_position_embeddings == 2048


# Real configs in examples/models (their SOURCE.md says where each comes from):
# (folder, layers, hidden, heads, KV heads, head_dim, experts, MLA, sliding layers, parameters (B))
REAL = [
    ("meta-llama--Llama-3.1-8B-Instruct", 32, 4096, 32, 8, 128, None, False, 0, 8.03),
    ("meta-llama--Llama-3.1-70B-Instruct", 80, 8192, 64, 8, 128, None, False, 0, 70.6),
    ("mistralai--Mistral-7B-Instruct-v0.3", 32, 4096, 32, 8, 128, None, False, 0, 7.25),
    ("mistralai--Mixtral-8x7B-Instruct-v0.1", 32, 4096, 32, 8, 128, 8, False, 0, 46.7),
    ("Qwen--Qwen2.5-7B-Instruct", 28, 3584, 28, 4, 128, None, False, 0, 7.62),
    ("Qwen--Qwen3-8B", 36, 4096, 32, 8, 128, None, False, 0, 8.19),
    ("Qwen--Qwen3-30B-A3B", 48, 2048, 32, 4, 128, 128, False, 0, 30.5),
    ("google--gemma-2-9b-it", 42, 3584, 16, 8, 256, None, False, 21, 9.24),
    ("microsoft--Phi-3-mini-4k-instruct", 32, 3072, 32, 32, 96, None, False, 32, 3.82),
    ("deepseek-ai--DeepSeek-V2-Lite", 27, 2048, 16, 16, 576, 64, True, 0, 15.7),
    ("deepseek-ai--DeepSeek-V3", 61, 7168, 128, 128, 576, 256, True, 0, 671.0),
    ("tiiuae--falcon-7b-instruct", 32, 4544, 71, 1, 64, None, False, 0, 6.92),
    (
        "RedHatAI--Llama-4-Scout-17B-16E-Instruct-FP8-dynamic",
        48,
        5120,
        40,
        8,
        128,
        16,
        False,
        0,
        107.8,
    ),
]


@pytest.mark.parametrize("row", REAL, ids=[r[0] for r in REAL])
def test_real_configs(row: tuple[Any, ...]) -> None:
    from quantwise.planning.weights import parameter_count

    folder, layers, hidden, heads, kv, head_dim, experts, mla, sliding, params_b = row
    a = architecture_from_config(json.loads((MODELS / folder / "config.json").read_text()))
    assert (
        a.num_hidden_layers,
        a.hidden_size,
        a.num_attention_heads,
        a.num_key_value_heads,
        a.head_dim,
    ) == (layers, hidden, heads, kv, head_dim)
    assert (a.num_experts, a.is_mla, a.num_sliding_window_layers) == (experts, mla, sliding)
    # Parameter counts published with the models, within 1.5 % (vision towers are not counted).
    assert parameter_count(a) / 1e9 == pytest.approx(params_b, rel=0.015)
