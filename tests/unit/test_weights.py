"""Weight bytes: safetensors headers are read (never the tensors); estimates match real layouts."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import save_file

from quantwise.planning.architecture import Architecture, architecture_from_config
from quantwise.planning.weights import (
    UNQUANTIZED,
    WeightFormat,
    WeightsError,
    estimate_weights,
    loaded_weights,
    measure_weights,
    mla_absorbed_bytes,
    padded_vocab_size,
    parameter_count,
    read_safetensors_header,
    repack_kernel,
    rotary_cache_bytes,
    safetensors_files,
)
from quantwise.quantization.config import weight_format_from_quantization_config

# meta-llama/Llama-3.1-8B-Instruct config.json (the published file, abridged to what matters).
LLAMA_31_8B = {
    "architectures": ["LlamaForCausalLM"],
    "hidden_size": 4096,
    "intermediate_size": 14336,
    "max_position_embeddings": 131072,
    "model_type": "llama",
    "num_attention_heads": 32,
    "num_hidden_layers": 32,
    "num_key_value_heads": 8,
    "rope_scaling": {
        "factor": 8.0,
        "low_freq_factor": 1.0,
        "high_freq_factor": 4.0,
        "original_max_position_embeddings": 8192,
        "rope_type": "llama3",
    },
    "tie_word_embeddings": False,
    "torch_dtype": "bfloat16",
    "vocab_size": 128256,
}


TINY_CONFIG = {
    "model_type": "llama",
    "num_hidden_layers": 2,
    "hidden_size": 256,
    "intermediate_size": 512,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "vocab_size": 1000,
    "max_position_embeddings": 2048,
    "tie_word_embeddings": False,
}


def tiny(**overrides: object) -> Architecture:
    config = {**TINY_CONFIG, **overrides}
    return architecture_from_config(config)


def llama_tensors(arch: Architecture) -> dict[str, np.ndarray]:
    """Tensors named and shaped as transformers' LlamaForCausalLM saves them, in float16."""
    h, hd = arch.hidden_size, arch.head_dim
    q, kv, inter = (
        arch.num_attention_heads * hd,
        arch.num_key_value_heads * hd,
        arch.intermediate_size,
    )
    t: dict[str, np.ndarray] = {
        "model.embed_tokens.weight": np.zeros((arch.vocab_size, h), np.float16)
    }
    for i in range(arch.num_hidden_layers):
        p = f"model.layers.{i}."
        t[p + "self_attn.q_proj.weight"] = np.zeros((q, h), np.float16)
        t[p + "self_attn.k_proj.weight"] = np.zeros((kv, h), np.float16)
        t[p + "self_attn.v_proj.weight"] = np.zeros((kv, h), np.float16)
        t[p + "self_attn.o_proj.weight"] = np.zeros((h, q), np.float16)
        t[p + "mlp.gate_proj.weight"] = np.zeros((inter, h), np.float16)
        t[p + "mlp.up_proj.weight"] = np.zeros((inter, h), np.float16)
        t[p + "mlp.down_proj.weight"] = np.zeros((h, inter), np.float16)
        t[p + "input_layernorm.weight"] = np.zeros((h,), np.float16)
        t[p + "post_attention_layernorm.weight"] = np.zeros((h,), np.float16)
    t["model.norm.weight"] = np.zeros((h,), np.float16)
    if not arch.tie_word_embeddings:
        t["lm_head.weight"] = np.zeros((arch.vocab_size, h), np.float16)
    return t


def test_llama_31_8b_parameter_count_is_exact() -> None:
    # 8,030,261,248 parameters: the count Meta and the Hugging Face model card give.
    assert parameter_count(architecture_from_config(LLAMA_31_8B)) == 8_030_261_248


def test_llama_31_8b_awq_int4_estimate_matches_the_published_checkpoint() -> None:
    """hugging-quants/Meta-Llama-3.1-8B-Instruct-AWQ-INT4 stores 5.73 GB of safetensors."""
    arch = architecture_from_config(LLAMA_31_8B)
    estimate = estimate_weights(arch, WeightFormat(bits=4, group_size=128, symmetric=False))
    assert estimate.total_bytes == pytest.approx(5.73e9, rel=0.01)
    # Embeddings and lm_head stay in 16 bits: 2 x 128256 x 4096 x 2 bytes.
    assert estimate.embedding_bytes + estimate.lm_head_bytes == 2 * 128256 * 4096 * 2


