"""Read a GGUF file's quantization (llama.cpp's single-file format) with the ``gguf`` library.

Only the header, metadata and tensor infos are read (the library memory-maps the file); the
weights are never loaded. ``gguf`` is an optional dependency (``pip install quantwise[gguf]``).
"""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path

from quantwise.quantization.config import CheckpointQuantization, QuantizationConfigError


def parse_gguf(path: Path) -> CheckpointQuantization:
    """The quantization of the GGUF file at ``path``: its file type and most common tensor type."""
    try:
        from gguf import GGUFReader, LlamaFileType
    except ImportError as exc:  # pragma: no cover - depends on the install
        raise QuantizationConfigError(
            "reading .gguf files needs the gguf package: pip install 'quantwise[gguf]'"
        ) from exc
    try:
        reader = GGUFReader(str(path))
    except (OSError, ValueError) as exc:
        raise QuantizationConfigError(f"{path}: not a readable GGUF file: {exc}") from exc
    file_type = None
    field = reader.fields.get("general.file_type")
    if field is not None and field.data:
        try:
            file_type = LlamaFileType(int(field.parts[field.data[0]][0])).name.removeprefix(
                "MOSTLY_"
            )
        except ValueError:
            file_type = None
    kinds = Counter(t.tensor_type.name for t in reader.tensors)
    if not kinds:
        raise QuantizationConfigError(f"{path}: the GGUF file lists no tensors")
    main = file_type or kinds.most_common(1)[0][0]
    match = re.search(r"(\d+)", main)
    bits = int(match.group(1)) if match else 16
    return CheckpointQuantization(
        producer="gguf",
        scheme="gguf" if bits < 16 else "none",
        quant_method="gguf",
        weight_bits=min(bits, 16),
        weight_type="int",
        group_size=32
        if main.startswith(("Q", "IQ"))
        else None,  # ggml blocks of 32 (K-quants: 256).
        format=main,
        unknown_keys={"tensor_types": dict(kinds)} if len(kinds) > 1 else {},
    )
