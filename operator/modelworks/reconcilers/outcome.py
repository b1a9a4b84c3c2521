"""What one reconcile pass returns to its handler: the new status and the Events to post."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from modelworks.conditions import Event

__all__ = ["Event", "Outcome"]


@dataclass(frozen=True)
class Outcome:
    """The result of one pass.

    ``status`` is the whole new status (camelCase, as stored). ``requeue_after`` asks for
    another pass sooner than the resync period (seconds). ``result`` labels the
    reconcile metric: ok, invalid, waiting, error.
    """

    status: dict[str, Any]
    events: list[Event] = field(default_factory=list)
    requeue_after: float | None = None
    result: str = "ok"
