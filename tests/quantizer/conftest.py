"""Real quantization on the CPU: a tiny random Llama, built here, quantized by llm-compressor.

These tests need the ``quantizer`` extra (torch, transformers, llm-compressor, datasets). Where
it is missing they skip with the reason, unless ``QUANTWISE_REQUIRE_QUANTIZER=1`` (set by
``.ci/run``), where a missing quantizer is a failure: CI must never skip them silently.
Deselect them with ``-m "not quantizer"``.
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import pytest

from quantwise.api.report import QuantizeReport
from support.quantizer import quantize
from support.tiny import build_tiny_llama, write_calibration

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


@pytest.fixture(scope="session")
def tiny_llama(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A randomly initialised bf16 Llama with a word-level tokenizer, saved to a directory."""
    return build_tiny_llama(tmp_path_factory.mktemp("tiny-llama"))


@pytest.fixture(scope="session")
def calibration_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A JSONL calibration file as a cluster without internet would mount it."""
    return write_calibration(tmp_path_factory.mktemp("calibration") / "samples.jsonl")


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
