"""Weight bytes: measured from safetensors headers, or estimated from the architecture.

A measurement reads only each file's 8-byte header length and its JSON header, never the
tensors, so it costs a few kilobytes of I/O for a checkpoint of any size. An estimate counts the
parameters of each layer and stores them as the quantization method does (packed integers plus
per-group scales and zero points); embeddings, norms and the layers in ``ignore`` stay in 16 bits.

Either way the result is a :class:`WeightBreakdown` that says how tensor and pipeline
parallelism split the bytes, because vLLM does not divide every tensor by the TP size: norms and
MLA's down-projections are replicated, and KV projections are replicated once TP exceeds the
number of KV heads.
"""

from __future__ import annotations

import json
import math
import re
import struct
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from quantwise.planning.architecture import Architecture

# Largest JSON header we accept; the format caps it at 100 MB (safetensors README).
MAX_HEADER_BYTES = 100_000_000


class WeightsError(ValueError):
    """Weights that cannot be measured: a missing or malformed safetensors file."""


@dataclass(frozen=True)
class WeightFormat:
    """How linear-layer weights are stored.

    ``bits`` is 16 for unquantized weights. ``group_size`` is the number of input elements that
    share one scale: None for per-tensor or per-channel scales of 8-bit formats, -1 for one group
    per output channel.
    """

    bits: int = 16
    group_size: int | None = None
    symmetric: bool = True
    scale_bytes: int = 2

    @property
    def quantized(self) -> bool:
        """True when weights are stored in fewer than 16 bits."""
        return self.bits < 16

    def linear_bytes(self, in_features: int, out_features: int) -> int:
        """Bytes of one linear layer's weight (with its scales and zero points) in this format."""
        if not self.quantized:
            return in_features * out_features * 2
        weight = math.ceil(in_features * out_features * self.bits / 8)
        if self.group_size is None:
            groups_per_row = 1 if self.bits < 8 else 0  # 8-bit formats: one scale per channel.
            scale_rows = 1
        elif self.group_size == -1:
            groups_per_row = 1
            scale_rows = 1
        else:
            groups_per_row = math.ceil(in_features / self.group_size)
            scale_rows = groups_per_row
        scales = out_features * max(scale_rows, 1) * self.scale_bytes
        zeros = 0
        if not self.symmetric and groups_per_row:
            zeros = math.ceil(out_features * groups_per_row * self.bits / 8)
        return weight + scales + zeros


UNQUANTIZED = WeightFormat()


