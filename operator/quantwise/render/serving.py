"""The vLLM Deployment and Service of a QuantizedModel, from its spec and plan (pure).

The pods run vLLM's OpenAI server with the planned parallelism and memory, read the model from
a read-only volume, keep a memory-backed ``/dev/shm`` for NCCL, and run as a non-root user with
a read-only root filesystem: caches vLLM, Triton and Hugging Face write go to an ``emptyDir``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from quantwise.api.spec import QuantizedModelSpec
from quantwise.api.status import PlanStatus
from quantwise.planning.gpus import GPU_RESOURCE
from quantwise.render.names import (
    LABEL_ARTIFACT,
    LABEL_ROLE,
    LWS_GROUP,
    LWS_KIND,
    LWS_VERSION,
    artifact_dir,
    common_labels,
    dns_label,
    selector_labels,
)
from quantwise.render.pods import container_security, is_gpu_resource, pod_security, tolerations
from quantwise.vllm import DEFAULT_IMAGE, V0_20, Flag, version_of

PORT = 8000
MODELS_MOUNT = "/models"
CACHE_MOUNT = "/cache"


@dataclass(frozen=True)
class ModelLocation:
    """Where vLLM loads the model from: a PVC directory, or a Hugging Face repository."""

    claim_name: str | None = None
    path: str | None = None
    hf_repo: str | None = None
    hf_revision: str | None = None
    hf_token_secret: tuple[str, str] | None = None
    artifact: str | None = None

    @property
    def uri(self) -> str:
        """Where the model is, in the user's terms: ``pvc://CLAIM/PATH`` or ``hf://REPO@REV``."""
        if self.claim_name is not None and self.path is not None:
            return f"pvc://{self.claim_name}/{self.path}"
        return f"hf://{self.hf_repo}@{self.hf_revision}"

    @property
    def model_arg(self) -> str:
        """The value of vLLM's ``--model``."""
        if self.claim_name is not None and self.path is not None:
            return f"{MODELS_MOUNT}/{self.path}"
        if self.hf_repo is not None:
            return self.hf_repo
        raise ValueError("a ModelLocation needs a PVC path or a Hugging Face repository")


def serving_location(spec: QuantizedModelSpec, artifact_subdir: str | None) -> ModelLocation:
    """Where the served model is: the quantized artifact on storage, or the source itself.

    ``artifact_subdir`` is the artifact's directory under ``spec.storage.pvc.path`` (None for
    method none, which serves the source).
    """
    if spec.quantization.method != "none":
        if spec.storage is None or artifact_subdir is None:
            raise ValueError("a quantized model is served from spec.storage")
        return ModelLocation(
            claim_name=spec.storage.pvc.claim_name,
            path=f"{spec.storage.pvc.path}/{artifact_subdir}",
            artifact=artifact_subdir,
        )
    if spec.source.pvc is not None:
        return ModelLocation(claim_name=spec.source.pvc.claim_name, path=spec.source.pvc.path)
    hf = spec.source.hugging_face
    assert hf is not None  # The spec validator guarantees exactly one source.
    token = (hf.token_secret_ref.name, hf.token_secret_ref.key) if hf.token_secret_ref else None
    return ModelLocation(hf_repo=hf.repo, hf_revision=hf.revision, hf_token_secret=token)


def vllm_args(
    name: str, spec: QuantizedModelSpec, plan: PlanStatus, location: ModelLocation
) -> list[str]:
    """The vLLM server's arguments, as a list (never a shell string).

    Every flag is a :class:`~quantwise.vllm.Flag`, the set ``spec.serving.extraArgs`` may not
    repeat. ``--quantization`` is never passed: vLLM reads the method from config.json's
    ``quantization_config`` and picks the fast kernel itself.
    """
    args = _flags(
        (Flag.MODEL, location.model_arg),
        (Flag.SERVED_MODEL_NAME, spec.serving.served_model_name or name),
        (Flag.HOST, "0.0.0.0"),  # noqa: S104 - the server must listen on the pod's address.
        (Flag.PORT, str(PORT)),
        (Flag.TENSOR_PARALLEL_SIZE, str(plan.tensor_parallel_size)),
    )
    if plan.pipeline_parallel_size > 1:
        args += _flags((Flag.PIPELINE_PARALLEL_SIZE, str(plan.pipeline_parallel_size)))
    args += _flags(
        (Flag.GPU_MEMORY_UTILIZATION, f"{plan.gpu_memory_utilization:.2f}"),
        (Flag.MAX_MODEL_LEN, str(plan.max_model_len)),
        (Flag.MAX_NUM_SEQS, str(plan.max_num_seqs)),
        (Flag.MAX_NUM_BATCHED_TOKENS, str(plan.max_num_batched_tokens)),
        (Flag.KV_CACHE_DTYPE, plan.kv_cache_dtype),
    )
    if location.hf_revision and location.hf_revision != "main":
        args += _flags((Flag.REVISION, location.hf_revision))
    return args + list(spec.serving.extra_args or ())


