"""The controller's workers, with plain reconcile functions in place of the kinds'.

Every pass here decides an unchanged status and posts no Event, so the controller makes no
API call at all: nothing stands in for the Kubernetes API (the writes are proven against
the real API server in tests/integration/test_controller.py).
"""

from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any, cast

import pytest

from modelworks.api import API_VERSION, MODEL_DEPLOYMENT
from modelworks.conditions import Event
from modelworks.handlers.controller import Controller, now_rfc3339
from modelworks.names import format_time, parse_time
from modelworks.reconcilers.base import Context, Decision
from modelworks.settings import Settings
from modelworks.status.decision import unchanged
from tests.support import eventually

Pass = Callable[[Mapping[str, Any], Context, str], Decision[Any]]


def body(uid: str, version: str = "1") -> dict[str, Any]:
    return {
        "apiVersion": API_VERSION,
        "kind": "ModelDeployment",
        "metadata": {"name": uid, "namespace": "ns", "uid": uid, "resourceVersion": version},
        "spec": {},
        "status": {"observedGeneration": 1},
    }


def controller(reconcile: Pass, workers: int = 2, resync: float = 300.0) -> Controller:
    c = Controller(
        settings=Settings(workers=workers, resync_seconds=resync, min_requeue_seconds=0.01),
        kube=cast(Any, None),
        registry=cast(Any, None),
        reconcilers={"ModelDeployment": reconcile},
    )
    c.leading.set()
    return c


def settled(requeue_after: float | None = None) -> Pass:
    def run(obj: Mapping[str, Any], ctx: Context, now: str) -> Decision[Any]:
        return unchanged(obj["status"], requeue_after, "settled")

    return run


@pytest.fixture
def started() -> Any:
    running: list[Controller] = []

    def start(c: Controller) -> Controller:
        c.start()
        running.append(c)
        return c

    yield start
    for c in running:
        c.stop(timeout=5)


def test_one_pass_per_object_at_a_time(started: Any) -> None:
    active: dict[str, int] = {}
    overlap: list[str] = []
    count: dict[str, int] = {}
    guard = threading.Lock()

    def slow(obj: Mapping[str, Any], ctx: Context, now: str) -> Decision[Any]:
        uid = obj["metadata"]["uid"]
        with guard:
            active[uid] = active.get(uid, 0) + 1
            if active[uid] > 1:
                overlap.append(uid)
            count[uid] = count.get(uid, 0) + 1
        time.sleep(0.01)
        with guard:
            active[uid] -= 1
        return unchanged(obj["status"], None, "ok")

    c = started(controller(slow, workers=4))
    for i in range(60):  # watch events arrive while passes run
        c.observed(MODEL_DEPLOYMENT, "MODIFIED", body("abc"[i % 3], str(i)))
        time.sleep(0.002)
    eventually(lambda: c.queue.depth() == 0, timeout=10, what="the queue to drain")
    assert not overlap
    assert set(count) == {"a", "b", "c"}
    assert sum(count.values()) < 60  # events that came while queued were folded together


def test_a_deleted_object_gets_no_pass(started: Any) -> None:
    seen: list[str] = []

    def record(obj: Mapping[str, Any], ctx: Context, now: str) -> Decision[Any]:
        seen.append(obj["metadata"]["uid"])
        return unchanged(obj["status"], None, "ok")

    c = controller(record)
    c.observed(MODEL_DEPLOYMENT, None, body("a"))
    c.observed(MODEL_DEPLOYMENT, "DELETED", body("a"))
    c.observed(MODEL_DEPLOYMENT, None, body("b"))
    started(c)
    eventually(lambda: seen == ["b"], timeout=5, what="b's pass")
    assert not c.known("a")


def test_a_pass_comes_back_after_requeue_after(started: Any) -> None:
    times: list[float] = []

    def soon(obj: Mapping[str, Any], ctx: Context, now: str) -> Decision[Any]:
        times.append(time.monotonic())
        return unchanged(obj["status"], 0.2, "waiting")

    c = started(controller(soon))
    c.observed(MODEL_DEPLOYMENT, None, body("a"))
    eventually(lambda: len(times) >= 3, timeout=5, what="three passes")
    assert all(b - a >= 0.19 for a, b in itertools.pairwise(times))


def test_a_failing_pass_backs_off(started: Any) -> None:
    calls: list[float] = []

    def boom(obj: Mapping[str, Any], ctx: Context, now: str) -> Decision[Any]:
        calls.append(time.monotonic())
        raise RuntimeError("registry exploded")

    c = started(controller(boom))
    c.observed(MODEL_DEPLOYMENT, None, body("a"))
    eventually(lambda: len(calls) >= 2, timeout=5, what="the retry")
    assert calls[1] - calls[0] >= 0.9  # the first backoff is one second
    eventually(lambda: c.queue.delayed() == 1, timeout=5, what="the next retry to wait")


