"""A long Job's progress: the line the Job prints, and status.progress the operator makes of it.

The writer and the parser share one model (quantwise.api.progress); the pure part of the
operator (quantwise.reconcile.progress) turns the tail of the pod's log into the stage, a whole
percent, the time left and the time of the line, writes only what changed, and says once when
no line came for too long.
"""

from __future__ import annotations

import io
import threading
import time
from typing import Any

import pytest
from test_reconcile import JOB, cond, observe, report, run, succeeded

from quantwise.api.progress import ProgressLine, format_line, parse_line
from quantwise.api.report import dump_report
from quantwise.jobs.progress import Progress, render_bar
from quantwise.reconcile.observe import JobState, job_state, trim_pod
from quantwise.reconcile.progress import eta_seconds, human, latest_line, round_duration
from quantwise.reconcile.state import Outcome, PostEvent

STARTED = "2026-11-22T11:00:00Z"
RUNNING = JobState(name=JOB, pod="p", pod_running=True, pod_started_at=STARTED)


def line(stage: str, step: int | None, steps: int | None, elapsed: int, in_stage: int) -> str:
    percent = round(100 * step / steps, 1) if step is not None and steps else None
    return format_line(ProgressLine(stage=stage, step=step, steps=steps, percent=percent,
                                    elapsed_seconds=elapsed, stage_seconds=in_stage))  # fmt: skip


def log(*lines: str) -> str:
    """A pod log: progress lines among what the libraries print."""
    noise = "2026-11-22T11:00:01.1234 | compress_module_list | INFO - Quantizing 1 module(s)"
    return "\n".join(x for pair in zip([noise] * len(lines), lines, strict=True) for x in pair)


def reconcile_running(job_log: str | None, now: str, status: dict[str, Any] | None = None,
                      job: JobState = RUNNING) -> Outcome:  # fmt: skip
    obs = observe(job=job, now=now, status=status)
    return run(obs.__class__(**{**obs.__dict__, "job_log": job_log}))


def test_the_line_round_trips_and_survives_what_a_log_adds() -> None:
    text = line("calibrating", 12, 80, 340, 96)
    assert text == ('{"progress":{"stage":"calibrating","step":12,"steps":80,"percent":15.0,'
                    '"elapsedSeconds":340,"stageSeconds":96}}')  # fmt: skip
    parsed = parse_line(text)
    assert parsed == ProgressLine(stage="calibrating", step=12, steps=80, percent=15.0,
                                  elapsed_seconds=340, stage_seconds=96)  # fmt: skip
    assert parse_line("2026-11-22T11:05:40.123456789Z " + text + "\r") == parsed
    assert parse_line('{"progress": {"stage": "saving", "future": 1}}') is not None
    for other in ('{"version":1,"kind":"QuantizeReport"}', '{"progress": 3}', "{progress",
                  '{"progress": {"stage": ""}}', "plain text"):  # fmt: skip
        assert parse_line(other) is None
    assert latest_line(log(line("loading", None, None, 5, 0), text)) == parsed
    assert latest_line("no progress here\nnor here") is None


def test_the_job_writes_a_line_per_step_and_a_bar_in_a_terminal() -> None:
    clock = iter(range(0, 1000, 10))
    out = io.StringIO()
    progress = Progress(stream=out, clock=lambda: float(next(clock)), bar=False)
    progress.begin("calibrating", 4)
    progress.step(1, 4)
    progress.done()
    lines = [parse_line(x) for x in out.getvalue().splitlines()]
    assert [(x.stage, x.step, x.percent) for x in lines if x] == [
        ("calibrating", 0, 0.0), ("calibrating", 1, 25.0), ("done", 1, 100.0),
    ]  # fmt: skip
    assert [x.elapsed_seconds for x in lines if x] == [20, 30, 50]
    assert [x.stage_seconds for x in lines if x] == [10, 20, 10]
    bar = io.StringIO()
    terminal = Progress(stream=bar, clock=lambda: 0.0, bar=True)
    terminal.begin("evaluating", 10)
    terminal.step(5, 10)
    terminal.done()
    assert "{" not in bar.getvalue() and bar.getvalue().endswith("\n")
    assert "\revaluating   [###############...............] 5/10  50.0% 0m00s" in bar.getvalue()
    assert render_bar(ProgressLine(stage="loading", elapsed_seconds=3725)) == "loading      1h02m"


