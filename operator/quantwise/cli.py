"""The ``quantwise`` command: plan, render, validate, crd (offline); run (the operator); quantize and
inspect (the Jobs' programs).

Each command imports what only it uses when it runs: ``quantwise plan`` loads no Kubernetes
client, ``quantwise run`` no quantizer, so that each starts fast and the operator's memory holds
only the operator.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import secrets
import socket
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml
from pydantic import ValidationError

from quantwise import API_GROUP, KIND, __version__
from quantwise.api.sizing import (
    expected_weights,
    gpu_from_spec,
    plan_spec,
    weight_format_for,
)
from quantwise.api.spec import QuantizedModelSpec
from quantwise.api.status import PlanStatus
from quantwise.planning.architecture import (
    Architecture,
    ArchitectureError,
    architecture_from_config,
)
from quantwise.planning.gpus import (
    GIB,
    GPU,
    GPU_NAMES,
    UnknownGPUError,
    lookup_gpu,
    mig_catalog_text,
)
from quantwise.planning.kvcache import KV_CACHE_DTYPES, kv_cache_dtype_unavailable
from quantwise.planning.planner import MEMORY_POLICIES, Plan, PlanError, TPFilter
from quantwise.planning.weights import (
    WeightBreakdown,
    WeightsError,
    measure_weights,
    safetensors_files,
)
from quantwise.quantization.config import QuantizationConfigError, parse_quantization_config
from quantwise.quantization.methods import (
    DEFAULT_CALIBRATION_SAMPLES,
    DEFAULT_CALIBRATION_SEQUENCE_LENGTH,
    DEFAULT_GROUP_SIZE,
    DEFAULT_IGNORE,
    METHODS,
    QUANTIZING,
    default_split,
)
from quantwise.quantization.quality import (
    DEFAULT_EVALUATION_SAMPLES,
    DEFAULT_EVALUATION_SEQUENCE_LENGTH,
    DEFAULT_MAX_PERPLEXITY_INCREASE_PERCENT,
)
from quantwise.quantization.recipe import QuantizeRequest
from quantwise.quantization.validate import validate
from quantwise.reconcile.validation import produced_checkpoint
from quantwise.render.job import TERMINATION_LOG
from quantwise.render.serving import serving_objects
from quantwise.settings import Settings
from quantwise.vllm import DEFAULT_IMAGE, DEFAULT_VERSION, format_version, version_of

if TYPE_CHECKING:
    from quantwise.jobs.evaluation import EvaluationArgs

DEFAULT_NAME = "model"
DEFAULT_NAMESPACE = "default"


class UserError(Exception):
    """An error in the user's input: printed as one message, exit status 2."""


# ----- loading -----


def _load_manifest(path: Path) -> dict[str, Any]:
    try:
        docs = [d for d in yaml.safe_load_all(path.read_text()) if d]
    except OSError as exc:
        raise UserError(f"{path}: {exc.strerror}") from exc
    except yaml.YAMLError as exc:
        raise UserError(f"{path}: not valid YAML: {exc}") from exc
    for doc in docs:
        if isinstance(doc, dict) and doc.get("kind") == KIND:
            api_version = str(doc.get("apiVersion", ""))
            if not api_version.startswith(f"{API_GROUP}/"):
                raise UserError(f"{path}: apiVersion {api_version!r} is not {API_GROUP}/v1alpha1")
            return doc
    raise UserError(f"{path}: no {KIND} in the file")


def _skeleton() -> dict[str, Any]:
    return {
        "apiVersion": f"{API_GROUP}/v1alpha1",
        "kind": KIND,
        "metadata": {"name": DEFAULT_NAME, "namespace": DEFAULT_NAMESPACE},
        "spec": {
            "source": {"huggingFace": {"repo": "local/model"}},
            "quantization": {"method": "none"},
            "storage": {"pvc": {"claimName": "models", "path": "quantized"}},
        },
    }


