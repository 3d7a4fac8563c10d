"""`quantwise plan`, `render` and `crd` as a user runs them."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from test_weights import LLAMA_31_8B

from quantwise.cli import main

ROOT = Path(__file__).parents[2]
EXAMPLE = ROOT / "examples" / "llama-3.1-8b-awq.yaml"


@pytest.fixture
def config(tmp_path: Path) -> Path:
    path = tmp_path / "config.json"
    path.write_text(json.dumps(LLAMA_31_8B))
    return path


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_plan_table_explains_the_plan(capsys: pytest.CaptureFixture[str], config: Path) -> None:
    code, out, _ = run(capsys, "plan", str(EXAMPLE), "--config", str(config))
    assert code == 0
    assert "TP 1 x PP 1" in out
    assert "--gpu-memory-utilization 0." in out
    assert "Why:" in out and "KV cache 131,072 bytes/token/GPU" in out


def test_plan_json_is_status_plan(capsys: pytest.CaptureFixture[str], config: Path) -> None:
    code, out, _ = run(capsys, "plan", str(EXAMPLE), "--config", str(config), "-o", "json")
    assert code == 0
    data = json.loads(out)
    assert data["tensorParallelSize"] == 1
    assert data["kvCacheBytesPerToken"] == 131072
    assert data["weightBytes"] == pytest.approx(5.73e9, rel=0.01)
    assert data["weightBytesSource"] == "estimated"
    assert data["gpuMemoryUtilization"] < 0.95
    # Same field names as the CRD's status.plan.
    from quantwise.api.crd import build_crd

    plan_props = build_crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"][
        "status"
    ]["properties"]["plan"]["properties"]
    assert set(data) <= set(plan_props)


def test_plan_yaml_prints_the_manifests(capsys: pytest.CaptureFixture[str], config: Path) -> None:
    code, out, _ = run(capsys, "plan", str(EXAMPLE), "--config", str(config), "-o", "yaml")
    assert code == 0
    kinds = [d["kind"] for d in yaml.safe_load_all(out)]
    assert kinds == ["Deployment", "Service"]


def test_what_if_flags_override_the_file(capsys: pytest.CaptureFixture[str], config: Path) -> None:
    code, out, err = run(
        capsys,
        "plan",
        str(EXAMPLE),
        "--config",
        str(config),
        "--method",
        "none",
        "--gpu",
        "L4",
        "--max-model-len",
        "131072",
        "--concurrency",
        "32",
    )
    assert code == 1
    assert out == ""
    assert "does not fit on L4" in err
    code, out, _ = run(
        capsys,
        "plan",
        str(EXAMPLE),
        "--config",
        str(config),
        "--method",
        "none",
        "--gpu",
        "L4",
        "--concurrency",
        "32",
        "-o",
        "json",
    )
    assert code == 0
    assert json.loads(out)["tensorParallelSize"] == 4


def test_method_none_plans_at_the_model_dtype(
    capsys: pytest.CaptureFixture[str], config: Path
) -> None:
    code, out, _ = run(
        capsys,
        "plan",
        "--config",
        str(config),
        "--method",
        "none",
        "--gpu",
        "H100-80GB",
        "-o",
        "json",
    )
    assert code == 0
    assert json.loads(out)["weightBytes"] == 8_030_261_248 * 2


def test_model_dir_measures_weights(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    import numpy as np
    from safetensors.numpy import save_file
    from test_weights import TINY_CONFIG, llama_tensors, tiny

    arch = tiny()
    (tmp_path / "config.json").write_text(json.dumps(TINY_CONFIG))
    tensors = llama_tensors(arch)
    save_file(tensors, str(tmp_path / "model.safetensors"))
    code, out, _ = run(capsys, "plan", "--model-dir", str(tmp_path), "--gpu", "t4", "-o", "json")
    assert code == 0
    data = json.loads(out)
    assert data["weightBytesSource"] == "measured"
    assert data["weightBytes"] == sum(a.nbytes for a in tensors.values())
    assert data["maxModelLen"] == 2048
    del np


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["plan", "--config", "{config}", "--gpu", "H100"], "'H100' is not in the catalog"),
        (["plan", "--config", "{config}"], "no GPU"),
        (
            ["plan", str(EXAMPLE), "--config", "{config}", "--bits", "3"],
            "bits 3 is not allowed for method awq",
        ),
        (
            ["plan", "{copy}", "--models-dir", "/nonexistent"],
            "no config.json for meta-llama/Llama-3.1-8B-Instruct",
        ),
        (["plan", "/nonexistent.yaml"], "No such file"),
    ],
)
def test_user_errors_exit_2_with_one_clear_line(
    capsys: pytest.CaptureFixture[str],
    config: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    argv: list[str],
    message: str,
) -> None:
    copy = tmp_path / "model.yaml"
    copy.write_text(EXAMPLE.read_text())
    monkeypatch.chdir(tmp_path)  # No examples/models here to find configs in.
    code, _, err = run(
        capsys, *[a.replace("{config}", str(config)).replace("{copy}", str(copy)) for a in argv]
    )
    assert code == 2
    assert message in err
    assert "Traceback" not in err


def test_crd_check_detects_drift(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    assert run(capsys, "crd", "--output-dir", str(tmp_path))[0] == 0
    assert run(capsys, "crd", "--output-dir", str(tmp_path), "--check")[0] == 0
    target = next(tmp_path.iterdir())
    target.write_text(target.read_text() + "# edited\n")
    code, _, err = run(capsys, "crd", "--output-dir", str(tmp_path), "--check")
    assert code == 1 and "stale" in err


def test_console_script_is_installed() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "quantwise.cli", "--version"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert result.stdout.startswith("quantwise ")


def test_plan_skips_tp_sizes_marlin_cannot_run(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    # Llama-2-7B's MLP (11008) splits into 2752-wide shards at TP=4: not a multiple of Marlin's 128.
    # (Before 0.33: from then on Marlin pads such shapes.)
    config = tmp_path / "config.json"
    config.write_text(
        json.dumps(
            {
                **LLAMA_31_8B,
                "intermediate_size": 11008,
                "num_key_value_heads": 32,
                "vocab_size": 32000,
            }
        )
    )
    code, out, _ = run(
        capsys,
        "plan",
        "--config",
        str(config),
        "--method",
        "gptq",
        "--group-size",
        "-1",
        "--gpu",
        "A100-80GB",
        "--vllm-version",
        "0.20",
        "-o",
        "json",
    )
    assert code == 0
    reasons = " ".join(json.loads(out)["reasons"])
    assert (
        "TP=4 skipped: the down_proj input shard 2752 is not a multiple of 128 (Marlin)" in reasons
    )


def test_plan_refuses_a_kv_cache_dtype_the_vllm_release_lacks(
    capsys: pytest.CaptureFixture[str], config: Path
) -> None:
    argv = ("plan", str(EXAMPLE), "--config", str(config), "--kv-cache-dtype", "turboquant_k8v4")
    code, _, err = run(capsys, *argv, "--vllm-version", "0.11")
    assert code == 1
    assert "kvCacheDtype turboquant_k8v4 is not in vLLM 0.11 (vLLM 0.20 has it)" in err
    code, out, _ = run(capsys, *argv, "--vllm-version", "0.20")
    assert code == 0 and "--kv-cache-dtype turboquant_k8v4" in out


@pytest.mark.parametrize("command", [["plan", "-o", "yaml"], ["render"]])
def test_a_plan_across_nodes_prints_its_leader_worker_set(
    capsys: pytest.CaptureFixture[str], command: list[str]
) -> None:
    """A multi-node plan is served by a LeaderWorkerSet: the CLI prints it (it crashed with a
    traceback, "render a LeaderWorkerSet"), as plain YAML without anchors or aliases."""
    example = ROOT / "examples" / "llama-3.1-405b-multinode.yaml"
    config = ROOT / "examples" / "models" / "meta-llama--Llama-3.1-405B-Instruct" / "config.json"
    code, out, err = run(capsys, command[0], str(example), "--config", str(config), *command[1:])
    assert code == 0, err
    lws, svc = yaml.safe_load_all(out)
    assert [lws["kind"], svc["kind"]] == ["LeaderWorkerSet", "Service"]
    assert lws["spec"]["leaderWorkerTemplate"]["size"] == 2
    assert svc["spec"]["selector"]["quantwise.dev/role"] == "leader"
    # The leader and worker templates share objects (tolerations, security contexts): written
    # out each time, never as &id001 / *id001.
    assert "&id" not in out and "*id" not in out
    worker = lws["spec"]["leaderWorkerTemplate"]["workerTemplate"]["spec"]
    assert (
        worker["tolerations"]
        == lws["spec"]["leaderWorkerTemplate"]["leaderTemplate"]["spec"]["tolerations"]
    )


LLAMA_CONFIG = ROOT / "examples" / "models" / "meta-llama--Llama-3.1-8B-Instruct" / "config.json"


def test_the_memory_policy_is_fill_unless_asked_for_budget(
    capsys: pytest.CaptureFixture[str],
) -> None:
    code, out, _ = run(capsys, "plan", str(EXAMPLE))
    assert code == 0
    assert "--gpu-memory-utilization 0.90" in out
    assert "Memory policy   fill: vLLM gets 0.90 x 79.1 = 71.2 GiB per GPU, the cap" in out
    assert "516,496 tokens vLLM will have (63.0 x 8192); the budget asks 131,072 (16 x 8192)" in out
    assert "Placement       each of 1 replica(s) on 1 whole H100-80GB GPU(s) of its own" in out
    code, out, _ = run(capsys, "plan", str(EXAMPLE), "--memory", "budget", "-o", "json")
    assert code == 0
    data = json.loads(out)
    assert (data["memoryPolicy"], data["gpuMemoryUtilization"]) == ("budget", 0.31)
    assert data["kvCacheTokens"] == 134_144


def test_a_mig_slice_on_the_command_line(capsys: pytest.CaptureFixture[str]) -> None:
    argv = [
        "plan",
        "--config",
        str(LLAMA_CONFIG),
        "--method",
        "awq",
        "--gpu",
        "H100-80GB-MIG-3g.40gb",
    ]
    code, out, _ = run(capsys, *argv)
    assert code == 0
    assert "TP 1 x PP 1" in out
    assert (
        "on a MIG 3g.40gb slice of one H100-80GB (3/7 of its SMs, 4/8 of its memory and bandwidth)"
        in out
    )
    assert "requests nvidia.com/mig-3g.40gb: 1" in out
    code, out, _ = run(capsys, *argv, "-o", "yaml")
    assert code == 0
    dep = next(d for d in yaml.safe_load_all(out) if d["kind"] == "Deployment")
    resources = dep["spec"]["template"]["spec"]["containers"][0]["resources"]
    assert resources == {
        "limits": {"nvidia.com/mig-3g.40gb": "1"},
        "requests": {"nvidia.com/mig-3g.40gb": "1"},
    }


def test_a_slice_too_small_is_refused_with_the_slices_that_fit(
    capsys: pytest.CaptureFixture[str],
) -> None:
    base = [
        "plan",
        "--config",
        str(LLAMA_CONFIG),
        "--method",
        "none",
        "--gpu",
        "H100-80GB-MIG-1g.10gb",
    ]
    code, _, err = run(capsys, *base, "--max-model-len", "131072", "--concurrency", "16")
    assert code == 1
    assert "does not fit on H100-80GB-MIG-1g.10gb: at TP=1" in err
    assert "- no MIG slice holds it" in err and "- whole GPUs that fit: L40S (TP=8)" in err
    code, _, err = run(capsys, *base, "--max-model-len", "8192", "--concurrency", "4")
    assert code == 1
    assert "- MIG slices that fit (TP=1): H100-80GB-MIG-{3g.40gb, 4g.40gb, 7g.80gb}" in err


def test_a_shared_gpu_on_the_command_line(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "plan", str(EXAMPLE), "--gpu", "H100-80GB", "--shared-by", "4",
                       "--concurrency", "8", "-o", "json")  # fmt: skip
    assert code == 0
    data = json.loads(out)
    assert (data["sharedBy"], data["memoryPolicy"], data["tensorParallelSize"]) == (4, "budget", 1)
    assert data["gpuMemoryUtilization"] <= 0.25