@pytest.mark.parametrize(
    ("seconds", "down", "up", "shown"),
    [(0, 0, 0, "<1m"), (59, 0, 60, "<1m"), (61, 60, 120, "1m"), (1926, 1800, 2100, "32m"),
     (3700, 3600, 4500, "1h01m"), (40000, 39600, 43200, "11h06m")],
)  # fmt: skip
def test_durations_are_rounded_coarser_as_they_grow(
    seconds: int, down: int, up: int, shown: str
) -> None:
    assert round_duration(seconds) == down
    assert round_duration(seconds, up=True) == up
    assert human(seconds) == shown


def test_time_left_is_the_stage_rate_so_far() -> None:
    # 12 of 80 layers in 340 s: 68 more at that rate are 1927 s, shown rounded up to 35 minutes.
    assert eta_seconds(ProgressLine(stage="c", step=12, steps=80, stage_seconds=340)) == 2100
    assert eta_seconds(ProgressLine(stage="c", step=0, steps=80, stage_seconds=5)) is None
    assert eta_seconds(ProgressLine(stage="loading", stage_seconds=500)) is None
    assert eta_seconds(ProgressLine(stage="c", step=80, steps=80, stage_seconds=900)) == 0


def test_a_running_job_shows_its_stage_percent_and_time_left() -> None:
    text = log(line("loading", None, None, 5, 0), line("calibrating", 12, 80, 340, 96))
    out = reconcile_running(text, now="2026-11-22T11:06:00Z")
    assert out.status.phase == "Quantizing"
    progress = out.status.progress
    assert progress is not None
    assert (progress.stage, progress.step, progress.steps, progress.percent) == (
        "calibrating", 12, 80, 15,
    )  # fmt: skip
    # 96 s for 12 layers: 68 left are 544 s, shown as 10 minutes.
    assert progress.eta_seconds == 600 and progress.message == "calibrating 15% ~10m left"
    assert progress.last_progress_time == "2026-11-22T11:05:40Z"  # started + elapsedSeconds
    assert progress.stalled_seconds is None
    assert cond(out, "Quantized") == ("False", "JobRunning")
    assert out.status.to_api()["progress"]["message"] == "calibrating 15% ~10m left"


def test_a_read_that_learns_nothing_new_writes_nothing() -> None:
    first = reconcile_running(log(line("calibrating", 12, 80, 340, 96)), "2026-11-22T11:06:00Z")
    status = first.status.to_api()
    # A later line with the same figures (15 %, ~10m): the status stays as it was, time and all.
    later = reconcile_running(log(line("calibrating", 12, 80, 344, 100)), "2026-11-22T11:07:00Z",
                              status)  # fmt: skip
    assert later.status.to_api()["progress"] == status["progress"]
    # Not read this time (not due, or the kubelet could not be reached): the last known stays.
    unread = reconcile_running(None, "2026-11-22T11:08:00Z", status)
    assert unread.status.progress == first.status.progress
    assert later.actions == [] and unread.actions == []
    # A line that moves the figures is written.
    moved = reconcile_running(log(line("calibrating", 40, 80, 600, 356)), "2026-11-22T11:10:30Z",
                              status)  # fmt: skip
    assert moved.status.progress is not None and moved.status.progress.percent == 50