def _apply_overrides(doc: dict[str, Any], args: argparse.Namespace) -> dict[str, Any]:
    doc = copy.deepcopy(doc)
    spec = doc.setdefault("spec", {})
    quant = spec.setdefault("quantization", {})
    serving = spec.setdefault("serving", {})
    if args.method is not None:
        if args.method != quant.get("method"):
            for key in ("bits", "groupSize", "symmetric"):
                quant.pop(key, None)  # The file's values belong to its method.
        quant["method"] = args.method
    if args.bits is not None:
        quant["bits"] = args.bits
    if args.group_size is not None:
        quant["groupSize"] = args.group_size
    if args.gpu is not None:
        serving["gpu"] = {"product": args.gpu}
    if args.shared_by is not None:
        serving.setdefault("gpu", {})["sharedBy"] = args.shared_by
    for flag, key in (
        ("max_model_len", "maxModelLen"),
        ("concurrency", "concurrency"),
        ("kv_cache_dtype", "kvCacheDtype"),
        ("max_gpu_memory_utilization", "maxGpuMemoryUtilization"),
        ("gpus_per_node", "gpusPerNode"),
        ("max_nodes", "maxNodes"),
        ("vllm_version", "vllmVersion"),
        ("memory", "memoryPolicy"),
    ):
        value = getattr(args, flag)
        if value is not None:
            serving[key] = value
    return doc


def _format_validation_error(exc: ValidationError) -> str:
    lines = []
    for err in exc.errors():
        loc = ".".join(str(p) for p in err["loc"])
        msg = err["msg"].removeprefix("Value error, ")
        lines.append(msg if msg.startswith("spec.") or not loc else f"spec.{loc}: {msg}")
    return "invalid QuantizedModel:\n  " + "\n  ".join(lines)


