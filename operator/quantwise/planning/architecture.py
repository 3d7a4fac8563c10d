"""Model architecture from a Hugging Face ``config.json``: the numbers the planner needs.

Configs name the same things in many ways (``num_key_value_heads``, ``n_head_kv``,
``multi_query``, ``attn_config.kv_n_heads``...), nest them (``text_config`` of multimodal
models) and leave some implicit (``head_dim`` = hidden / heads). The rules here follow vLLM's
``ModelConfig`` (vllm/config/model.py: ``get_head_size``, ``get_total_num_kv_heads``,
``get_num_layers``, ``_get_and_verify_max_len``) so that the KV cache is sized as vLLM sizes it.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel

DEFAULT_MAX_LEN = 2048
"""vLLM's context length for a config that names none (_get_and_verify_max_len)."""


class ArchitectureError(ValueError):
    """A config.json that lacks, or contradicts, a field the planner needs."""


# Keys under which multimodal configs nest their language model (Gemma 3, LLaVA, Mistral 3,
# Qwen2-VL: text_config; InternVL: llm_config; DeepSeek-VL2: language_config).
_NESTED_TEXT_KEYS = ("text_config", "llm_config", "language_config")

# Families whose MLP is up/down without a gate (2 matrices instead of 3).
_NON_GATED_MLP = frozenset(
    {
        "falcon",
        "RefinedWeb",
        "RefinedWebModel",
        "gpt2",
        "gpt_bigcode",
        "gpt_neox",
        "gptj",
        "opt",
        "bloom",
        "mpt",
        "phi",
        "starcoder2",
    }
)
_FALCON = frozenset({"falcon", "RefinedWeb", "RefinedWebModel"})

_DTYPE_BYTES = {
    "float32": 4,
    "float": 4,
    "float16": 2,
    "half": 2,
    "bfloat16": 2,
}


class Architecture(BaseModel):
    """The shape of a transformer LLM, as far as memory and speed are concerned.

    It is also the ``architecture`` block of the Job report, so the field names on the wire are
    camelCase; optional fields are left out of the JSON when they do not apply.
    """

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, frozen=True)

    model_type: str
    num_hidden_layers: int = Field(ge=1)
    hidden_size: int = Field(ge=1)
    intermediate_size: int = Field(ge=1)
    num_attention_heads: int = Field(ge=1)
    num_key_value_heads: int = Field(ge=1)
    head_dim: int = Field(ge=1)
    vocab_size: int = Field(ge=1)
    max_position_embeddings: int = Field(ge=1)
    torch_dtype: str = "bfloat16"
    tie_word_embeddings: bool = False
    gated_mlp: bool = True
    qkv_bias: bool = False
    # Sliding-window attention: the window in tokens and how many layers use it.
    sliding_window: int | None = None
    num_sliding_window_layers: int = 0
    # Multi-head latent attention (DeepSeek-V2/V3, Kimi K2).
    kv_lora_rank: int | None = None
    q_lora_rank: int | None = None
    qk_rope_head_dim: int | None = None
    qk_nope_head_dim: int | None = None
    v_head_dim: int | None = None
    # DeepSeek sparse attention (V3.2): the indexer's key width, cached per token and layer.
    index_head_dim: int | None = None
    # Mixture of experts.
    num_experts: int | None = None
    num_experts_per_tok: int | None = None
    moe_intermediate_size: int | None = None
    shared_expert_intermediate_size: int | None = None
    num_dense_layers: int = 0

    def to_report(self) -> dict[str, Any]:
        """Return the architecture as it appears in a Job report (camelCase, no nulls)."""
        return self.model_dump(by_alias=True, exclude_none=True, exclude_defaults=False)

    # ----- derived facts -----

    @property
    def is_mla(self) -> bool:
        """True for multi-head latent attention (one compressed KV latent per token)."""
        return self.kv_lora_rank is not None

    @property
    def is_moe(self) -> bool:
        """True for a mixture-of-experts model."""
        return bool(self.num_experts)

    @property
    def dtype_bytes(self) -> int:
        """Bytes per element of the model's (unquantized) dtype as vLLM runs it.

        vLLM serves float32 checkpoints in 16 bits (vllm/config/model.py, ``_get_and_verify_dtype``
        downcasts float32 to bfloat16 or float16 by default), so this is 2 for every common case.
        """
        return 2

    @property
    def num_full_attention_layers(self) -> int:
        """Layers that keep the KV cache of the whole context."""
        return self.num_hidden_layers - self.num_sliding_window_layers

    @property
    def num_moe_layers(self) -> int:
        """Layers whose MLP is a mixture of experts."""
        return self.num_hidden_layers - self.num_dense_layers if self.is_moe else 0

    @property
    def mla_kv_width(self) -> int:
        """Elements per token in an MLA layer's cache: the latent plus the RoPE key."""
        if self.kv_lora_rank is None or self.qk_rope_head_dim is None:
            raise ArchitectureError("not an MLA model: kv_lora_rank and qk_rope_head_dim unset")
        return self.kv_lora_rank + self.qk_rope_head_dim