def test_no_progress_for_long_is_shown_and_said_once() -> None:
    text = log(line("calibrating", 12, 80, 340, 96))
    first = reconcile_running(text, "2026-11-22T11:06:00Z")
    # The same last line 21 minutes after it was written (the default limit is 20 minutes).
    stuck = reconcile_running(text, "2026-11-22T11:26:40Z", first.status.to_api())
    progress = stuck.status.progress
    assert progress is not None and progress.stalled_seconds == 1200
    assert progress.message == "calibrating 15%, no progress for 20m"
    assert progress.eta_seconds is None
    assert cond(stuck, "Quantized") == ("False", "NoProgress")
    (event,) = [a for a in stuck.actions if isinstance(a, PostEvent)]
    assert event.reason == "NoProgress" and event.warning
    assert "since 2026-11-22T11:05:40Z" in event.message and f"logs job/{JOB}" in event.message
    still = reconcile_running(text, "2026-11-22T11:27:40Z", stuck.status.to_api())
    assert not [a for a in still.actions if isinstance(a, PostEvent)]  # once
    # A tail without any progress line (a library's flood of output) is no news either.
    flooded = reconcile_running("x\n" * 500, "2026-11-22T11:40:00Z", stuck.status.to_api())
    assert flooded.status.progress is not None
    assert flooded.status.progress.message == "calibrating 15%, no progress for 30m"
    # Progress again: running, quietly.
    moving = reconcile_running(log(line("calibrating", 13, 80, 2000, 1756)),
                               "2026-11-22T11:34:00Z", stuck.status.to_api())  # fmt: skip
    assert cond(moving, "Quantized") == ("False", "JobRunning")
    assert not [a for a in moving.actions if isinstance(a, PostEvent)]


def test_progress_is_shown_only_while_the_job_runs() -> None:
    running = reconcile_running(log(line("saving", None, None, 900, 3)), "2026-11-22T11:16:00Z")
    assert running.status.progress is not None and running.status.progress.message == "saving"
    done = run(observe(job=succeeded(dump_report(report())), status=running.status.to_api()))
    assert done.status.progress is None and "progress" not in done.status.to_api()
    # Without the container's start time the line's time is unknown: shown, never "stalled".
    unknown = JobState(name=JOB, pod="p", pod_running=True)
    out = reconcile_running(log(line("calibrating", 1, 2, 10, 5)), "2026-11-23T00:00:00Z",
                            job=unknown)  # fmt: skip
    assert out.status.progress is not None and out.status.progress.stalled_seconds is None
    assert out.status.progress.last_progress_time is None


def test_the_running_pod_and_its_start_survive_the_cache_trim() -> None:
    pod = {
        "metadata": {"name": "j-abc", "namespace": "ml", "uid": "u1", "labels": {"a": "b"},
                     "managedFields": [{"manager": "kubelet"}]},
        "status": {"phase": "Running", "containerStatuses": [
            {"name": "quantizer", "ready": True,
             "state": {"running": {"startedAt": STARTED}}, "imageID": "sha256:x"}]},
    }  # fmt: skip
    state = job_state({"metadata": {"name": JOB}, "status": {"active": 1}}, [trim_pod(pod)])
    assert (state.pod, state.pod_running, state.pod_started_at) == ("j-abc", True, STARTED)
    pending = {"metadata": {"name": "j-abc"}, "status": {"phase": "Pending"}}
    assert not job_state({"metadata": {"name": JOB}}, [pending]).pod_running


def test_a_download_is_reported_in_bytes_as_the_cache_grows(tmp_path: Any) -> None:
    from quantwise.jobs.download import _poll

    folder = tmp_path / "blobs"
    folder.mkdir()
    (folder / "tokenizer-blob").write_bytes(b"t" * 10)  # fetched before the weights
    out = io.StringIO()
    progress = Progress(stream=out, bar=False)
    progress.begin("downloading", 1000)
    stop = threading.Event()
    watcher = threading.Thread(target=_poll, args=(folder, 1000, progress, stop, 0.01, 10))
    watcher.start()

    def lines() -> list[ProgressLine]:
        return [x for x in map(parse_line, out.getvalue().splitlines()) if x is not None]

    def wait(check: Any) -> None:
        deadline = time.monotonic() + 10
        while not check():
            assert time.monotonic() < deadline, out.getvalue()
            time.sleep(0.01)

    (folder / "weights.incomplete").write_bytes(b"w" * 400)
    wait(lambda: any(x.step == 400 for x in lines()))
    (folder / "weights.incomplete").rename(folder / "weights")
    (folder / "more.incomplete").write_bytes(b"w" * 600)
    wait(lambda: lines()[-1].stage == "loading")  # all bytes there: loading them now
    watcher.join(5)
    stop.set()
    downloading = [(x.step, x.steps, x.percent) for x in lines() if x.stage == "downloading"]
    assert downloading[0] == (0, 1000, 0.0) and (400, 1000, 40.0) in downloading
    assert not watcher.is_alive()
