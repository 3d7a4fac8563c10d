"""Calibration data from the files a cluster without internet would mount."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from quantwise.jobs.calibration import load_calibration
from quantwise.jobs.errors import JobError


@pytest.fixture(scope="module")
def tokenizer(tiny_llama: Path) -> object:
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(tiny_llama))


def words(n: int, start: int = 0) -> str:
    return " ".join(f"w{(start + i) % 500}" for i in range(n))


def test_jsonl_text_and_messages(tokenizer: object, tmp_path: Path) -> None:
    path = tmp_path / "cal.jsonl"
    path.write_text(
        json.dumps({"text": words(40)}) + "\n\n"
        + json.dumps({"messages": [{"role": "user", "content": words(10, 7)},
                                   {"role": "assistant", "content": words(5, 9)}]}) + "\n"
        + json.dumps({"prompt": words(3), "completion": " " + words(3, 3)}) + "\n"
    )  # fmt: skip
    data = load_calibration(str(path), tokenizer, samples=10, sequence_length=16)
    lengths = sorted(len(ids) for ids in data["input_ids"])
    assert lengths == [6, 15, 16]  # 40 words cut to 16; 10 + 5 chat words joined; 3 + 3
    assert all(
        mask == [1] * len(ids)
        for ids, mask in zip(data["input_ids"], data["attention_mask"], strict=True)
    )


def test_selection_is_seeded(tokenizer: object, tmp_path: Path) -> None:
    path = tmp_path / "cal.jsonl"
    path.write_text("".join(json.dumps({"text": words(8, i * 10)}) + "\n" for i in range(30)))
    first = load_calibration(str(path), tokenizer, samples=5, sequence_length=8, seed=1)
    again = load_calibration(str(path), tokenizer, samples=5, sequence_length=8, seed=1)
    other = load_calibration(str(path), tokenizer, samples=5, sequence_length=8, seed=2)
    assert first["input_ids"] == again["input_ids"]
    assert first["input_ids"] != other["input_ids"]


def test_plain_text_is_cut_into_sequences(tokenizer: object, tmp_path: Path) -> None:
    path = tmp_path / "corpus.txt"
    path.write_text(words(100) + "\n" + words(30))
    data = load_calibration(str(path), tokenizer, samples=3, sequence_length=32)
    assert [len(ids) for ids in data["input_ids"]] == [32, 32, 32]


def test_saved_dataset_directory(tokenizer: object, tmp_path: Path) -> None:
    import datasets

    datasets.Dataset.from_dict({"text": [words(12), words(20, 5)]}).save_to_disk(tmp_path / "ds")
    data = load_calibration(str(tmp_path / "ds"), tokenizer, samples=4, sequence_length=64)
    assert sorted(len(ids) for ids in data["input_ids"]) == [12, 20]


@pytest.mark.parametrize(
    ("content", "reason"),
    [
        (None, "DatasetNotFound"),
        ('{"title": "x"}\n', "DatasetEmpty"),
        ("{not json\n", "DatasetUnreadable"),
    ],
)
def test_bad_calibration_files(
    tokenizer: object, tmp_path: Path, content: str | None, reason: str
) -> None:
    path = tmp_path / "cal.jsonl"
    if content is not None:
        path.write_text(content)
    with pytest.raises(JobError) as caught:
        load_calibration(str(path), tokenizer, samples=4, sequence_length=16)
    assert caught.value.reason == reason
    assert "spec.quantization.calibration" in caught.value.message or reason == "DatasetUnreadable"