@dataclass(frozen=True)
class WeightBreakdown:
    """Weight bytes grouped by how vLLM's tensor and pipeline parallelism place them.

    All decoder-layer groups are totals over all layers; ``layer_replicated_bytes`` sit whole on
    every tensor-parallel rank.
    """

    embedding_bytes: int
    lm_head_bytes: int
    layer_sharded_bytes: int
    layer_kv_bytes: int
    layer_expert_bytes: int
    layer_replicated_bytes: int
    other_replicated_bytes: int = 0
    measured: bool = False

    @property
    def total_bytes(self) -> int:
        """All weight bytes of the checkpoint as vLLM loads it."""
        return (
            self.embedding_bytes
            + self.lm_head_bytes
            + self.layer_sharded_bytes
            + self.layer_kv_bytes
            + self.layer_expert_bytes
            + self.layer_replicated_bytes
            + self.other_replicated_bytes
        )

    def per_gpu_bytes(self, arch: Architecture, tp: int, pp: int = 1) -> int:
        """Weight bytes on the fullest GPU with tensor parallel ``tp`` and pipeline ``pp``."""
        if tp < 1 or pp < 1:
            raise ValueError("tensor and pipeline parallel sizes must be >= 1")
        layers = arch.num_hidden_layers
        # vLLM's get_pp_indices gives each stage floor(L/pp) layers and spreads the remainder,
        # so the fullest stage has ceil(L/pp).
        stage_fraction = math.ceil(layers / pp) / layers
        if arch.is_mla or tp <= arch.num_key_value_heads:
            kv = self.layer_kv_bytes / tp
        else:
            # More ranks than KV heads: each rank holds one whole KV head.
            kv = self.layer_kv_bytes / arch.num_key_value_heads
        per_layer_set = (
            (self.layer_sharded_bytes + self.layer_expert_bytes) / tp
            + kv
            + self.layer_replicated_bytes
        )
        lm_head = self.lm_head_bytes
        if pp > 1 and arch.tie_word_embeddings and lm_head == 0:
            lm_head = self.embedding_bytes  # The last stage needs its own copy of tied weights.
        ends = (
            (self.embedding_bytes + lm_head) / tp
            if pp == 1
            else max(self.embedding_bytes, lm_head) / tp
        )
        return math.ceil(per_layer_set * stage_fraction + ends + self.other_replicated_bytes)

    def bytes_read_per_token(self, arch: Architecture) -> int:
        """Weight bytes one decode step reads for a single sequence.

        Every weight is read once per step, except the embedding table (one row) and, in a
        mixture of experts, the experts not routed to.
        """
        experts = self.layer_expert_bytes
        if arch.is_moe and arch.num_experts and arch.num_experts_per_tok:
            experts = experts * arch.num_experts_per_tok // arch.num_experts
        embedding_row = self.embedding_bytes // max(arch.vocab_size, 1)
        lm_head = self.lm_head_bytes or self.embedding_bytes
        return (
            embedding_row
            + lm_head
            + self.layer_sharded_bytes
            + self.layer_kv_bytes
            + experts
            + self.layer_replicated_bytes
            + self.other_replicated_bytes
        )


# ----- estimation -----


def estimate_weights(
    arch: Architecture, fmt: WeightFormat = UNQUANTIZED, quantize_lm_head: bool = False
) -> WeightBreakdown:
    """Estimate the weight bytes of ``arch`` stored in ``fmt``.

    Linear layers of the decoder are stored in ``fmt``; embeddings, norms, biases and MoE routers
    stay in 16 bits, as llm-compressor, AutoAWQ and AutoGPTQ leave them; ``lm_head`` too unless
    ``quantize_lm_head``.
    """
    h = arch.hidden_size
    lin = fmt.linear_bytes
    b16 = 2
    sharded = kv = experts = replicated = 0

    for layer in range(arch.num_hidden_layers):
        # Attention.
        if arch.is_mla:
            nope = arch.qk_nope_head_dim or 0
            rope = arch.qk_rope_head_dim or 0
            v_dim = arch.v_head_dim or 0
            heads = arch.num_attention_heads
            lora = arch.kv_lora_rank or 0
            if arch.q_lora_rank:
                replicated += lin(h, arch.q_lora_rank) + arch.q_lora_rank * b16
                sharded += lin(arch.q_lora_rank, heads * (nope + rope))
            else:
                sharded += lin(h, heads * (nope + rope))
            # vLLM's DeepSeek attention keeps kv_a_proj_with_mqa (and q_a_proj) replicated.
            replicated += lin(h, lora + rope) + lora * b16
            sharded += lin(lora, heads * (nope + v_dim)) + lin(heads * v_dim, h)
        else:
            q_width = arch.num_attention_heads * arch.head_dim
            kv_width = arch.num_key_value_heads * arch.head_dim
            sharded += lin(h, q_width) + lin(q_width, h)
            kv += 2 * lin(h, kv_width)
            if arch.qkv_bias:
                sharded += q_width * b16
                kv += 2 * kv_width * b16
        # MLP.
        matrices = 3 if arch.gated_mlp else 2
        is_dense = not arch.is_moe or layer < arch.num_dense_layers
        if is_dense:
            sharded += matrices * lin(h, arch.intermediate_size)
        else:
            n_exp = arch.num_experts or 0
            inter = arch.moe_intermediate_size or arch.intermediate_size
            experts += n_exp * matrices * lin(h, inter)
            replicated += h * n_exp * b16  # Router, unquantized.
            if arch.shared_expert_intermediate_size:
                sharded += matrices * lin(h, arch.shared_expert_intermediate_size)
        replicated += 2 * h * b16  # Input and post-attention norms.

    embedding = arch.vocab_size * h * b16
    if arch.tie_word_embeddings:
        lm_head = 0
    elif quantize_lm_head:
        lm_head = lin(h, arch.vocab_size)
    else:
        lm_head = arch.vocab_size * h * b16
    return WeightBreakdown(
        embedding_bytes=embedding,
        lm_head_bytes=lm_head,
        layer_sharded_bytes=sharded,
        layer_kv_bytes=kv,
        layer_expert_bytes=experts,
        layer_replicated_bytes=replicated,
        other_replicated_bytes=h * b16,  # Final norm.
    )


