"""Conditions shaped like metav1.Condition: set, read, summarise. Pure: ``now`` is passed in."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

Conditions = list[dict[str, Any]]
EventType = Literal["Normal", "Warning"]


@dataclass(frozen=True)
class Event:
    """A Kubernetes Event to post about the object being reconciled."""

    reason: str
    message: str
    type: EventType = "Normal"


def get(conditions: Iterable[Mapping[str, Any]] | None, type_: str) -> dict[str, Any] | None:
    """The condition of that type, or None."""
    for cond in conditions or ():
        if cond.get("type") == type_:
            return dict(cond)
    return None


def is_true(conditions: Iterable[Mapping[str, Any]] | None, type_: str) -> bool:
    cond = get(conditions, type_)
    return cond is not None and cond.get("status") == "True"


def set_condition(
    conditions: Iterable[Mapping[str, Any]] | None,
    type_: str,
    status: bool | str,
    reason: str,
    message: str,
    *,
    now: str,
    generation: int | None,
) -> Conditions:
    """A new list with the condition of ``type_`` set; other conditions are kept in order.

    ``lastTransitionTime`` moves only when the status changes, as the API conventions ask,
    so a pass that finds nothing new produces an identical list (and no status write).
    """
    status_text = status if isinstance(status, str) else ("True" if status else "False")
    if status_text not in ("True", "False", "Unknown"):
        raise ValueError(f"condition status must be True, False or Unknown, not {status_text!r}")
    out: Conditions = []
    found = False
    for cond in conditions or ():
        if cond.get("type") != type_:
            out.append(dict(cond))
            continue
        found = True
        changed = cond.get("status") != status_text
        out.append(
            _make(
                type_,
                status_text,
                reason,
                message,
                now if changed else str(cond.get("lastTransitionTime") or now),
                generation,
            )
        )
    if not found:
        out.append(_make(type_, status_text, reason, message, now, generation))
    return out


def _make(
    type_: str, status: str, reason: str, message: str, when: str, generation: int | None
) -> dict[str, Any]:
    cond: dict[str, Any] = {
        "type": type_,
        "status": status,
        "reason": reason,
        "message": message,
        "lastTransitionTime": when,
    }
    if generation is not None:
        cond["observedGeneration"] = generation
    return cond


def remove(conditions: Iterable[Mapping[str, Any]] | None, type_: str) -> Conditions:
    return [dict(c) for c in conditions or () if c.get("type") != type_]


DATA_CAPTURE_HEALTHY = "DataCaptureHealthy"  # ModelDeployment: captured rows reach the store

# Conditions for which True is bad news (the rest: False is bad news).
NEGATIVE = frozenset({"Degraded", "Stalled", "DriftDetected"})
# Reasons that describe waiting, not trouble: no Warning for them.
QUIET_REASONS = frozenset(
    {
        "Pending",
        "Creating",
        "CreatingRun",
        "Evaluating",
        "Registering",
        "Suspended",
        "Completed",
        "NotImplemented",
        "Progressing",
        "Waiting",
        "Training",
        "Finishing",
        "Finished",
    }
)


def transitions(
    before: Iterable[Mapping[str, Any]] | None, after: Iterable[Mapping[str, Any]] | None
) -> list[tuple[EventType, str, str]]:
    """``(event type, reason, message)`` for each condition whose status or reason changed.

    A Warning when the new state is bad news (a positive condition False, a negative one
    True) for a reason that is not mere waiting; Normal otherwise.
    """
    old = {c.get("type"): c for c in before or ()}
    out: list[tuple[EventType, str, str]] = []
    for cond in after or ():
        prev = old.get(cond.get("type"))
        if prev is not None and (prev.get("status"), prev.get("reason")) == (
            cond.get("status"),
            cond.get("reason"),
        ):
            continue
        status, reason = cond.get("status"), str(cond.get("reason", ""))
        if reason in QUIET_REASONS:
            continue  # waiting, or a step on the way: not news
        bad = (status == "True") if cond.get("type") in NEGATIVE else (status == "False")
        kind: EventType = "Warning" if bad else "Normal"
        out.append((kind, reason, str(cond.get("message", ""))))
    return out
