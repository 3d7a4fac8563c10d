"""Real quantization on the CPU: a tiny random Llama, built here, quantized by llm-compressor.

These tests need the ``quantizer`` extra (torch, transformers, llm-compressor, datasets). Where
it is missing they skip with the reason, unless ``QUANTWISE_REQUIRE_QUANTIZER=1`` (set by
``.ci/run``), where a missing quantizer is a failure: CI must never skip them silently.
Deselect them with ``-m "not quantizer"``.
"""

from __future__ import annotations

import importlib.util
import json
import os
from pathlib import Path

import pytest

from quantwise.api.report import QuantizeReport
from support.quantizer import quantize

HAVE_QUANTIZER = all(
    importlib.util.find_spec(m) is not None
    for m in ("torch", "transformers", "llmcompressor", "datasets")
)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    here = Path(__file__).parent
    for item in items:
        if here in Path(str(item.fspath)).parents:
            item.add_marker(pytest.mark.quantizer)
            item.add_marker(pytest.mark.slow)
            if not HAVE_QUANTIZER:
                if os.environ.get("QUANTWISE_REQUIRE_QUANTIZER") == "1":
                    raise pytest.UsageError(
                        "QUANTWISE_REQUIRE_QUANTIZER=1 but the quantizer extra is not installed: "
                        "pip install torch==2.13.0 && pip install -e '.[quantizer]'"
                    )
                item.add_marker(
                    pytest.mark.skip(
                        reason="needs the quantizer extra: pip install torch==2.13.0 && "
                        "pip install -e '.[quantizer]'"
                    )
                )


# The tiny model: Llama architecture, 2 layers, hidden 128 (a multiple of the group size 32/64),
# grouped-query attention (4 heads, 2 KV heads), untied embeddings so lm_head is its own tensor.
TINY = {
    "vocab_size": 512,
    "hidden_size": 128,
    "intermediate_size": 256,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "max_position_embeddings": 512,
    "tie_word_embeddings": False,
}


@pytest.fixture(scope="session")
def tiny_llama(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A randomly initialised bf16 Llama with a word-level tokenizer, saved to a directory."""
    import torch
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    directory = tmp_path_factory.mktemp("tiny-llama")
    torch.manual_seed(0)
    model = LlamaForCausalLM(LlamaConfig(**TINY)).to(torch.bfloat16)
    model.save_pretrained(directory)
    vocab = {f"w{i}": i for i in range(TINY["vocab_size"] - 1)}
    vocab["[UNK]"] = TINY["vocab_size"] - 1
    backend = Tokenizer(models.WordLevel(vocab=vocab, unk_token="[UNK]"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend, unk_token="[UNK]", pad_token="[UNK]", eos_token="[UNK]"
    )
    tokenizer.save_pretrained(directory)
    return directory


@pytest.fixture(scope="session")
def calibration_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A JSONL calibration file as a cluster without internet would mount it."""
    import random

    rng = random.Random(1)
    path = tmp_path_factory.mktemp("calibration") / "samples.jsonl"
    lines = []
    for i in range(24):
        words = " ".join(f"w{rng.randrange(500)}" for _ in range(48))
        record = {"text": words} if i % 2 else {"messages": [{"role": "user", "content": words}]}
        lines.append(json.dumps(record))
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.fixture(scope="session")
def artifacts(
    tiny_llama: Path, calibration_file: Path, tmp_path_factory: pytest.TempPathFactory
) -> dict[str, tuple[Path, str, QuantizeReport]]:
    """Every method, quantized once for the module's tests."""
    root = tmp_path_factory.mktemp("artifacts")
    runs = {
        "awq": ("awq", ["--group-size", "32"], True),
        "gptq": ("gptq", ["--group-size", "64", "--bits", "4"], True),
        "gptq-w8": ("gptq", ["--bits", "8", "--group-size", "-1"], True),
        "fp8-dynamic": ("fp8-dynamic", [], False),
        "w8a8-int8": ("w8a8-int8", [], True),
        "fp8-kv": ("fp8", ["--kv-cache-dtype", "fp8"], True),
    }
    result = {}
    for name, (method, extra, calibrated) in runs.items():
        output = root / name
        rc, text, report = quantize(
            tiny_llama, output, method, *extra, calibration=calibration_file if calibrated else None
        )
        assert rc == 0, text
        assert isinstance(report, QuantizeReport)
        result[name] = (output, text, report)
    return result
