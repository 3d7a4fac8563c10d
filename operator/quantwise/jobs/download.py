"""The download of a Hugging Face model, as progress: bytes in the cache against the total.

``from_pretrained`` downloads and then loads in one call, and shows no progress a pod log can
use. While it runs, a thread looks at how many bytes the repository's blobs in the Hugging Face
cache hold (files being downloaded are there too, as ``*.incomplete``) against the weights'
total, read from the safetensors headers beforehand (range requests, as ``inspect`` reads them),
and reports a step whenever it grew. A download that hangs grows nothing and reports nothing,
which is what the operator's "no progress" is for. Best effort: without a total the steps have
no percent; without a cache folder, no steps.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Iterator
from pathlib import Path

from quantwise.jobs.progress import Progress

log = logging.getLogger("quantwise.jobs")

DOWNLOAD_POLL_SECONDS = 10.0
"""How often the cache is looked at (a step line at most this often)."""


def _total_bytes(repo: str, revision: str) -> int | None:
    """The weights' bytes, from the safetensors headers on the Hub (None when unknown)."""
    from quantwise.jobs.checkpoint import HubCheckpoint

    try:
        headers = HubCheckpoint(repo, revision).headers()
    except Exception as exc:  # best effort: the download itself says what is wrong
        log.debug("download: no total for %s: %s", repo, exc)
        return None
    return sum(t.nbytes for tensors in headers.values() for t in tensors) or None


def blobs_dir(repo: str) -> Path:
    """Where huggingface_hub keeps the files of ``repo`` (``$HF_HUB_CACHE/models--ORG--NAME``)."""
    from huggingface_hub import constants

    return Path(constants.HF_HUB_CACHE) / ("models--" + repo.replace("/", "--")) / "blobs"


def cached_bytes(folder: Path) -> int:
    """Bytes of the files in ``folder`` (0 when it does not exist yet)."""
    total = 0
    with contextlib.suppress(FileNotFoundError):
        for entry in folder.iterdir():
            with contextlib.suppress(FileNotFoundError):
                total += entry.stat().st_size
    return total


def _poll(
    folder: Path,
    total: int | None,
    progress: Progress,
    stop: threading.Event,
    every: float,
    before: int,
) -> None:
    """Report the bytes the folder grew by beyond ``before``, until ``stop`` or all are there."""
    last = 0
    while not stop.wait(every):
        # A file renamed from *.incomplete while the folder is read is missed once: count only
        # growth, so the steps never go back.
        done = cached_bytes(folder) - before
        if done <= last:
            continue
        last = done
        if total is not None and done >= total:
            progress.begin("loading")
            return
        progress.step(done, total)


@contextlib.contextmanager
def watch_download(
    repo: str,
    revision: str,
    progress: Progress,
    local: bool,
    every: float = DOWNLOAD_POLL_SECONDS,
) -> Iterator[None]:
    """Report the download of ``repo`` while the block loads it (``local``: nothing to fetch)."""
    if local:
        progress.begin("loading")
        yield
        return
    total = _total_bytes(repo, revision)
    progress.begin("downloading", total)
    folder = blobs_dir(repo)
    before = cached_bytes(folder)  # the tokenizer's and config's files, fetched already
    stop = threading.Event()
    watcher = threading.Thread(
        target=_poll, args=(folder, total, progress, stop, every, before), daemon=True
    )
    watcher.start()
    try:
        yield
    finally:
        stop.set()
        watcher.join()
