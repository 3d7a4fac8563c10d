"""What quantwise knows of vLLM itself: its releases, its default image, the flags it plans.

One place for each fact, so the renderer, the admission rules, the support matrix and the CLI
cannot disagree:

- the releases whose wheels the support matrix and the sizing were checked against (the Python
  sources of the released 0.11.0, 0.20.0 and 0.33.0 wheels on PyPI), and the boundaries between
  them that the code tests (:data:`V0_20`, :data:`V0_33`);
- the image a model is served with when neither its spec nor the operator names one, and the
  version read from an image's tag;
- the command-line flags quantwise sets on ``vllm serve`` (:class:`Flag`). The renderer can only
  emit members of it, and ``spec.serving.extraArgs`` is refused at admission when it sets one of
  them again, in any of the spellings vLLM accepts (:func:`planned_flag_pattern`).

A leaf module: it imports nothing from quantwise.
"""

from __future__ import annotations

import re
from enum import StrEnum

Version = tuple[int, int]

V0_11: Version = (0, 11)
V0_20: Version = (0, 20)
V0_33: Version = (0, 33)
RELEASES_CHECKED: tuple[Version, ...] = (V0_11, V0_20, V0_33)
"""The vLLM releases whose wheels' sources the support matrix and the sizing were read from."""

DEFAULT_VERSION: Version = V0_33
DEFAULT_IMAGE = "vllm/vllm-openai:v0.33.0"
"""The image a model is served with when neither spec.serving.image nor the operator's
--vllm-image names one (the chart's ``defaults.vllmImage`` is the same: a test holds it)."""


def version_of(image: str | None, override: str | None = None) -> Version:
    """The (major, minor) vLLM version from ``spec.serving.vllmVersion``, else the image tag.

    ``vllm/vllm-openai:v0.33.0`` gives (0, 33); a tag without a version (``latest``, a digest)
    gives :data:`DEFAULT_VERSION`.
    """
    tag = image.rsplit(":", 1)[-1] if image and ":" in image.rsplit("/", 1)[-1] else None
    for text in (override, tag):
        if text and (match := re.match(r"^v?(\d+)\.(\d+)", text)):
            return int(match.group(1)), int(match.group(2))
    return DEFAULT_VERSION


def format_version(version: Version) -> str:
    """``(0, 33)`` as ``"0.33"``."""
    return f"{version[0]}.{version[1]}"


class Flag(StrEnum):
    """The ``vllm serve`` flags quantwise sets; ``spec.serving.extraArgs`` may not set them."""

    MODEL = "--model"
    SERVED_MODEL_NAME = "--served-model-name"
    HOST = "--host"
    PORT = "--port"
    REVISION = "--revision"
    TENSOR_PARALLEL_SIZE = "--tensor-parallel-size"
    PIPELINE_PARALLEL_SIZE = "--pipeline-parallel-size"
    GPU_MEMORY_UTILIZATION = "--gpu-memory-utilization"
    MAX_MODEL_LEN = "--max-model-len"
    MAX_NUM_SEQS = "--max-num-seqs"
    MAX_NUM_BATCHED_TOKENS = "--max-num-batched-tokens"
    KV_CACHE_DTYPE = "--kv-cache-dtype"
    # Never passed: vLLM reads the method from config.json and picks the fast kernel itself
    # (awq becomes awq_marlin); a user's --quantization awq would force the slow one.
    QUANTIZATION = "--quantization"
    # Multi-node (a LeaderWorkerSet): vLLM's own launcher from 0.20, Ray before.
    DISTRIBUTED_EXECUTOR_BACKEND = "--distributed-executor-backend"
    NNODES = "--nnodes"
    NODE_RANK = "--node-rank"
    MASTER_ADDR = "--master-addr"
    MASTER_PORT = "--master-port"
    HEADLESS = "--headless"


# Short spellings of planned flags (vllm/engine/arg_utils.py, 0.33: "-tp", "-pp", "-q").
SHORT_ALIASES: dict[str, Flag] = {
    "-tp": Flag.TENSOR_PARALLEL_SIZE,
    "-pp": Flag.PIPELINE_PARALLEL_SIZE,
    "-q": Flag.QUANTIZATION,
}


_Trie = dict[str, "_Trie"]


def _prefix_alternatives(words: list[str]) -> str:
    """A regular expression matching every non-empty prefix of ``words``, as a trie.

    A ``-`` inside a word also matches ``_``: vLLM's FlexibleArgumentParser turns underscores in
    a flag's name into dashes (vllm/utils/argparse_utils.py).
    """
    trie: _Trie = {}
    for word in words:
        node = trie
        for char in word:
            node = node.setdefault(char, {})

    def walk(node: _Trie) -> str:
        alternatives = []
        for char, child in sorted(node.items()):
            atom = "[-_]" if char == "-" else re.escape(char)
            rest = walk(child)
            alternatives.append(atom + (f"(?:{rest})?" if rest else ""))
        if len(alternatives) < 2:
            return "".join(alternatives)
        return "(?:" + "|".join(alternatives) + ")"

    return walk(trie)


def planned_flag_pattern() -> str:
    """A regular expression (RE2 and Python) matching an argument that sets a planned flag.

    It matches ``--flag``, ``--flag=value``, the underscore spelling (``--max_model_len``), the
    short aliases, and every abbreviation: vLLM's parser keeps argparse's ``allow_abbrev``, so
    ``--gpu-memory 0.95`` sets ``--gpu-memory-utilization`` (a prefix that is ambiguous among
    vLLM's flags fails vLLM's start instead: refusing it at admission is better still).
    """
    longs = _prefix_alternatives(sorted(f.value.removeprefix("--") for f in Flag))
    shorts = "|".join(re.escape(a.removeprefix("-")) for a in sorted(SHORT_ALIASES))
    return f"^(?:--{longs}(?:=.*)?|-(?:{shorts}).*)$"


_PLANNED = re.compile(planned_flag_pattern())


def planned_flag(arg: str) -> Flag | None:
    """The planned flag ``arg`` would set in vLLM (None: it sets none of them)."""
    if not _PLANNED.match(arg):
        return None
    name = arg.split("=", 1)[0]
    if name in SHORT_ALIASES or not name.startswith("--"):
        return next((f for a, f in SHORT_ALIASES.items() if name.startswith(a)), None)
    name = "--" + name.removeprefix("--").replace("_", "-")
    return next(f for f in Flag if f.value.startswith(name))
