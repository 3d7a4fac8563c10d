"""Run ``quantwise quantize`` in-process, as the Job's container does, and read its report."""

from __future__ import annotations

from pathlib import Path

from quantwise.api.report import QuantizeError, QuantizeReport, parse_report
from quantwise.cli import main


def quantize(
    model: Path, output: Path, method: str, *extra: str, calibration: Path | None = None
) -> tuple[int, str, QuantizeReport | QuantizeError]:
    report_path = output.parent / f"{output.name}.report"
    args = ["quantize", "--model", str(model), "--method", method, "--output", str(output)]
    if calibration is not None:
        args += ["--calibration", str(calibration), "--samples", "8", "--sequence-length", "32"]
    rc = main([*args, *extra, "--report-path", str(report_path)])
    text = report_path.read_text()
    return rc, text, parse_report(text)
