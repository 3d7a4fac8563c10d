"""Read any producer's quantization config into one normalised model.

Producers spell the same facts differently: AutoAWQ says ``w_bit`` / ``q_group_size`` /
``zero_point``, AutoGPTQ ``bits`` / ``group_size`` / ``sym`` / ``desc_act`` (sometimes in a
separate ``quantize_config.json``), compressed-tensors nests them in ``config_groups`` with
``num_bits`` / ``strategy`` / ``actorder``, ModelOpt names an algorithm (``quant_algo: NVFP4``).
Each parser here maps its producer onto :class:`CheckpointQuantization`. Keys a parser does not
know are kept in ``unknown_keys`` and reported, never dropped; a config that contradicts itself
raises :class:`QuantizationConfigError` naming both fields.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel

from quantwise.planning.weights import FLOAT32_BYTES, UNQUANTIZED, WeightFormat, WeightLayout

Producer = Literal[
    "none",
    "awq",
    "gptq",
    "gptqmodel",
    "compressed-tensors",
    "fp8",
    "fbgemm_fp8",
    "bitsandbytes",
    "modelopt",
    "gguf",
]
Scheme = Literal[
    "none",
    "awq",  # W4A16 in AWQ's packing (qweight/qzeros/scales)
    "gptq",  # W4A16 / W8A16 in GPTQ's packing
    "wna16",  # compressed-tensors weight-only integer (pack-quantized)
    "w8a8-int8",  # INT8 weights and activations
    "w8a8-fp8",  # FP8 weights and activations
    "fp8-weight-only",  # FP8 weights, 16-bit activations
    "w4a8",  # 4-bit weights, 8-bit activations
    "nvfp4",  # FP4 weights (and activations) with FP8 block scales
    "bnb-4bit",
    "bnb-8bit",
    "gguf",
]
ActOrder = Literal["none", "static", "group", "weight", "dynamic"]


class QuantizationConfigError(ValueError):
    """A quantization config that cannot be read or contradicts itself."""


class CheckpointQuantization(BaseModel):
    """How a checkpoint is quantized, whoever produced it.

    ``group_size``: -1 for one scale per output channel, None for one per tensor (or a block
    layout given by ``block_size``), else the number of input elements per group.
    """

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, frozen=True)

    producer: Producer
    scheme: Scheme
    quant_method: str = Field(description="quant_method as the checkpoint names it")
    weight_bits: int = 16
    weight_type: Literal["int", "float", "nf4", "fp4"] = "float"
    activation_bits: int = 16
    activation_type: Literal["int", "float"] | None = None
    activation_dynamic: bool | None = None
    group_size: int | None = None
    block_size: tuple[int, int] | None = None
    symmetric: bool = True
    act_order: ActOrder = "none"
    format: str | None = None
    checkpoint_format: str | None = None
    ignore: tuple[str, ...] = ()
    kv_cache_scheme: str | None = None
    lm_head_quantized: bool = False
    mixed_precision: bool = False
    unknown_keys: dict[str, Any] = Field(default_factory=dict)

    @property
    def weight_only(self) -> bool:
        """True when activations stay in 16 bits."""
        return self.activation_bits >= 16

    @property
    def desc_act(self) -> bool:
        """True when weights are reordered by activation (GPTQ's desc_act, act-order)."""
        return self.act_order != "none"

    def summary(self) -> str:
        """One line for humans, e.g. ``awq W4A16 g128 asym``."""
        if self.scheme == "none":
            return "unquantized"
        parts = [self.scheme, f"W{self.weight_bits}A{self.activation_bits}"]
        if self.group_size is not None:
            parts.append("per-channel" if self.group_size == -1 else f"g{self.group_size}")
        if self.block_size is not None:
            parts.append(f"block {self.block_size[0]}x{self.block_size[1]}")
        parts.append("sym" if self.symmetric else "asym")
        if self.desc_act:
            parts.append(f"act-order {self.act_order}")
        return " ".join(parts)


NONE = CheckpointQuantization(producer="none", scheme="none", quant_method="none")


def _int(qc: Mapping[str, Any], field: str, *names: str, default: int | None = None) -> int | None:
    """The first of ``names`` present; raise when two are present and disagree."""
    found = [(n, qc[n]) for n in names if qc.get(n) is not None]
    for name, value in found:
        if isinstance(value, bool) or not isinstance(value, int):
            raise QuantizationConfigError(f"{field}.{name} is {value!r}: expected an integer")
    if len({v for _, v in found}) > 1:
        (a, va), (b, vb) = found[0], next(x for x in found if x[1] != found[0][1])
        raise QuantizationConfigError(
            f"{field}.{a} ({va}) contradicts {field}.{b} ({vb}): they must agree"
        )
    return int(found[0][1]) if found else default


def _unknown(qc: Mapping[str, Any], known: frozenset[str]) -> dict[str, Any]:
    return {k: v for k, v in qc.items() if k not in known}


def _group(value: int | None) -> int | None:
    if value is None:
        return None
    return -1 if value in (-1, 0) else value


# ----- AutoAWQ and transformers' AwqConfig -----

_AWQ_KEYS = frozenset(
    {
        "quant_method", "bits", "w_bit", "group_size", "q_group_size", "zero_point", "version",
        "modules_to_not_convert", "backend", "do_fuse", "fuse_max_seq_len", "modules_to_fuse",
        "exllama_config",
    }
)  # fmt: skip


def parse_awq(qc: Mapping[str, Any], field: str = "quantization_config") -> CheckpointQuantization:
    """AutoAWQ (``w_bit``, ``q_group_size``, ``zero_point``, ``version``) or AwqConfig."""
    bits = _int(qc, field, "bits", "w_bit", default=4)
    group = _int(qc, field, "group_size", "q_group_size", default=128)
    version = str(qc.get("version", "gemm")).lower()
    return CheckpointQuantization(
        producer="awq",
        scheme="awq",
        quant_method="awq",
        weight_bits=bits or 4,
        weight_type="int",
        group_size=_group(group),
        symmetric=not bool(qc.get("zero_point", True)),
        format=version,
        checkpoint_format=version,
        ignore=tuple(qc.get("modules_to_not_convert") or ()),
        unknown_keys=_unknown(qc, _AWQ_KEYS),
    )


# ----- AutoGPTQ and GPTQModel -----

_GPTQ_KEYS = frozenset(
    {
        "quant_method", "bits", "group_size", "desc_act", "sym", "true_sequential", "damp_percent",
        "static_groups", "model_name_or_path", "model_file_base_name", "is_marlin_format",
        "checkpoint_format", "lm_head", "dynamic", "meta", "damp_auto_increment", "pack_dtype",
        "tokenizer", "use_exllama", "exllama_config", "use_cuda_fp16", "cache_block_outputs",
        "modules_in_block_to_quantize", "module_name_preceding_first_block", "batch_size",
        "pad_token_id", "max_input_length", "dataset", "backend", "block_name_to_quantize",
        "model_seqlen", "quantizer", "mse", "v2", "v2_alpha", "act_group_aware", "format",
        "hyb_act", "adapter", "rotation", "mock_quantization",
    }
)  # fmt: skip


def parse_gptq(
    qc: Mapping[str, Any] | None,
    quantize_config: Mapping[str, Any] | None = None,
) -> CheckpointQuantization:
    """AutoGPTQ or GPTQModel, from config.json's block and/or a separate quantize_config.json.

    When both are present they must agree on bits, group size, act-order and symmetry.
    """
    if qc is None and quantize_config is None:
        raise QuantizationConfigError(
            "no GPTQ config: neither quantization_config nor quantize_config.json"
        )
    merged: dict[str, Any] = dict(quantize_config or {})
    if qc and quantize_config:
        for key in ("bits", "group_size", "desc_act", "sym"):
            if key in qc and key in quantize_config and qc[key] != quantize_config[key]:
                raise QuantizationConfigError(
                    f"config.json quantization_config.{key} ({qc[key]!r}) contradicts "
                    f"quantize_config.json {key} ({quantize_config[key]!r})"
                )
    merged.update(qc or {})
    field = "quantization_config" if qc else "quantize_config.json"
    bits = _int(merged, field, "bits", default=4) or 4
    group = _group(_int(merged, field, "group_size", default=-1))
    meta = merged.get("meta")
    quantizers = meta.get("quantizer") if isinstance(meta, Mapping) else None
    if isinstance(quantizers, str):
        quantizers = [quantizers]  # Older GPTQModel releases write a single string.
    # GPTQModel signs its configs in meta.quantizer; AutoGPTQ 0.7 also writes checkpoint_format,
    # so that key alone says nothing. gptq_v2 and dynamic rules are GPTQModel's own.
    is_gptqmodel = bool(
        (quantizers and any("gptqmodel" in str(q).lower() for q in quantizers))
        or merged.get("checkpoint_format") == "gptq_v2"
        or merged.get("dynamic")
    )
    if merged.get("is_marlin_format") and merged.get("checkpoint_format") not in (None, "marlin"):
        raise QuantizationConfigError(
            f"{field}.is_marlin_format (true) contradicts {field}.checkpoint_format "
            f"({merged['checkpoint_format']!r})"
        )
    checkpoint_format = merged.get("checkpoint_format") or (
        "marlin" if merged.get("is_marlin_format") else "gptq"
    )
    return CheckpointQuantization(
        producer="gptqmodel" if is_gptqmodel else "gptq",
        scheme="gptq",
        quant_method="gptq",
        weight_bits=bits,
        weight_type="int",
        group_size=group,
        symmetric=bool(merged.get("sym", True)),
        act_order="static" if merged.get("desc_act") else "none",
        format=str(checkpoint_format),
        checkpoint_format=str(checkpoint_format),
        lm_head_quantized=bool(merged.get("lm_head", False)),
        mixed_precision=bool(merged.get("dynamic")),
        unknown_keys=_unknown(merged, _GPTQ_KEYS),
    )


# ----- compressed-tensors (llm-compressor) -----

_CT_KEYS = frozenset(
    {
        "quant_method", "format", "config_groups", "ignore", "kv_cache_scheme",
        "quantization_status", "global_compression_ratio", "sparsity_config", "version",
        "transform_config", "provider", "quantization_config",
    }
)  # fmt: skip
_CT_ARGS_KEYS = frozenset(
    {
        "num_bits", "type", "symmetric", "strategy", "group_size", "block_structure", "dynamic",
        "actorder", "observer", "observer_kwargs", "scale_dtype", "zp_dtype",
    }
)  # fmt: skip


def _ct_args(args: Mapping[str, Any], field: str) -> dict[str, Any]:
    if not isinstance(args, Mapping):
        raise QuantizationConfigError(f"{field} is {args!r}: expected an object")
    bits = _int(args, field, "num_bits")
    if bits is None:
        raise QuantizationConfigError(f"{field} has no num_bits")
    strategy = args.get("strategy")
    group = args.get("group_size")
    if strategy == "group" and not group:
        raise QuantizationConfigError(
            f"{field}.strategy is group but {field}.group_size is not set"
        )
    if group and strategy not in (None, "group", "tensor_group"):
        raise QuantizationConfigError(
            f"{field}.group_size ({group}) contradicts {field}.strategy ({strategy!r}): a "
            "group size needs strategy group"
        )
    return {
        "bits": bits,
        "type": str(args.get("type", "int")),
        "symmetric": bool(args.get("symmetric", True)),
        "strategy": strategy,
        "group_size": group,
        "block": args.get("block_structure"),
        "dynamic": args.get("dynamic"),
        "actorder": args.get("actorder"),
        "unknown": _unknown(args, _CT_ARGS_KEYS),
    }


# compressed-tensors formats and the weight type each stores (the others: any type).
_CT_FORMAT_TYPES = {"pack-quantized": "int", "float-quantized": "float", "int-quantized": "int"}


def _check_ct_format(fmt: Any, weight_type: str, field: str) -> None:
    """Refuse a format that contradicts the weights' type (packing is for integer weights)."""
    wanted = _CT_FORMAT_TYPES.get(str(fmt))
    if wanted is not None and weight_type != wanted:
        raise QuantizationConfigError(
            f"quantization_config.format ({fmt}) contradicts {field}.weights.type "
            f"({weight_type!r}): {fmt} holds {wanted} weights"
        )


def _ct_scheme(fmt: Any, w: Mapping[str, Any], a: Mapping[str, Any] | None) -> Scheme:
    """The normalised scheme of compressed-tensors weights ``w`` and activations ``a``."""
    if fmt == "nvfp4-pack-quantized" or (w["type"] == "float" and w["bits"] == 4):
        return "nvfp4"
    if a is None or a["bits"] >= 16:
        return "wna16" if w["type"] == "int" else "fp8-weight-only"
    if w["type"] == "float" and a["type"] == "float":
        return "w8a8-fp8"
    if w["bits"] == 4 and a["bits"] == 8:
        return "w4a8"
    return "w8a8-int8"


def parse_compressed_tensors(qc: Mapping[str, Any]) -> CheckpointQuantization:
    """llm-compressor's compressed-tensors: ``config_groups`` of weights / input_activations."""
    groups = qc.get("config_groups")
    if not isinstance(groups, Mapping) or not groups:
        raise QuantizationConfigError("quantization_config.config_groups is missing or empty")
    schemes = []
    for name, group in groups.items():
        field = f"quantization_config.config_groups.{name}"
        if not isinstance(group, Mapping) or not group.get("weights"):
            raise QuantizationConfigError(f"{field}.weights is missing")
        w = _ct_args(group["weights"], f"{field}.weights")
        a = (
            _ct_args(group["input_activations"], f"{field}.input_activations")
            if group.get("input_activations")
            else None
        )
        schemes.append((field, w, a))
    field, w, a = schemes[0]
    fmt = qc.get("format")
    _check_ct_format(fmt, w["type"], field)
    scheme = _ct_scheme(fmt, w, a)
    strategy = w["strategy"]
    group_size = (
        int(w["group_size"])
        if strategy in ("group", "tensor_group") or w["group_size"]
        else (-1 if strategy == "channel" else None)
    )
    block = w["block"]
    actorder = w["actorder"]
    act_order: ActOrder = "none"
    if actorder in (True, "group", "weight", "static", "dynamic"):
        act_order = "group" if actorder is True else actorder
    kv = qc.get("kv_cache_scheme")
    kv_scheme = None
    if isinstance(kv, Mapping):
        kv_scheme = f"{kv.get('type', 'float')}{kv.get('num_bits', 8)}"
    unknown = _unknown(qc, _CT_KEYS)
    if w["unknown"]:
        unknown[f"{field}.weights"] = w["unknown"]
    return CheckpointQuantization(
        producer="compressed-tensors",
        scheme=scheme,
        quant_method="compressed-tensors",
        weight_bits=w["bits"],
        weight_type="int" if w["type"] == "int" else "float",
        activation_bits=16 if a is None else a["bits"],
        activation_type=None if a is None else ("int" if a["type"] == "int" else "float"),
        activation_dynamic=None if a is None else bool(a["dynamic"]),
        group_size=group_size,
        block_size=tuple(block) if isinstance(block, list) and len(block) == 2 else None,
        symmetric=w["symmetric"],
        act_order=act_order,
        format=str(fmt) if fmt else None,
        ignore=tuple(qc.get("ignore") or ()),
        kv_cache_scheme=kv_scheme,
        mixed_precision=len(schemes) > 1
        and any((s[1]["bits"], s[1]["type"]) != (w["bits"], w["type"]) for s in schemes[1:]),
        unknown_keys=unknown,
    )


# ----- FP8 (vLLM / transformers), FBGEMM FP8 -----

_FP8_KEYS = frozenset(
    {
        "quant_method", "activation_scheme", "weight_block_size", "fmt", "ignored_layers",
        "modules_to_not_convert", "kv_cache_scheme", "dequantize",
    }
)  # fmt: skip


def parse_fp8(qc: Mapping[str, Any]) -> CheckpointQuantization:
    """FP8 as vLLM and transformers write it (``activation_scheme``, ``weight_block_size``)."""
    scheme_name = str(qc.get("activation_scheme", "dynamic"))
    if scheme_name not in ("dynamic", "static"):
        raise QuantizationConfigError(
            f"quantization_config.activation_scheme is {scheme_name!r}: expected dynamic or static"
        )
    block = qc.get("weight_block_size")
    if block is not None and (not isinstance(block, list) or len(block) != 2):
        raise QuantizationConfigError(
            f"quantization_config.weight_block_size is {block!r}: expected [rows, columns]"
        )
    if block is not None and scheme_name == "static":
        raise QuantizationConfigError(
            "quantization_config.weight_block_size contradicts quantization_config."
            "activation_scheme (static): block-wise FP8 quantizes activations dynamically"
        )
    return CheckpointQuantization(
        producer="fp8",
        scheme="w8a8-fp8",
        quant_method="fp8",
        weight_bits=8,
        activation_bits=8,
        activation_type="float",
        activation_dynamic=scheme_name == "dynamic",
        block_size=(int(block[0]), int(block[1])) if block else None,
        group_size=None if block else -1,
        format=str(qc.get("fmt", "e4m3")),
        ignore=tuple(qc.get("ignored_layers") or qc.get("modules_to_not_convert") or ()),
        unknown_keys=_unknown(qc, _FP8_KEYS),
    )


def parse_fbgemm_fp8(qc: Mapping[str, Any]) -> CheckpointQuantization:
    """FBGEMM FP8 (Llama 3.1 405B FP8): per-channel weights, dynamic per-token activations."""
    return CheckpointQuantization(
        producer="fbgemm_fp8",
        scheme="w8a8-fp8",
        quant_method="fbgemm_fp8",
        weight_bits=8,
        activation_bits=8,
        activation_type="float",
        activation_dynamic=True,
        group_size=-1,
        ignore=tuple(qc.get("modules_to_not_convert") or ()),
        unknown_keys=_unknown(
            qc, frozenset({"quant_method", "activation_scale_ub", "modules_to_not_convert"})
        ),
    )


# ----- bitsandbytes -----

_BNB_KEYS = frozenset(
    {
        "quant_method", "load_in_4bit", "load_in_8bit", "_load_in_4bit", "_load_in_8bit",
        "bnb_4bit_quant_type", "bnb_4bit_compute_dtype", "bnb_4bit_use_double_quant",
        "bnb_4bit_quant_storage", "llm_int8_threshold", "llm_int8_skip_modules",
        "llm_int8_enable_fp32_cpu_offload", "llm_int8_has_fp16_weight",
    }
)  # fmt: skip


def parse_bitsandbytes(qc: Mapping[str, Any]) -> CheckpointQuantization:
    """bitsandbytes: 4-bit (nf4 / fp4) or 8-bit (LLM.int8)."""
    four = bool(qc.get("load_in_4bit", qc.get("_load_in_4bit", False)))
    eight = bool(qc.get("load_in_8bit", qc.get("_load_in_8bit", False)))
    if four and eight:
        raise QuantizationConfigError(
            "quantization_config.load_in_4bit (true) contradicts quantization_config.load_in_8bit "
            "(true): a checkpoint is one or the other"
        )
    if not four and not eight:
        raise QuantizationConfigError(
            "quantization_config sets neither load_in_4bit nor load_in_8bit"
        )
    quant_type = str(qc.get("bnb_4bit_quant_type", "fp4")).lower() if four else "int"
    return CheckpointQuantization(
        producer="bitsandbytes",
        scheme="bnb-4bit" if four else "bnb-8bit",
        quant_method="bitsandbytes",
        weight_bits=4 if four else 8,
        weight_type=("nf4" if quant_type == "nf4" else "fp4") if four else "int",
        group_size=64 if four else -1,  # bitsandbytes 4-bit uses blocks of 64.
        format=quant_type,
        ignore=tuple(qc.get("llm_int8_skip_modules") or ()),
        unknown_keys=_unknown(qc, _BNB_KEYS),
    )


# ----- NVIDIA ModelOpt -----

_MODELOPT_KEYS = frozenset(
    {"quant_method", "quant_algo", "kv_cache_quant_algo", "exclude_modules", "group_size",
     "producer", "quantization"}
)  # fmt: skip


def parse_modelopt(qc: Mapping[str, Any]) -> CheckpointQuantization:
    """NVIDIA ModelOpt (``quant_algo`` FP8 / NVFP4 / W4A8_AWQ), or its hf_quant_config.json."""
    body = qc.get("quantization") if isinstance(qc.get("quantization"), Mapping) else qc
    assert isinstance(body, Mapping)
    algo = str(body.get("quant_algo", "")).upper()
    layers = body.get("quantized_layers")
    mixed = algo == "MIXED_PRECISION" and isinstance(layers, Mapping)
    if mixed and isinstance(layers, Mapping):
        # Per-layer algorithms: NVFP4 layers decide the kernels if any, else FP8.
        algos = [
            str(v.get("quant_algo", "")).upper() for v in layers.values() if isinstance(v, Mapping)
        ]
        algo = "NVFP4" if any("NVFP4" in a for a in algos) else ("FP8" if "FP8" in algos else "")
    kv = body.get("kv_cache_quant_algo")
    common: dict[str, Any] = {
        "producer": "modelopt",
        "quant_method": "modelopt",
        "format": algo.lower(),
        "ignore": tuple(body.get("exclude_modules") or ()),
        "kv_cache_scheme": str(kv).lower() if kv else None,
        "mixed_precision": mixed,
        "unknown_keys": _unknown(body, _MODELOPT_KEYS | {"quantized_layers"}),
    }
    if algo == "FP8":
        return CheckpointQuantization(
            scheme="w8a8-fp8", weight_bits=8, activation_bits=8, activation_type="float",
            activation_dynamic=False, group_size=None, **common,
        )  # fmt: skip
    if algo in ("NVFP4", "FP4"):
        return CheckpointQuantization(
            scheme="nvfp4", weight_bits=4, weight_type="fp4", activation_bits=4,
            activation_type="float", group_size=int(body.get("group_size", 16)), **common,
        )  # fmt: skip
    if algo == "W4A8_AWQ":
        return CheckpointQuantization(
            scheme="w4a8", weight_bits=4, weight_type="int", activation_bits=8,
            activation_type="float", group_size=int(body.get("group_size", 128)), **common,
        )  # fmt: skip
    raise QuantizationConfigError(
        f"quantization_config.quant_algo {algo or None!r} is not a ModelOpt algorithm quantwise "
        "knows (FP8, NVFP4, W4A8_AWQ)"
    )


# ----- dispatch -----


def parse_quantization_config(
    qc: Mapping[str, Any] | None,
    quantize_config: Mapping[str, Any] | None = None,
    awq_quant_config: Mapping[str, Any] | None = None,
) -> CheckpointQuantization:
    """Normalise config.json's ``quantization_config`` and the producers' side files.

    ``quantize_config`` is AutoGPTQ's quantize_config.json, ``awq_quant_config`` early AutoAWQ's
    quant_config.json. None for all means an unquantized checkpoint.
    """
    if not qc and awq_quant_config:
        return parse_awq(awq_quant_config, "quant_config.json")
    if not qc:
        if quantize_config:
            return parse_gptq(None, quantize_config)
        return NONE
    if not isinstance(qc, Mapping):
        raise QuantizationConfigError("quantization_config must be a JSON object")
    method = str(qc.get("quant_method", "")).lower()
    if not method and "quant_algo" in (qc.get("quantization") or qc):
        method = "modelopt"
    match method:
        case "awq":
            return parse_awq(qc)
        case "gptq":
            return parse_gptq(qc, quantize_config)
        case "compressed-tensors" | "compressed_tensors":
            return parse_compressed_tensors(qc)
        case "fp8":
            return parse_fp8(qc)
        case "fbgemm_fp8":
            return parse_fbgemm_fp8(qc)
        case "bitsandbytes":
            return parse_bitsandbytes(qc)
        case "modelopt" | "modelopt_fp4":
            return parse_modelopt(qc)
        case "":
            raise QuantizationConfigError("quantization_config has no quant_method")
        case _:
            raise QuantizationConfigError(
                f"quantization_config.quant_method {method!r} is not one quantwise reads (awq, "
                "gptq, compressed-tensors, fp8, fbgemm_fp8, bitsandbytes, modelopt)"
            )


# ----- the weight format of an existing checkpoint -----


def weight_format_from_quantization_config(qc: Mapping[str, Any] | None) -> WeightFormat:
    """Return the weight format a config.json ``quantization_config`` describes (None: 16 bits).

    Raises QuantizationConfigError for a config that cannot be read.
    """
    return weight_format_of(parse_quantization_config(qc))


def weight_format_of(q: CheckpointQuantization) -> WeightFormat:
    """How a checkpoint quantized as ``q`` stores its weights, as the planner sizes them.

    The producer's on-disk layout, FP8 block shape and act-order come along (they refine the
    bytes, not the format).
    """
    if q.scheme == "none" or q.weight_bits >= 16:
        return UNQUANTIZED
    group = q.group_size
    if group is None or group <= 0:
        # Per-channel scales: explicit for sub-8-bit formats, implied for 8-bit ones.
        group = -1 if group == -1 and q.weight_bits < 8 else None
    layout: WeightLayout = "generic"
    if q.scheme == "awq":
        layout = "awq"
    elif q.scheme == "gptq":
        layout = "gptq"
    elif q.producer == "compressed-tensors" and q.weight_bits < 8:
        layout = "compressed-tensors"
    elif q.scheme.startswith("bnb"):
        layout = "bitsandbytes"
    elif q.weight_bits == 8:
        layout = "fp8" if q.weight_type == "float" else "int8"
    return WeightFormat(
        bits=q.weight_bits,
        group_size=group,
        symmetric=q.symmetric,
        scale_bytes=FLOAT32_BYTES if layout == "bitsandbytes" else 2,
        layout=layout,
        block=q.block_size,
        act_order=q.desc_act,
    )
