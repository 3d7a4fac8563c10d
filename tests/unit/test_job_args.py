"""The Job the operator renders and the program in its image agree on every flag.

Each example manifest (and a few specs that exercise every flag) is rendered into its Job; the
container's argument list must parse with ``quantwise``'s own argument parser, and mean what the
spec says.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import yaml

from quantwise.api.spec import QuantizedModelSpec
from quantwise.cli import build_parser
from quantwise.render.job import quantization_job

EXAMPLES = sorted((Path(__file__).parents[2] / "examples").glob("*.yaml"))

EVERY_FLAG: dict[str, Any] = {
    "source": {"pvc": {"claimName": "models", "path": "base/llama"}},
    "quantization": {
        "method": "gptq", "bits": 8, "groupSize": 64, "symmetric": False,
        "calibration": {"pvc": {"claimName": "data", "path": "cal/samples.jsonl"},
                        "samples": 128, "sequenceLength": 1024},
        "ignore": ["lm_head", "re:.*gate$"],
    },
    "storage": {"pvc": {"claimName": "models", "path": "quantized"}},
    "serving": {"gpu": {"product": "L40S"}, "kvCacheDtype": "fp8_e4m3"},
}  # fmt: skip


def job_args(spec: dict[str, Any]) -> tuple[list[str], QuantizedModelSpec]:
    parsed = QuantizedModelSpec.model_validate(spec)
    job = quantization_job("m", "ml", parsed)
    container = job["spec"]["template"]["spec"]["containers"][0]
    assert container["command"] == ["quantwise"]
    return container["args"], parsed


@pytest.mark.parametrize("path", EXAMPLES, ids=[p.stem for p in EXAMPLES])
def test_every_example_job_parses(path: Path) -> None:
    manifest = yaml.safe_load(path.read_text())
    args, spec = job_args(manifest["spec"])
    parsed = build_parser().parse_args(args)
    q = spec.quantization
    if q.method == "none":
        assert parsed.command == "inspect"
        return
    assert parsed.command == "quantize"
    assert parsed.method == q.method
    assert parsed.bits == q.effective_bits
    assert parsed.group_size == q.effective_group_size
    assert parsed.output.startswith("/artifacts/")
    assert parsed.report_path == "/dev/termination-log"


def test_every_flag_means_what_the_spec_says() -> None:
    args, _ = job_args(EVERY_FLAG)
    parsed = build_parser().parse_args(args)
    assert (parsed.method, parsed.bits, parsed.group_size, parsed.symmetric) == (
        "gptq", 8, 64, False,
    )  # fmt: skip
    # The source and the artifacts share claim "models": one volume, both paths on its mount.
    assert parsed.model == "/artifacts/base/llama"
    assert parsed.calibration == "/calibration/cal/samples.jsonl"
    assert (parsed.samples, parsed.sequence_length) == (128, 1024)
    assert parsed.ignore == ["lm_head", "re:.*gate$"]
    assert parsed.kv_cache_dtype == "fp8"
    assert parsed.output.startswith("/artifacts/quantized/")


def test_hugging_face_source_and_named_dataset() -> None:
    spec = copy.deepcopy(EVERY_FLAG)
    spec["source"] = {"huggingFace": {"repo": "org/model", "revision": "v2"}}
    spec["quantization"]["calibration"] = {"dataset": "org/data", "split": "validation"}
    parsed = build_parser().parse_args(job_args(spec)[0])
    assert (parsed.model, parsed.revision) == ("org/model", "v2")
    assert (parsed.calibration, parsed.split) == ("org/data", "validation")
