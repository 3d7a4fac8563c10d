"""The quality gate for real: perplexity of the tiny model before and after llm-compressor.

The loop is checked against values computed by hand (a bigram model whose every probability is
known) and against the model's own logits one sample at a time; a real run with a generous limit
reports both perplexities and passes; the same run with limit 0 fails the gate with exit status
3 and a report that carries both figures; evaluation never sees a calibration sample; a saved
checkpoint scores what the model in memory scored.
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path
from typing import Any

import pytest
import torch

from quantwise.api.progress import parse_line
from quantwise.api.report import QuantizeError, QuantizeReport, parse_report
from quantwise.cli import main
from quantwise.jobs.artifact import MARKER
from quantwise.jobs.calibration import HeldOut, load_calibration, load_evaluation
from quantwise.jobs.evaluation import perplexity
from support.quantizer import quantize

GPTQ = ("gptq", "--group-size", "32")


class Bigram(torch.nn.Module):
    """A language model whose next-token logits depend on the current token only: a table."""

    def __init__(self, table: torch.Tensor) -> None:
        super().__init__()
        self.table = torch.nn.Parameter(table, requires_grad=False)

    def forward(self, input_ids: torch.Tensor, **_: Any) -> Any:
        class Out:
            logits = self.table[input_ids]

        return Out()


def test_perplexity_is_the_hand_computed_value() -> None:
    # Vocabulary of 3; from each token, the next one's probabilities are a row of this table.
    probabilities = [[0.5, 0.25, 0.25], [0.1, 0.8, 0.1], [1 / 3, 1 / 3, 1 / 3]]
    model = Bigram(torch.tensor(probabilities).log())
    samples = [[0, 1, 1, 2], [2, 0], [1, 0, 2]]  # different lengths: batches are padded
    # By hand: the probability of each next token given the one before it.
    p = [0.25, 0.8, 0.1, 1 / 3, 0.1, 0.25]  # 0->1 1->1 1->2 | 2->0 | 1->0 0->2
    expected = math.exp(-sum(math.log(x) for x in p) / len(p))
    for batch_tokens in (1, 4, 100):  # one sample per batch, some, all at once
        measured = perplexity(model, samples, batch_tokens=batch_tokens)
        assert measured.tokens == 6
        assert measured.perplexity == pytest.approx(expected, rel=1e-6)
    # A uniform model is as perplexed as its vocabulary is large.
    uniform = Bigram(torch.zeros(3, 3))
    assert perplexity(uniform, samples).perplexity == pytest.approx(3.0)


def test_batched_perplexity_of_the_tiny_llama_is_the_one_sample_at_a_time_value(
    tiny_llama: Path,
) -> None:
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(str(tiny_llama), dtype=torch.float32)
    generator = torch.Generator().manual_seed(3)
    samples = [torch.randint(0, 511, (n,), generator=generator).tolist() for n in (9, 17, 5, 12)]
    nll, count = 0.0, 0
    with torch.inference_mode():
        for sample in samples:
            logits = model(torch.tensor([sample])).logits[0]
            logprobs = torch.log_softmax(logits.double(), dim=-1)
            nll -= sum(float(logprobs[i, sample[i + 1]]) for i in range(len(sample) - 1))
            count += len(sample) - 1
    measured = perplexity(model, samples, batch_tokens=40)
    assert measured.tokens == count == 39
    assert measured.perplexity == pytest.approx(math.exp(nll / count), rel=1e-4)


def progress_lines(text: str) -> list[Any]:
    return [line for line in map(parse_line, text.splitlines()) if line is not None]


@pytest.fixture(scope="module")
def passed(
    tiny_llama: Path, calibration_file: Path, tmp_path_factory: pytest.TempPathFactory
) -> tuple[Path, QuantizeReport, str]:
    """GPTQ on the tiny model with a generous limit: what it printed and reported."""
    output = tmp_path_factory.mktemp("gate") / "gptq"
    stdout = output.parent / "stdout"
    with stdout.open("w") as handle:
        old, sys.stdout = sys.stdout, handle
        try:
            rc, _, report = quantize(tiny_llama, output, *GPTQ, "--max-perplexity-increase", "1000",
                                     calibration=calibration_file)  # fmt: skip
        finally:
            sys.stdout = old
    assert rc == 0
    assert isinstance(report, QuantizeReport)
    return output, report, stdout.read_text()


def test_a_generous_limit_reports_both_perplexities_and_passes(
    passed: tuple[Path, QuantizeReport, str],
) -> None:
    _, report, _ = passed
    q = report.quality
    assert q is not None and q.not_measured is None
    assert q.baseline_perplexity is not None and q.perplexity is not None
    # A random model over a 512-token vocabulary is about as perplexed as the vocabulary is big.
    assert 300 < q.baseline_perplexity < 1000
    assert q.increase_percent == pytest.approx(
        (q.perplexity - q.baseline_perplexity) / q.baseline_perplexity * 100, abs=0.01
    )
    # The held-out slice: the 24 records of the file less the 8 calibration samples.
    assert (q.samples, q.limit_percent, q.passed) == (16, 1000, True)
    # Each record is 48 words, a token each: 47 of them predicted from the ones before.
    assert q.tokens == 16 * 47
    assert q.duration_seconds is not None


def test_the_progress_lines_go_through_the_stages_in_order_to_100_percent(
    passed: tuple[Path, QuantizeReport, str],
) -> None:
    _, _, stdout = passed
    lines = progress_lines(stdout)
    stages = [line.stage for line in lines]
    runs = [s for i, s in enumerate(stages) if i == 0 or stages[i - 1] != s]
    assert runs == ["loading", "evaluating", "calibrating", "evaluating", "saving", "done"]
    for stage in set(stages):
        steps = [line.step for line in lines if line.stage == stage and line.step is not None]
        assert steps == sorted(steps) or stage == "evaluating"  # evaluated twice: 0..n, 0..n
    calibrating = [(line.step, line.steps) for line in lines if line.stage == "calibrating"]
    assert calibrating == [(0, 2), (1, 2), (2, 2)]  # one step per decoder layer
    elapsed = [line.elapsed_seconds for line in lines]
    assert elapsed == sorted(elapsed)
    assert (lines[-1].stage, lines[-1].percent) == ("done", 100.0)
    # The report is the last line of stdout, after the progress.
    assert json.loads(stdout.strip().splitlines()[-1])["kind"] == "QuantizeReport"


def test_limit_zero_fails_the_gate_with_the_figures_and_a_retry_judges_again(
    passed: tuple[Path, QuantizeReport, str],
    tiny_llama: Path,
    calibration_file: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    _, first, _ = passed
    assert first.quality is not None and (first.quality.increase_percent or 0) > 0
    output = tmp_path / "gptq"
    rc, _, failure = quantize(tiny_llama, output, *GPTQ, "--max-perplexity-increase", "0",
                              calibration=calibration_file)  # fmt: skip
    assert rc == 3  # permanent: the Job's pod failure policy does not retry it
    assert isinstance(failure, QuantizeError)
    assert failure.reason == "QualityGateFailed"
    q = failure.quality
    assert q is not None and q.passed is False and q.limit_percent == 0
    # The same run, the same figures: deterministic.
    assert (q.baseline_perplexity, q.perplexity) == (
        first.quality.baseline_perplexity, first.quality.perplexity,
    )  # fmt: skip
    for figure in (f"{q.perplexity:.4g}", f"{q.baseline_perplexity:.4g}", "limit of 0 %"):
        assert figure in failure.message
    # Advice that follows from the request: GPTQ at 4 bits with 8 calibration samples.
    for advice in ("calibration.samples: 256", "method: awq", "8 bits", "ignore"):
        assert advice in failure.message
    assert "\n" not in failure.message
    # The checkpoint was published: a retry with a new limit judges it again, no quantizing.
    assert (output / MARKER).is_file()
    for module in ("llmcompressor", "transformers", "torch"):
        monkeypatch.setitem(sys.modules, module, None)
    rc, _, again = quantize(tiny_llama, output, *GPTQ, "--max-perplexity-increase", "50",
                            calibration=calibration_file)  # fmt: skip
    assert rc == 0 and isinstance(again, QuantizeReport)
    assert again.reused and again.quality is not None
    assert again.quality.passed is True and again.quality.limit_percent == 50
    assert again.quality.perplexity == q.perplexity


def test_a_checkpoint_found_again_without_figures_is_measured_from_disk(
    passed: tuple[Path, QuantizeReport, str],
    tiny_llama: Path,
    calibration_file: Path,
) -> None:
    """The checkpoint on disk scores what the quantized model in memory scored."""
    output, first, _ = passed
    marker = json.loads((output / MARKER).read_text())
    marker.pop("evaluation")  # as if made by a run without the gate
    (output / MARKER).write_text(json.dumps(marker))
    rc, _, again = quantize(tiny_llama, output, *GPTQ, "--max-perplexity-increase", "1000",
                            calibration=calibration_file)  # fmt: skip
    assert rc == 0 and isinstance(again, QuantizeReport) and again.reused
    assert again.quality is not None and first.quality is not None
    assert again.quality.baseline_perplexity == pytest.approx(first.quality.baseline_perplexity)
    assert again.quality.perplexity == pytest.approx(first.quality.perplexity, rel=1e-3)


def test_no_evaluation_data_is_not_measured_and_no_eval_skips_it(
    tiny_llama: Path, tmp_path: Path
) -> None:
    rc, _, report = quantize(tiny_llama, tmp_path / "a", "fp8-dynamic")
    assert rc == 0 and isinstance(report, QuantizeReport)
    assert report.quality is not None and report.quality.passed is None
    assert "no evaluation data" in (report.quality.not_measured or "")
    rc, _, report = quantize(tiny_llama, tmp_path / "b", "fp8-dynamic", "--no-eval")
    assert rc == 0 and isinstance(report, QuantizeReport) and report.quality is None


def test_fp8_dynamic_is_evaluated_on_the_data_it_is_given(
    tiny_llama: Path, calibration_file: Path, tmp_path: Path
) -> None:
    rc, _, report = quantize(tiny_llama, tmp_path / "out", "fp8-dynamic", "--eval-dataset",
                             str(calibration_file), "--eval-samples", "5")  # fmt: skip
    assert rc == 0 and isinstance(report, QuantizeReport) and report.quality is not None
    assert (report.quality.samples, report.quality.passed) == (5, True)


def test_evaluation_never_sees_a_calibration_sample(tiny_llama: Path, tmp_path: Path) -> None:
    from transformers import AutoTokenizer

    from support.tiny import write_calibration

    tokenizer = AutoTokenizer.from_pretrained(str(tiny_llama))
    records = write_calibration(tmp_path / "records.jsonl", lines=30, words=20)
    text = tmp_path / "book.txt"
    text.write_text(" ".join(f"w{i % 500}" for i in range(2000)))
    for source in (records, text):
        calibration = load_calibration(str(source), tokenizer, samples=10, sequence_length=16)
        seen = {tuple(ids) for ids in calibration["input_ids"]}
        held = load_evaluation(str(source), tokenizer, samples=100, sequence_length=16,
                               held_out=HeldOut(samples=10, sequence_length=16))  # fmt: skip
        assert held and not seen & {tuple(ids) for ids in held}
        everything = load_evaluation(str(source), tokenizer, samples=100, sequence_length=16)
        assert seen & {tuple(ids) for ids in everything}  # without holding out, it would
    # Of the records, exactly those calibration did not read: 30 - 10.
    held = load_evaluation(str(records), tokenizer, samples=100, sequence_length=16,
                           held_out=HeldOut(samples=10, sequence_length=16))  # fmt: skip
    assert len(held) == 20


def broken_copy(model: Path, target: Path) -> Path:
    """The model with its lm_head scaled 50 times: sharp, wrong next-token guesses (nonsense)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    broken = AutoModelForCausalLM.from_pretrained(str(model), dtype="auto")
    with torch.no_grad():
        broken.lm_head.weight.mul_(50)
    broken.save_pretrained(str(target))
    AutoTokenizer.from_pretrained(str(model)).save_pretrained(str(target))
    return target


