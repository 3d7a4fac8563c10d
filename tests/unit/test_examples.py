"""Every example plans offline with its bundled config, and the README's first command works."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from quantwise.cli import main

ROOT = Path(__file__).parents[2]
MODELS = ROOT / "examples" / "models"
# PVC sources cannot be read offline: the example's model config is named here.
PVC_CONFIGS = {
    "gemma-2-9b-w8a8.yaml": MODELS / "google--gemma-2-9b-it" / "config.json",
    "llama-3.1-405b-multinode.yaml": MODELS / "meta-llama--Llama-3.1-405B-Instruct" / "config.json",
}
# (GPU, TP, PP) each example is expected to plan to.
EXPECTED = {
    "llama-3.1-8b-awq.yaml": ("H100-80GB", 1, 1),
    "llama-3.1-8b-awq-prequantized.yaml": ("A10G", 1, 1),
    "llama-3.1-70b-gptq.yaml": ("H100-80GB", 2, 1),
    "llama-3.1-405b-multinode.yaml": ("H100-80GB", 8, 2),
    "mixtral-8x7b-awq.yaml": ("A100-80GB", 2, 1),
    "qwen2.5-7b-fp8-dynamic.yaml": ("L4", 1, 1),
    "gemma-2-9b-w8a8.yaml": ("L40S", 1, 1),
    "custom-gpu.yaml": ("rtx-6000-ada", 2, 1),
    "llama-3.1-8b-awq-mig.yaml": ("H100-80GB-MIG-2g.20gb", 1, 1),
    "qwen2.5-7b-awq-shared-l4.yaml": ("L4", 1, 1),
}


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_example_plans(name: str, capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["plan", str(ROOT / "examples" / name), "-o", "json"]
    if name in PVC_CONFIGS:
        argv += ["--config", str(PVC_CONFIGS[name])]
    assert main(argv) == 0
    plan = json.loads(capsys.readouterr().out)
    assert (plan["gpu"], plan["tensorParallelSize"], plan["pipelineParallelSize"]) == EXPECTED[name]
    assert 0 < plan["gpuMemoryUtilization"] <= 0.9
    assert plan["requiredBytesPerGpu"] <= plan["gpuMemoryUtilization"] * plan["gpuMemoryBytes"]


def test_every_example_is_covered() -> None:
    assert {p.name for p in (ROOT / "examples").glob("*.yaml")} == set(EXPECTED)


def test_prequantized_checkpoint_plans_at_its_own_quantization(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """method none reads quantization_config: AWQ 4-bit, not the 16-bit size."""
    assert (
        main(["plan", str(ROOT / "examples" / "llama-3.1-8b-awq-prequantized.yaml"), "-o", "json"])
        == 0
    )
    assert json.loads(capsys.readouterr().out)["weightBytes"] == pytest.approx(5.73e9, rel=0.01)


def readme_commands() -> list[str]:
    lines = (ROOT / "README.md").read_text().splitlines()
    start = lines.index("```bash")
    end = lines.index("```", start + 1)
    return lines[start + 1 : end]


def test_readme_starts_with_exactly_two_commands() -> None:
    assert (ROOT / "README.md").read_text().startswith("# quantwise\n\n```bash\n")
    commands = readme_commands()
    assert len(commands) == 2
    assert "quantwise plan examples/" in commands[0]
    assert "pytest" in commands[1]


def test_readme_first_command_plans_llama_awq_on_h100() -> None:
    """Done means: TP=1, and vLLM gets the cap of the GPU it owns (memory policy fill: 0.9,
    where the budget alone needs about 0.31), with the KV tokens that gives."""
    plan_part = readme_commands()[0].split("&& ", 1)[1].split()
    exe = shutil.which("quantwise") or str(Path(sys.executable).parent / "quantwise")
    result = subprocess.run(
        [exe, *plan_part[1:], "-o", "json"], cwd=ROOT, capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stderr
    plan = json.loads(result.stdout)
    assert plan["tensorParallelSize"] == 1
    assert plan["gpuMemoryUtilization"] == 0.9
    assert plan["memoryPolicy"] == "fill"
    # 16 x 8192 tokens are the floor; the cap holds several times more.
    assert plan["kvCacheTokens"] > 3 * plan["kvCacheBudgetTokens"] == 3 * 16 * 8192


def test_fp16_128k_by_32_on_l4_says_it_cannot_fit() -> None:
    exe = shutil.which("quantwise") or str(Path(sys.executable).parent / "quantwise")
    result = subprocess.run(
        [exe, "plan", "examples/llama-3.1-8b-awq.yaml", "--method", "none", "--gpu", "L4", "--max-model-len", "131072", "--concurrency", "32"],
        cwd=ROOT, capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert result.returncode == 1
    assert "does not fit on L4" in result.stderr
    assert "GiB short" in result.stderr


def test_the_mig_and_shared_examples_plan_as_their_comments_say(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["plan", str(ROOT / "examples" / "llama-3.1-8b-awq-mig.yaml"), "-o", "json"]) == 0
    mig = json.loads(capsys.readouterr().out)
    assert (mig["gpuResource"], mig["migProfile"], mig["memoryPolicy"]) == (
        "nvidia.com/mig-2g.20gb", "2g.20gb", "fill"
    )  # fmt: skip
    assert mig["gpuMemoryUtilization"] == 0.9 and mig["kvCacheTokens"] > 8 * 8192
    shared = ROOT / "examples" / "qwen2.5-7b-awq-shared-l4.yaml"
    assert main(["plan", str(shared), "-o", "json"]) == 0
    plan = json.loads(capsys.readouterr().out)
    assert (plan["sharedBy"], plan["memoryPolicy"], plan["gpuResource"]) == (
        2,
        "budget",
        "nvidia.com/gpu",
    )
    assert plan["gpuMemoryUtilization"] <= 0.5
    assert plan["kvCacheTokens"] >= plan["kvCacheBudgetTokens"] == 4 * 8192
