"""Weight bytes: measured from safetensors headers, or estimated from the architecture.

A measurement reads only each file's 8-byte header length and its JSON header, never the
tensors, so it costs a few kilobytes of I/O for a checkpoint of any size. An estimate counts the
parameters of each layer and stores them as the quantization method does (packed integers plus
per-group scales and zero points); embeddings, norms and the layers in ``ignore`` stay in 16 bits.

Either way the result is a :class:`WeightBreakdown` that says how tensor and pipeline
parallelism split the bytes, because vLLM does not divide every tensor by the TP size: norms and
MLA's down-projections are replicated, and KV projections are replicated once TP exceeds the
number of KV heads.

What a checkpoint stores on disk and what vLLM holds on the GPU after loading differ, and
:func:`loaded_weights` turns the one into the other: the buffers vLLM builds at load time (the
rotary cos/sin cache, MLA's absorbed up-projections), the vocabulary padded to 64 rows, channel
scales widened to float32, and the repacking of 4-bit weights into the Marlin or Machete layout
(vLLM's "Model loading took X GiB" line measures that loaded figure).
"""

from __future__ import annotations

import json
import math
import re
import struct
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Literal

from quantwise.planning.architecture import Architecture

# Largest JSON header we accept; the format caps it at 100 MB (safetensors README).
MAX_HEADER_BYTES = 100_000_000


class WeightsError(ValueError):
    """Weights that cannot be measured: a missing or malformed safetensors file."""


WeightLayout = Literal[
    "generic", "awq", "gptq", "compressed-tensors", "fp8", "int8", "bitsandbytes"
]
"""How a producer lays a quantized linear layer out on disk (only what changes its bytes)."""

Kernel = Literal["marlin", "machete"]
"""The kernel vLLM repacks 4-bit weights for: Marlin (Ampere, Ada, Blackwell) or Machete
(Hopper). vllm/model_executor/kernels/linear/mixed_precision/{marlin,machete}.py."""

