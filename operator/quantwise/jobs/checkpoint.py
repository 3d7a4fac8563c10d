"""Describe a checkpoint from its small files only: config.json and safetensors headers.

The same description serves ``quantwise quantize`` (the checkpoint it just wrote) and
``quantwise inspect`` (a checkpoint someone else made, on a volume or on Hugging Face): the
weight bytes summed from the safetensors headers (never the tensors), the quantization
normalised by quantwise.quantization.config, the architecture fields the planner needs, and a
digest of the tensor index, so two reports about the same files carry the same digest.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Protocol

from quantwise.api.report import (
    QuantizeReport,
    ReportArtifact,
    ReportQuantization,
    WeightBytes,
)
from quantwise.jobs.errors import JobError
from quantwise.planning.architecture import ArchitectureError, architecture_from_config
from quantwise.planning.weights import (
    TensorInfo,
    WeightsError,
    classify_tensors,
    read_safetensors_header,
    safetensors_files,
)
from quantwise.quantization.config import (
    CheckpointQuantization,
    QuantizationConfigError,
    parse_quantization_config,
)

log = logging.getLogger("quantwise.jobs")

# The side files producers write next to config.json (AutoGPTQ, early AutoAWQ).
SIDE_FILES = ("quantize_config.json", "quant_config.json")


class CheckpointFiles(Protocol):
    """Where a checkpoint's small files come from: a directory, or a Hugging Face repository."""

    @property
    def location(self) -> str:
        """Where the checkpoint is, as the report names it."""
        ...

    def read_json(self, name: str) -> dict[str, Any] | None:
        """The JSON file ``name`` at the checkpoint's top level, or None when it has none."""
        ...

    def headers(self) -> dict[str, list[TensorInfo]]:
        """The tensors of each safetensors file vLLM would load, by file name."""
        ...


@dataclass(frozen=True)
class LocalCheckpoint:
    """A checkpoint in a directory (a mounted volume, or what the quantizer just wrote)."""

    directory: Path

    @property
    def location(self) -> str:
        """The directory, as the report names it."""
        return str(self.directory)

    def read_json(self, name: str) -> dict[str, Any] | None:
        """Read ``name`` from the directory (None when absent)."""
        path = self.directory / name
        if not path.is_file():
            return None
        try:
            data = json.loads(path.read_text())
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise JobError("UnreadableCheckpoint", f"{path}: not readable JSON: {exc}") from exc
        if not isinstance(data, dict):
            raise JobError("UnreadableCheckpoint", f"{path}: not a JSON object")
        return data

    def headers(self) -> dict[str, list[TensorInfo]]:
        """Headers of the directory's safetensors files (8-byte length + JSON header each)."""
        try:
            files = safetensors_files(self.directory)
            return {f.name: read_safetensors_header(f) for f in files}
        except WeightsError as exc:
            raise JobError("UnreadableCheckpoint", str(exc)) from exc


def hub_api() -> Any:
    """A huggingface_hub client for ``HF_ENDPOINT`` (a mirror) read now, with ``HF_TOKEN``."""
    from huggingface_hub import HfApi

    return HfApi(
        endpoint=os.environ.get("HF_ENDPOINT") or None, token=os.environ.get("HF_TOKEN") or None
    )


@dataclass(frozen=True)
class HubCheckpoint:
    """A checkpoint on Hugging Face: config files downloaded, safetensors headers fetched.

    huggingface_hub reads each safetensors header with HTTP range requests
    (``get_safetensors_metadata``), so no weights are downloaded. The token comes from the
    environment (``HF_TOKEN``), as huggingface_hub reads it.
    """

    repo: str
    revision: str = "main"

    @property
    def location(self) -> str:
        """``hf://ORG/NAME@REVISION``."""
        return f"hf://{self.repo}@{self.revision}"

    def read_json(self, name: str) -> dict[str, Any] | None:
        """Download ``name`` from the repository (None when the repository has no such file)."""
        from huggingface_hub.errors import EntryNotFoundError

        try:
            path = hub_api().hf_hub_download(self.repo, name, revision=self.revision)
        except EntryNotFoundError:
            return None
        return LocalCheckpoint(Path(path).parent).read_json(Path(path).name)

    def headers(self) -> dict[str, list[TensorInfo]]:
        """Headers of the repository's safetensors files, by range requests."""
        from huggingface_hub.errors import NotASafetensorsRepoError

        try:
            meta = hub_api().get_safetensors_metadata(self.repo, revision=self.revision)
        except NotASafetensorsRepoError as exc:
            raise JobError(
                "NoSafetensors",
                f"{self.repo} has no safetensors files; vLLM and quantwise read safetensors only",
            ) from exc
        result: dict[str, list[TensorInfo]] = {}
        for file_name, file_meta in sorted(meta.files_metadata.items()):
            result[file_name] = [
                TensorInfo(
                    name=tensor_name,
                    dtype=info.dtype,
                    shape=tuple(info.shape),
                    nbytes=info.data_offsets[1] - info.data_offsets[0],
                )
                for tensor_name, info in file_meta.tensors.items()
            ]
        return result


