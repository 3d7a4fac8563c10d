"""Load: 200 QuantizedModels at once, each to its expected state, and what it cost in requests.

Prints the operator's requests per model (and per kind of request) so that a regression in
efficiency shows; asserts an upper bound. Timing is measured in benchmarks/, not here.
"""

from __future__ import annotations

import asyncio
import copy
import os
from collections import Counter
from typing import Any

import pytest
from conftest import (
    DEPLOYMENTS,
    JOBS,
    OPERATOR,
    QM,
    SERVICES,
    eventually,
    objects,
    quiet,
    run_operator,
)
from test_operator import MODEL, finish_job
from test_reconcile import report

from quantwise.api.report import dump_report
from support.kmockx import ApiServerEmulator, operator_calls

pytestmark = [pytest.mark.kmock(cls=ApiServerEmulator), pytest.mark.asyncio, pytest.mark.slow]

MODELS = int(os.environ.get("QUANTWISE_LOAD_MODELS", "200"))
# A model's life here: created, its Job created, the Job finishes, Deployment and Service
# applied, status written at each step, an Event on each step. Each reconcile reads the model,
# its Job (and the Job's pods) and its Deployment: about 5 requests, 6 reconciles in all.
MAX_REQUESTS_PER_MODEL = 40


def body(index: int) -> dict[str, Any]:
    obj = copy.deepcopy(MODEL)
    obj["metadata"] = {"name": f"m{index:03d}", "namespace": "ml"}
    return obj


def phases(server: Any) -> Counter[str | None]:
    return Counter((m.get("status") or {}).get("phase") for m in objects(server, QM).values())


async def test_200_models_at_once(server: Any) -> None:
    # kmock scans its whole request history for every request; keep it short (calls keeps all).
    server.history_limit = 1
    async with run_operator(
        server, OPERATOR, namespaces=("ml",), reload=("quantwise.handlers",),
        env={"QUANTWISE_WORKERS": "16"}, args=(), stop_timeout=60,
    ):  # fmt: skip
        start = len(operator_calls(server))
        responses = await asyncio.gather(
            *(
                server.post("/apis/quantwise.dev/v1alpha1/namespaces/ml/quantizedmodels",
                            json=body(i))
                for i in range(MODELS)
            )
        )  # fmt: skip
        assert all(r.status < 300 for r in responses)
        await eventually(lambda: phases(server) == {"Quantizing": MODELS}, timeout=120)
        jobs = objects(server, JOBS)
        assert len(jobs) == MODELS
        text = dump_report(report())
        await asyncio.gather(*(finish_job(server, job, text) for job in jobs))
        await eventually(lambda: phases(server) == {"Deploying": MODELS}, timeout=120)
        await quiet(server, seconds=1.5, timeout=120)
        calls = operator_calls(server)[start:]

    assert len(objects(server, JOBS)) == MODELS  # one Job each, never a second
    assert len(objects(server, DEPLOYMENTS)) == MODELS
    assert len(objects(server, SERVICES)) == MODELS
    for model in objects(server, QM).values():
        st = model["status"]
        assert st["plan"]["tensorParallelSize"] == 1
        assert {c["type"]: c["status"] for c in st["conditions"]}["Deployed"] == "True"
    per_model = len(calls) / MODELS
    kinds = Counter(f"{c.verb} {c.resource}{'/' + c.subresource if c.subresource else ''}"
                    for c in calls)  # fmt: skip
    print(f"\n{MODELS} models: {len(calls)} operator requests, {per_model:.1f} per model")
    for kind, count in kinds.most_common():
        print(f"  {count / MODELS:5.1f} per model  {kind}")
    assert per_model <= MAX_REQUESTS_PER_MODEL, kinds