def test_a_prequantized_checkpoint_is_compared_with_its_base_model(
    passed: tuple[Path, QuantizeReport, str],
    tiny_llama: Path,
    calibration_file: Path,
    tmp_path: Path,
) -> None:
    output, _, _ = passed
    report_path = tmp_path / "report"

    def inspect(checkpoint: Path, *extra: str) -> tuple[int, QuantizeReport | QuantizeError]:
        code = main(["inspect", "--model", str(checkpoint), "--base-model", str(tiny_llama),
                     "--eval-dataset", str(calibration_file), "--report-path", str(report_path),
                     *extra])  # fmt: skip
        return code, parse_report(report_path.read_text())

    code, inspected = inspect(output, "--max-perplexity-increase", "1000")
    assert code == 0 and isinstance(inspected, QuantizeReport) and inspected.quality is not None
    assert inspected.quality.passed is True and inspected.quality.samples == 24
    assert inspected.quality.perplexity is not None and inspected.quality.perplexity > 0
    # A checkpoint that talks nonsense fails the default limit, however it loads.
    code, failure = inspect(broken_copy(tiny_llama, tmp_path / "broken"))
    assert code == 3 and isinstance(failure, QuantizeError)
    assert failure.reason == "QualityGateFailed"
    assert failure.quality is not None and (failure.quality.increase_percent or 0) > 100
    assert "broken output" in failure.message and "quantize the base model" in failure.message
    # Without a base model, inspect reads headers only, as before.
    assert main(["inspect", "--model", str(output), "--report-path", str(report_path)]) == 0
    plain = parse_report(report_path.read_text())
    assert isinstance(plain, QuantizeReport) and plain.quality is None