def _first(config: Mapping[str, Any], keys: Sequence[str]) -> Any:
    for key in keys:
        value = config.get(key)
        if value is not None:
            return value
    return None


def _require_int(config: Mapping[str, Any], keys: Sequence[str], what: str) -> int:
    value = _first(config, keys)
    if value is None:
        names = keys[0] + (f" (nor {', '.join(keys[1:])})" if len(keys) > 1 else "")
        raise ArchitectureError(f"config.json has no {names}: cannot tell the model's {what}")
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ArchitectureError(
            f"config.json field {keys[0]} is {value!r}: expected a positive int"
        )
    return value


def _opt_int(config: Mapping[str, Any], keys: Sequence[str]) -> int | None:
    value = _first(config, keys)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise ArchitectureError(f"config.json field {keys[0]} is {value!r}: expected an int")
    return value


def text_config(config: Mapping[str, Any]) -> dict[str, Any]:
    """Return the language-model part of a config: the nested ``text_config`` (and kin) if any.

    Keys missing from the nested part (``torch_dtype``, ``tie_word_embeddings``...) are taken
    from the top level, as transformers does for composite configs.
    """
    for key in _NESTED_TEXT_KEYS:
        nested = config.get(key)
        if isinstance(nested, Mapping) and nested:
            merged = {k: v for k, v in config.items() if k not in _NESTED_TEXT_KEYS}
            merged.update(nested)
            return merged
    return dict(config)


def _num_kv_heads(cfg: Mapping[str, Any], model_type: str, num_heads: int) -> int:
    # vllm/config/model.py get_total_num_kv_heads: Falcon's multi_query means one KV head
    # unless it uses the new decoder architecture.
    if model_type in _FALCON and not cfg.get("new_decoder_architecture") and cfg.get("multi_query"):
        return 1
    attn_config = cfg.get("attn_config")
    if isinstance(attn_config, Mapping) and attn_config.get("kv_n_heads") is not None:
        return int(attn_config["kv_n_heads"])  # MPT, DBRX
    value = _opt_int(
        cfg, ("n_head_kv", "num_kv_heads", "num_key_value_heads", "multi_query_group_num")
    )
    if value is not None:
        if value <= 0:
            raise ArchitectureError(f"config.json num_key_value_heads is {value}: must be >= 1")
        return value
    if cfg.get("multi_query") is True:  # GPT-BigCode
        return 1
    return num_heads


# RoPE types whose max_position_embeddings already holds the scaled length (vllm/config/model.py
# _get_and_verify_max_len, 0.33: "YaRN variants leave max_position_embeddings already scaled").
_ROPE_PRESCALED = frozenset(
    {
        "default",
        "su",
        "longrope",
        "llama3",
        "yarn",
        "deepseek_yarn",
        "deepseek_llama_scaling",
        "mrope",
    }
)


def _max_len(cfg: Mapping[str, Any], model_type: str = "") -> int:
    # vllm/config/model.py _get_and_verify_max_len: the smallest of the keys present, then
    # multiplied by the RoPE scaling factor except for types that already account for it and for
    # Gemma 3. vLLM before 0.33 derived YaRN's length as original x factor, which can be longer:
    # taking 0.33's never plans a context a current vLLM refuses to start with.
    keys = (
        "max_position_embeddings",
        "n_positions",
        "max_seq_len",
        "seq_length",
        "model_max_length",
        "max_sequence_length",
        "max_seq_length",
        "seq_len",
    )
    values = [
        v for k in keys if isinstance(v := cfg.get(k), int) and not isinstance(v, bool) and v > 0
    ]
    # With none of the keys vLLM assumes 2048 tokens and warns (Falcon's original configs).
    length = min(values) if values else DEFAULT_MAX_LEN
    rope = cfg.get("rope_scaling") or cfg.get("rope_parameters")
    if isinstance(rope, Mapping) and "gemma3" not in model_type:
        rope_type = rope.get("rope_type", rope.get("type"))
        factor = rope.get("factor")
        prescaled = rope_type is None or rope_type in _ROPE_PRESCALED
        if not prescaled and isinstance(factor, int | float) and factor > 0:
            length = int(length * factor)
    return length


