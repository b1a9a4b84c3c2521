"""Status pieces every kind shares: invalid specs and not-yet-implemented kinds."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from modelworks import conditions
from modelworks.api import Kind


def _base(obj: Mapping[str, Any]) -> tuple[dict[str, Any], int | None]:
    status = dict(obj.get("status") or {})
    generation = (obj.get("metadata") or {}).get("generation")
    return status, generation


def invalid_spec(kind: Kind, obj: Mapping[str, Any], errors: list[str], now: str) -> dict[str, Any]:
    """The spec cannot be acted on (only reachable past an older CRD): say why, per field."""
    status, generation = _base(obj)
    message = "The spec is invalid: " + "; ".join(errors)
    status["observedGeneration"] = generation
    status["phase"] = "Failed"
    conds = conditions.set_condition(
        status.get("conditions"),
        kind.summary,
        False,
        "InvalidSpec",
        message,
        now=now,
        generation=generation,
    )
    status["conditions"] = conditions.set_condition(
        conds, "Stalled", True, "InvalidSpec", message, now=now, generation=generation
    )
    return status


def not_implemented(kind: Kind, obj: Mapping[str, Any], now: str) -> dict[str, Any]:
    """The spec is valid but this operator version does not act on the kind yet."""
    status, generation = _base(obj)
    status["observedGeneration"] = generation
    status["phase"] = "Pending"
    conds = conditions.remove(status.get("conditions"), "Stalled")
    status["conditions"] = conditions.set_condition(
        conds,
        kind.summary,
        False,
        "NotImplemented",
        f"The spec is valid (generation {generation}), but this version of the operator "
        f"does not act on {kind.kind} objects yet.",
        now=now,
        generation=generation,
    )
    return status


def pod_ready(pod: Mapping[str, Any]) -> bool:
    """The pod is Ready and not being deleted."""
    if (pod.get("metadata") or {}).get("deletionTimestamp"):
        return False
    return conditions.is_true((pod.get("status") or {}).get("conditions"), "Ready")