def _parse_spec(doc: dict[str, Any]) -> QuantizedModelSpec:
    try:
        return QuantizedModelSpec.model_validate(doc.get("spec") or {})
    except ValidationError as exc:
        raise UserError(_format_validation_error(exc)) from exc


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except OSError as exc:
        raise UserError(f"{path}: {exc.strerror}") from exc
    except json.JSONDecodeError as exc:
        raise UserError(f"{path}: not valid JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise UserError(f"{path}: expected a JSON object")
    return data


def _model_dirs(args: argparse.Namespace) -> list[Path]:
    dirs: list[Path] = []
    if args.models_dir:
        dirs.append(Path(args.models_dir))
    if env := os.environ.get("QUANTWISE_MODELS_DIR"):
        dirs.extend(Path(p) for p in env.split(os.pathsep) if p)
    if args.file:
        dirs.append(Path(args.file).resolve().parent / "models")
    dirs.append(Path("examples/models"))
    return dirs


def _find_config(spec: QuantizedModelSpec, args: argparse.Namespace) -> Path:
    hf = spec.source.hugging_face
    if hf is None:
        raise UserError(
            "the source is a PVC, which this machine cannot read: pass --model-dir DIR (a copy "
            "of the model directory) or --config config.json"
        )
    folder = hf.repo.replace("/", "--")
    searched = []
    for base in _model_dirs(args):
        candidate = base / folder / "config.json"
        searched.append(str(candidate))
        if candidate.is_file():
            return candidate
    raise UserError(
        f"no config.json for {hf.repo}: quantwise never downloads; pass --config config.json "
        f"or --model-dir DIR (looked in: {', '.join(searched)})"
    )


def _model_inputs(
    spec: QuantizedModelSpec, args: argparse.Namespace
) -> tuple[Architecture, dict[str, Any], WeightBreakdown | None, str]:
    """Architecture, the raw config, measured weights (if any) and where they came from."""
    measured: WeightBreakdown | None = None
    if args.model_dir:
        model_dir = Path(args.model_dir)
        config_path = model_dir / "config.json"
        if not config_path.is_file():
            raise UserError(f"{model_dir}: no config.json")
    elif args.config:
        config_path = Path(args.config)
    else:
        config_path = _find_config(spec, args)
    config = _read_json(config_path)
    try:
        arch = architecture_from_config(config)
    except ArchitectureError as exc:
        raise UserError(f"{config_path}: {exc}") from exc
    origin = f"estimated from {config_path}"
    if args.model_dir:
        model_dir = Path(args.model_dir)
        try:
            if safetensors_files(model_dir):
                measured = measure_weights(model_dir, arch)
                origin = f"measured from the safetensors headers in {model_dir}"
        except WeightsError as exc:
            raise UserError(str(exc)) from exc
    return arch, config, measured, origin


# ----- output -----


def _gb(n: int) -> str:
    return f"{n / 1e9:.2f} GB ({n / GIB:.1f} GiB)"


def _table(name: str, spec: QuantizedModelSpec, arch: Architecture, p: Plan, origin: str) -> str:
    q = spec.quantization
    if q.method == "none":
        what = "as stored"
    else:
        group = q.effective_group_size
        what = f"{q.method} {q.effective_bits}-bit" + (f" g{group}" if group else "")
    source = spec.source.hugging_face.repo if spec.source.hugging_face else "pvc"
    attn = (
        f"MLA latent {arch.mla_kv_width}"
        if arch.is_mla
        else f"{arch.num_attention_heads} heads / {arch.num_key_value_heads} KV heads, "
        f"head_dim {arch.head_dim}"
    )
    moe = f", MoE {arch.num_experts_per_tok}/{arch.num_experts} experts" if arch.is_moe else ""
    s = p.sizing
    flags = (
        f"--tensor-parallel-size {p.tensor_parallel_size}"
        + (
            f" --pipeline-parallel-size {p.pipeline_parallel_size}"
            if p.pipeline_parallel_size > 1
            else ""
        )
        + f" --gpu-memory-utilization {p.gpu_memory_utilization:.2f} --max-model-len "
        f"{p.max_model_len} --max-num-seqs {p.max_num_seqs} --kv-cache-dtype {p.kv_cache_dtype}"
    )
    rows = [
        ("Model", f"{name}: {source}, {what}"),
        (
            "Architecture",
            f"{arch.model_type}, {arch.num_hidden_layers} layers, hidden {arch.hidden_size}, "
            f"{attn}{moe}, vocab {arch.vocab_size}, context {arch.max_position_embeddings}",
        ),
        ("Weights", f"{_gb(p.weight_bytes)}, {origin}"),
        (
            "GPU",
            f"{p.gpu.name}: {p.gpu.memory_gib:.1f} GiB, {p.gpu.bandwidth_gbps:,.0f} GB/s, "
            f"compute capability {p.gpu.compute_capability_str}",
        ),
        ("Placement", _placement_text(p, spec.serving.replicas)),
        (
            "Parallelism",
            f"TP {p.tensor_parallel_size} x PP {p.pipeline_parallel_size} = "
            f"{p.gpus_per_replica} GPU(s) per replica, {spec.serving.replicas} replica(s)",
        ),
        (
            "Memory per GPU",
            f"weights {s.weight_bytes / GIB:.1f} + KV budget {s.kv_budget_bytes / GIB:.1f} + "
            f"overhead {s.overhead.total_bytes / GIB:.1f} = {s.required_bytes / GIB:.1f} GiB "
            f"of {p.gpu.memory_gib:.1f} GiB",
        ),
        ("Memory policy", _policy_text(p)),
        (
            "KV cache",
            f"{p.kv_cache_bytes_per_token:,} bytes/token/GPU, {p.kv_cache_tokens:,} tokens vLLM "
            f"will have ({p.kv_cache_tokens / p.max_model_len:.1f} x {p.max_model_len}); the "
            f"budget asks {p.kv_cache_budget_tokens:,} ({spec.serving.concurrency} x "
            f"{p.max_model_len})",
        ),
        (
            "Decode",
            f"<= {p.estimated_decode_tokens_per_second:,.0f} tokens/s per sequence (upper bound)",
        ),
        ("vLLM flags", flags),
    ]
    width = max(len(k) for k, _ in rows)
    out = [f"{k.ljust(width)}  {v}" for k, v in rows]
    out.append("")
    out.append("Why:")
    out.extend(f"  - {r}" for r in p.reasons)
    return "\n".join(out)


def _placement_text(p: Plan, replicas: int) -> str:
    """Where each replica runs: whole GPUs, a MIG slice, or a share of a GPU; what it requests."""
    gpu = p.gpu
    request = f"requests {gpu.resource}: {p.tensor_parallel_size}"
    if gpu.is_mig:
        where = (
            f"a MIG {gpu.mig_profile} slice of one {gpu.parent} ({gpu.compute_fraction * 7:.0f}/7 "
            f"of its SMs, {gpu.memory_fraction * 8:.0f}/8 of its memory and bandwidth)"
        )
    elif gpu.shared:
        where = f"one {gpu.name} {gpu.sharing_text}, at most {gpu.share_bytes / GIB:.1f} GiB of it"
    else:
        where = f"{p.gpus_per_replica} whole {gpu.name} GPU(s) of its own"
    return f"each of {replicas} replica(s) on {where}; {request}"


def _policy_text(p: Plan) -> str:
    """The memory policy in one line: what vLLM gets, and against what the budget needs."""
    got = p.gpu.memory_bytes * p.gpu_memory_utilization / GIB
    needed = p.sizing.required_bytes / GIB
    if p.memory_policy == "fill":
        return (
            f"fill: vLLM gets {p.gpu_memory_utilization:.2f} x {p.gpu.memory_gib:.1f} = "
            f"{got:.1f} GiB per GPU, the cap; the budget needs {needed:.1f} GiB (a floor)"
        )
    return (
        f"budget: vLLM gets {p.gpu_memory_utilization:.2f} x {p.gpu.memory_gib:.1f} = "
        f"{got:.1f} GiB per GPU, what the budget needs ({needed:.1f} GiB) rounded up to 0.01"
    )


class _PlainDumper(yaml.SafeDumper):
    """YAML as a person writes it: an object that repeats is written out again, not as an
    anchor (``&id001``) and alias (``*id001``), so a GitOps diff shows every field."""

    def ignore_aliases(self, data: Any) -> bool:
        return True


def _manifests(doc: dict[str, Any], spec: QuantizedModelSpec, p: Plan) -> str:
    meta = doc.get("metadata") or {}
    name = str(meta.get("name") or DEFAULT_NAME)
    namespace = str(meta.get("namespace") or DEFAULT_NAMESPACE)
    objects = serving_objects(name, namespace, spec, PlanStatus.from_plan(p))
    return yaml.dump_all(objects, Dumper=_PlainDumper, sort_keys=False, width=100)


# ----- commands -----


def _kernel_tp_filter(
    spec: QuantizedModelSpec, arch: Architecture, config: dict[str, Any], gpu: GPU | None
) -> TPFilter | None:
    """Skip TP sizes the checkpoint's kernel (Marlin) cannot run at."""

    try:
        quant = produced_checkpoint(spec) or parse_quantization_config(
            config.get("quantization_config")
        )
    except QuantizationConfigError as exc:
        raise UserError(str(exc)) from exc
    if gpu is None:
        return None
    verdict = validate(quant, gpu, version_of(spec.serving.image, spec.serving.vllm_version))
    if not verdict.marlin_shapes:
        return None
    return lambda tp: verdict.tp_blocker(arch, quant, tp)


def cmd_plan(args: argparse.Namespace) -> int:
    doc = _load_manifest(Path(args.file)) if args.file else _skeleton()
    doc = _apply_overrides(doc, args)
    spec = _parse_spec(doc)

    version = version_of(spec.serving.image or DEFAULT_IMAGE, spec.serving.vllm_version)
    if reason := kv_cache_dtype_unavailable(spec.serving.kv_cache_dtype, version):
        print(f"quantwise plan: {reason}", file=sys.stderr)
        return 1
    arch, config, measured, origin = _model_inputs(spec, args)

    try:
        fmt = weight_format_for(spec.quantization, config.get("quantization_config"))
    except QuantizationConfigError as exc:
        raise UserError(str(exc)) from exc
    weights = expected_weights(spec, arch, fmt, measured)
    if not weights.measured and measured is not None:
        origin = (
            f"estimated for {spec.quantization.method} (the model directory holds the base model)"
        )
    if spec.serving.gpu is None:
        raise UserError(
            f"no GPU: set spec.serving.gpu or pass --gpu ({', '.join(GPU_NAMES)}, or a MIG slice "
            "such as H100-80GB-MIG-3g.40gb)"
        )
    try:
        target = gpu_from_spec(spec.serving.gpu)  # --gpu and --shared-by are in the spec now
        tp_filter = _kernel_tp_filter(spec, arch, config, target)
        result = plan_spec(spec, arch, weights, fmt, target, tp_filter)
    except UnknownGPUError as exc:
        raise UserError(str(exc)) from exc
    except PlanError as exc:
        print(f"quantwise plan: {exc}", file=sys.stderr)
        return 1
    name = str((doc.get("metadata") or {}).get("name") or DEFAULT_NAME)
    if args.output == "json":
        print(json.dumps(PlanStatus.from_plan(result).to_api(), indent=2))
    elif args.output == "yaml":
        print(_manifests(doc, spec, result), end="")
    else:
        print(_table(name, spec, arch, result, origin))
    return 0


def cmd_crd(args: argparse.Namespace) -> int:
    from quantwise.api.crd import crd_files

    files = crd_files()
    if args.stdout:
        print("---\n".join(files.values()), end="")
        return 0
    stale = []
    for filename, text in files.items():
        target = Path(args.output_dir) / filename
        if args.check:
            if not target.is_file() or target.read_text() != text:
                stale.append(str(target))
            continue
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text)
        print(f"wrote {target}")
    if stale:
        print(f"stale: {', '.join(stale)}: run `quantwise crd`", file=sys.stderr)
        return 1
    if args.check:
        print(f"{args.output_dir} is up to date")
    return 0


