"""The work queue: deduplication, one pass per key at a time, delays, backoff, deletions."""

from __future__ import annotations

import threading
import time

import pytest

from modelworks.handlers.queue import Backoff, WorkQueue


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def drain(q: WorkQueue) -> list[str]:
    """Every key ready now, each marked done."""
    out = []
    while (item := q.get(timeout=0)) is not None:
        out.append(item[0])
        q.done(item[0])
    return out


def test_a_key_added_many_times_is_queued_once() -> None:
    q = WorkQueue()
    for key in ["a", "b", "a", "a", "b", "c"]:
        q.add(key)
    assert drain(q) == ["a", "b", "c"]


def test_a_key_added_while_processing_runs_again_only_after_done() -> None:
    q = WorkQueue()
    q.add("a")
    item = q.get(timeout=0)
    assert item is not None and item[0] == "a"
    q.add("a")
    q.add("a")
    assert q.get(timeout=0) is None  # not handed to a second worker while the first runs
    q.done("a")
    assert drain(q) == ["a"]  # once, however often it was added meanwhile


@pytest.mark.parametrize(
    ("adds", "advance", "ready"),
    [
        ([("a", 10.0)], 9.9, []),
        ([("a", 10.0)], 10.0, ["a"]),
        ([("a", 10.0), ("a", 5.0)], 5.0, ["a"]),  # the earliest due time wins
        ([("a", 5.0), ("a", 10.0)], 5.0, ["a"]),
        ([("a", 5.0), ("b", 1.0)], 5.0, ["b", "a"]),  # in order of due time
        ([("a", 0.0)], 0.0, ["a"]),  # no delay: at once
        ([("a", -1.0)], 0.0, ["a"]),
    ],
)
def test_add_after(adds: list[tuple[str, float]], advance: float, ready: list[str]) -> None:
    clock = Clock()
    q = WorkQueue(clock=clock)
    for key, delay in adds:
        q.add_after(key, delay)
    clock.t += advance
    assert drain(q) == ready


def test_add_now_replaces_a_later_due_time() -> None:
    clock = Clock()
    q = WorkQueue(clock=clock)
    q.add_after("a", 60.0)
    q.add("a")
    assert drain(q) == ["a"]
    clock.t += 60.0
    assert drain(q) == []  # the delayed entry went with the immediate one


@pytest.mark.parametrize(
    ("failures", "delay"), [(0, 1.0), (1, 2.0), (2, 4.0), (8, 256.0), (9, 300.0), (99, 300.0)]
)
def test_backoff(failures: int, delay: float) -> None:
    assert Backoff(base=1.0, cap=300.0).delay(failures) == delay


def test_rate_limited_adds_back_off_until_forget() -> None:
    clock = Clock()
    q = WorkQueue(backoff=Backoff(base=1.0, cap=300.0), clock=clock)
    delays = []
    for _ in range(4):
        delays.append(q.add_rate_limited("a"))
        clock.t += delays[-1]
        assert drain(q) == ["a"]
    assert delays == [1.0, 2.0, 4.0, 8.0]
    q.forget("a")
    assert q.add_rate_limited("a") == 1.0


def test_a_dropped_key_never_comes_back() -> None:
    clock = Clock()
    q = WorkQueue(clock=clock)
    q.add("a")
    q.add_after("b", 5.0)
    q.add_rate_limited("c")
    for key in "abc":
        q.drop(key)
    clock.t += 600.0
    assert drain(q) == []
    assert q.depth() == 0 and q.delayed() == 0


def test_wait_time_is_measured_from_the_add() -> None:
    clock = Clock()
    q = WorkQueue(clock=clock)
    q.add("a")
    clock.t += 2.5
    assert q.get(timeout=0) == ("a", 2.5)


def test_shutdown_wakes_a_waiting_worker() -> None:
    q = WorkQueue()
    got: list[object] = []
    worker = threading.Thread(target=lambda: got.append(q.get()))
    worker.start()
    time.sleep(0.05)
    q.shutdown()
    worker.join(timeout=5)
    assert not worker.is_alive() and got == [None]


def test_a_delayed_key_wakes_a_waiting_worker_when_due() -> None:
    q = WorkQueue()
    q.add_after("a", 0.05)
    started = time.monotonic()
    item = q.get(timeout=5)
    assert item is not None and item[0] == "a"
    assert 0.04 <= time.monotonic() - started < 2


def test_one_pass_per_key_at_a_time_with_many_workers() -> None:
    """Four workers, three keys added over and over: never two passes of one key at once."""
    q = WorkQueue()
    running: set[str] = set()
    overlaps: list[str] = []
    passes: dict[str, int] = {}
    guard = threading.Lock()

    def work() -> None:
        while (item := q.get(timeout=0.5)) is not None:
            key = item[0]
            with guard:
                if key in running:
                    overlaps.append(key)
                running.add(key)
                passes[key] = passes.get(key, 0) + 1
            time.sleep(0.002)
            with guard:
                running.discard(key)
            q.done(key)

    workers = [threading.Thread(target=work) for _ in range(4)]
    for w in workers:
        w.start()
    for i in range(300):
        q.add("abc"[i % 3])
        if i % 50 == 0:
            time.sleep(0.01)
    for w in workers:
        w.join(timeout=30)
    assert not overlaps
    assert set(passes) == {"a", "b", "c"}


def test_a_key_dropped_while_processing_is_not_added_back_by_its_own_pass() -> None:
    clock = Clock()
    q = WorkQueue(clock=clock)
    q.add("a")
    assert q.get(timeout=0) is not None
    q.drop("a")  # deleted while its pass runs
    q.add_after("a", 5.0)  # what the end of that pass would do
    q.add_rate_limited("a")
    q.add("a")
    q.done("a")
    clock.t += 600.0
    assert drain(q) == [] and q.delayed() == 0
    q.add("a")  # a new object with the same key later is queued as usual
    assert drain(q) == ["a"]