def parameter_count(arch: Architecture) -> int:
    """Number of parameters of ``arch`` (16-bit bytes of the unquantized estimate, halved)."""
    return estimate_weights(arch).total_bytes // 2


# ----- measurement -----


@dataclass(frozen=True)
class TensorInfo:
    """One tensor's entry in a safetensors header."""

    name: str
    dtype: str
    shape: tuple[int, ...]
    nbytes: int


def read_safetensors_header(path: Path) -> list[TensorInfo]:
    """Return the tensors listed in the header of the safetensors file at ``path``.

    Reads the 8-byte little-endian header length and the JSON header only. Raises WeightsError
    for a file that is not safetensors, or that is shorter than its header says (truncated).
    """
    try:
        size = path.stat().st_size
        with path.open("rb") as handle:
            prefix = handle.read(8)
            if len(prefix) != 8:
                raise WeightsError(f"{path}: not a safetensors file (shorter than 8 bytes)")
            (header_len,) = struct.unpack("<Q", prefix)
            if header_len > MAX_HEADER_BYTES or 8 + header_len > size:
                raise WeightsError(
                    f"{path}: header length {header_len} is impossible for a {size}-byte file"
                )
            raw = handle.read(header_len)
    except OSError as exc:
        raise WeightsError(f"{path}: cannot read: {exc.strerror or exc}") from exc
    try:
        header = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise WeightsError(f"{path}: header is not JSON: {exc}") from exc
    if not isinstance(header, dict):
        raise WeightsError(f"{path}: header is not a JSON object")
    data_bytes = size - 8 - header_len
    tensors: list[TensorInfo] = []
    for name, entry in header.items():
        if name == "__metadata__":
            continue
        try:
            start, end = entry["data_offsets"]
            dtype = str(entry["dtype"])
            shape = tuple(int(d) for d in entry["shape"])
        except (KeyError, TypeError, ValueError) as exc:
            raise WeightsError(f"{path}: malformed header entry for tensor {name!r}") from exc
        if not (0 <= start <= end <= data_bytes):
            raise WeightsError(
                f"{path}: tensor {name!r} ends at byte {end} but the file holds {data_bytes} "
                "bytes of data: the file is truncated"
            )
        tensors.append(TensorInfo(name=name, dtype=dtype, shape=shape, nbytes=end - start))
    return tensors


def safetensors_files(model_dir: Path) -> list[Path]:
    """Return the safetensors files vLLM would load from ``model_dir``.

    With a ``model.safetensors.index.json``, the files its weight map names; otherwise every
    ``*.safetensors`` file, leaving out Mistral's ``consolidated*.safetensors`` duplicates when
    Hugging Face-format files are also present.
    """
    index = model_dir / "model.safetensors.index.json"
    if index.is_file():
        try:
            weight_map = json.loads(index.read_text())["weight_map"]
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise WeightsError(f"{index}: not a safetensors index: {exc}") from exc
        names = sorted(set(weight_map.values()))
        missing = [n for n in names if not (model_dir / n).is_file()]
        if missing:
            raise WeightsError(f"{index} names files that are missing: {', '.join(missing)}")
        return [model_dir / n for n in names]
    files = sorted(model_dir.glob("*.safetensors"))
    hf_files = [f for f in files if not f.name.startswith("consolidated")]
    return hf_files or files