RBAC_RULES_FILE = "files/rbac-rules.yaml"
RBAC_HEADER = (
    "# Generated by `quantwise chart-files` from quantwise.k8s.API_CALLS (the API calls the\n"
    "# operator's code makes) and Kopf's needs. Do not edit: a test fails when it is stale.\n"
)


def chart_files() -> dict[str, str]:
    """The chart's generated files, by path relative to the chart: CRDs and RBAC rules."""
    from quantwise.api.crd import crd_files
    from quantwise.rbac import chart_rules

    rules = RBAC_HEADER + yaml.safe_dump(chart_rules(), sort_keys=False, width=100)
    return {
        **{f"crds/{name}": text for name, text in crd_files().items()},
        RBAC_RULES_FILE: rules,
    }


def cmd_chart_files(args: argparse.Namespace) -> int:
    chart = Path(args.chart)
    stale = []
    for relative, text in chart_files().items():
        target = chart / relative
        current = target.read_text() if target.is_file() else None
        if current == text:
            continue
        if args.check:
            stale.append(str(target))
            continue
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text)
        print(f"wrote {target}")
    if stale:
        print(f"stale: {', '.join(stale)}: run `quantwise chart-files`", file=sys.stderr)
        return 1
    return 0


def cmd_api_docs(args: argparse.Namespace) -> int:
    from quantwise.api.docs import DOCS_PATH, render_api_docs

    text = render_api_docs()
    target = Path(args.output or DOCS_PATH)
    if args.check:
        if not target.is_file() or target.read_text() != text:
            print(f"{target} is stale: run `quantwise api-docs`", file=sys.stderr)
            return 1
        return 0
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(text)
    print(f"wrote {target}")
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    import kopf

    import quantwise.handlers  # Registers the handlers with Kopf.

    del quantwise.handlers
    if not args.all_namespaces and not args.namespace:
        raise UserError(
            "name the namespaces to watch (--namespace NS, repeatable) or pass --all-namespaces"
        )
    peering = None if args.standalone else args.peering
    # Replicas of one priority all pause (Kopf's peering): each takes its own, unless told.
    priority = args.priority if args.priority is not None else secrets.randbelow(2**31 - 1) + 1
    identity = os.environ.get("POD_ID") or f"{socket.gethostname()}/{os.getpid()}"
    settings = Settings.from_environment(
        quantizer_image=args.quantizer_image,
        vllm_image=args.vllm_image,
        metrics_port=args.metrics_port,
        cluster_wide=args.all_namespaces,
        namespaces=tuple(args.namespace or ()),
        peering=peering,
        identity=identity,
        priority=priority,
    )
    log_format = {"json": kopf.LogFormat.JSON, "plain": kopf.LogFormat.PLAIN}.get(
        args.log_format, kopf.LogFormat.FULL
    )
    kopf.configure(verbose=args.verbose, log_format=log_format, log_refkey="object")
    kopf.run(
        clusterwide=args.all_namespaces,
        namespaces=args.namespace or (),
        standalone=args.standalone,
        peering_name=peering,
        priority=priority,
        identity=identity,  # type: ignore[arg-type]  # Kopf's Identity is a NewType of str
        liveness_endpoint=args.liveness or None,
        memo=kopf.Memo(settings=settings),
    )
    return 0