def _flags(*pairs: tuple[Flag, str | None]) -> list[str]:
    """``--flag value`` for each pair (a flag alone where the value is None)."""
    out: list[str] = []
    for flag, value in pairs:
        out += [flag.value] if value is None else [flag.value, value]
    return out


def _resources(spec: QuantizedModelSpec, plan: PlanStatus) -> dict[str, Any]:
    """The container's resources: the user's CPU and memory, the plan's GPUs.

    ``tensorParallelSize`` of the planned GPU resource (a whole GPU, a MIG slice or a shared GPU);
    GPU resources in ``spec.serving.resources`` are the plan's to set, so they are dropped.
    """
    user = spec.serving.resources
    limits: dict[str, Any] = dict(user.limits or {}) if user else {}
    requests: dict[str, Any] = dict(user.requests or {}) if user else {}
    limits = {k: v for k, v in limits.items() if not is_gpu_resource(k)}
    requests = {k: v for k, v in requests.items() if not is_gpu_resource(k)}
    resource = plan.gpu_resource or GPU_RESOURCE
    limits[resource] = plan.tensor_parallel_size
    requests[resource] = plan.tensor_parallel_size
    # Quantities as strings: the API accepts both, the typed Python client only strings.
    return {
        "limits": {k: str(v) for k, v in limits.items()},
        "requests": {k: str(v) for k, v in requests.items()},
    }


def _owner(owner: dict[str, Any] | None) -> list[dict[str, Any]]:
    return [owner] if owner else []


def _metadata(
    name: str, namespace: str, labels: dict[str, str], owner: dict[str, Any] | None
) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name, "namespace": namespace, "labels": labels}
    if owner:
        meta["ownerReferences"] = _owner(owner)
    return meta


def _pod_spec(
    spec: QuantizedModelSpec,
    location: ModelLocation,
    container: dict[str, Any],
    node_selector: dict[str, str] | None,
) -> dict[str, Any]:
    """A vLLM pod: ``container`` given its env, mounts and security; volumes; scheduling."""
    env: list[dict[str, Any]] = [
        {"name": "HOME", "value": CACHE_MOUNT},
        {"name": "HF_HOME", "value": f"{CACHE_MOUNT}/huggingface"},
        {"name": "XDG_CACHE_HOME", "value": CACHE_MOUNT},
        {"name": "VLLM_CACHE_ROOT", "value": f"{CACHE_MOUNT}/vllm"},
        {"name": "TRITON_CACHE_DIR", "value": f"{CACHE_MOUNT}/triton"},
        {"name": "VLLM_NO_USAGE_STATS", "value": "1"},
        {"name": "DO_NOT_TRACK", "value": "1"},
    ]
    volumes: list[dict[str, Any]] = [
        {"name": "shm", "emptyDir": {"medium": "Memory", "sizeLimit": spec.serving.shm_size}},
        {"name": "cache", "emptyDir": {}},
        {"name": "tmp", "emptyDir": {}},
    ]
    mounts: list[dict[str, Any]] = [
        {"name": "shm", "mountPath": "/dev/shm"},  # noqa: S108 - a memory-backed emptyDir.
        {"name": "cache", "mountPath": CACHE_MOUNT},
        {"name": "tmp", "mountPath": "/tmp"},  # noqa: S108 - an emptyDir, not the host's /tmp.
    ]
    if location.claim_name is not None:
        volumes.append(
            {
                "name": "model",
                "persistentVolumeClaim": {"claimName": location.claim_name, "readOnly": True},
            }
        )
        mounts.append({"name": "model", "mountPath": MODELS_MOUNT, "readOnly": True})
        env.append({"name": "HF_HUB_OFFLINE", "value": "1"})
    if location.hf_token_secret is not None:
        secret, key = location.hf_token_secret
        env.append(
            {"name": "HF_TOKEN", "valueFrom": {"secretKeyRef": {"name": secret, "key": key}}}
        )
    container = {
        **container,
        "env": env + list(container.get("env", [])),
        "volumeMounts": mounts,
        "securityContext": container_security(),
    }
    selector = {**(spec.serving.node_selector or {}), **(node_selector or {})}
    pod_spec: dict[str, Any] = {
        "automountServiceAccountToken": False,
        "enableServiceLinks": False,
        "terminationGracePeriodSeconds": 60,
        "securityContext": pod_security(),
        "containers": [container],
        "volumes": volumes,
        "tolerations": tolerations(spec.serving.tolerations),
    }
    if selector:
        pod_spec["nodeSelector"] = selector
    return pod_spec