def _sliding(cfg: Mapping[str, Any], model_type: str, num_layers: int) -> tuple[int | None, int]:
    window = cfg.get("sliding_window")
    if not isinstance(window, int) or isinstance(window, bool) or window <= 0:
        return None, 0
    if cfg.get("use_sliding_window") is False:
        return None, 0
    layer_types = cfg.get("layer_types")
    if isinstance(layer_types, list) and layer_types:
        if len(layer_types) != num_layers:
            raise ArchitectureError(
                f"config.json layer_types has {len(layer_types)} entries but num_hidden_layers "
                f"is {num_layers}"
            )
        count = sum(1 for t in layer_types if t == "sliding_attention")
        return (window, count) if count else (None, 0)
    if model_type == "gemma2":
        # Gemma 2 alternates: even layers slide (transformers modeling_gemma2, vLLM gemma2.py).
        return window, math.ceil(num_layers / 2)
    if model_type in ("gemma3", "gemma3_text", "cohere2"):
        pattern = _opt_int(cfg, ("sliding_window_pattern",)) or (6 if "gemma" in model_type else 4)
        count = sum(1 for i in range(num_layers) if (i + 1) % pattern != 0)
        return window, count
    if cfg.get("use_sliding_window") is True:
        # Qwen2 family: layers from max_window_layers on would slide, but vLLM refuses a model
        # that slides only some of them (vllm/model_executor/models/qwen2.py, 0.20 and 0.33).
        first = _opt_int(cfg, ("max_window_layers",)) or 0
        count = max(0, num_layers - first)
        if 0 < count < num_layers:
            raise ArchitectureError(
                f"config.json use_sliding_window with max_window_layers {first} < "
                f"num_hidden_layers {num_layers}: vLLM does not serve a model that slides only "
                "some layers; set use_sliding_window to false"
            )
        return (window, count) if count else (None, 0)
    # A sliding_window without layer_types: vLLM sets it as the cache's window, and every layer
    # slides (vllm/engine/arg_utils.py: "Only set CacheConfig.sliding_window if the model is all
    # sliding window"; 0.20 and 0.33): Mistral-7B-v0.1, Phi-3, Starcoder2.
    return window, num_layers


def architecture_from_config(config: Mapping[str, Any]) -> Architecture:
    """Return the Architecture described by a Hugging Face ``config.json`` (already parsed).

    Raises ArchitectureError naming the missing or contradictory field.
    """
    if not isinstance(config, Mapping):
        raise ArchitectureError("config.json must be a JSON object")
    cfg = text_config(config)
    model_type = str(cfg.get("model_type") or config.get("model_type") or "unknown")
    num_layers = _require_int(
        cfg, ("num_hidden_layers", "n_layer", "num_layers", "n_layers"), "number of layers"
    )
    hidden = _require_int(cfg, ("hidden_size", "n_embd", "d_model", "model_dim"), "hidden size")
    num_heads = _require_int(
        cfg, ("num_attention_heads", "n_head", "num_heads", "n_heads"), "attention head count"
    )
    vocab = _require_int(cfg, ("vocab_size", "padded_vocab_size"), "vocabulary size")
    num_kv = _num_kv_heads(cfg, model_type, num_heads)
    if num_heads % num_kv:
        raise ArchitectureError(
            f"config.json num_attention_heads {num_heads} is not a multiple of "
            f"num_key_value_heads {num_kv}"
        )
    head_dim, kv_lora_rank, qk_rope = _attention_width(cfg, hidden, num_heads)
    intermediate = _intermediate(cfg, model_type, hidden)
    moe = _experts(cfg, model_type, num_layers, intermediate)
    window, sliding_layers = _sliding(cfg, model_type, num_layers)
    dtype = str(_first(cfg, ("torch_dtype", "dtype")) or "bfloat16").removeprefix("torch.")
    if dtype not in _DTYPE_BYTES:
        raise ArchitectureError(
            f"config.json torch_dtype {dtype!r} is not a floating-point dtype vLLM serves"
        )
    tie = cfg.get("tie_word_embeddings")
    if tie is None:
        # transformers' PretrainedConfig ties them unless told otherwise (Gemma, Falcon omit it).
        tie = config.get("tie_word_embeddings", True)
    mla = kv_lora_rank is not None
    return Architecture(
        model_type=model_type,
        num_hidden_layers=num_layers,
        hidden_size=hidden,
        intermediate_size=intermediate,
        num_attention_heads=num_heads,
        num_key_value_heads=num_kv,
        head_dim=head_dim,
        vocab_size=vocab,
        max_position_embeddings=_max_len(cfg, model_type),
        torch_dtype=dtype,
        tie_word_embeddings=bool(tie),
        gated_mlp=model_type not in _NON_GATED_MLP,
        qkv_bias=bool(cfg.get("attention_bias") or model_type.startswith("qwen2")),
        sliding_window=window,
        num_sliding_window_layers=sliding_layers,
        kv_lora_rank=kv_lora_rank,
        q_lora_rank=_opt_int(cfg, ("q_lora_rank",)),
        qk_rope_head_dim=qk_rope if mla else None,
        qk_nope_head_dim=_opt_int(cfg, ("qk_nope_head_dim",)) if mla else None,
        v_head_dim=_opt_int(cfg, ("v_head_dim",)) if mla else None,
        # vllm/model_executor/models/deepseek_v2.py: a config with index_topk is V3.2 (sparse).
        index_head_dim=(_opt_int(cfg, ("index_head_dim",)) or 128) if "index_topk" in cfg else None,
        num_experts=moe.experts,
        num_experts_per_tok=moe.per_token,
        moe_intermediate_size=moe.intermediate,
        shared_expert_intermediate_size=moe.shared_intermediate,
        num_dense_layers=moe.dense_layers,
    )