def _quantization_input(
    path: Path,
) -> tuple[dict[str, Any] | None, dict[str, Any] | None, dict[str, Any] | None]:
    """(quantization_config, quantize_config.json, config.json) from a dir or a JSON file."""
    if path.is_dir():
        config = _read_json(path / "config.json") if (path / "config.json").is_file() else None
        qc_file = path / "quantize_config.json"
        separate = _read_json(qc_file) if qc_file.is_file() else None
        if config is None and separate is None:
            raise UserError(f"{path}: no config.json or quantize_config.json")
        return (config or {}).get("quantization_config"), separate, config
    data = _read_json(path)
    if "quant_method" in data or "quant_algo" in data or "bits" in data:
        return data, None, None  # A bare quantization_config.
    return data.get("quantization_config"), None, data


def cmd_validate(args: argparse.Namespace) -> int:

    path = Path(args.path)
    gguf_files = sorted(path.glob("*.gguf")) if path.is_dir() else [path] * (path.suffix == ".gguf")
    try:
        if gguf_files:
            from quantwise.quantization.gguf_file import parse_gguf

            quant = parse_gguf(gguf_files[0])
            qc, separate, config = None, None, None
        else:
            qc, separate, config = _quantization_input(path)
            quant = parse_quantization_config(qc, separate)
    except QuantizationConfigError as exc:
        raise UserError(str(exc)) from exc
    arch = None
    if config is not None:
        try:
            arch = architecture_from_config(config)
        except ArchitectureError:
            arch = None
    try:
        gpu = lookup_gpu(args.gpu)
    except UnknownGPUError as exc:
        raise UserError(str(exc)) from exc
    version = version_of(None, args.vllm)
    verdict = validate(quant, gpu, version, arch)
    if args.output == "json":
        print(json.dumps(verdict.to_json(), indent=2))
    else:
        words = {
            "fast": "loads on a fast kernel",
            "slow": "loads on a slow path",
            "unsupported": "will not load",
        }
        print(
            f"{verdict.verdict.upper()}: {quant.summary()} {words[verdict.verdict]} in vLLM "
            f"{version[0]}.{version[1]} on {gpu.name}"
            + (f" ({verdict.kernel})" if verdict.kernel else "")
        )
        for finding in verdict.findings:
            print(f"  {finding.severity:7} {finding.field}: {finding.message}")
    return 1 if verdict.verdict == "unsupported" else 0


