"""Who may hold the leader Lease, with plain data."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from modelworks.handlers.leader import micro_time, next_lease

NOW = datetime(2026, 1, 1, 12, 0, 0, tzinfo=UTC)
T = micro_time(NOW)
ACQUIRED = "2026-01-01T11:00:00.000000Z"


def lease(holder: str, duration: int = 15, transitions: int = 3) -> dict[str, Any]:
    return {
        "holderIdentity": holder,
        "leaseDurationSeconds": duration,
        "acquireTime": ACQUIRED,
        "renewTime": "2026-01-01T11:59:59.000000Z",  # another node's clock: never compared
        "leaseTransitions": transitions,
    }


@pytest.mark.parametrize(
    ("spec", "age", "held", "acquire", "transitions"),
    [
        (None, 0.0, True, T, 1),  # no lease yet: take it
        ({}, 0.0, True, T, 1),
        (lease("me"), 5.0, True, ACQUIRED, 3),  # renew: the same term
        (lease("me"), 60.0, True, ACQUIRED, 3),  # mine, even if late
        (lease("other"), 0.0, False, None, None),  # just seen: valid for its duration
        (lease("other"), 14.9, False, None, None),
        (lease("other"), 15.0, True, T, 4),  # unchanged for its duration here: take it over
        (lease("other", duration=2), 2.0, True, T, 4),  # its own duration counts
        (lease(""), 0.0, True, T, 4),  # given up: take it at once
    ],
)
def test_next_lease(
    spec: dict[str, Any] | None,
    age: float,
    held: bool,
    acquire: str | None,
    transitions: int | None,
) -> None:
    out = next_lease(spec, "me", NOW, 15, age)
    assert (out is not None) == held
    if out is not None:
        assert out["holderIdentity"] == "me"
        assert out["renewTime"] == T
        assert out["leaseDurationSeconds"] == 15
        assert out["acquireTime"] == acquire
        assert out["leaseTransitions"] == transitions


def test_micro_time_is_what_the_api_server_accepts() -> None:
    assert micro_time(NOW) == "2026-01-01T12:00:00.000000Z"