def test_the_echo_of_the_operators_own_writes_is_not_a_new_pass() -> None:
    c = controller(settled())
    c.observed(MODEL_DEPLOYMENT, None, body("a", "5"))
    read = c._entries["a"]
    assert c.queue.get(timeout=0) is not None
    c.queue.done("a")
    c.remember("a", read, body("a", "6"))  # two status writes of this operator: 6, then 7
    c.remember("a", c._entries["a"], body("a", "7"))
    for echo in ("6", "7", "6"):  # however late the watch delivers them
        c.observed(MODEL_DEPLOYMENT, "MODIFIED", body("a", echo))
        assert c.queue.get(timeout=0) is None
        assert c._entries["a"].body["metadata"]["resourceVersion"] == "7"
    c.observed(MODEL_DEPLOYMENT, "MODIFIED", body("a", "8"))  # someone else's change
    assert c.queue.get(timeout=0) is not None


def test_a_newer_body_from_the_watch_outlives_the_status_write_of_an_older_one() -> None:
    """The write of a pass returns version 10; meanwhile the watch brought a user's change
    (11): the kept body stays 11, so the next pass acts on the new spec."""
    c = controller(settled())
    c.observed(MODEL_DEPLOYMENT, None, body("a", "9"))
    read = c._entries["a"]
    c.observed(MODEL_DEPLOYMENT, "MODIFIED", body("a", "11"))
    c.remember("a", read, body("a", "10"))
    assert c._entries["a"].body["metadata"]["resourceVersion"] == "11"
    assert "10" in c._entries["a"].written


def test_a_pass_whose_object_was_deleted_meanwhile_leaves_nothing_behind(started: Any) -> None:
    c: Controller

    def deleted_meanwhile(obj: Mapping[str, Any], ctx: Context, now: str) -> Decision[Any]:
        ctx.memory["snapshot"] = 1
        c.observed(MODEL_DEPLOYMENT, "DELETED", obj)
        return unchanged(obj["status"], 0.05, "ok")

    c = started(controller(deleted_meanwhile))
    c.observed(MODEL_DEPLOYMENT, None, body("a"))
    eventually(lambda: not c.known("a"), timeout=5, what="the deletion")
    time.sleep(0.3)
    assert c.queue.delayed() == 0 and c.queue.depth() == 0
    assert "a" not in c._memory


def test_a_worker_outlives_a_broken_client(started: Any) -> None:
    """Posting an Event with a client that raises something unexpected fails that pass,
    not the worker: the next object still gets its pass."""
    seen: list[str] = []

    def with_news(obj: Mapping[str, Any], ctx: Context, now: str) -> Decision[Any]:
        seen.append(obj["metadata"]["uid"])
        return Decision(status=obj["status"], events=[Event("News", "m")])

    c = started(controller(with_news, workers=1))
    c.observed(MODEL_DEPLOYMENT, None, body("a"))
    c.observed(MODEL_DEPLOYMENT, None, body("b"))
    eventually(lambda: {"a", "b"} <= set(seen), timeout=5, what="both passes")
    assert all(t.is_alive() for t in c._threads)


def test_stop_lets_the_running_pass_finish(started: Any) -> None:
    inside, finished = threading.Event(), threading.Event()

    def long(obj: Mapping[str, Any], ctx: Context, now: str) -> Decision[Any]:
        inside.set()
        time.sleep(0.5)
        finished.set()
        return unchanged(obj["status"], None, "ok")

    c = controller(long)
    c.start()
    c.observed(MODEL_DEPLOYMENT, None, body("a"))
    assert inside.wait(timeout=5)
    assert c.stop(timeout=5)
    assert finished.is_set()


def test_nothing_runs_while_standing_by(started: Any) -> None:
    seen: list[str] = []

    def record(obj: Mapping[str, Any], ctx: Context, now: str) -> Decision[Any]:
        seen.append(obj["metadata"]["uid"])
        return unchanged(obj["status"], None, "ok")

    c = controller(record)
    c.leading.clear()
    started(c)
    c.observed(MODEL_DEPLOYMENT, None, body("a"))
    time.sleep(1.5)
    assert seen == []
    c.leading.set()
    eventually(lambda: seen == ["a"], timeout=5, what="the pass once leading")


def test_now_round_trips() -> None:
    now = now_rfc3339()
    assert now.endswith("Z")
    assert format_time(parse_time(now)) == now
