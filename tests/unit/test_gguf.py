"""GGUF files: the quantization is read from the header (gguf library), and vLLM's verdict given."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from gguf import GGMLQuantizationType, GGUFWriter, LlamaFileType
from gguf.quants import quantize

from quantwise.cli import main
from quantwise.planning.gpus import lookup_gpu
from quantwise.quantization.gguf_file import parse_gguf
from quantwise.quantization.validate import validate


def write_gguf(path: Path, kind: GGMLQuantizationType, file_type: LlamaFileType) -> Path:
    writer = GGUFWriter(str(path), "llama")
    writer.add_file_type(file_type)
    weights = np.random.default_rng(0).random((64, 256), dtype=np.float32)
    writer.add_tensor("blk.0.attn_q.weight", quantize(weights, kind), raw_dtype=kind)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


@pytest.mark.parametrize(
    ("kind", "file_type", "bits", "fmt"),
    [
        (GGMLQuantizationType.Q8_0, LlamaFileType.MOSTLY_Q8_0, 8, "Q8_0"),
        (GGMLQuantizationType.Q4_0, LlamaFileType.MOSTLY_Q4_0, 4, "Q4_0"),
    ],
)
def test_gguf_quantization_from_the_header(
    tmp_path: Path, kind: GGMLQuantizationType, file_type: LlamaFileType, bits: int, fmt: str
) -> None:
    q = parse_gguf(write_gguf(tmp_path / "model.gguf", kind, file_type))
    assert (q.producer, q.scheme, q.weight_bits, q.format) == ("gguf", "gguf", bits, fmt)


def test_gguf_verdicts_and_cli(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write_gguf(tmp_path / "model.gguf", GGMLQuantizationType.Q8_0, LlamaFileType.MOSTLY_Q8_0)
    q = parse_gguf(path)
    assert validate(q, lookup_gpu("L4"), (0, 24)).verdict == "unsupported"  # A plugin from 0.24.
    slow = validate(q, lookup_gpu("L4"), (0, 20))
    assert (slow.verdict, slow.kernel) == ("slow", "GGUF dequantization")
    assert main(["validate", str(tmp_path), "--gpu", "L4", "--vllm", "0.33", "-o", "json"]) == 1
    data = json.loads(capsys.readouterr().out)
    assert data["verdict"] == "unsupported"
    assert "plugin" in data["findings"][0]["message"]


def test_not_a_gguf_file_is_a_clear_error(tmp_path: Path) -> None:
    bad = tmp_path / "model.gguf"
    bad.write_bytes(b"not gguf at all")
    from quantwise.quantization.config import QuantizationConfigError

    with pytest.raises(QuantizationConfigError, match="not a readable GGUF file"):
        parse_gguf(bad)