def test_measurement_reads_headers_and_matches_estimate(tmp_path: Path) -> None:
    arch = tiny()
    tensors = llama_tensors(arch)
    save_file(tensors, str(tmp_path / "model.safetensors"))
    measured = measure_weights(tmp_path, arch)
    estimated = estimate_weights(arch)
    assert measured.measured and not estimated.measured
    assert measured.total_bytes == sum(a.nbytes for a in tensors.values())
    for field in (
        "embedding_bytes",
        "lm_head_bytes",
        "layer_sharded_bytes",
        "layer_kv_bytes",
        "layer_replicated_bytes",
    ):
        assert getattr(measured, field) == getattr(estimated, field), field
    # Final norm: 256 x 2 bytes, replicated on every rank.
    assert measured.other_replicated_bytes == estimated.other_replicated_bytes == 512


def test_headers_only_a_file_whose_tensors_are_missing_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "model.safetensors"
    save_file({"a": np.zeros((1024, 1024), np.float16)}, str(path))
    data = path.read_bytes()
    header_len = struct.unpack("<Q", data[:8])[0]
    # Keep the header, drop most of the data: the header still parses but the sizes disagree.
    path.write_bytes(data[: 8 + header_len + 100])
    with pytest.raises(WeightsError, match="truncated"):
        read_safetensors_header(path)


def test_reading_a_header_does_not_read_tensor_data(tmp_path: Path) -> None:
    """A 1 TB sparse file with a valid header is measured instantly: the data is never read."""
    path = tmp_path / "huge.safetensors"
    size = 10**12
    header = json.dumps(
        {"w": {"dtype": "BF16", "shape": [500_000, 1_000_000], "data_offsets": [0, size]}}
    ).encode()
    with path.open("wb") as handle:
        handle.write(struct.pack("<Q", len(header)) + header)
        handle.truncate(8 + len(header) + size)
    (info,) = read_safetensors_header(path)
    assert info.nbytes == size
    assert info.shape == (500_000, 1_000_000)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"abc", "shorter than 8 bytes"),
        (struct.pack("<Q", 10**9) + b"{}", "impossible"),
        (struct.pack("<Q", 2) + b"[]", "not a JSON object"),
    ],
)
def test_malformed_files_name_the_problem(tmp_path: Path, content: bytes, message: str) -> None:
    path = tmp_path / "bad.safetensors"
    path.write_bytes(content)
    with pytest.raises(WeightsError, match=message):
        read_safetensors_header(path)


def test_index_selects_files_and_consolidated_duplicates_are_skipped(tmp_path: Path) -> None:
    save_file({"a": np.zeros((4,), np.float16)}, str(tmp_path / "model-00001-of-00001.safetensors"))
    save_file({"a": np.zeros((4,), np.float16)}, str(tmp_path / "consolidated.safetensors"))
    assert [p.name for p in safetensors_files(tmp_path)] == ["model-00001-of-00001.safetensors"]
    (tmp_path / "model.safetensors.index.json").write_text(
        json.dumps({"weight_map": {"a": "missing.safetensors"}})
    )
    with pytest.raises(WeightsError, match="missing"):
        safetensors_files(tmp_path)


def test_no_safetensors_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(WeightsError, match=r"no \*\.safetensors"):
        measure_weights(tmp_path, tiny())


def test_multi_token_prediction_layers_are_left_out(tmp_path: Path) -> None:
    arch = tiny()
    tensors = llama_tensors(arch)
    tensors["model.layers.2.mlp.down_proj.weight"] = np.zeros(
        (256, 512), np.float16
    )  # Beyond num_hidden_layers.
    save_file(tensors, str(tmp_path / "model.safetensors"))
    assert measure_weights(tmp_path, arch).total_bytes == estimate_weights(arch).total_bytes


def test_per_gpu_split_follows_vllm_sharding() -> None:
    arch = architecture_from_config(LLAMA_31_8B)
    w = estimate_weights(arch)
    one = w.per_gpu_bytes(arch, 1)
    assert one == w.total_bytes
    two = w.per_gpu_bytes(arch, 2)
    # Everything but the norms halves.
    assert two == pytest.approx(
        (w.total_bytes - w.layer_replicated_bytes - w.other_replicated_bytes) / 2
        + w.layer_replicated_bytes
        + w.other_replicated_bytes,
        abs=1,
    )
    # At TP=16 > 8 KV heads, each rank holds one whole KV head: k/v shrink by 8, not 16.
    sixteen = w.per_gpu_bytes(arch, 16)
    expected = (
        (w.embedding_bytes + w.lm_head_bytes + w.layer_sharded_bytes) / 16
        + w.layer_kv_bytes / 8
        + w.layer_replicated_bytes
        + w.other_replicated_bytes
    )
    assert sixteen == pytest.approx(expected, abs=1)


