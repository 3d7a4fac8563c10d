"""Write an artifact atomically, and recognise a complete one.

The quantizer writes into a hidden staging directory beside the target
(``.NAME.partial-<random>``) and, when the checkpoint and tokenizer are saved and flushed,
writes ``quantwise.json`` (the inputs and the report) into it and renames it to the target:
``rename(2)`` within one file system is atomic, so the target either does not exist or is
complete. A Job killed half-way leaves only a staging directory, which the next run removes.

A run that finds the target with a ``quantwise.json`` for the same inputs, whose tensor index
still has the recorded digest, reports it again without quantizing.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import tempfile
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from quantwise.api.report import QuantizeReport
from quantwise.jobs.checkpoint import LocalCheckpoint, index_digest
from quantwise.jobs.errors import JobError

log = logging.getLogger("quantwise.jobs")

MARKER = "quantwise.json"
MARKER_VERSION = 1


def _staging_prefix(target: Path) -> str:
    return f".{target.name}.partial-"


def remove_stale_staging(target: Path) -> list[Path]:
    """Remove staging directories a killed run left beside ``target``; return what was removed."""
    removed: list[Path] = []
    if not target.parent.is_dir():
        return removed
    for entry in target.parent.iterdir():
        if entry.name.startswith(_staging_prefix(target)) and entry.is_dir():
            shutil.rmtree(entry, ignore_errors=True)
            removed.append(entry)
            log.info("removed %s, left by an interrupted run", entry)
    return removed


def _seal_tree(directory: Path) -> None:
    """Flush every file to disk and make the tree readable by the serving pods' user."""
    for root, dirs, names in os.walk(directory):
        for name in dirs:
            (Path(root) / name).chmod(0o755)
        for name in names:
            path = Path(root) / name
            # safetensors files are written 0600; vLLM runs as another user than the quantizer.
            path.chmod(0o644)
            with path.open("rb") as handle:
                os.fsync(handle.fileno())
    descriptor = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def read_marker(target: Path) -> dict[str, Any] | None:
    """The ``quantwise.json`` of ``target`` (None when absent or unreadable)."""
    try:
        data = json.loads((target / MARKER).read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def find_complete(target: Path, inputs: Mapping[str, Any]) -> QuantizeReport | None:
    """The report of a complete artifact at ``target`` made from ``inputs``, else None.

    Raises JobError ``OutputExists`` when ``target`` holds something else: a directory not
    written by quantwise, or an artifact made from different inputs (it is never overwritten).
    A complete artifact whose files no longer match its recorded digest is moved aside to
    ``NAME.corrupt-<random>`` (kept, never deleted) and None is returned, so it is made again.
    """
    if not target.exists():
        return None
    marker = read_marker(target)
    if marker is None:
        raise JobError(
            "OutputExists",
            f"{target} exists but was not written by quantwise (no {MARKER}): move it away or "
            "change spec.storage.pvc.path",
        )
    recorded = marker.get("inputs") or {}
    different = sorted(k for k in set(recorded) | set(inputs) if recorded.get(k) != inputs.get(k))
    if different:
        raise JobError(
            "OutputExists",
            f"{target} holds an artifact made with different {', '.join(different)}: move it "
            "away or change spec.storage.pvc.path",
        )
    try:
        report = QuantizeReport.model_validate(marker.get("report"))
    except ValidationError:
        report = None
    digest = index_digest(LocalCheckpoint(target).headers()) if report is not None else None
    if report is None or digest != report.artifact.digest:
        aside = Path(tempfile.mkdtemp(prefix=f"{target.name}.corrupt-", dir=target.parent))
        aside.rmdir()
        target.rename(aside)
        log.warning("%s does not match its %s; moved to %s and made again", target, MARKER, aside)
        return None
    return report


@contextlib.contextmanager
def staging(target: Path) -> Iterator[Path]:
    """A fresh staging directory beside ``target``; removed if the block raises."""
    target.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_staging(target)
    directory = Path(tempfile.mkdtemp(prefix=_staging_prefix(target), dir=target.parent))
    try:
        yield directory
    except BaseException:
        shutil.rmtree(directory, ignore_errors=True)
        raise


def publish(
    staged: Path,
    target: Path,
    inputs: Mapping[str, Any],
    report: QuantizeReport,
    evaluation: Mapping[str, Any] | None = None,
) -> None:
    """Seal ``staged`` with its marker, flush it, and rename it to ``target`` (atomic).

    ``evaluation``: what the report's quality figures were measured on, so that a later run
    with the same evaluation judges them again instead of measuring (not part of ``inputs``:
    the quality gate does not change the artifact).
    """
    marker: dict[str, Any] = {
        "version": MARKER_VERSION,
        "inputs": dict(inputs),
        "report": report.model_dump(by_alias=True, exclude_none=True, mode="json"),
    }
    if evaluation is not None:
        marker["evaluation"] = dict(evaluation)
    (staged / MARKER).write_text(json.dumps(marker, indent=2, sort_keys=True) + "\n")
    _seal_tree(staged)
    staged.chmod(0o755)  # mkdtemp made it 0700
    staged.rename(target)
    descriptor = os.open(target.parent, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)
    log.info("published %s", target)
