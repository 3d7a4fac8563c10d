"""What a running Job is doing, from the progress lines at the tail of its pod's log (pure).

The Job prints a progress line at each step (quantwise.api.progress); the operator reads the
tail of the pod's log now and then (quantwise.handlers.worker) and turns the last line into
``status.progress``: the stage, the whole percent, the time left in the stage at the stage's
rate so far, and when that line was written (the container's start plus the line's
``elapsedSeconds``). Figures are rounded, and a status whose figures did not change is kept as
it was, so a read that learns nothing new writes nothing. No line for
``settings.progress_stall_seconds`` shows as "no progress for N" and sets the Quantized
condition's reason to NoProgress (one Event); a read that fails keeps the last known progress.
"""

from __future__ import annotations

import datetime
import math

from quantwise.api.progress import ProgressLine, parse_line
from quantwise.api.status import ConditionType, ProgressStatus, Reason
from quantwise.reconcile.state import Decision
from quantwise.settings import Settings

QUANTIZED = ConditionType.QUANTIZED
# (up to this many seconds, round to this many seconds): minutes while they count, coarser
# steps as the time grows, so that the figure moves a few times per stage, not every read.
_STEPS: tuple[tuple[float, int], ...] = ((600, 60), (3600, 300), (36000, 900), (math.inf, 3600))


def latest_line(text: str) -> ProgressLine | None:
    """The last progress line of a log's text (None when it has none)."""
    for line in reversed(text.splitlines()):
        found = parse_line(line)
        if found is not None:
            return found
    return None


def _granule(seconds: float) -> int:
    return next(step for limit, step in _STEPS if seconds < limit)


def round_duration(seconds: float, up: bool = False) -> int:
    """``seconds`` rounded down (or ``up``) to a coarseness that grows with it.

    To the minute below 10 minutes, to 5 minutes below an hour, to 15 below 10 hours, else to
    the hour. A time left is rounded up, so it is never shown as less than a minute.
    """
    step = _granule(seconds)
    rounded = math.ceil(seconds / step) if up else math.floor(seconds / step)
    return int(rounded * step)


def human(seconds: int) -> str:
    """``<1m``, ``38m``, ``2h``, ``1h30m``."""
    if seconds < 60:
        return "<1m"
    minutes = seconds // 60
    if minutes < 60:
        return f"{minutes}m"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m" if minutes else f"{hours}h"


def eta_seconds(line: ProgressLine) -> int | None:
    """Time left in the stage at its rate so far (None until a step is done)."""
    if not (line.step and line.steps and line.stage_seconds):
        return None
    if line.step >= line.steps:
        return 0
    left = line.stage_seconds * (line.steps - line.step) / line.step
    return round_duration(left, up=True)


def _parse_time(value: str | None) -> datetime.datetime | None:
    if not value:
        return None
    try:
        parsed = datetime.datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=datetime.UTC)


def _format_time(value: datetime.datetime) -> str:
    return value.astimezone(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def message(stage: str, percent: int | None, eta: int | None, stalled: int | None) -> str:
    """What the Progress printer column shows: ``calibrating 45% ~38m left``."""
    text = stage if percent is None else f"{stage} {percent}%"
    if stalled is not None:
        return f"{text}, no progress for {human(stalled)}"
    if eta is not None and eta > 0:
        return f"{text} ~{human(eta)} left"
    return text


def progress_status(
    line: ProgressLine,
    written: datetime.datetime | None,
    now: datetime.datetime,
    stall_seconds: float,
) -> ProgressStatus:
    """``status.progress`` from the last progress line, written at ``written`` (if known)."""
    percent = math.floor(line.percent) if line.percent is not None else None
    silent = (now - written).total_seconds() if written is not None else 0.0
    stalled = round_duration(silent) if silent >= stall_seconds else None
    eta = eta_seconds(line) if stalled is None else None
    return ProgressStatus(
        stage=line.stage,
        step=line.step,
        steps=line.steps,
        percent=percent,
        eta_seconds=eta,
        last_progress_time=_format_time(written) if written is not None else None,
        stalled_seconds=stalled,
        message=message(line.stage, percent, eta, stalled),
    )


def _still(previous: ProgressStatus, now: datetime.datetime, stall: float) -> ProgressStatus:
    """The last known progress, when the log's tail has no progress line: as old as it was."""
    written = _parse_time(previous.last_progress_time)
    if written is None or (now - written).total_seconds() < stall:
        return previous
    stalled = round_duration((now - written).total_seconds())
    return previous.model_copy(
        update={"stalled_seconds": stalled, "eta_seconds": None,
                "message": message(previous.stage, previous.percent, None, stalled)}
    )  # fmt: skip


def _shown(status: ProgressStatus) -> tuple[object, ...]:
    return (status.stage, status.percent, status.eta_seconds, status.stalled_seconds)


def current_progress(d: Decision, settings: Settings) -> ProgressStatus | None:
    """The progress to show: from the log's tail just read, else the last known."""
    previous = d.current.progress
    now = _parse_time(d.obs.now) or datetime.datetime.now(datetime.UTC)
    stall = settings.progress_stall_seconds
    if d.obs.job_log is None:  # not read now (not due, or the read failed): keep what was known
        return previous
    line = latest_line(d.obs.job_log)
    if line is None:
        return _still(previous, now, stall) if previous is not None else None
    state = d.obs.job
    started = _parse_time(state.pod_started_at) if state is not None else None
    written = started + datetime.timedelta(seconds=line.elapsed_seconds) if started else None
    fresh = progress_status(line, written, now, stall)
    if previous is not None and _shown(previous) == _shown(fresh):
        return previous  # nothing shown changed: no status write
    return fresh


def job_running(d: Decision, job: str, verb: str, settings: Settings) -> None:
    """A running Job: ``status.progress``, and Quantized JobRunning (NoProgress when stalled)."""
    shown = current_progress(d, settings)
    d.update(progress=shown)
    if shown is not None and shown.stalled_seconds is not None:
        since = shown.last_progress_time or "a while"
        d.set(QUANTIZED, False, Reason.NO_PROGRESS,
              f"Job {job} has written no progress line since {since} (last: {shown.stage}"
              f"{f' {shown.percent}%' if shown.percent is not None else ''}); it may be stuck: "
              f"kubectl logs job/{job}")  # fmt: skip
        return
    d.set(QUANTIZED, False, Reason.JOB_RUNNING, f"Job {job} is running ({verb})")