def cmd_quantize(args: argparse.Namespace) -> int:
    from quantwise.jobs.quantize import QuantizeArgs, configure_logging, quantize_model, run_job

    configure_logging()
    facts = METHODS[args.method]
    group = args.group_size
    if group is None and facts.grouped:
        group = DEFAULT_GROUP_SIZE
    default_symmetric = facts.symmetric is not False
    dataset = args.calibration
    request = QuantizeRequest(
        method=args.method,
        bits=args.bits or facts.bits[0],
        group_size=group,
        symmetric=args.symmetric if args.symmetric is not None else default_symmetric,
        kv_cache_fp8=args.kv_cache_dtype == "fp8",
        ignore=tuple(args.ignore) if args.ignore else DEFAULT_IGNORE,
        calibrated=dataset is not None,
    )
    split = args.split or default_split(dataset)
    job = QuantizeArgs(
        model=args.model,
        revision=args.revision,
        request=request,
        output=Path(args.output).absolute(),
        calibration=dataset,
        split=split,
        samples=args.samples,
        sequence_length=args.sequence_length,
        seed=args.seed,
        evaluate=_evaluation_args(args, dataset, split),
    )
    return run_job(lambda stage: quantize_model(job, stage), args.model, args.report_path)


def _evaluation_args(
    args: argparse.Namespace, calibration: str | None, calibration_split: str | None
) -> EvaluationArgs | None:
    """The quality gate's flags: by default a held-out slice of the calibration data."""
    from quantwise.jobs.evaluation import EvaluationArgs

    if args.no_eval:
        return None
    dataset = args.eval_dataset or calibration
    held_out = calibration is not None and dataset == calibration
    split = args.eval_split or (calibration_split if held_out else default_split(dataset))
    held_out = held_out and split == calibration_split
    return EvaluationArgs(
        dataset=dataset,
        split=split or "train",
        samples=args.eval_samples,
        sequence_length=args.eval_sequence_length,
        limit_percent=args.max_perplexity_increase,
        held_out=held_out,
    )


def cmd_inspect(args: argparse.Namespace) -> int:
    from quantwise.jobs.quantize import BaseModel, configure_logging, inspect_checkpoint, run_job

    configure_logging()
    base = BaseModel(args.base_model, args.base_revision) if args.base_model else None
    evaluate = _evaluation_args(args, None, None) if base is not None else None
    return run_job(
        lambda stage: inspect_checkpoint(args.model, args.revision, stage, base, evaluate),
        args.model,
        args.report_path,
    )