def _deployment_strategy(spec: QuantizedModelSpec) -> dict[str, Any]:
    """How a Deployment replaces its pods (spec.serving.updateStrategy).

    RollingUpdate: one extra pod at a time and none taken away (no downtime, one more
    replica's GPUs during a rollout). Recreate: the old pods go first (no extra GPU).
    """
    if spec.serving.update_strategy == "Recreate":
        return {"type": "Recreate"}
    return {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}}


def _group_rollout(spec: QuantizedModelSpec) -> dict[str, Any]:
    """The same for a LeaderWorkerSet's groups (LWS rolls out groups; it has no Recreate)."""
    surge, unavailable = (0, "100%") if spec.serving.update_strategy == "Recreate" else (1, 0)
    return {
        "type": "RollingUpdate",
        "rollingUpdateConfiguration": {"maxSurge": surge, "maxUnavailable": unavailable},
    }


def _probes() -> dict[str, Any]:
    probe_http = {"path": "/health", "port": "http"}
    return {
        # Loading weights and capturing CUDA graphs can take many minutes: the startup probe
        # allows 30 minutes before liveness takes over.
        "startupProbe": {
            "httpGet": probe_http,
            "periodSeconds": 10,
            "timeoutSeconds": 5,
            "failureThreshold": 180,
        },
        "readinessProbe": {
            "httpGet": probe_http,
            "periodSeconds": 10,
            "timeoutSeconds": 5,
            "failureThreshold": 3,
        },
        "livenessProbe": {
            "httpGet": probe_http,
            "periodSeconds": 20,
            "timeoutSeconds": 10,
            "failureThreshold": 3,
        },
    }


def _labels(name: str, location: ModelLocation) -> dict[str, str]:
    labels = common_labels(name, "server")
    if location.artifact:
        labels[LABEL_ARTIFACT] = dns_label(location.artifact)
    return labels


VLLM_CONTAINER, LEADER_CONTAINER, WORKER_CONTAINER = "vllm", "vllm-leader", "vllm-worker"
# `vllm serve` in 0.11, 0.20 and 0.33 (the wheels' entrypoints/cli/serve.py), whatever the
# image's ENTRYPOINT; 0.33 deprecates `python -m vllm.entrypoints.openai.api_server`.
VLLM_SERVE = ("vllm", "serve")
_HTTP = {"name": "http", "containerPort": PORT, "protocol": "TCP"}


def deployment(
    name: str,
    namespace: str,
    spec: QuantizedModelSpec,
    plan: PlanStatus,
    location: ModelLocation,
    image: str | None = None,
    owner: dict[str, Any] | None = None,
    node_selector: dict[str, str] | None = None,
) -> dict[str, Any]:
    """Return the vLLM Deployment (apps/v1) for a single-node plan.

    ``owner`` is the ownerReference to the QuantizedModel; ``node_selector`` adds to
    ``spec.serving.nodeSelector`` (the operator pins the planned GPU type with it).
    """
    if plan.pipeline_parallel_size > 1:
        raise ValueError("a plan with pipeline parallelism spans nodes: render a LeaderWorkerSet")
    labels = _labels(name, location)
    container: dict[str, Any] = {
        "name": VLLM_CONTAINER,
        "image": image or spec.serving.image or DEFAULT_IMAGE,
        "command": [*VLLM_SERVE],
        "args": vllm_args(name, spec, plan, location),
        "ports": [dict(_HTTP)],
        "resources": _resources(spec, plan),
        **_probes(),
    }
    pod_spec = _pod_spec(spec, location, container, node_selector)
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": _metadata(name, namespace, labels, owner),
        "spec": {
            "replicas": spec.serving.replicas,
            "selector": {"matchLabels": selector_labels(name)},
            "strategy": _deployment_strategy(spec),
            "template": {"metadata": {"labels": {**labels}}, "spec": pod_spec},
        },
    }


