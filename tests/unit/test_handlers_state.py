"""The operator's shared state, without Kopf: the work queue, the write ledger, peering."""

from __future__ import annotations

import datetime
import threading
import time

import pytest

from quantwise.handlers.queue import ShutDown, WorkQueue
from quantwise.handlers.runtime import outranked
from quantwise.handlers.writes import Ledger, needs_apply
from quantwise.reconcile.observe import Applied, applied_view, desired_hash, edited_after_apply


def test_a_burst_of_adds_is_one_reconcile_and_a_busy_key_is_never_handed_out_twice() -> None:
    queue: WorkQueue[str] = WorkQueue()
    for _ in range(5):
        queue.add("a")
    queue.add("b")
    assert len(queue) == 2
    assert queue.get() == "a"
    queue.add("a")  # while "a" is being reconciled: it comes back once, after done()
    assert queue.get() == "b"
    queue.done("b")
    got: list[str] = []
    waiter = threading.Thread(target=lambda: got.append(queue.get()))
    waiter.start()
    time.sleep(0.1)
    assert got == []  # "a" is busy: not handed to a second worker
    queue.done("a")
    waiter.join(2)
    assert got == ["a"]


def test_delayed_adds_come_due_and_shutdown_stops_the_workers() -> None:
    queue: WorkQueue[str] = WorkQueue()
    queue.add_after("later", 0.2)
    started = time.monotonic()
    assert queue.get() == "later"
    assert time.monotonic() - started >= 0.19
    queue.shutdown()
    with pytest.raises(ShutDown):
        queue.get()


def applied(body: dict[str, object], **extra: object) -> Applied:
    return applied_view(body, "quantwise")


DEPLOYMENT = {
    "kind": "Deployment",
    "metadata": {"name": "m", "namespace": "ml", "resourceVersion": "10",
                 "labels": {"a": "b"}, "annotations": {}},
    "spec": {"replicas": 1, "template": {"spec": {"containers": [{"image": "vllm:1"}]}}},
}  # fmt: skip


def with_annotation(body: dict, value: str, **meta: object) -> dict:
    out = {**body, "metadata": {**body["metadata"], **meta}}
    out["metadata"]["annotations"] = {"quantwise.dev/applied": value}
    return out


def test_apply_only_what_differs_or_was_edited() -> None:
    ledger = Ledger()
    key = ("Deployment", "ml", "m")
    desired = desired_hash(DEPLOYMENT)
    assert needs_apply(desired, None, ledger, key)  # missing
    live = applied(with_annotation(DEPLOYMENT, "other"))
    assert needs_apply(desired, live, ledger, key)  # last applied with another body
    ours = with_annotation(DEPLOYMENT, desired)
    ledger.remember_apply(key, desired, applied(ours).digest)
    assert not needs_apply(desired, applied(ours), ledger, key)  # as applied: no write
    edited = with_annotation(DEPLOYMENT, desired)
    edited["spec"] = {**edited["spec"], "replicas": 5}
    assert needs_apply(desired, applied(edited), ledger, key)  # a hand edit: restore it
    # A controller's annotation or a status update is not an edit.
    annotated = with_annotation(DEPLOYMENT, desired)
    annotated["metadata"]["annotations"]["deployment.kubernetes.io/revision"] = "2"
    annotated["status"] = {"availableReplicas": 1}
    assert not needs_apply(desired, applied(annotated), ledger, key)


def test_after_a_restart_an_object_edited_by_another_manager_is_applied_again() -> None:
    desired = desired_hash(DEPLOYMENT)
    ours = with_annotation(DEPLOYMENT, desired, managedFields=[
        {"manager": "quantwise", "operation": "Apply", "time": "2026-12-01T10:00:00Z"},
        {"manager": "kube-controller-manager", "operation": "Update", "subresource": "status",
         "time": "2026-12-01T10:05:00Z"},
    ])  # fmt: skip
    assert not edited_after_apply(ours, "quantwise")
    assert not needs_apply(desired, applied(ours), Ledger(), ("Deployment", "ml", "m"))
    kubectl = with_annotation(DEPLOYMENT, desired, managedFields=[
        *ours["metadata"]["managedFields"],
        {"manager": "kubectl-edit", "operation": "Update", "time": "2026-12-01T10:07:00Z"},
    ])  # fmt: skip
    assert edited_after_apply(kubectl, "quantwise")
    assert needs_apply(desired, applied(kubectl), Ledger(), ("Deployment", "ml", "m"))


def test_the_ledger_serves_the_operators_own_write_until_the_cache_catches_up() -> None:
    ledger = Ledger()
    key = ("QuantizedModel", "ml", "m")
    ledger.wrote(key, "12", "written")
    assert ledger.fresher(key, "11", "stale") == "written"
    assert ledger.fresher(key, "12", "cached") == "cached"  # caught up: the entry goes
    assert ledger.fresher(key, "11", "stale") == "stale"
    ledger.wrote(("Job", "ml", "j"), "7", None)  # deleted by the operator
    assert ledger.fresher(("Job", "ml", "j"), "6", {"metadata": {}}) is None
    ledger.wrote(key, "not-a-number", "x")  # an opaque version: trust the cache
    assert ledger.fresher(key, "3", "cached") == "cached"


NOW = datetime.datetime(2026, 12, 1, 12, 0, tzinfo=datetime.UTC)


def peer(priority: int, seconds_ago: int, lifetime: int = 60) -> dict[str, object]:
    seen = (NOW - datetime.timedelta(seconds=seconds_ago)).isoformat()
    return {"priority": priority, "lifetime": lifetime, "lastseen": seen}


@pytest.mark.parametrize(
    ("peers", "paused"),
    [
        ({}, False),
        ({"me": peer(5, 0)}, False),
        ({"me": peer(5, 0), "other": peer(3, 0)}, False),  # outranks the other
        ({"me": peer(5, 0), "other": peer(9, 0)}, True),  # outranked
        ({"me": peer(5, 0), "other": peer(5, 0)}, True),  # a tie pauses both (Kopf's rule)
        ({"me": peer(5, 0), "other": peer(9, 120)}, False),  # the other is dead
    ],
)
def test_a_replica_acts_only_when_no_live_peer_outranks_or_ties_it(
    peers: dict[str, object], paused: bool
) -> None:
    assert outranked(peers, "me", 5, now=NOW) is paused
