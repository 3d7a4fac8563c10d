"""Progress of ``quantwise quantize`` / ``inspect``: a JSON line per step, or a bar in a terminal.

In a pod, stdout is the log the operator reads the tail of: each step prints one line
(quantwise.api.progress). In a terminal a person is watching, the same steps draw one progress
bar line instead, redrawn in place.
"""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Callable
from typing import TextIO

from quantwise.api.progress import ProgressLine, format_line

BAR_WIDTH = 30


class Progress:
    """Reports stages and steps; thread-safe (the download watcher reports from its thread)."""

    def __init__(
        self,
        stream: TextIO | None = None,
        clock: Callable[[], float] = time.monotonic,
        bar: bool | None = None,
    ) -> None:
        self.stream = stream if stream is not None else sys.stdout
        self.clock = clock
        self.bar = self.stream.isatty() if bar is None else bar
        self.started = clock()
        self.stage = "starting"
        self.stage_started = self.started
        self._lock = threading.Lock()

    def begin(self, stage: str, steps: int | None = None, step: int | None = None) -> None:
        """A new stage starts (at ``step``, 0 by default, of ``steps`` when they are known)."""
        with self._lock:
            if self.bar and self.stage != "starting":
                self.stream.write("\n")
            self.stage = stage
            self.stage_started = self.clock()
        self.step(step if step is not None else (0 if steps is not None else None), steps)

    def step(self, step: int | None, steps: int | None) -> None:
        """``step`` of ``steps`` of the current stage are done."""
        with self._lock:
            now = self.clock()
            percent = None
            if step is not None and steps:
                percent = round(min(100.0, 100.0 * step / steps), 1)
            line = ProgressLine(
                stage=self.stage,
                step=step,
                steps=steps,
                percent=percent,
                elapsed_seconds=round(now - self.started),
                stage_seconds=round(now - self.stage_started),
            )
            self._write(line)

    def done(self) -> None:
        """The program's work is done: the last line, at 100 %."""
        self.begin("done", 1, step=1)
        if self.bar:
            self.stream.write("\n")
            self.stream.flush()

    def _write(self, line: ProgressLine) -> None:
        if not self.bar:
            self.stream.write(format_line(line) + "\n")
            self.stream.flush()
            return
        self.stream.write("\r" + render_bar(line))
        self.stream.flush()


def render_bar(line: ProgressLine) -> str:
    """One line of a terminal progress bar, e.g. ``calibrating [#####.....] 12/80 15% 5m40s``."""
    elapsed = _clock(line.elapsed_seconds)
    if line.percent is None:
        return f"{line.stage:<12} {elapsed}"
    filled = round(BAR_WIDTH * line.percent / 100)
    count = f" {line.step}/{line.steps}" if line.steps and line.steps < 10**6 else ""
    bar = "#" * filled + "." * (BAR_WIDTH - filled)
    return f"{line.stage:<12} [{bar}]{count} {line.percent:5.1f}% {elapsed}"


def _clock(seconds: float) -> str:
    minutes, rest = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{rest:02d}s"
