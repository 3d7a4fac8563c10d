"""Names and labels of the objects quantwise creates, derived deterministically from the spec.

The artifact hash covers exactly what determines the quantized checkpoint (source and
quantization, defaults applied), so an operator restart re-finds its Job and never starts a
second one, a change to ``spec.serving`` keeps the artifact, and a change to ``spec.source`` or
``spec.quantization`` makes a new one.
"""

from __future__ import annotations

import hashlib
import json
import re

from quantwise.api.spec import QuantizedModelSpec

MAX_NAME = 63
HASH_LENGTH = 8

LABEL_NAME = "app.kubernetes.io/name"
LABEL_INSTANCE = "app.kubernetes.io/instance"
LABEL_COMPONENT = "app.kubernetes.io/component"
LABEL_MANAGED_BY = "app.kubernetes.io/managed-by"
LABEL_PART_OF = "app.kubernetes.io/part-of"
LABEL_MODEL = "quantwise.dev/model"
LABEL_ARTIFACT = "quantwise.dev/artifact"
LABEL_ROLE = "quantwise.dev/role"  # leader or worker, in a LeaderWorkerSet
MANAGED_BY = "quantwise"
"""The value of LABEL_MANAGED_BY on everything quantwise creates, and its field manager."""
FIELD_MANAGER = MANAGED_BY

# LeaderWorkerSet (sigs.k8s.io/lws), which serves a plan across nodes.
LWS_GROUP, LWS_VERSION, LWS_PLURAL, LWS_KIND = (
    "leaderworkerset.x-k8s.io", "v1", "leaderworkersets", "LeaderWorkerSet",
)  # fmt: skip


def artifact_hash(spec: QuantizedModelSpec) -> str:
    """Return the 8-hex-digit hash of what determines the artifact (source + quantization).

    ``spec.quantization.evaluation`` is not part of it.
    """
    quantization = spec.quantization.to_api()
    # The quality gate judges the artifact without changing it; leaving it out also keeps the
    # hashes (and so the Jobs and artifacts) of models made before the gate existed.
    quantization.pop("evaluation", None)
    # Defaults hash like their explicit values: `bits: 4` on awq is the same artifact.
    quantization.update(
        bits=spec.quantization.effective_bits,
        groupSize=spec.quantization.effective_group_size,
        symmetric=spec.quantization.effective_symmetric,
    )
    material = {
        "source": spec.source.to_api(),
        "quantization": quantization,
        # FP8 KV-cache scales are calibrated into the checkpoint.
        "kvCacheScales": spec.serving.kv_cache_dtype.startswith("fp8"),
    }
    digest = hashlib.sha256(json.dumps(material, sort_keys=True).encode()).hexdigest()
    return digest[:HASH_LENGTH]


def dns_label(value: str, max_length: int = MAX_NAME) -> str:
    """Return ``value`` as a DNS-1123 label of at most ``max_length`` characters.

    Characters outside ``[a-z0-9-]`` become ``-``; a value that had to change or be cut keeps a
    stable 6-hex-digit hash suffix of the original, so two different inputs never collide.
    """
    clean = re.sub(r"[^a-z0-9-]+", "-", value.lower()).strip("-") or "x"
    if clean == value and len(clean) <= max_length:
        return clean
    suffix = hashlib.sha256(value.encode()).hexdigest()[:6]
    head = clean[: max_length - len(suffix) - 1].rstrip("-")
    return f"{head}-{suffix}" if head else suffix


def job_name(name: str, spec: QuantizedModelSpec) -> str:
    """Name of the quantization (or, for method none, inspection) Job."""
    verb = "inspect" if spec.quantization.method == "none" else "quantize"
    return dns_label(f"{name}-{verb}-{artifact_hash(spec)}")


def artifact_dir(name: str, spec: QuantizedModelSpec) -> str:
    """Directory name of the artifact under ``spec.storage.pvc.path``."""
    return dns_label(f"{name}-{artifact_hash(spec)}")


def selector_labels(name: str) -> dict[str, str]:
    """Labels that select the vLLM pods of one QuantizedModel."""
    return {LABEL_NAME: "vllm", LABEL_INSTANCE: dns_label(name)}


def common_labels(name: str, component: str) -> dict[str, str]:
    """Labels on every object quantwise creates for one QuantizedModel."""
    return {
        LABEL_NAME: "vllm" if component == "server" else "quantwise-quantizer",
        LABEL_INSTANCE: dns_label(name),
        LABEL_COMPONENT: component,
        LABEL_MANAGED_BY: MANAGED_BY,
        LABEL_PART_OF: "quantwise",
        LABEL_MODEL: dns_label(name),
    }
