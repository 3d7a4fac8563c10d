"""The progress line: what a quantization or inspection Job is doing, one JSON object a line.

The Job's programs print, besides their human log, one line at each step::

    {"progress": {"stage": "calibrating", "step": 12, "steps": 80, "percent": 15.0,
                  "elapsedSeconds": 340, "stageSeconds": 96}}

``step``/``steps`` where the count is known (decoder layers while calibrating, batches while
evaluating, bytes while downloading), ``elapsedSeconds`` since the program started,
``stageSeconds`` since the stage did (what the operator's estimate of the time left is based
on). The same model writes it (quantwise.jobs.progress) and reads it from the tail of the pod's
log (quantwise.reconcile.progress), so the two cannot drift apart.
"""

from __future__ import annotations

import json
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError
from pydantic.alias_generators import to_camel

PROGRESS_KEY = "progress"
STAGES: tuple[str, ...] = (
    "starting", "downloading", "loading", "evaluating", "calibrating", "quantizing", "saving",
    "reading", "done",
)  # fmt: skip
"""The stages, roughly in the order a quantization Job goes through them."""


class ProgressLine(BaseModel):
    """One progress line's content."""

    # Lines come from our own images; an unknown key from a newer image is ignored.
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="ignore")

    stage: str = Field(min_length=1, max_length=64)
    step: int | None = Field(default=None, ge=0)
    steps: int | None = Field(default=None, ge=0)
    percent: float | None = Field(default=None, ge=0, le=100)
    elapsed_seconds: int = Field(default=0, ge=0)
    stage_seconds: int | None = Field(default=None, ge=0)


def format_line(line: ProgressLine) -> str:
    """The line as the Job prints it (compact JSON, no newline)."""
    data = line.model_dump(by_alias=True, exclude_none=True, mode="json")
    return json.dumps({PROGRESS_KEY: data}, separators=(",", ":"))


def parse_line(text: str) -> ProgressLine | None:
    """The progress in one log line, or None when the line is something else.

    Tolerates what a log adds around it: a kubelet timestamp before it, a carriage return.
    """
    start = text.find('{"' + PROGRESS_KEY + '"')
    if start < 0:
        return None
    try:
        data: Any = json.loads(text[start:].strip())
    except ValueError:
        return None
    if not isinstance(data, dict) or not isinstance(data.get(PROGRESS_KEY), dict):
        return None
    try:
        return ProgressLine.model_validate(data[PROGRESS_KEY])
    except ValidationError:
        return None