def _attention_width(
    cfg: Mapping[str, Any], hidden: int, num_heads: int
) -> tuple[int, int | None, int | None]:
    """(head_dim, kv_lora_rank, qk_rope_head_dim): MLA's latent, else the attention head."""
    kv_lora_rank = _opt_int(cfg, ("kv_lora_rank",))
    qk_rope = _opt_int(cfg, ("qk_rope_head_dim",))
    if kv_lora_rank is not None and qk_rope is None:
        raise ArchitectureError(
            "config.json has kv_lora_rank (multi-head latent attention) but no qk_rope_head_dim"
        )
    if kv_lora_rank is not None and qk_rope is not None:
        # vLLM get_head_size for MLA: the latent plus the RoPE part, one "head" per token.
        return kv_lora_rank + qk_rope, kv_lora_rank, qk_rope
    explicit = _opt_int(cfg, ("head_dim", "kv_channels"))
    if explicit is not None:
        return explicit, None, qk_rope
    if hidden % num_heads:
        raise ArchitectureError(
            f"config.json has no head_dim and hidden_size {hidden} is not a multiple of "
            f"num_attention_heads {num_heads}"
        )
    return hidden // num_heads, None, qk_rope


def _intermediate(cfg: Mapping[str, Any], model_type: str, hidden: int) -> int:
    """The MLP's intermediate width."""
    intermediate = _opt_int(cfg, ("intermediate_size", "ffn_hidden_size", "n_inner", "ffn_dim"))
    if intermediate is not None:
        return intermediate
    if model_type in _NON_GATED_MLP:
        return 4 * hidden  # GPT-2 / Falcon convention: 4 x hidden.
    raise ArchitectureError(
        "config.json has no intermediate_size (nor ffn_hidden_size, n_inner): cannot size the MLP"
    )


@dataclass(frozen=True)
class _Experts:
    """A mixture of experts, as config.json describes it (experts None: a dense model)."""

    experts: int | None = None
    per_token: int | None = None
    intermediate: int | None = None
    shared_intermediate: int | None = None
    dense_layers: int = 0


def _experts(
    cfg: Mapping[str, Any], model_type: str, num_layers: int, intermediate: int
) -> _Experts:
    """The routed and shared experts and which layers have none (dense layers)."""
    num_experts = _opt_int(cfg, ("n_routed_experts", "num_local_experts", "num_experts"))
    if not num_experts or num_experts <= 1:
        return _Experts()
    per_token = _opt_int(cfg, ("num_experts_per_tok", "moe_topk", "top_k"))
    if per_token is None:
        raise ArchitectureError(
            "config.json describes a mixture of experts but has no num_experts_per_tok"
        )
    moe_inter = _opt_int(cfg, ("moe_intermediate_size", "expert_intermediate_size"))
    moe_inter = moe_inter or intermediate  # Mixtral: experts use intermediate_size.
    n_shared = _opt_int(cfg, ("n_shared_experts", "num_shared_experts")) or 0
    shared_size = _opt_int(cfg, ("shared_expert_intermediate_size",))
    if model_type.startswith("llama4"):
        shared_size = shared_size or intermediate  # Llama 4: one shared expert per MoE layer.
    shared = shared_size or (n_shared * moe_inter if n_shared else None)
    first_dense = _opt_int(cfg, ("first_k_dense_replace",)) or 0
    mlp_only = cfg.get("mlp_only_layers") or []
    freq = (
        _opt_int(cfg, ("moe_layer_freq", "decoder_sparse_step", "interleave_moe_layer_step")) or 1
    )
    moe_layers = [
        i
        for i in range(num_layers)
        if i >= first_dense and i not in mlp_only and (i - first_dense) % freq == 0
    ]
    return _Experts(num_experts, per_token, moe_inter, shared, num_layers - len(moe_layers))