def _evaluation_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--eval-dataset",
        help="data to measure perplexity on: a dataset on Hugging Face, or a file or dir "
        "(default: a held-out slice of --calibration)",
    )
    p.add_argument("--eval-split", help="split of --eval-dataset (default: as for calibration)")
    p.add_argument("--eval-samples", type=int, default=DEFAULT_EVALUATION_SAMPLES,
                   help="evaluation samples")  # fmt: skip
    p.add_argument("--eval-sequence-length", type=int, default=DEFAULT_EVALUATION_SEQUENCE_LENGTH,
                   help="tokens per evaluation sample")  # fmt: skip
    p.add_argument(
        "--max-perplexity-increase", type=float, default=DEFAULT_MAX_PERPLEXITY_INCREASE_PERCENT,
        metavar="PERCENT",
        help="the quality gate: fail (exit 3) when the quantized model's perplexity is more than "
        "this many percent above the base model's",
    )  # fmt: skip
    p.add_argument("--no-eval", action="store_true", help="skip the evaluation and the gate")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="quantwise",
        description="Quantize, validate, size and serve LLMs on Kubernetes with vLLM.",
    )
    parser.add_argument("--version", action="version", version=f"quantwise {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    _offline_commands(sub)
    _run_command(sub)
    _job_commands(sub)
    _generating_commands(sub)
    return parser


def _plan_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("file", nargs="?", help="a QuantizedModel manifest (YAML)")
    src = p.add_mutually_exclusive_group()
    src.add_argument("--model-dir", help="model directory: config.json and safetensors")
    src.add_argument("--config", help="a Hugging Face config.json")
    p.add_argument("--models-dir", help="folder of ORG--NAME/config.json to look models up in")
    p.add_argument(
        "--gpu",
        help=f"GPU to plan for: {', '.join(GPU_NAMES)}, or a MIG slice <GPU>-MIG-<profile> "
        f"({mig_catalog_text()})",
    )
    p.add_argument(
        "--shared-by",
        type=int,
        help="the GPU is shared by this many pods (time-slicing or MPS replicas): TP 1, "
        "memory policy budget, within 1/N of its memory",
    )
    p.add_argument(
        "--memory",
        choices=list(MEMORY_POLICIES),
        help="fill (default on GPUs the pod owns): vLLM gets --max-gpu-memory-utilization, the "
        "KV budget is a floor; budget: only what the budget needs (for a GPU shared with others)",
    )
    p.add_argument("--method", choices=list(METHODS))
    p.add_argument("--bits", type=int)
    p.add_argument("--group-size", type=int)
    p.add_argument("--max-model-len", type=int)
    p.add_argument("--concurrency", type=int)
    p.add_argument("--kv-cache-dtype", choices=KV_CACHE_DTYPES)
    p.add_argument("--max-gpu-memory-utilization", type=float)
    p.add_argument("--gpus-per-node", type=int)
    p.add_argument("--max-nodes", type=int)
    p.add_argument(
        "--vllm-version",
        help=f"vLLM version to check kernels for (default: {format_version(DEFAULT_VERSION)})",
    )


Commands = Any  # argparse's subparsers action (a private type)


def _offline_commands(sub: Commands) -> None:
    p_plan = sub.add_parser("plan", help="size the serving deployment of a model, offline")
    _plan_args(p_plan)
    p_plan.add_argument("--output", "-o", choices=("table", "json", "yaml"), default="table")
    p_plan.set_defaults(func=cmd_plan)

    p_render = sub.add_parser("render", help="print the manifests `plan` would apply")
    _plan_args(p_render)
    p_render.set_defaults(func=cmd_plan, output="yaml")

    p_validate = sub.add_parser("validate", help="will vLLM load this checkpoint, and fast?")
    p_validate.add_argument(
        "path", help="a model directory, a config.json, or a quantization_config JSON"
    )
    p_validate.add_argument("--gpu", default="H100-80GB", help=f"one of {', '.join(GPU_NAMES)}")
    p_validate.add_argument(
        "--vllm", default=None, help=f"vLLM version (default {format_version(DEFAULT_VERSION)})"
    )
    p_validate.add_argument("--output", "-o", choices=("table", "json"), default="table")
    p_validate.set_defaults(func=cmd_validate)


def _run_command(sub: Commands) -> None:
    p_run = sub.add_parser("run", help="run the operator (Kopf) against the current cluster")
    scope = p_run.add_mutually_exclusive_group()
    scope.add_argument(
        "--namespace", "-n", action="append", help="a namespace to watch (repeatable)"
    )
    scope.add_argument("--all-namespaces", "-A", action="store_true", help="watch every namespace")
    p_run.add_argument("--quantizer-image", help="default: $QUANTWISE_QUANTIZER_IMAGE")
    p_run.add_argument("--vllm-image", help="default: $QUANTWISE_VLLM_IMAGE")
    p_run.add_argument(
        "--liveness", default="http://0.0.0.0:8080/healthz", help="liveness endpoint ('' for none)"
    )
    p_run.add_argument("--log-format", choices=("json", "plain", "full"), default="full")
    p_run.add_argument(
        "--metrics-port", type=int, default=None, help="serve Prometheus /metrics on this port"
    )
    p_run.add_argument("--verbose", action="store_true")
    p_run.add_argument(
        "--standalone", action="store_true", help="no peering: only for a single replica"
    )
    p_run.add_argument(
        "--peering", default="quantwise", help="peering object name: replicas never both act"
    )
    p_run.add_argument(
        "--priority",
        type=int,
        default=None,
        help="peering priority of this replica (default: a random one, so replicas never tie)",
    )
    p_run.set_defaults(func=cmd_run)


def _job_commands(sub: Commands) -> None:

    job_methods = list(QUANTIZING)
    p_quantize = sub.add_parser(
        "quantize", help="quantize a model with llm-compressor (the quantization Job's program)"
    )
    p_quantize.add_argument("--model", required=True, help="Hugging Face repo or a directory")
    p_quantize.add_argument("--revision", default="main", help="Hugging Face revision")
    p_quantize.add_argument("--method", required=True, choices=job_methods)
    p_quantize.add_argument("--bits", type=int, help="weight bits (default: the method's)")
    p_quantize.add_argument("--group-size", type=int, help="-1: one group per channel (awq, gptq)")
    sym = p_quantize.add_mutually_exclusive_group()
    sym.add_argument("--symmetric", dest="symmetric", action="store_true", default=None)
    sym.add_argument("--asymmetric", dest="symmetric", action="store_false")
    p_quantize.add_argument(
        "--calibration", help="a dataset on Hugging Face, or a JSONL/JSON/Parquet/text file or dir"
    )
    p_quantize.add_argument(
        "--split", help="dataset split (default train, train_sft for ultrachat)"
    )
    p_quantize.add_argument(
        "--samples", type=int, default=DEFAULT_CALIBRATION_SAMPLES, help="calibration samples"
    )
    p_quantize.add_argument(
        "--sequence-length",
        type=int,
        default=DEFAULT_CALIBRATION_SEQUENCE_LENGTH,
        help="tokens per sample",
    )
    p_quantize.add_argument("--seed", type=int, default=0, help="seed of sample selection")
    p_quantize.add_argument("--kv-cache-dtype", choices=("auto", "fp8"), default="auto")
    p_quantize.add_argument(
        "--ignore", action="append", help="module left unquantized (repeatable; default lm_head)"
    )
    p_quantize.add_argument("--output", required=True, help="artifact directory to create")
    p_quantize.add_argument("--report-path", default=TERMINATION_LOG)
    _evaluation_flags(p_quantize)
    p_quantize.set_defaults(func=cmd_quantize)

    p_inspect = sub.add_parser(
        "inspect", help="describe an existing checkpoint (the inspection Job's program)"
    )
    p_inspect.add_argument("--model", required=True, help="Hugging Face repo or a directory")
    p_inspect.add_argument("--revision", default="main")
    p_inspect.add_argument("--report-path", default=TERMINATION_LOG)
    p_inspect.add_argument(
        "--base-model", help="the unquantized model to compare perplexity with (Hub or dir)"
    )
    p_inspect.add_argument("--base-revision", default="main")
    _evaluation_flags(p_inspect)
    p_inspect.set_defaults(func=cmd_inspect)


def _generating_commands(sub: Commands) -> None:
    p_chart = sub.add_parser(
        "chart-files", help="write the Helm chart's generated files (CRDs, RBAC rules)"
    )
    p_chart.add_argument("--chart", default="charts/quantwise")
    p_chart.add_argument("--check", action="store_true", help="fail if a file is stale")
    p_chart.set_defaults(func=cmd_chart_files)

    p_docs = sub.add_parser("api-docs", help="write docs/api.md from the CRD's descriptions")
    p_docs.add_argument("--output", default=None)
    p_docs.add_argument("--check", action="store_true", help="fail if the file is stale")
    p_docs.set_defaults(func=cmd_api_docs)

    p_crd = sub.add_parser(
        "crd", help="write the CustomResourceDefinitions (the API models', Kopf's peering)"
    )
    p_crd.add_argument("--output-dir", default="crds")
    p_crd.add_argument("--check", action="store_true", help="fail if the file is stale")
    p_crd.add_argument("--stdout", action="store_true")
    p_crd.set_defaults(func=cmd_crd)


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        result: int = args.func(args)
    except UserError as exc:
        print(f"quantwise {args.command}: {exc}", file=sys.stderr)
        return 2
    return result


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