_ROUTER_RE = re.compile(r"\.(mlp|block_sparse_moe)\.(gate|router)\.")
# vLLM's DeepSeek attention keeps the low-rank down-projections replicated on every rank.
_MLA_REPLICATED_RE = re.compile(r"\.(kv_a_proj|q_a_proj)")
_LAYER_RE = re.compile(r"(?:^|\.)(?:layers|h|blocks|block)\.(\d+)\.")
_EMBED_KEYS = ("embed_tokens", "wte", "word_embeddings", "tok_embeddings", "embedding.weight")
_LM_HEAD_KEYS = ("lm_head", "embed_out", "output.weight")
_NORM_KEYS = ("norm", "ln_", "layernorm")
_MULTIMODAL_KEYS = ("vision", "visual", "multi_modal_projector", "audio", "mm_projector")


def classify_tensors(arch: Architecture, tensors: Iterable[TensorInfo]) -> WeightBreakdown:
    """Group measured tensors by how vLLM places them (see WeightBreakdown).

    Decoder layers beyond ``num_hidden_layers`` (DeepSeek-V3's multi-token-prediction layer)
    are left out: vLLM loads them only for speculative decoding.
    """
    embedding = lm_head = sharded = kv = experts = replicated = other = 0
    kv_share = 0.0
    if not arch.is_mla:
        q = arch.num_attention_heads * arch.head_dim
        k = arch.num_key_value_heads * arch.head_dim
        kv_share = 2 * k / (q + 2 * k)
    for tensor in tensors:
        name = tensor.name
        nbytes = tensor.nbytes
        match = _LAYER_RE.search(name)
        if any(key in name for key in _MULTIMODAL_KEYS):
            other += nbytes
        elif match is None:
            if any(key in name for key in _LM_HEAD_KEYS):
                lm_head += nbytes
            elif any(key in name for key in _EMBED_KEYS):
                embedding += nbytes
            else:
                other += nbytes
        elif int(match.group(1)) >= arch.num_hidden_layers:
            continue
        elif any(key in name for key in _NORM_KEYS):
            replicated += nbytes
        elif ".experts." in name:
            experts += nbytes
        elif _ROUTER_RE.search(name) or (arch.is_mla and _MLA_REPLICATED_RE.search(name)):
            replicated += nbytes
        elif re.search(r"\.(k_proj|v_proj)\.", name):
            kv += nbytes
        elif re.search(r"\.(qkv_proj|query_key_value|Wqkv|c_attn)\.", name):
            kv_part = round(nbytes * kv_share)
            kv += kv_part
            sharded += nbytes - kv_part
        else:
            sharded += nbytes
    return WeightBreakdown(
        embedding_bytes=embedding,
        lm_head_bytes=lm_head,
        layer_sharded_bytes=sharded,
        layer_kv_bytes=kv,
        layer_expert_bytes=experts,
        layer_replicated_bytes=replicated,
        other_replicated_bytes=other,
        measured=True,
    )


def measure_weights(model_dir: Path, arch: Architecture) -> WeightBreakdown:
    """Measure the weights in ``model_dir`` from their safetensors headers."""
    files = safetensors_files(model_dir)
    if not files:
        raise WeightsError(
            f"{model_dir}: no *.safetensors files (quantwise measures safetensors only; "
            "convert .bin checkpoints or plan from config.json)"
        )
    tensors = [t for f in files for t in read_safetensors_header(f)]
    return classify_tensors(arch, tensors)
