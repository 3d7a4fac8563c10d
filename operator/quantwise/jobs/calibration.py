"""Calibration samples for oneshot: a named dataset, or a file on a mounted volume.

Clusters often have no internet, so a JSONL, JSON, Parquet or text file (or a directory written
by ``datasets.Dataset.save_to_disk``) on a volume works as well as a Hugging Face dataset name.
Each record's text comes from its ``text`` column, or its chat ``messages`` rendered with the
tokenizer's chat template (ultrachat-style data sets), or ``prompt`` (+ ``completion``). A plain
text file is tokenized whole and cut into ``sequence_length``-token pieces.

Selection is deterministic: records are shuffled with a fixed seed and the first ``samples``
kept, so a retried Job calibrates on the same data.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from quantwise.jobs.errors import JobError

log = logging.getLogger("quantwise.jobs")

TEXT_COLUMNS = ("text", "messages", "conversations", "prompt", "content")
# Read at most this many records per requested sample from a named dataset's split, so a large
# data set (ultrachat: 200k conversations) is not downloaded whole for 512 samples.
RECORDS_PER_SAMPLE = 4


def _missing(where: str, field: str = "calibration") -> JobError:
    return JobError(
        "DatasetNotFound",
        f"{field} data {where} not found: check spec.quantization.{field} (dataset, or "
        "pvc.claimName and pvc.path of a JSONL/text file on a volume)",
    )


def record_text(record: Mapping[str, Any], tokenizer: Any) -> str | None:
    """The text of one record (None when it has none quantwise knows how to read)."""
    for column in TEXT_COLUMNS:
        value = record.get(column)
        if value is None:
            continue
        if isinstance(value, str):
            if column == "prompt" and isinstance(record.get("completion"), str):
                return value + str(record["completion"])
            return value
        if isinstance(value, list) and value and isinstance(value[0], Mapping):
            messages = [
                {
                    "role": str(m.get("role") or m.get("from") or "user"),
                    "content": str(m.get("content") or m.get("value") or ""),
                }
                for m in value
            ]
            if getattr(tokenizer, "chat_template", None):
                return str(tokenizer.apply_chat_template(messages, tokenize=False))
            return "\n".join(m["content"] for m in messages)
    return None


def _read_jsonl(path: Path) -> list[dict[str, Any]]:
    records: list[dict[str, Any]] = []
    with path.open(encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as exc:
                raise JobError(
                    "DatasetUnreadable", f"{path} line {number}: not JSON ({exc.msg})"
                ) from exc
            if isinstance(record, dict):
                records.append(record)
            elif isinstance(record, str):
                records.append({"text": record})
    return records


def _records_from_path(path: Path) -> list[dict[str, Any]] | str:
    """Records of a file or directory; a plain text file comes back as one string."""
    suffix = path.suffix.lower()
    if path.is_dir():
        import datasets

        if (path / "dataset_info.json").is_file() or (path / "state.json").is_file():
            loaded: Any = datasets.load_from_disk(str(path))
            if isinstance(loaded, datasets.DatasetDict):
                loaded = loaded[next(iter(loaded))]
        else:
            loaded = datasets.load_dataset(str(path), split="train")
        return [dict(r) for r in loaded]
    if suffix in (".jsonl", ".ndjson"):
        return _read_jsonl(path)
    if suffix == ".json":
        data = json.loads(path.read_text(encoding="utf-8"))
        if isinstance(data, dict):
            data = next((v for v in data.values() if isinstance(v, list)), [])
        return [r if isinstance(r, dict) else {"text": str(r)} for r in data]
    if suffix == ".parquet":
        import datasets

        return [dict(r) for r in datasets.load_dataset("parquet", data_files=str(path))["train"]]
    return path.read_text(encoding="utf-8")


def _records_from_hub(
    name: str, split: str, samples: int, skip_samples: int = 0
) -> list[dict[str, Any]]:
    """Records of a named dataset: ``samples`` x RECORDS_PER_SAMPLE of its split.

    They start after the first ``skip_samples`` x RECORDS_PER_SAMPLE records, the ones a
    calibration of ``skip_samples`` samples reads.
    """
    import datasets

    if "[" not in split:
        first = skip_samples * RECORDS_PER_SAMPLE
        last = first + samples * RECORDS_PER_SAMPLE
        split = f"{split}[{first}:{last}]" if first else f"{split}[:{last}]"
    log.info("loading %s split %s", name, split)
    loaded = datasets.load_dataset(name, split=split)
    return [dict(r) for r in loaded]


def _shuffled(items: list[Any], seed: int) -> list[Any]:
    import random

    result = list(items)
    random.Random(seed).shuffle(result)  # noqa: S311 - reproducible sample choice, not secrecy
    return result


def tokenize_texts(
    texts: Iterable[str], tokenizer: Any, samples: int, sequence_length: int
) -> list[list[int]]:
    """Token ids of up to ``samples`` texts, each cut to ``sequence_length`` tokens."""
    result: list[list[int]] = []
    for text in texts:
        if len(result) >= samples:
            break
        ids = tokenizer(text, truncation=True, max_length=sequence_length)["input_ids"]
        if ids:
            result.append(list(ids))
    return result


def chunk_text(
    text: str, tokenizer: Any, samples: int, sequence_length: int, skip_tokens: int = 0
) -> tuple[list[list[int]], int]:
    """A long text cut into ``sequence_length``-token pieces (at most ``samples``).

    The pieces start at token ``skip_tokens``; also returned: the token they reach.
    """
    ids = list(tokenizer(text, add_special_tokens=False)["input_ids"])
    pieces: list[list[int]] = []
    position = skip_tokens
    while position < len(ids) and len(pieces) < samples:
        piece = ids[position : position + sequence_length]
        if len(piece) >= min(sequence_length, 16):
            pieces.append(piece)
        position += sequence_length
    return pieces, position


def _select(
    found: list[dict[str, Any]] | str,
    tokenizer: Any,
    samples: int,
    sequence_length: int,
    seed: int,
    skip: int = 0,
) -> tuple[list[list[int]], int]:
    """Token ids of up to ``samples`` samples, and how far into the data they reach.

    From the records (shuffled with ``seed``) after the first ``skip``, or from one text after
    its first ``skip`` tokens. How far they reach (records, or tokens) is where a held-out slice
    starts.
    """
    if isinstance(found, str):
        return chunk_text(found, tokenizer, samples, sequence_length, skip_tokens=skip)
    result: list[list[int]] = []
    used = skip
    for record in _shuffled(found, seed)[skip:]:
        if len(result) >= samples:
            break
        used += 1
        text = record_text(record, tokenizer)
        ids = (
            tokenizer(text, truncation=True, max_length=sequence_length)["input_ids"]
            if text
            else []
        )
        if ids:
            result.append(list(ids))
    return result, used


def _read(
    source: str, split: str, samples: int, skip_samples: int = 0, field: str = "calibration"
) -> list[dict[str, Any]] | str:
    """The records (or the one text) of ``source``: a path, or a Hugging Face dataset name."""
    path = Path(source)
    if _is_path(source):
        if not path.exists():
            raise _missing(f"file {source}", field)
        return _records_from_path(path)
    return _records_from_hub(source, split, samples, skip_samples)


def _log_selected(what: str, source: str, ids: list[list[int]], samples: int, length: int) -> None:
    if len(ids) < samples:
        log.warning("%s: %s gave %d samples, fewer than the %d asked for", what, source, len(ids),
                    samples)  # fmt: skip
    tokens = sum(len(i) for i in ids)
    log.info("%s: %d samples, %d tokens (up to %d per sample) from %s", what, len(ids), tokens,
             length, source)  # fmt: skip


def load_calibration(
    source: str,
    tokenizer: Any,
    samples: int,
    sequence_length: int,
    split: str = "train",
    seed: int = 0,
) -> Any:
    """Return a ``datasets.Dataset`` of ``input_ids`` / ``attention_mask`` for oneshot.

    ``source`` is a path (file or directory) when it starts with ``/`` or ``.`` or exists,
    else a Hugging Face dataset name. Raises JobError (DatasetNotFound, DatasetEmpty, ...).
    """
    import datasets

    ids, _ = _select(_read(source, split, samples), tokenizer, samples, sequence_length, seed)
    if not ids:
        raise JobError(
            "DatasetEmpty",
            f"calibration data {source} gave no text: records need a 'text', 'messages' or "
            "'prompt' field (spec.quantization.calibration)",
        )
    _log_selected("calibration", source, ids, samples, sequence_length)
    return datasets.Dataset.from_dict(
        {"input_ids": ids, "attention_mask": [[1] * len(i) for i in ids]}
    )


@dataclass(frozen=True)
class HeldOut:
    """The calibration an evaluation on the same data must not overlap: its samples and length."""

    samples: int
    sequence_length: int


def load_evaluation(
    source: str,
    tokenizer: Any,
    samples: int,
    sequence_length: int,
    split: str = "train",
    seed: int = 0,
    held_out: HeldOut | None = None,
) -> list[list[int]]:
    """Token ids of up to ``samples`` evaluation samples (an empty list when there are none).

    With ``held_out`` (``source`` is also the calibration data), only what the calibration does
    not read: of a named dataset, the records after the ones it fetches; of a file, the records
    (in the same seeded order) or the tokens after the ones it takes. Samples of one token
    predict nothing and are left out.
    """
    if held_out is None:
        found = _read(source, split, samples, field="evaluation")
        ids, _ = _select(found, tokenizer, samples, sequence_length, seed)
    else:
        found = _read(source, split, samples, held_out.samples, field="evaluation")
        skip = 0
        if isinstance(found, str) or "[" in split or _is_path(source):
            # Replay the calibration's choice, to start where it stopped.
            _, skip = _select(found, tokenizer, held_out.samples, held_out.sequence_length, seed)
        ids, _ = _select(found, tokenizer, samples, sequence_length, seed, skip=skip)
    ids = [i for i in ids if len(i) >= 2]
    if ids:
        _log_selected("evaluation", source, ids, samples, sequence_length)
    return ids


def _is_path(source: str) -> bool:
    return source.startswith(("/", ".")) or Path(source).exists()
