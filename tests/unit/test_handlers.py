"""The handlers' bookkeeping of when each object is next due, with plain data.

The reconcilers are swapped for plain functions through ``RECONCILERS`` (the seam the
handlers call); nothing here talks to Kubernetes or MLflow, so the clients are absent.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any, cast

import kopf
import pytest

from modelworks.api import API_VERSION, KINDS
from modelworks.handlers import RECONCILERS, TICK_SECONDS, Runtime, _pass
from modelworks.settings import Settings
from modelworks.status.decision import Decision

KIND = next(k for k in KINDS if k.kind == "ModelDeployment")
UID = "0f6c1d2e-0000-4000-8000-000000000001"


def runtime(resync: float = 300.0) -> Runtime:
    return Runtime(
        settings=Settings(resync_seconds=resync),
        kube=cast(Any, None),
        registry=cast(Any, None),
    )


def body(status: dict[str, Any] | None = None) -> kopf.Body:
    raw: dict[str, Any] = {
        "apiVersion": API_VERSION,
        "kind": KIND.kind,
        "metadata": {"name": "m", "namespace": "ns", "uid": UID, "generation": 1},
        "spec": {},
    }
    if status is not None:
        raw["status"] = status
    return kopf.Body(raw)


def run(
    rt: Runtime, monkeypatch: pytest.MonkeyPatch, reconcile: Callable[..., Decision]
) -> tuple[list[dict[str, Any]], kopf.Patch]:
    """Run one pass with ``reconcile`` in place of the kind's reconciler; what it saw."""
    seen: list[dict[str, Any]] = []

    def recorder(obj: dict[str, Any], **kwargs: Any) -> Decision:
        seen.append(obj)
        return reconcile(obj, **kwargs)

    monkeypatch.setitem(RECONCILERS, KIND.kind, recorder)
    patch = kopf.Patch()
    _pass(rt, KIND, body({"phase": "Pending"}), patch)
    return seen, patch


@pytest.mark.parametrize(
    ("resync", "requeue_after", "expected_delay"),
    [
        (300.0, None, 300.0),  # nothing asked: the resync period
        (300.0, 20.0, 20.0),  # a canary pause: sooner
        (3.0, 20.0, TICK_SECONDS),  # resync caps every wait, but never below one tick
        (60.0, 600.0, 60.0),  # a long drift interval still comes back at resync
    ],
)
def test_pass_arms_the_next_pass(
    monkeypatch: pytest.MonkeyPatch,
    resync: float,
    requeue_after: float | None,
    expected_delay: float,
) -> None:
    rt = runtime(resync)
    seen, patch = run(
        rt,
        monkeypatch,
        lambda obj, **_: Decision(status={"phase": "Available"}, requeue_after=requeue_after),
    )
    assert len(seen) == 1
    assert dict(patch.status) == {"phase": "Available"}
    remaining = rt.due[UID] - time.monotonic()
    assert expected_delay - 1.0 < remaining <= expected_delay


def test_deleted_object_is_never_run_again(monkeypatch: pytest.MonkeyPatch) -> None:
    rt = runtime()
    rt.due[UID] = 0.0
    rt.memory[UID] = {"kept": 1}
    rt.forget(UID)
    seen, patch = run(rt, monkeypatch, lambda obj, **_: Decision(status={"phase": "Available"}))
    assert seen == []  # the stale body is not reconciled
    assert UID not in rt.due and UID not in rt.memory
    assert not patch.status


@pytest.mark.parametrize("fails", [False, True])
def test_deleted_during_a_pass_is_not_rearmed(monkeypatch: pytest.MonkeyPatch, fails: bool) -> None:
    """The DELETED event arrives while the pass runs (the pass ran in kopf's thread pool).

    Without the guard the pass would re-arm the timer, and the stale body would be
    reconciled forever: its children re-created for a new object of the same name to
    fight over.
    """
    rt = runtime()

    def deleted_meanwhile(obj: dict[str, Any], **_: Any) -> Decision:
        rt.forget(obj["metadata"]["uid"])
        if fails:
            raise RuntimeError("the API said 404")
        return Decision(status={"phase": "Available"})

    if fails:
        with pytest.raises(kopf.TemporaryError):
            run(rt, monkeypatch, deleted_meanwhile)
    else:
        run(rt, monkeypatch, deleted_meanwhile)
    assert UID not in rt.due
    assert UID in rt.gone


@pytest.mark.parametrize(
    ("second_waits", "expected_runs", "expected_result"),
    [
        (True, 2, True),  # a spec-change pass waits for the tick, then runs
        (False, 1, False),  # a tick finds the object busy and does nothing
    ],
)
def test_one_pass_per_object_at_a_time(
    monkeypatch: pytest.MonkeyPatch, second_waits: bool, expected_runs: int, expected_result: bool
) -> None:
    """A tick and a change pass of one object never overlap (CI once saw two MLflow runs
    created for one new spec: both passes searched, found none, and created one)."""
    rt = runtime()
    inside = threading.Event()
    release = threading.Event()
    in_flight: list[int] = [0]
    most: list[int] = [0]
    runs: list[int] = []

    def slow(obj: dict[str, Any], **_: Any) -> Decision:
        in_flight[0] += 1
        most[0] = max(most[0], in_flight[0])
        runs.append(1)
        inside.set()
        release.wait(timeout=10)
        in_flight[0] -= 1
        return Decision(status={"phase": "Available"})

    monkeypatch.setitem(RECONCILERS, KIND.kind, slow)
    first = threading.Thread(target=_pass, args=(rt, KIND, body(), kopf.Patch()))
    first.start()
    assert inside.wait(timeout=10)
    result: list[bool] = []
    second = threading.Thread(
        target=lambda: result.append(_pass(rt, KIND, body(), kopf.Patch(), wait=second_waits))
    )
    second.start()
    second.join(timeout=0.5)
    assert most[0] == 1  # the second pass has not entered the reconciler
    release.set()
    first.join(timeout=10)
    second.join(timeout=10)
    assert not first.is_alive() and not second.is_alive()
    assert len(runs) == expected_runs and most[0] == 1
    assert result == [expected_result]
