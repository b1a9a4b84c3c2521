"""The status builder every kind shares, with plain data."""

from __future__ import annotations

from typing import Any

import pytest

from modelworks.api import DRIFT_MONITOR, MODEL_DEPLOYMENT
from modelworks.status.decision import StatusBuilder

T0, T1 = "2026-01-01T00:00:00Z", "2026-01-01T00:01:00Z"


def cond(type_: str, status: str, reason: str = "R", when: str = T0) -> dict[str, Any]:
    return {
        "type": type_,
        "status": status,
        "reason": reason,
        "message": f"{type_} {reason}",
        "lastTransitionTime": when,
        "observedGeneration": 1,
    }


@pytest.mark.parametrize(
    ("subs", "summary"),
    [
        ([("Available", True, "Serving")], ("True", "AllGood")),
        ([("Available", False, "NoPods")], ("False", "NoPods")),
        (
            [("Available", True, "Serving"), ("Degraded", True, "RolledBack")],
            ("False", "RolledBack"),
        ),
        ([("Available", True, "Serving"), ("Degraded", False, "Fine")], ("True", "AllGood")),
        ([("Available", False, "NoPods"), ("Degraded", True, "RolledBack")], ("False", "NoPods")),
        ([], ("True", "AllGood")),
    ],
)
def test_summary_follows_the_first_bad_sub_condition(
    subs: list[tuple[str, bool, str]], summary: tuple[str, str]
) -> None:
    b = StatusBuilder(MODEL_DEPLOYMENT, {}, 1, T1)
    for type_, value, reason in subs:
        b.put(type_, value, reason, f"{type_} {reason}")
    b.summarise(["Available", "Degraded"], "AllGood", "all good")
    ready = b.condition("Ready")
    assert ready is not None
    assert (ready["status"], ready["reason"]) == summary


def test_stalled_goes_transition_times_stay_and_events_follow_transitions() -> None:
    old = {
        "observedGeneration": 1,
        "phase": "Failed",
        "conditions": [cond("Ready", "False", "InvalidSpec"), cond("Stalled", "True")],
    }
    b = StatusBuilder(DRIFT_MONITOR, old, 2, T1)
    b.set(phase="Active", lastCheckTime=None)
    b.put("Ready", True, "Watching", "watching")
    b.put("DriftDetected", True, "Drift", "two features drifted")
    decision = b.decide(requeue_after=30.0)
    assert decision.status["observedGeneration"] == 2
    assert decision.status["phase"] == "Active"
    assert [c["type"] for c in decision.status["conditions"]] == ["Ready", "DriftDetected"]
    assert all(c["lastTransitionTime"] == T1 for c in decision.status["conditions"])
    assert [(e.type, e.reason) for e in decision.events] == [
        ("Normal", "Watching"),
        ("Warning", "Drift"),
    ]
    assert decision.requeue_after == 30.0


def test_an_unchanged_condition_keeps_its_time_and_posts_nothing() -> None:
    old = {"observedGeneration": 1, "conditions": [cond("Ready", "True", "Serving")]}
    b = StatusBuilder(MODEL_DEPLOYMENT, old, 1, T1)
    b.put("Ready", True, "Serving", "Ready R")
    decision = b.decide()
    assert decision.status["conditions"][0]["lastTransitionTime"] == T0
    assert decision.events == []
