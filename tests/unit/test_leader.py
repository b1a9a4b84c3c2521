"""Who may hold the leader Lease, with plain data."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from modelworks.handlers.leader import micro_time, next_lease

NOW = datetime(2026, 1, 1, 12, 0, 0, tzinfo=UTC)
T = micro_time(NOW)


def lease(
    holder: str, renewed_seconds_ago: float, duration: int = 15, transitions: int = 3
) -> dict[str, Any]:
    renewed = datetime.fromtimestamp(NOW.timestamp() - renewed_seconds_ago, UTC)
    return {
        "holderIdentity": holder,
        "leaseDurationSeconds": duration,
        "acquireTime": "2026-01-01T11:00:00.000000Z",
        "renewTime": micro_time(renewed),
        "leaseTransitions": transitions,
    }


@pytest.mark.parametrize(
    ("spec", "held", "acquire", "transitions"),
    [
        (None, True, T, 1),  # no lease yet: take it
        ({}, True, T, 1),
        (lease("me", 5), True, "2026-01-01T11:00:00.000000Z", 3),  # renew: same term
        (lease("me", 60), True, "2026-01-01T11:00:00.000000Z", 3),  # mine, even if late
        (lease("other", 5), False, None, None),  # another holder's valid lease
        (lease("other", 14.9), False, None, None),
        (lease("other", 15), True, T, 4),  # expired: take it over
        (lease("other", 5, duration=2), True, T, 4),  # its own duration counts
        (lease("", 1), True, T, 4),  # released
    ],
)
def test_next_lease(
    spec: dict[str, Any] | None, held: bool, acquire: str | None, transitions: int | None
) -> None:
    out = next_lease(spec, "me", NOW, 15)
    assert (out is not None) == held
    if out is not None:
        assert out["holderIdentity"] == "me"
        assert out["renewTime"] == T
        assert out["leaseDurationSeconds"] == 15
        assert out["acquireTime"] == acquire
        assert out["leaseTransitions"] == transitions


def test_micro_time_is_what_the_api_server_accepts() -> None:
    assert micro_time(NOW) == "2026-01-01T12:00:00.000000Z"
