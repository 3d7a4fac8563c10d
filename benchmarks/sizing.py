"""Sizing accuracy: quantwise's predictions next to vLLM's own formulas (and measurements).

For public model configs (examples/models: dense GQA, MHA, MQA, MoE, MLA, sliding window) x
weight formats x GPUs x tensor-parallel sizes, print quantwise's weight bytes per GPU, KV-cache
bytes per token and KV-cache tokens, next to the value vLLM's formulas give, computed here
independently from the raw config.json (not through quantwise's parser):

- KV bytes per token per GPU = layers x page bytes per token of one layer, where a layer's page
  is ``2 x num_kv_heads_per_gpu x head_size x dtype_size`` (K and V; vllm/v1/kv_cache_interface
  ``AttentionSpec.page_size_bytes``), ``num_kv_heads_per_gpu = max(1, total_kv_heads // tp)``
  (vllm/config/model.py ``get_num_kv_heads``), and for MLA one latent of ``kv_lora_rank +
  qk_rope_head_dim`` per token on every rank (``MLAAttentionSpec``);
- KV tokens for a KV memory M = ``floor(M / (bytes_per_token x 16)) x 16`` (16-token blocks,
  vllm/v1/core/kv_cache_utils.py) for models without sliding-window layers (vLLM's hybrid
  allocator sizes those differently; n/a there).

Rows of ``benchmarks/data/measured.csv`` (real vLLM start-ups: "Available KV cache memory: X
GiB", "GPU KV cache size: N tokens", from public logs, each with its source) are compared too:
the KV tokens quantwise derives from the logged memory (the KV layout), and the KV memory its
planner predicts for the run (the whole memory model). Run: ``python -m benchmarks.sizing
[--markdown]``; it exits 1 when a KV error is not 0 or a measured run contradicts quantwise.
"""

from __future__ import annotations

import argparse
import csv
import json
import statistics
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from quantwise.planning.architecture import architecture_from_config
from quantwise.planning.gpus import GIB, UnknownGPUError, lookup_gpu
from quantwise.planning.kvcache import BLOCK_SIZE_TOKENS, kv_bytes_per_token, kv_cache_tokens
from quantwise.planning.memory import default_max_num_batched_tokens, estimate_overhead
from quantwise.planning.planner import DEFAULT_MAX_NUM_SEQS, tp_blockers
from quantwise.planning.weights import UNQUANTIZED, WeightFormat, estimate_weights

ROOT = Path(__file__).resolve().parents[1]
MODELS = ROOT / "examples" / "models"
MEASURED = Path(__file__).resolve().parent / "data" / "measured.csv"

# (folder, the attention/MLP kind it stands for)
CASES: tuple[tuple[str, str], ...] = (
    ("meta-llama--Llama-3.1-8B-Instruct", "dense GQA"),
    ("meta-llama--Llama-3.1-70B-Instruct", "dense GQA"),
    ("Qwen--Qwen3-8B", "dense GQA"),
    ("microsoft--Phi-3-mini-4k-instruct", "MHA, sliding window"),
    ("tiiuae--falcon-7b-instruct", "MQA"),
    ("mistralai--Mixtral-8x7B-Instruct-v0.1", "MoE"),
    ("Qwen--Qwen3-30B-A3B", "MoE"),
    ("deepseek-ai--DeepSeek-V2-Lite", "MLA + MoE"),
    ("deepseek-ai--DeepSeek-V3", "MLA + MoE"),
    ("google--gemma-2-9b-it", "sliding window"),
)
FORMATS: dict[str, WeightFormat] = {
    "bf16": UNQUANTIZED,
    "w4a16-g128": WeightFormat(bits=4, group_size=128, symmetric=True),
    "w8": WeightFormat(bits=8, group_size=None, symmetric=True),
}
GPUS = ("L4", "A100-80GB", "H100-80GB")
TPS = (1, 2, 4, 8)
KV_MEMORY_BYTES = 10 * GIB  # the same KV memory per GPU for the tokens column


def _text(config: dict[str, Any]) -> dict[str, Any]:
    inner = config.get("text_config")
    return inner if isinstance(inner, dict) else config