RAY_PORT = 6379
# vLLM's own multi-node launcher (no Ray): every pod runs `vllm serve` with --nnodes and its
# --node-rank, the leader serves the API, the others run --headless and join the leader's
# torch.distributed group on --master-addr:--master-port (vllm/config/parallel.py, the 0.20.0 and
# 0.33.0 wheels; 0.11 has no --nnodes). From 0.20 Ray is no longer a vLLM dependency, so the
# vllm-openai image cannot be assumed to carry it.
MULTINODE_MP_FROM = V0_20
MASTER_PORT = 29501  # vllm/config/parallel.py ParallelConfig.master_port
# Before 0.20: the leader starts the Ray head, then execs vLLM, which places its TP x PP workers
# on the Ray cluster and waits for the workers' nodes to join (vllm/executor/ray_utils.py:
# PG_WAIT_TIMEOUT, 1800 s). The vLLM docs' LWS example does the same in a shell string; here the
# script is a constant and vLLM's arguments (from the spec) follow it as positional parameters
# ("$@"), so no value from the spec is ever parsed by the shell.
LEADER_SCRIPT = f'ray start --head --port={RAY_PORT} --disable-usage-stats && exec vllm serve "$@"'


def leader_worker_set(
    name: str,
    namespace: str,
    spec: QuantizedModelSpec,
    plan: PlanStatus,
    location: ModelLocation,
    image: str | None = None,
    owner: dict[str, Any] | None = None,
    node_selector: dict[str, str] | None = None,
) -> dict[str, Any]:
    """Return the LeaderWorkerSet (sigs.k8s.io LWS) for a plan that spans nodes.

    One group per replica, ``pipeline_parallel_size`` pods per group (one per node), each with
    ``tensor_parallel_size`` GPUs. From vLLM 0.20 every pod runs ``vllm serve`` with
    ``--nnodes`` and ``--node-rank $(LWS_WORKER_INDEX)`` (the workers ``--headless``) and meets
    the leader at ``--master-addr $(LWS_LEADER_ADDRESS)``; before, the leader runs the Ray head
    and ``vllm serve --distributed-executor-backend ray`` and the workers join its Ray cluster.
    ``$(...)`` is expanded by the kubelet from the variables LWS sets, never by a shell. The
    Service selects the leaders only. The model volume must be readable from every node (a
    ReadOnlyMany or ReadWriteMany claim).
    """
    if plan.pipeline_parallel_size < 2:
        raise ValueError("a plan on one node is served by a Deployment")
    labels = _labels(name, location)
    image = image or spec.serving.image or DEFAULT_IMAGE
    args = vllm_args(name, spec, plan, location)
    serve_args = [args[1], *args[2:]]  # the model is positional for `vllm serve`
    if version_of(image, spec.serving.vllm_version) >= MULTINODE_MP_FROM:
        leader, worker = _launcher_pods(serve_args, plan)
    else:
        leader, worker = _ray_pods(serve_args)
    resources = _resources(spec, plan)
    leader.update({"image": image, "resources": resources, **_probes()})
    worker.update({"image": image, "resources": resources})
    group = {
        "size": plan.pipeline_parallel_size,
        # A pod lost means the whole pipeline is broken: restart the group together.
        "restartPolicy": "RecreateGroupOnPodRestart",
        "leaderTemplate": {
            "metadata": {"labels": {**labels, LABEL_ROLE: "leader"}},
            "spec": _pod_spec(spec, location, leader, node_selector),
        },
        "workerTemplate": {
            "metadata": {"labels": {**labels, LABEL_ROLE: "worker"}},
            "spec": _pod_spec(spec, location, worker, node_selector),
        },
    }
    return {
        "apiVersion": f"{LWS_GROUP}/{LWS_VERSION}",
        "kind": LWS_KIND,
        "metadata": _metadata(name, namespace, labels, owner),
        "spec": {
            "replicas": spec.serving.replicas,
            "startupPolicy": "LeaderCreated",
            "rolloutStrategy": _group_rollout(spec),
            "leaderWorkerTemplate": group,
        },
    }