def index_digest(headers: Mapping[str, list[TensorInfo]]) -> str:
    """``sha256:...`` of the tensor index: every file's tensors with dtype, shape and bytes.

    Computed from the parsed headers in a canonical form, so a local directory and the same
    files on Hugging Face give the same digest.
    """
    canonical = {
        file_name: sorted([t.name, t.dtype, list(t.shape), t.nbytes] for t in tensors)
        for file_name, tensors in headers.items()
    }
    raw = json.dumps(canonical, sort_keys=True, separators=(",", ":")).encode()
    return "sha256:" + hashlib.sha256(raw).hexdigest()


# The report lists at most this many ignored modules (ReportQuantization.ignore) and counts the
# rest: MoE checkpoints leave every router unquantized, hundreds of names.
MAX_IGNORE_LISTED = 64


def report_quantization(q: CheckpointQuantization) -> ReportQuantization:
    """The report's form of a normalised quantization (long ignore lists summarised)."""
    listed = list(q.ignore[:MAX_IGNORE_LISTED])
    return ReportQuantization(
        quant_method=q.quant_method,
        scheme=q.scheme,
        format=q.format,
        weight_bits=q.weight_bits,
        group_size=q.group_size,
        symmetric=q.symmetric,
        activation_bits=q.activation_bits,
        act_order=q.act_order,
        kv_cache_scheme=q.kv_cache_scheme,
        ignore=listed,
        ignore_count=len(q.ignore) if len(q.ignore) > len(listed) else None,
    )


def read_quantization(files: CheckpointFiles, config: Mapping[str, Any]) -> CheckpointQuantization:
    """The checkpoint's quantization from config.json and the producers' side files."""
    side = {name: files.read_json(name) for name in SIDE_FILES}
    try:
        return parse_quantization_config(
            config.get("quantization_config"),
            quantize_config=side["quantize_config.json"],
            awq_quant_config=side["quant_config.json"],
        )
    except QuantizationConfigError as exc:
        raise JobError(
            "UnreadableQuantizationConfig", f"{files.location}/config.json: {exc}"
        ) from exc


def describe(
    files: CheckpointFiles,
    kind: Literal["QuantizeReport", "InspectReport"],
    duration_seconds: float,
    path: str | None = None,
) -> QuantizeReport:
    """Build the report of the checkpoint in ``files`` (``path``: what to call it in the report).

    Raises JobError when config.json is missing or unreadable, the architecture lacks a field
    the planner needs, or there are no safetensors files.
    """
    config = files.read_json("config.json")
    if config is None:
        raise JobError(
            "NotACheckpoint", f"{files.location} has no config.json: not a Hugging Face checkpoint"
        )
    try:
        arch = architecture_from_config(config)
    except ArchitectureError as exc:
        raise JobError("UnsupportedArchitecture", f"{files.location}/config.json: {exc}") from exc
    quantization = read_quantization(files, config)
    headers = files.headers()
    if not headers:
        raise JobError(
            "NoSafetensors",
            f"{files.location} has no *.safetensors files; vLLM and quantwise read safetensors "
            "only (convert .bin checkpoints first)",
        )
    tensors = [t for file_tensors in headers.values() for t in file_tensors]
    weight_bytes = sum(t.nbytes for t in tensors)
    breakdown = classify_tensors(arch, tensors)
    log.info(
        "checkpoint %s: %d safetensors files, %d tensors, %.3f GB of weights, %s",
        files.location,
        len(headers),
        len(tensors),
        weight_bytes / 1e9,
        quantization.summary(),
    )
    return QuantizeReport(
        kind=kind,
        artifact=ReportArtifact(
            path=path or files.location,
            weight_bytes=weight_bytes,
            digest=index_digest(headers),
            files=len(headers),
            breakdown=WeightBytes.from_breakdown(breakdown),
        ),
        quantization=report_quantization(quantization),
        architecture=arch,
        duration_seconds=round(duration_seconds, 1),
    )
