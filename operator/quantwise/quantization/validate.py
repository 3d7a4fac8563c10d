"""Decide whether this vLLM loads a checkpoint on this GPU, and on a fast kernel.

:func:`validate` walks the support matrix (quantwise.quantization.matrix) for the checkpoint's
scheme and returns a verdict (fast / slow / unsupported), the kernel family, and findings that
name the field each problem comes from and what to do about it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from quantwise.planning.architecture import Architecture
from quantwise.planning.gpus import GPU
from quantwise.quantization.config import CheckpointQuantization
from quantwise.quantization.matrix import (
    MARLIN_MIN_THREAD_K,
    MARLIN_MIN_THREAD_N,
    MARLIN_PADS_FROM,
    REMOVED,
    Rule,
    rules_for,
)
from quantwise.vllm import DEFAULT_VERSION, Version, format_version

Severity = Literal["error", "warning", "info"]


@dataclass(frozen=True)
class Finding:
    """One thing a reviewer would say about the checkpoint."""

    field: str
    message: str
    severity: Severity

    def to_json(self) -> dict[str, str]:
        """The finding as ``quantwise validate --output json`` prints it."""
        return {"field": self.field, "message": self.message, "severity": self.severity}


@dataclass(frozen=True)
class Verdict:
    """The answer: fast, slow or unsupported; the kernel; the findings."""

    verdict: Literal["fast", "slow", "unsupported"]
    kernel: str | None
    method: str
    findings: list[Finding] = field(default_factory=list)
    rule: Rule | None = None
    # True when the kernel is Marlin, whose shard shapes can rule out a TP size.
    marlin_shapes: bool = False
    # True from the vLLM release on that pads shapes Marlin cannot tile (only groups matter).
    marlin_pads_tiles: bool = False

    def tp_blocker(self, arch: Architecture, q: CheckpointQuantization, tp: int) -> str | None:
        """Why this kernel cannot run ``arch`` at tensor parallel ``tp`` (None: it can)."""
        if not self.marlin_shapes:
            return None
        return marlin_tp_blocker(arch, q, tp, pads_tiles=self.marlin_pads_tiles)

    def to_json(self) -> dict[str, Any]:
        """The verdict as ``quantwise validate --output json`` prints it."""
        return {
            "verdict": self.verdict,
            "kernel": self.kernel,
            "method": self.method,
            "findings": [f.to_json() for f in self.findings],
        }


def _span(rule: Rule) -> str:
    if rule.max_version >= (99, 0):
        return f"{format_version(rule.min_version)} and later"
    if rule.min_version == (0, 0):
        return f"before {format_version(rule.max_version)}"
    return f"{format_version(rule.min_version)} to before {format_version(rule.max_version)}"


def _mismatches(
    rule: Rule, q: CheckpointQuantization, gpu: GPU, version: tuple[int, int]
) -> list[Finding]:
    """Why ``rule`` does not apply (empty: it does)."""
    out: list[Finding] = []
    if not rule.min_version <= version < rule.max_version:
        out.append(
            Finding(
                "vllm",
                f"{rule.kernel} for {rule.scheme} is in vLLM {_span(rule)}, not "
                f"{format_version(version)}",
                "error",
            )
        )
    cc = gpu.compute_capability
    if cc < rule.min_capability:
        out.append(
            Finding(
                "gpu",
                f"{rule.kernel} needs compute capability "
                f">= {format_version(rule.min_capability)}; {gpu.name} has {format_version(cc)}",
                "error",
            )
        )
    if rule.max_capability is not None and cc > rule.max_capability:
        out.append(
            Finding(
                "gpu",
                f"{rule.kernel} runs on compute capability "
                f"{format_version(rule.max_capability)} only; {gpu.name} has {format_version(cc)}",
                "error",
            )
        )
    if rule.bits and q.weight_bits not in rule.bits:
        allowed = ", ".join(str(b) for b in sorted(rule.bits))
        out.append(
            Finding(
                "quantization_config.bits",
                f"{rule.kernel} takes {allowed}-bit weights, not {q.weight_bits}",
                "error",
            )
        )
    if rule.group_sizes and q.group_size not in rule.group_sizes:
        allowed = ", ".join(str(g) for g in sorted(g for g in rule.group_sizes if g is not None))
        out.append(
            Finding(
                "quantization_config.group_size",
                f"{rule.kernel} takes group sizes {allowed}, not {q.group_size}",
                "error",
            )
        )
    if rule.zero_points_only and q.symmetric:
        out.append(
            Finding(
                "quantization_config.zero_point",
                f"{rule.kernel} takes {rule.scheme} weights with zero points only "
                "(zero_point: true)",
                "error",
            )
        )
    if rule.symmetric_only and not q.symmetric:
        out.append(
            Finding(
                "quantization_config.sym",
                f"{rule.kernel} takes symmetric quantization only (no zero points)",
                "error",
            )
        )
    if q.act_order not in rule.act_order:
        what = "desc_act" if q.producer in ("gptq", "gptqmodel") else "actorder"
        out.append(
            Finding(
                f"quantization_config.{what}",
                f"{rule.kernel} in vLLM "
                f"{format_version(version)} does not take act-order {q.act_order!r} "
                + ("with grouped quantization" if q.group_size not in (None, -1) else ""),
                "error",
            )
        )
    return out


def validate(
    q: CheckpointQuantization,
    gpu: GPU,
    version: Version = DEFAULT_VERSION,
    arch: Architecture | None = None,
) -> Verdict:
    """Decide whether vLLM ``version`` loads ``q`` on ``gpu``, and on which kernel."""
    method = q.summary()
    findings = [
        Finding(
            f"quantization_config.{key}",
            "unknown key kept but not interpreted: check that vLLM does not depend on it",
            "info",
        )
        for key in sorted(q.unknown_keys)
    ]
    if q.scheme == "none":
        return Verdict("fast", "unquantized (16-bit)", method, findings)
    removed = REMOVED.get(q.scheme)
    if removed is not None and version >= removed.version:
        where = (
            f"loads {q.quant_method} only through an out-of-tree plugin, {removed.plugin}: "
            "install it in the serving image"
            if removed.plugin
            else f"no longer loads {q.quant_method} checkpoints (removed in "
            f"{format_version(removed.version)}, no plugin replaces it): serve with an older vLLM "
            "(spec.serving.vllmVersion and image)"
        )
        findings.append(
            Finding(
                "quantization_config.quant_method",
                f"vLLM {format_version(version)} {where}, or quantize with awq or gptq instead",
                "error",
            )
        )
        return Verdict("unsupported", None, method, findings)
    candidates = rules_for(q.scheme)
    if not candidates:
        findings.append(
            Finding("quantization_config", f"no vLLM kernel is known for {method}", "error")
        )
        return Verdict("unsupported", None, method, findings)
    # Why each rule that did not match failed. Kernels of one GPU generation only (Machete,
    # CUTLASS W4A8 on Hopper) are no advice for another GPU: kept aside, said only when nothing
    # else came close.
    near_misses: list[list[Finding]] = []
    other_generation: list[list[Finding]] = []
    for rule in candidates:
        problems = _mismatches(rule, q, gpu, version)
        if problems:
            elsewhere = rule.max_capability is not None and not (
                rule.min_capability <= gpu.compute_capability <= rule.max_capability
            )
            (other_generation if elsewhere else near_misses).append(problems)
            continue
        if rule.speed == "slow":
            findings += [
                Finding(p.field, f"no fast kernel: {p.message}", "warning")
                for p in _closest(near_misses)
            ]
            if rule.note:
                findings.append(Finding("gpu", rule.note, "warning"))
        pads = version >= MARLIN_PADS_FROM
        if arch is not None and rule.marlin_shapes:
            findings += marlin_shape_findings(arch, q, pads_tiles=pads)
        return Verdict(rule.speed, rule.kernel, method, findings, rule, rule.marlin_shapes, pads)
    findings += _closest(near_misses or other_generation)
    return Verdict("unsupported", None, method, findings)


def _closest(misses: list[list[Finding]]) -> list[Finding]:
    """The reasons of the rules that came closest (fewest mismatches), each said once.

    One change away is advice ("needs compute capability 8.0", "vLLM 0.20 has it"); the rows
    three changes away would only bury it.
    """
    if not misses:
        return []
    fewest = min(len(m) for m in misses)
    out: list[Finding] = []
    for problems in misses:
        if len(problems) == fewest:
            out += [p for p in problems if p not in out]
    return out


def marlin_shape_findings(
    arch: Architecture, q: CheckpointQuantization, pads_tiles: bool = False
) -> list[Finding]:
    """Findings when even TP=1 shapes do not suit Marlin (see :func:`marlin_tp_blocker`)."""
    reason = marlin_tp_blocker(arch, q, 1, pads_tiles=pads_tiles)
    return [Finding("config.json", reason, "error")] if reason else []


def marlin_tp_blocker(
    arch: Architecture, q: CheckpointQuantization, tp: int, pads_tiles: bool = False
) -> str | None:
    """Why Marlin cannot run ``arch`` at tensor parallel ``tp`` (None: it can).

    Each rank's shard must have an output size divisible by 64 (column-parallel layers) and an
    input size divisible by 128 (row-parallel layers): marlin_utils.py,
    check_marlin_supports_shape. From vLLM 0.33 Marlin pads such shapes (``pads_tiles``), but a
    quantization group split across two ranks still fails to load.
    """
    inter = arch.moe_intermediate_size if arch.is_moe else arch.intermediate_size
    inter = inter or arch.intermediate_size
    if inter % tp:
        return f"the MLP width {inter} does not divide by TP={tp}"
    shard = inter // tp
    if not pads_tiles and shard % MARLIN_MIN_THREAD_N:
        return (
            f"the MLP shard {inter}/{tp}={shard} is not a multiple of {MARLIN_MIN_THREAD_N} "
            "(Marlin)"
        )
    if not pads_tiles and shard % MARLIN_MIN_THREAD_K:
        return (
            f"the down_proj input shard {shard} is not a multiple of {MARLIN_MIN_THREAD_K} (Marlin)"
        )
    if q.group_size and q.group_size > 0 and shard % q.group_size:
        return (
            f"the down_proj input shard {shard} is not a multiple of the group size "
            f"{q.group_size}: a quantization group would be split across tensor-parallel ranks"
        )
    return None