def _launcher_pods(
    serve_args: list[str], plan: PlanStatus
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Leader and worker containers of vLLM's own multi-node launcher (0.20 and later)."""
    nodes = _flags(
        (Flag.DISTRIBUTED_EXECUTOR_BACKEND, "mp"),
        (Flag.NNODES, str(plan.pipeline_parallel_size)),
        (Flag.MASTER_ADDR, "$(LWS_LEADER_ADDRESS)"),
        (Flag.MASTER_PORT, str(MASTER_PORT)),
    )
    leader = {
        "name": LEADER_CONTAINER,
        "command": [*VLLM_SERVE],
        "args": [*serve_args, *nodes, *_flags((Flag.NODE_RANK, "0"))],
        "ports": [dict(_HTTP), {"name": "dist", "containerPort": MASTER_PORT, "protocol": "TCP"}],
    }
    rank = _flags((Flag.NODE_RANK, "$(LWS_WORKER_INDEX)"), (Flag.HEADLESS, None))
    worker = {
        "name": WORKER_CONTAINER,
        "command": [*VLLM_SERVE],
        "args": [*serve_args, *nodes, *rank],
    }
    return leader, worker


def _ray_pods(serve_args: list[str]) -> tuple[dict[str, Any], dict[str, Any]]:
    """Leader and worker containers of the Ray recipe (before vLLM 0.20)."""
    leader = {
        "name": LEADER_CONTAINER,
        "command": ["/bin/bash", "-c", LEADER_SCRIPT, LEADER_CONTAINER],
        "args": [*serve_args, *_flags((Flag.DISTRIBUTED_EXECUTOR_BACKEND, "ray"))],
        "ports": [dict(_HTTP), {"name": "ray", "containerPort": RAY_PORT, "protocol": "TCP"}],
    }
    join = f"--address=$(LWS_LEADER_ADDRESS):{RAY_PORT}"
    worker = {
        "name": WORKER_CONTAINER,
        "command": ["ray", "start", join, "--block", "--disable-usage-stats"],
    }
    return leader, worker


def service(
    name: str, namespace: str, owner: dict[str, Any] | None = None, leaders_only: bool = False
) -> dict[str, Any]:
    """Return the ClusterIP Service (v1) in front of the vLLM pods (the leaders), port 8000."""
    selector = selector_labels(name)
    if leaders_only:
        selector[LABEL_ROLE] = "leader"
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": _metadata(name, namespace, common_labels(name, "server"), owner),
        "spec": {
            "type": "ClusterIP",
            "selector": selector,
            "ports": [{"name": "http", "port": PORT, "targetPort": "http", "protocol": "TCP"}],
        },
    }


def serving_objects(
    name: str,
    namespace: str,
    spec: QuantizedModelSpec,
    plan: PlanStatus,
    image: str | None = None,
    owner: dict[str, Any] | None = None,
    node_selector: dict[str, str] | None = None,
) -> list[dict[str, Any]]:
    """The objects that serve a model: its workload, then its Service.

    The workload is a Deployment for a plan on one node, a LeaderWorkerSet for one that spans
    nodes (``plan.pipeline_parallel_size > 1``), whose Service selects the leaders. The model
    is read from the artifact's directory on ``spec.storage`` (or the source, for ``method:
    none``). The operator applies exactly these; ``quantwise plan -o yaml`` prints them.
    """
    subdir = artifact_dir(name, spec) if spec.quantization.method != "none" else None
    location = serving_location(spec, subdir)
    across_nodes = plan.pipeline_parallel_size > 1
    render = leader_worker_set if across_nodes else deployment
    workload = render(
        name, namespace, spec, plan, location, image, owner, node_selector=node_selector
    )
    return [workload, service(name, namespace, owner, leaders_only=across_nodes)]


def endpoint(name: str, namespace: str) -> str:
    """The OpenAI-compatible base URL of the model inside the cluster."""
    return f"http://{name}.{namespace}.svc:{PORT}/v1"