def test_pipeline_stages_hold_their_share_of_layers() -> None:
    arch = architecture_from_config(LLAMA_31_8B)
    w = estimate_weights(arch)
    layers = w.layer_sharded_bytes + w.layer_kv_bytes + w.layer_replicated_bytes
    # PP=3 over 32 layers: the fullest stage has 11 layers and the larger end (embeddings).
    assert w.per_gpu_bytes(arch, 1, 3) == pytest.approx(
        layers * 11 / 32 + w.embedding_bytes + w.other_replicated_bytes, abs=1
    )


def test_linear_bytes_per_format() -> None:
    assert UNQUANTIZED.linear_bytes(4096, 4096) == 4096 * 4096 * 2
    # W4 g128 asymmetric: packed weights + fp16 scales + 4-bit zeros per group.
    w4 = WeightFormat(bits=4, group_size=128, symmetric=False)
    assert w4.linear_bytes(4096, 1024) == 4096 * 1024 // 2 + 32 * 1024 * 2 + 32 * 1024 // 2
    # Symmetric: no zero points.
    assert (
        WeightFormat(bits=4, group_size=128).linear_bytes(4096, 1024)
        == 4096 * 1024 // 2 + 32 * 1024 * 2
    )
    # FP8 / INT8: one byte per weight and one scale per output channel.
    assert WeightFormat(bits=8).linear_bytes(4096, 1024) == 4096 * 1024 + 1024 * 2


@pytest.mark.parametrize(
    ("qc", "expected"),
    [
        (None, UNQUANTIZED),
        (
            {
                "quant_method": "awq",
                "bits": 4,
                "group_size": 128,
                "zero_point": True,
                "version": "gemm",
            },
            WeightFormat(4, 128, False),
        ),
        (
            {"quant_method": "gptq", "bits": 4, "group_size": 128, "sym": True, "desc_act": False},
            WeightFormat(4, 128, True),
        ),
        ({"quant_method": "fp8", "activation_scheme": "dynamic"}, WeightFormat(8)),
        (
            {
                "quant_method": "compressed-tensors",
                "config_groups": {
                    "group_0": {
                        "targets": ["Linear"],
                        "weights": {
                            "num_bits": 4,
                            "strategy": "group",
                            "group_size": 128,
                            "symmetric": True,
                            "type": "int",
                        },
                    }
                },
            },
            WeightFormat(4, 128, True),
        ),
        (
            {
                "quant_method": "compressed-tensors",
                "config_groups": {
                    "group_0": {
                        "weights": {
                            "num_bits": 8,
                            "strategy": "channel",
                            "symmetric": True,
                            "type": "float",
                        }
                    }
                },
            },
            WeightFormat(8, None, True),
        ),
    ],
)
def test_weight_format_of_existing_checkpoints(
    qc: dict[str, object] | None, expected: WeightFormat
) -> None:
    assert weight_format_from_quantization_config(qc) == expected


# ----- what vLLM holds after loading -----

MODELS = Path(__file__).parents[2] / "examples" / "models"
GIB = 1024**3


def example(folder: str) -> Architecture:
    return architecture_from_config(json.loads((MODELS / folder / "config.json").read_text()))


@pytest.mark.parametrize(
    ("folder", "fmt", "kernel", "tp", "pp", "logged_gib"),
    [
        # vLLM 0.19.0 on an H100, "Model loading took X GiB" (llm-d-planner logs).
        ("meta-llama--Llama-3.1-8B-Instruct", UNQUANTIZED, None, 1, 1, 14.99),
        ("meta-llama--Llama-3.1-8B-Instruct", UNQUANTIZED, None, 4, 1, 3.77),
        ("meta-llama--Llama-3.1-8B-Instruct", UNQUANTIZED, None, 1, 4, 4.26),
        ("Qwen--Qwen3-30B-A3B", UNQUANTIZED, None, 1, 1, 56.88),
        ("mistralai--Mixtral-8x7B-Instruct-v0.1", UNQUANTIZED, None, 2, 1, 43.51),
        ("deepseek-ai--DeepSeek-V2-Lite", UNQUANTIZED, None, 1, 1, 29.43),
        ("google--gemma-2-9b-it", UNQUANTIZED, None, 1, 1, 17.22),
        ("meta-llama--Llama-3.1-70B-Instruct", WeightFormat(8, layout="fp8"), None, 2, 1, 33.88),
        (
            "meta-llama--Llama-3.1-8B-Instruct",
            WeightFormat(4, 128, True, layout="gptq"),
            "machete",
            1,
            1,
            5.38,
        ),
    ],
)
def test_loaded_weights_are_what_vllm_logs(
    folder: str, fmt: WeightFormat, kernel: str | None, tp: int, pp: int, logged_gib: float
) -> None:
    arch = example(folder)
    loaded = loaded_weights(arch, estimate_weights(arch, fmt), fmt, kernel)  # type: ignore[arg-type]
    assert loaded.per_gpu_bytes(arch, tp, pp) / GIB == pytest.approx(
        logged_gib, rel=0.002, abs=0.015
    )