# Bytes of one element of the tensors the layouts below add.
INT32_BYTES = 4
FLOAT32_BYTES = 4
INT64_BYTES = 8
# VocabParallelEmbedding and ParallelLMHead pad the vocabulary to a multiple of 64 rows
# (vllm/model_executor/layers/vocab_parallel_embedding.py, DEFAULT_VOCAB_PADDING_SIZE).
VOCAB_PADDING_ROWS = 64


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
    # The producer's on-disk layout and FP8 block shape refine the bytes, not the format: two
    # formats that differ only there compare equal.
    layout: WeightLayout = field(default="generic", compare=False)
    block: tuple[int, int] | None = field(default=None, compare=False)
    act_order: bool = field(default=False, compare=False)

    @property
    def quantized(self) -> bool:
        """True when weights are stored in fewer than 16 bits."""
        return self.bits < 16

    def _groups(self, in_features: int) -> int:
        """Scale groups along one output channel's inputs (1 for per-channel scales)."""
        if self.group_size is None or self.group_size <= 0:
            return 1
        return math.ceil(in_features / self.group_size)

    def _packed_zero_bytes(self, in_features: int, out_features: int) -> int:
        """Bytes of zero points packed into int32 words along the output channels.

        AWQ's and GPTQ's ``qzeros``: ``[groups, out / (32 / bits)]`` int32.
        """
        per_word = 32 // self.bits if self.bits < 32 else 1
        return self._groups(in_features) * math.ceil(out_features / per_word) * INT32_BYTES

    def linear_bytes(self, in_features: int, out_features: int) -> int:
        """Bytes of one linear layer's weight (with its scales and zero points) in this format.

        As the checkpoint stores it: with ``layout`` "gptq" that includes GPTQ's ``g_idx`` (one
        int32 per input) and its ``qzeros`` even for symmetric weights; "compressed-tensors"
        adds its ``weight_shape`` (two int64); an FP8 ``block`` has one float32 scale per block.
        """
        if not self.quantized:
            return in_features * out_features * 2
        if self.block is not None:
            weight = in_features * out_features * self.bits // 8
            rows, cols = self.block
            scales = math.ceil(out_features / rows) * math.ceil(in_features / cols)
            return weight + scales * FLOAT32_BYTES
        extra = 0
        if self.layout == "gptq":
            extra = in_features * INT32_BYTES
            if self.symmetric:
                extra += self._packed_zero_bytes(in_features, out_features)
        elif self.layout == "compressed-tensors":
            extra = 2 * INT64_BYTES
        return self._generic_bytes(in_features, out_features) + extra

    def _generic_bytes(self, in_features: int, out_features: int) -> int:
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

    def loaded_linear_bytes(
        self, in_features: int, out_features: int, kernel: Kernel | None = None
    ) -> int:
        """Bytes vLLM holds for one linear layer after loading it (and repacking for ``kernel``).

        - 8-bit (FP8, INT8) channel scales are float32 whatever the checkpoint stored
          (``ChannelQuantScaleParameter`` in compressed_tensors_w8a8_int8.py and
          fp8_utils.py ``create_fp8_scale_parameter``); a per-tensor scale is one float32.
        - 4-bit grouped weights: Marlin repacks weights, scales and zero points to the same sizes
          and drops the zero points of symmetric weights and GPTQ's ``g_idx`` without act-order
          (mixed_precision/marlin.py); Machete keeps whatever was loaded and turns AWQ's packed
          zero points into 16-bit ``-zero x scale`` per group (mixed_precision/machete.py,
          ``transform_w_zp``). An unknown kernel takes the larger of the two.
        - bitsandbytes 4-bit: packed weights plus a float32 absmax per block of 64.
        """
        if not self.quantized:
            return in_features * out_features * 2
        if self.block is not None:
            return self.linear_bytes(in_features, out_features)
        weight = math.ceil(in_features * out_features * self.bits / 8)
        if self.bits >= 8 and self.group_size in (None, -1):
            # Per-channel scales, or one per tensor when the producer says so (group_size None
            # with an FP8 "tensor" strategy is rare; the channel figure is the larger).
            return weight + out_features * FLOAT32_BYTES
        if self.layout == "bitsandbytes":
            return weight + self._groups(in_features) * out_features * FLOAT32_BYTES
        groups = self._groups(in_features)
        scales = groups * out_features * self.scale_bytes
        packed_zeros = self._packed_zero_bytes(in_features, out_features)
        g_idx = in_features * INT32_BYTES if self.layout == "gptq" else 0
        if self.symmetric:
            # Only GPTQ's files carry zero points for symmetric weights.
            zeros_marlin, zeros_machete = 0, packed_zeros if self.layout == "gptq" else 0
        else:
            zeros_marlin, zeros_machete = packed_zeros, groups * out_features * self.scale_bytes
        marlin = weight + scales + zeros_marlin + (g_idx if self.act_order else 0)
        machete = weight + scales + zeros_machete + g_idx
        if kernel == "marlin":
            return marlin
        if kernel == "machete":
            return machete
        return max(marlin, machete)


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
    # Buffers vLLM builds at load time (:func:`loaded_weights`): the rotary cache on every GPU,
    # MLA's absorbed matrices split with the layers' heads.
    runtime_replicated_bytes: int = 0
    runtime_layer_sharded_bytes: int = 0
    loaded: bool = False

    @property
    def total_bytes(self) -> int:
        """All weight bytes: the checkpoint's, or with ``loaded`` what vLLM holds over all GPUs."""
        return (
            self.embedding_bytes
            + self.lm_head_bytes
            + self.layer_sharded_bytes
            + self.layer_kv_bytes
            + self.layer_expert_bytes
            + self.layer_replicated_bytes
            + self.other_replicated_bytes
            + self.runtime_replicated_bytes
            + self.runtime_layer_sharded_bytes
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
            (self.layer_sharded_bytes + self.layer_expert_bytes + self.runtime_layer_sharded_bytes)
            / tp
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
        replicated = self.other_replicated_bytes + self.runtime_replicated_bytes
        return math.ceil(per_layer_set * stage_fraction + ends + replicated)

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


Placement = Literal["sharded", "kv", "expert", "replicated", "lm_head"]
"""Where a linear layer's bytes go in a :class:`WeightBreakdown`."""


@dataclass(frozen=True)
class LinearLayer:
    """Linear layers of one shape, summed over the model: ``count`` matrices ``in -> out``."""

    placement: Placement
    in_features: int
    out_features: int
    count: int


def linear_layers(arch: Architecture, quantize_lm_head: bool = False) -> Iterator[LinearLayer]:
    """Every quantizable linear layer of ``arch`` (decoder layers, and lm_head when quantized).

    MLA's low-rank down-projections (``q_a_proj``, ``kv_a_proj_with_mqa``) are replicated on
    every rank, as vLLM's DeepSeek attention keeps them (vllm/model_executor/models/deepseek_v2.py).
    """
    h = arch.hidden_size
    layers = arch.num_hidden_layers
    if arch.is_mla:
        nope = arch.qk_nope_head_dim or 0
        rope = arch.qk_rope_head_dim or 0
        v_dim = arch.v_head_dim or 0
        heads = arch.num_attention_heads
        lora = arch.kv_lora_rank or 0
        if arch.q_lora_rank:
            yield LinearLayer("replicated", h, arch.q_lora_rank, layers)
            yield LinearLayer("sharded", arch.q_lora_rank, heads * (nope + rope), layers)
        else:
            yield LinearLayer("sharded", h, heads * (nope + rope), layers)
        yield LinearLayer("replicated", h, lora + rope, layers)
        yield LinearLayer("sharded", lora, heads * (nope + v_dim), layers)
        yield LinearLayer("sharded", heads * v_dim, h, layers)
    else:
        q_width = arch.num_attention_heads * arch.head_dim
        kv_width = arch.num_key_value_heads * arch.head_dim
        yield LinearLayer("sharded", h, q_width, layers)
        yield LinearLayer("kv", h, kv_width, 2 * layers)
        yield LinearLayer("sharded", q_width, h, layers)
    up = 2 if arch.gated_mlp else 1  # gate and up, or up alone
    dense = arch.num_dense_layers if arch.is_moe else layers
    if dense:
        yield LinearLayer("sharded", h, arch.intermediate_size, up * dense)
        yield LinearLayer("sharded", arch.intermediate_size, h, dense)
    moe = layers - dense
    if moe:
        n_exp = arch.num_experts or 0
        inter = arch.moe_intermediate_size or arch.intermediate_size
        yield LinearLayer("expert", h, inter, up * n_exp * moe)
        yield LinearLayer("expert", inter, h, n_exp * moe)
        if arch.shared_expert_intermediate_size:
            shared = arch.shared_expert_intermediate_size
            yield LinearLayer("sharded", h, shared, up * moe)
            yield LinearLayer("sharded", shared, h, moe)
    if quantize_lm_head and not arch.tie_word_embeddings:
        yield LinearLayer("lm_head", h, arch.vocab_size, 1)


def estimate_weights(
    arch: Architecture, fmt: WeightFormat = UNQUANTIZED, quantize_lm_head: bool = False
) -> WeightBreakdown:
    """Estimate the weight bytes of ``arch`` stored in ``fmt``, as the checkpoint stores them.

    Linear layers of the decoder are stored in ``fmt``; embeddings, norms, biases and MoE routers
    stay in 16 bits, as llm-compressor, AutoAWQ and AutoGPTQ leave them; ``lm_head`` too unless
    ``quantize_lm_head``. :func:`loaded_weights` turns the result into what vLLM holds.
    """
    h = arch.hidden_size
    b16 = 2
    totals: dict[Placement, int] = {
        "sharded": 0, "kv": 0, "expert": 0, "replicated": 0, "lm_head": 0
    }  # fmt: skip
    for linear in linear_layers(arch, quantize_lm_head):
        totals[linear.placement] += linear.count * fmt.linear_bytes(
            linear.in_features, linear.out_features
        )
    layers = arch.num_hidden_layers
    replicated = totals["replicated"] + layers * 2 * h * b16  # Input and post-attention norms.
    sharded, kv = totals["sharded"], totals["kv"]
    if arch.is_mla:
        if arch.q_lora_rank:
            replicated += layers * arch.q_lora_rank * b16  # q_a_layernorm
        replicated += layers * (arch.kv_lora_rank or 0) * b16  # kv_a_layernorm
    elif arch.qkv_bias:
        q_width = arch.num_attention_heads * arch.head_dim
        kv_width = arch.num_key_value_heads * arch.head_dim
        sharded += layers * q_width * b16
        kv += layers * 2 * kv_width * b16
    moe_layers = arch.num_moe_layers
    if moe_layers:
        replicated += moe_layers * h * (arch.num_experts or 0) * b16  # Router, unquantized.

    embedding = arch.vocab_size * h * b16
    if arch.tie_word_embeddings:
        lm_head = 0
    elif quantize_lm_head:
        lm_head = totals["lm_head"]
    else:
        lm_head = arch.vocab_size * h * b16
    return WeightBreakdown(
        embedding_bytes=embedding,
        lm_head_bytes=lm_head,
        layer_sharded_bytes=sharded,
        layer_kv_bytes=kv,
        layer_expert_bytes=totals["expert"],
        layer_replicated_bytes=replicated,
        other_replicated_bytes=h * b16,  # Final norm.
    )


def padded_vocab_size(vocab_size: int) -> int:
    """Rows vLLM allocates for the embedding and lm_head: the vocabulary padded to 64."""
    return math.ceil(vocab_size / VOCAB_PADDING_ROWS) * VOCAB_PADDING_ROWS


def rotary_cache_bytes(arch: Architecture) -> int:
    """Bytes of the rotary embedding's cos/sin cache, one copy on every GPU.

    vLLM builds one ``cos_sin_cache`` of ``max_position x rotary_dim`` in the model dtype per
    distinct RoPE configuration (vllm/model_executor/layers/rotary_embedding/base.py;
    deepseek_scaling_rope.py and yarn_scaling_rope.py cache the scaled length, which is the
    derived ``max_position_embeddings``). Layers share it. A model whose sliding-window layers
    use their own base (Gemma 2 and 3) has two.
    """
    rotary_dim = arch.qk_rope_head_dim if arch.is_mla and arch.qk_rope_head_dim else arch.head_dim
    caches = 2 if arch.num_sliding_window_layers and arch.num_full_attention_layers else 1
    return caches * arch.max_position_embeddings * rotary_dim * arch.dtype_bytes


def mla_absorbed_bytes(arch: Architecture) -> int:
    """Bytes of MLA's absorbed up-projections ``W_UK`` and ``W_UV``, over all GPUs.

    After loading, vLLM splits ``kv_b_proj`` into ``W_UK`` and ``W_UV`` copies in the model dtype
    and keeps ``kv_b_proj`` too (vllm/model_executor/layers/attention/mla_attention.py,
    ``process_weights_after_loading``): heads x (nope + v) x kv_lora_rank more elements per
    layer, split across TP ranks with the heads.
    """
    if not arch.is_mla:
        return 0
    per_layer = (
        arch.num_attention_heads
        * ((arch.qk_nope_head_dim or 0) + (arch.v_head_dim or 0))
        * (arch.kv_lora_rank or 0)
    )
    return arch.num_hidden_layers * per_layer * arch.dtype_bytes


def repack_kernel(compute_capability: tuple[int, int]) -> Kernel | None:
    """The kernel vLLM repacks 4-bit weights for on a GPU of ``compute_capability``.

    Machete runs on Hopper (9.0) only (mixed_precision/machete.py ``can_implement``), Marlin on
    8.0 and up. On Hopper the choice depends on the release and the producer, so it is left
    open (None): :meth:`WeightFormat.loaded_linear_bytes` then takes the larger layout, as it
    does below 8.0, where the fallback kernels keep the checkpoint's layout.
    """
    if compute_capability == (9, 0) or compute_capability < (8, 0):
        return None
    return "marlin"


def quantizes_lm_head(arch: Architecture, weights: WeightBreakdown) -> bool:
    """True when ``weights`` hold a quantized ``lm_head`` (fewer bytes than 16-bit rows)."""
    return 0 < weights.lm_head_bytes < arch.vocab_size * arch.hidden_size * 2


def loaded_weights(
    arch: Architecture,
    weights: WeightBreakdown,
    fmt: WeightFormat = UNQUANTIZED,
    kernel: Kernel | None = None,
    quantize_lm_head: bool = False,
) -> WeightBreakdown:
    """What vLLM holds on the GPU for ``weights`` (estimated or measured checkpoint bytes).

    vLLM's "Model loading took X GiB" is the growth of PyTorch's allocated memory over
    ``load_model`` (vllm/v1/worker/gpu_model_runner.py, ``DeviceMemoryProfiler``), after each
    layer's ``process_weights_after_loading``. Over the checkpoint's bytes that adds the
    vocabulary padding (:func:`padded_vocab_size`), the rotary cache (:func:`rotary_cache_bytes`),
    MLA's absorbed matrices (:func:`mla_absorbed_bytes`) and the difference between each linear
    layer's bytes on disk and after repacking (:meth:`WeightFormat.loaded_linear_bytes`, for
    ``kernel``, or the larger of Marlin's and Machete's when None). Applying it twice changes
    nothing.
    """
    if weights.loaded:
        return weights
    deltas: dict[Placement, int] = {
        "sharded": 0, "kv": 0, "expert": 0, "replicated": 0, "lm_head": 0
    }  # fmt: skip
    if fmt.quantized:
        for linear in linear_layers(arch, quantize_lm_head):
            on_disk = fmt.linear_bytes(linear.in_features, linear.out_features)
            held = fmt.loaded_linear_bytes(linear.in_features, linear.out_features, kernel)
            deltas[linear.placement] += linear.count * (held - on_disk)
    padding = padded_vocab_size(arch.vocab_size) / arch.vocab_size
    lm_head = weights.lm_head_bytes + deltas["lm_head"]
    if not (quantize_lm_head and fmt.quantized):
        lm_head = math.ceil(lm_head * padding)
    return replace(
        weights,
        embedding_bytes=math.ceil(weights.embedding_bytes * padding),
        lm_head_bytes=lm_head,
        layer_sharded_bytes=weights.layer_sharded_bytes + deltas["sharded"],
        layer_kv_bytes=weights.layer_kv_bytes + deltas["kv"],
        layer_expert_bytes=weights.layer_expert_bytes + deltas["expert"],
        layer_replicated_bytes=weights.layer_replicated_bytes + deltas["replicated"],
        runtime_replicated_bytes=rotary_cache_bytes(arch),
        runtime_layer_sharded_bytes=mla_absorbed_bytes(arch),
        loaded=True,
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