def vllm_kv_bytes_per_token(config: dict[str, Any], tp: int) -> int:
    """VLLM's KV bytes per token on one GPU (all its layers), from the raw config (see top)."""
    cfg = _text(config)
    layers = int(cfg["num_hidden_layers"])
    dtype_bytes = 2  # bf16/fp16 cache ("auto"); vLLM serves fp32 checkpoints in 16 bits
    if cfg.get("kv_lora_rank"):
        return layers * (int(cfg["kv_lora_rank"]) + int(cfg["qk_rope_head_dim"])) * dtype_bytes
    heads = int(cfg["num_attention_heads"])
    kv_heads = cfg.get("num_key_value_heads") or cfg.get("num_kv_heads")
    if not kv_heads:
        # Falcon: new_decoder_architecture uses num_kv_heads; multi_query means one KV head.
        kv_heads = 1 if cfg.get("multi_query") else heads
    head_dim = int(cfg.get("head_dim") or int(cfg["hidden_size"]) // heads)
    per_gpu = max(1, int(kv_heads) // tp)
    return layers * 2 * per_gpu * head_dim * dtype_bytes


def _has_sliding(config: dict[str, Any]) -> bool:
    cfg = _text(config)
    return bool(cfg.get("sliding_window")) and cfg.get("use_sliding_window", True) is not False


@dataclass
class Row:
    """One model x format x GPU x TP."""

    model: str
    kind: str
    fmt: str
    gpu: str
    tp: int
    weight_bytes_per_gpu: int
    fits: bool
    kv_per_token: int
    kv_per_token_vllm: int
    kv_tokens: int | None
    kv_tokens_vllm: int | None

    @property
    def kv_per_token_error(self) -> int:
        """Predicted - vLLM's KV bytes per token."""
        return self.kv_per_token - self.kv_per_token_vllm

    @property
    def kv_tokens_error(self) -> int | None:
        """Predicted - vLLM's KV tokens (None where not comparable)."""
        if self.kv_tokens is None or self.kv_tokens_vllm is None:
            return None
        return self.kv_tokens - self.kv_tokens_vllm


def rows(cases: tuple[tuple[str, str], ...] = CASES) -> list[Row]:
    """Every combination vLLM can run (TP the heads divide by)."""
    out: list[Row] = []
    for folder, kind in cases:
        config = json.loads((MODELS / folder / "config.json").read_text())
        arch = architecture_from_config(config)
        sliding = _has_sliding(config)
        for fmt_name, fmt in FORMATS.items():
            weights = estimate_weights(arch, fmt)
            for tp in TPS:
                if tp_blockers(arch, tp, fmt):
                    continue
                per_token = kv_bytes_per_token(arch, tp)
                reference = vllm_kv_bytes_per_token(config, tp)
                for gpu_name in GPUS:
                    gpu = lookup_gpu(gpu_name)
                    per_gpu = weights.per_gpu_bytes(arch, tp)
                    tokens = ref_tokens = None
                    if not sliding:
                        tokens = kv_cache_tokens(arch, tp, KV_MEMORY_BYTES)
                        blocks = KV_MEMORY_BYTES // (reference * BLOCK_SIZE_TOKENS)
                        ref_tokens = blocks * BLOCK_SIZE_TOKENS
                    out.append(Row(
                        folder.split("--", 1)[1], kind, fmt_name, gpu_name, tp, per_gpu,
                        per_gpu < gpu.memory_bytes, per_token, reference, tokens, ref_tokens,
                    ))  # fmt: skip
    return out


def measured_rows(path: Path = MEASURED) -> list[dict[str, str]]:
    """Rows someone added from real ``vllm serve`` logs."""
    if not path.exists():
        return []
    with path.open(newline="") as f:
        return [r for r in csv.DictReader(f) if r.get("measured_kv_tokens")]


# The weight formats of measured checkpoints (``weights`` column): INT8 and FP8 are one byte a
# weight, per-channel scales; ``fp16`` is ``bf16``'s size.
MEASURED_FORMATS: dict[str, WeightFormat] = {**FORMATS, "fp16": UNQUANTIZED}
# vLLM prints "Available KV cache memory: X GiB" with two decimals (vllm/v1/worker/gpu_worker.py).
LOGGED_GIB_STEP = 0.01


@dataclass
class Measured:
    """One real vLLM start-up next to quantwise's numbers for it."""

    row: dict[str, str]
    tokens: int
    tokens_measured: int
    rounding_tokens: int
    kv_memory_bytes: int | None
    kv_memory_measured_bytes: int

    @property
    def stages(self) -> int:
        """Pipeline stages: vLLM logs stage 0's memory but sizes by the smallest stage."""
        return int(self.row["pp"] or 1)

    @property
    def tokens_error_percent(self) -> float:
        """Predicted - measured KV tokens, in percent of measured."""
        return 100 * (self.tokens - self.tokens_measured) / self.tokens_measured

    @property
    def within_rounding(self) -> bool:
        """True when the error is no more than the two-decimal GiB of the log can explain."""
        return abs(self.tokens - self.tokens_measured) <= self.rounding_tokens

    @property
    def kv_memory_error_percent(self) -> float | None:
        """Planner's KV memory - vLLM's, in percent of vLLM's (negative: memory left unused)."""
        if self.kv_memory_bytes is None:
            return None
        return (
            100
            * (self.kv_memory_bytes - self.kv_memory_measured_bytes)
            / (self.kv_memory_measured_bytes)
        )


def measure(row: dict[str, str]) -> Measured:
    """Quantwise's KV tokens for the logged KV memory, and its own KV memory for the run.

    The tokens check the KV layout (bytes per token, blocks) against vLLM; the memory checks
    the planner's whole memory model (weights + activations + runtime + CUDA graphs), which
    should leave vLLM more KV memory than planned, never less.
    """
    config = json.loads((MODELS / row["model"] / "config.json").read_text())
    arch = architecture_from_config(config)
    tp, pp = int(row["tp"]), int(row["pp"] or 1)
    dtype = row.get("kv_cache_dtype") or "auto"
    logged = int(float(row["available_kv_gib"]) * GIB)
    per_token = kv_bytes_per_token(arch, tp, dtype, pp)
    # Half a step of the printed GiB either way, plus the 16-token block it may tip over.
    rounding = int(LOGGED_GIB_STEP / 2 * GIB / per_token) + BLOCK_SIZE_TOKENS
    kv_memory: int | None = None
    try:
        gpu = lookup_gpu(row["gpu"])
    except UnknownGPUError:
        gpu = None  # not in the catalog: the tokens still compare
    if gpu is not None and row.get("gpu_memory_utilization") and row.get("weights"):
        weights = estimate_weights(arch, MEASURED_FORMATS[row["weights"]])
        overhead = estimate_overhead(
            arch, tp, pp, default_max_num_batched_tokens(gpu.memory_bytes, gpu.name),
            DEFAULT_MAX_NUM_SEQS,
        )  # fmt: skip
        cap = gpu.memory_bytes * float(row["gpu_memory_utilization"])
        kv_memory = int(cap) - weights.per_gpu_bytes(arch, tp, pp) - overhead.total_bytes
    return Measured(
        row=row,
        tokens=kv_cache_tokens(arch, tp, logged, dtype, pp),
        tokens_measured=int(row["measured_kv_tokens"]),
        rounding_tokens=rounding,
        kv_memory_bytes=kv_memory,
        kv_memory_measured_bytes=logged,
    )


def render_measured(table: list[Measured], markdown: bool) -> str:
    """One line per measured run."""
    header = ["checkpoint", "weights", "GPU", "TP x PP", "KV dtype", "vLLM",
              "KV tokens from logged GiB", "measured", "err %", "in log rounding",
              "planner KV GiB", "logged", "err %"]  # fmt: skip
    lines = (
        ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        if markdown
        else ["  ".join(header)]
    )
    for m in table:
        r = m.row
        memory_error = m.kv_memory_error_percent
        cells = [
            r["checkpoint"], r["weights"], r["gpu"], f"{r['tp']} x {r['pp'] or 1}",
            r.get("kv_cache_dtype") or "auto",
            r["vllm_version"] or "n/a", f"{m.tokens:,}", f"{m.tokens_measured:,}",
            f"{m.tokens_error_percent:+.3f}",
            "yes" if m.within_rounding else ("no (PP: stage 0's GiB)" if m.stages > 1 else "no"),
            "n/a" if m.kv_memory_bytes is None else f"{m.kv_memory_bytes / GIB:.2f}",
            f"{m.kv_memory_measured_bytes / GIB:.2f}",
            "n/a" if memory_error is None else f"{memory_error:+.1f}",
        ]  # fmt: skip
        lines.append("| " + " | ".join(cells) + " |" if markdown else "  ".join(cells))
    return "\n".join(lines)


def measured_failures(table: list[Measured]) -> list[str]:
    """Runs that contradict quantwise.

    A KV layout off by more than the log's rounding (single-stage runs), or the planner promising
    more KV memory than vLLM found.
    """
    failures: list[str] = []
    for m in table:
        name = f"{m.row['checkpoint']} TP{m.row['tp']} PP{m.stages} ({m.row['source']})"
        if m.stages == 1 and not m.within_rounding:
            failures.append(f"{name}: KV tokens {m.tokens} vs measured {m.tokens_measured}")
        if m.kv_memory_bytes is not None and m.kv_memory_bytes > m.kv_memory_measured_bytes:
            failures.append(
                f"{name}: planner's KV memory {m.kv_memory_bytes / GIB:.2f} GiB exceeds vLLM's "
                f"{m.kv_memory_measured_bytes / GIB:.2f} GiB"
            )
    return failures


def summary(values: list[int]) -> str:
    """Mean and max of absolute errors."""
    if not values:
        return "n/a"
    absolute = [abs(v) for v in values]
    return f"mean {statistics.fmean(absolute):.1f}, max {max(absolute)}"


def render(table: list[Row], markdown: bool) -> str:
    """The table, one line per model x format x TP (the GPU changes only the fit column)."""
    lines: list[str] = []
    header = ["model", "kind", "weights", "TP", "weight GiB/GPU", "weights fit on",
              "KV B/token", "vLLM", "err", "KV tokens @10GiB", "vLLM", "err"]  # fmt: skip
    if markdown:
        lines += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    else:
        lines.append("  ".join(header))
    grouped: dict[tuple[str, str, int], list[Row]] = {}
    for r in table:
        grouped.setdefault((r.model, r.fmt, r.tp), []).append(r)
    for (model, fmt, tp), group in grouped.items():
        r = group[0]
        fits = ",".join(g.gpu for g in group if g.fits) or "-"
        cells = [
            model, r.kind, fmt, str(tp), f"{r.weight_bytes_per_gpu / GIB:.1f}", fits,
            str(r.kv_per_token), str(r.kv_per_token_vllm), str(r.kv_per_token_error),
            "n/a" if r.kv_tokens is None else f"{r.kv_tokens:,}",
            "n/a" if r.kv_tokens_vllm is None else f"{r.kv_tokens_vllm:,}",
            "n/a" if r.kv_tokens_error is None else str(r.kv_tokens_error),
        ]  # fmt: skip
        lines.append("| " + " | ".join(cells) + " |" if markdown else "  ".join(cells))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Print the table and the error summary; exit 1 if a KV bytes-per-token error is not 0."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--markdown", action="store_true", help="a Markdown table")
    args = parser.parse_args(argv)
    table = rows()
    print(render(table, args.markdown))
    per_token = [r.kv_per_token_error for r in table]
    tokens = [e for r in table if (e := r.kv_tokens_error) is not None]
    kinds = sorted({r.kind for r in table})
    print()
    print(f"{len(table)} rows, {len({r.model for r in table})} models ({', '.join(kinds)})")
    print(f"KV bytes per token, error vs vLLM's formula: {summary(per_token)}")
    print(f"KV tokens at 10 GiB, error vs vLLM's formula: {summary(tokens)}")
    measured = [measure(r) for r in measured_rows()]
    failures = measured_failures(measured)
    if measured:
        print()
        print(render_measured(measured, args.markdown))
        print()
        one_stage = [m for m in measured if m.stages == 1]
        worst = max(abs(m.tokens_error_percent) for m in one_stage) if one_stage else 0.0
        inside = sum(m.within_rounding for m in one_stage)
        print(
            f"KV tokens from the logged KV memory vs {len(measured)} measured vLLM runs: "
            f"{inside} of {len(one_stage)} single-stage runs within the log's rounding "
            f"(max |error| {worst:.3f} %)"
        )
        memory = [pct for m in measured if (pct := m.kv_memory_error_percent) is not None]
        if memory:
            print(
                f"Planner's KV memory vs vLLM's on {len(memory)} runs on catalog GPUs: "
                f"{min(memory):+.1f} % to {max(memory):+.1f} %, "
                f"mean {statistics.fmean(memory):+.1f} % "
                "(negative: memory the plan leaves unused; positive would over-promise)"
            )
        for failure in failures:
            print(f"CONTRADICTED: {failure}")
    else:
        print(f"Measured vLLM runs: none yet ({MEASURED.relative_to(ROOT)} holds the columns)")
    return 0 if all(e == 0 for e in per_token) and not failures else 1


if __name__ == "__main__":
    sys.exit(main())