def test_loading_adds_the_rotary_cache_mla_matrices_and_vocab_padding() -> None:
    arch = architecture_from_config(LLAMA_31_8B)
    file = estimate_weights(arch)
    loaded = loaded_weights(arch, file)
    # The cos/sin cache: 131072 positions x 128 x 2 bytes, on every GPU.
    assert loaded.runtime_replicated_bytes == rotary_cache_bytes(arch) == 131072 * 128 * 2
    assert loaded.per_gpu_bytes(arch, 2) - file.per_gpu_bytes(arch, 2) == 131072 * 128 * 2
    assert loaded_weights(arch, loaded) is loaded  # applying it twice changes nothing
    # A vocabulary of 1000 is padded to 1024 rows.
    small = tiny()
    padded = loaded_weights(small, estimate_weights(small))
    assert padded.embedding_bytes == padded_vocab_size(1000) * 256 * 2 == 1024 * 256 * 2
    # DeepSeek-V2-Lite: W_UK and W_UV copy kv_b_proj, 27 layers x 16 heads x 256 x 512 x 2 bytes.
    mla = example("deepseek-ai--DeepSeek-V2-Lite")
    assert mla_absorbed_bytes(mla) == 27 * 16 * (128 + 128) * 512 * 2
    assert mla_absorbed_bytes(arch) == 0


def test_loaded_linear_bytes_follow_the_repacking_kernel() -> None:
    k, n = 4096, 1024
    groups = k // 128
    weight, scales = k * n // 2, groups * n * 2
    packed_zeros = groups * n // 2
    awq = WeightFormat(4, 128, False, layout="awq")
    assert awq.linear_bytes(k, n) == weight + scales + packed_zeros
    # Marlin keeps AWQ's packed zero points; Machete makes them 16-bit -zero x scale.
    assert awq.loaded_linear_bytes(k, n, "marlin") == weight + scales + packed_zeros
    assert awq.loaded_linear_bytes(k, n, "machete") == weight + scales + groups * n * 2
    assert awq.loaded_linear_bytes(k, n) == awq.loaded_linear_bytes(k, n, "machete")
    gptq = WeightFormat(4, 128, True, layout="gptq")
    # GPTQ's files hold qzeros even for symmetric weights, and g_idx.
    assert gptq.linear_bytes(k, n) == weight + scales + packed_zeros + k * 4
    assert gptq.loaded_linear_bytes(k, n, "marlin") == weight + scales
    assert gptq.loaded_linear_bytes(k, n, "machete") == gptq.linear_bytes(k, n)
    # compressed-tensors: no zero points when symmetric, a two-int64 weight_shape on disk.
    ct = WeightFormat(4, 128, True, layout="compressed-tensors")
    assert ct.linear_bytes(k, n) == weight + scales + 16
    assert ct.loaded_linear_bytes(k, n) == weight + scales
    # FP8 / INT8: channel scales become float32 whatever the checkpoint stored.
    assert WeightFormat(8, layout="fp8").loaded_linear_bytes(k, n) == k * n + n * 4
    # FP8 blocks of 128 x 128: one float32 scale a block, on disk and loaded.
    block = WeightFormat(8, layout="fp8", block=(128, 128))
    assert block.linear_bytes(k, n) == block.loaded_linear_bytes(k, n) == k * n + 8 * 32 * 4
    assert UNQUANTIZED.loaded_linear_bytes(k, n) == UNQUANTIZED.linear_bytes(k, n) == k * n * 2


def test_the_kernel_follows_the_compute_capability() -> None:
    assert repack_kernel((8, 0)) == "marlin"
    assert repack_kernel((8, 9)) == "marlin"
    assert repack_kernel((10, 0)) == "marlin"
    assert repack_kernel((9, 0)) is None  # Machete or Marlin by release: the larger
    assert repack_kernel((7, 5)) is None


def test_the_checkpoint_layout_comes_from_its_quantization_config() -> None:
    awq = weight_format_from_quantization_config(
        {"quant_method": "awq", "bits": 4, "group_size": 128, "zero_point": True}
    )
    assert awq.layout == "awq"
    gptq = weight_format_from_quantization_config(
        {"quant_method": "gptq", "bits": 4, "group_size": 128, "sym": True, "desc_act": True}
    )
    assert (gptq.layout, gptq.act_order) == ("gptq", True)
    fp8 = weight_format_from_quantization_config(
        {
            "quant_method": "fp8",
            "activation_scheme": "dynamic",
            "weight_block_size": [128, 128],
        }
    )
    assert (fp8.layout, fp8.block) == ("fp8", (128, 128))
