"""Failures of a quantization or inspection Job, each a reason and one line for a condition.

A :class:`JobError` is what the Job reports (a QuantizeError) and how it exits: ``permanent``
failures exit with quantwise.render.job.EXIT_PERMANENT, which the Job's pod failure policy turns
into an immediate failure instead of a retry (a retry cannot fix a gated model without a token);
the others exit 1 and the Job's backoffLimit retries them (a network blip).

:func:`classify` maps an exception from the libraries the Job uses (huggingface_hub,
transformers, datasets, torch) to a JobError, by class name along the exception's chain, so
this module imports none of them.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

from quantwise.api.report import ReportQuality


@dataclass
class JobError(Exception):
    """A failure the Job reports as ``reason`` (one CamelCase word) and ``message`` (one line)."""

    reason: str
    message: str
    permanent: bool = True
    quality: ReportQuality | None = None
    """The quality gate's figures, reported with a QualityGateFailed failure."""

    def __str__(self) -> str:
        return f"{self.reason}: {self.message}"


def _chain(exc: BaseException) -> Iterator[BaseException]:
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        yield current
        current = current.__cause__ or current.__context__


def _class_names(exc: BaseException) -> set[str]:
    return {cls.__name__ for cls in type(exc).__mro__}


def _one_line(text: str, limit: int = 400) -> str:
    line = " ".join(text.split())
    return line if len(line) <= limit else line[: limit - 3] + "..."


def classify(exc: BaseException, model: str, stage: str) -> JobError:
    """Return the JobError for ``exc``, raised while ``stage`` (e.g. "loading the model").

    ``model`` is the repository or path the Job was given; messages name the spec field to fix.
    """
    for link in _chain(exc):
        if isinstance(link, JobError):
            return link
        names = _class_names(link)
        text = str(link)
        # transformers re-raises huggingface_hub's GatedRepoError as an OSError saying so.
        if "GatedRepoError" in names or "You are trying to access a gated repo" in text:
            return JobError(
                "GatedModel",
                f"{model} is a gated Hugging Face repository and the Job has no token that may "
                "read it: accept the model's license on huggingface.co and set "
                "spec.source.huggingFace.tokenSecretRef to a Secret holding that account's token",
            )
        if "RevisionNotFoundError" in names:
            return JobError(
                "RevisionNotFound",
                f"{model} has no revision the Job asked for: check "
                "spec.source.huggingFace.revision",
            )
        if "RepositoryNotFoundError" in names:
            return JobError(
                "ModelNotFound",
                f"{model} does not exist on Hugging Face or is private: check "
                "spec.source.huggingFace.repo, and for a private repository set tokenSecretRef",
            )
        if "DatasetNotFoundError" in names or "DataFilesNotFoundError" in names:
            field = "evaluation" if "evaluation" in stage else "calibration"
            return JobError(
                "DatasetNotFound",
                f"{field} dataset not found ({_one_line(text, 200)}): check "
                f"spec.quantization.{field}.dataset, or put a JSONL/text file on a volume "
                f"and name it in spec.quantization.{field}.pvc",
            )
        if "OutOfMemoryError" in names or isinstance(link, MemoryError):
            lower = (
                "spec.quantization.evaluation.sequenceLength (or set evaluation.enabled: false)"
                if "evaluat" in stage
                else "spec.quantization.calibration.samples / sequenceLength"
            )
            return JobError(
                "OutOfMemory",
                f"out of memory while {stage}: give the Job more GPU memory "
                "(spec.quantizer.gpus, or a bigger GPU with spec.quantizer.nodeSelector) or "
                f"lower {lower}",
            )
        if isinstance(link, ValueError | KeyError) and (
            "Unrecognized configuration class" in text
            or "does not recognize this architecture" in text
            or "Unrecognized model" in text
            or (isinstance(link, KeyError) and stage == "loading the model")
        ):
            return JobError(
                "UnsupportedArchitecture",
                f"transformers cannot load {model} as a causal language model: "
                f"{_one_line(text, 240)}",
            )
        if names & {
            "OfflineModeIsEnabled",
            "TransportError",
            "ConnectionError",
            "Timeout",
        } or isinstance(link, ConnectionError | TimeoutError):
            return JobError(
                "NetworkError",
                f"network error while {stage}: {_one_line(text, 240)} (the Job retries)",
                permanent=False,
            )
    return JobError(
        "QuantizationFailed",
        f"{type(exc).__name__} while {stage}: {_one_line(str(exc), 300)}",
        permanent=False,
    )
