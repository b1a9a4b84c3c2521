"""Status pieces every kind shares: invalid specs and not-yet-implemented kinds."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from modelworks import conditions
from modelworks.api import Kind
from modelworks.conditions import Event
from modelworks.status.decision import Decision


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


NAME_TAKEN_RETRY = 60.0  # seconds: nothing wakes the parent when the foreign object goes


def name_taken(kind: Kind, obj: Mapping[str, Any], message: str, now: str) -> Decision[Any]:
    """A child's name is held by an object this one does not own: nothing is written over
    it; the summary says which, a Warning is posted once, and the pass is tried again."""
    status, generation = _base(obj)
    before = conditions.get(status.get("conditions"), kind.summary) or {}
    status["observedGeneration"] = generation
    status["phase"] = "Pending"
    conds = conditions.remove(status.get("conditions"), "Stalled")
    status["conditions"] = conditions.set_condition(
        conds, kind.summary, False, "NameTaken", message, now=now, generation=generation
    )
    news = (before.get("reason"), before.get("message")) != ("NameTaken", message)
    events = [Event("NameTaken", message, "Warning")] if news else []
    return Decision(status, events, requeue_after=NAME_TAKEN_RETRY, result="retry")


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


def merge_patch(old: Mapping[str, Any], new: Mapping[str, Any]) -> dict[str, Any]:
    """The JSON merge patch (RFC 7386) that turns ``old`` into ``new``; {} when they are equal.

    Nested objects are diffed key by key, and a key that ``new`` no longer has is sent as
    an explicit null at whatever depth it sits: a merge patch that merely omits a nested key
    leaves the stored value in place. Lists are replaced whole, as merge patches do.
    ``new`` must hold no nulls of its own (a typed status drops unset fields).
    """
    patch: dict[str, Any] = {}
    for key, value in new.items():
        before = old.get(key)
        if isinstance(value, Mapping) and isinstance(before, Mapping):
            nested = merge_patch(before, value)
            if nested:
                patch[key] = nested
        elif key not in old or before != value:
            patch[key] = value
    patch.update({key: None for key in old if key not in new})
    return patch


class StatusInvalid(ValueError):
    """A computed status does not fit the kind's status model: a defect in the operator."""


def typed(kind: Kind, status: Mapping[str, Any]) -> dict[str, Any]:
    """``status`` validated by the kind's status model, in the form the API server stores.

    The model refuses unknown keys and the dump must equal the input: what is stored is what
    was computed, so a key the model does not know, or a value it would coerce, is a defect.
    """
    try:
        dumped = kind.status.model_validate(status).wire()
    except ValueError as exc:
        raise StatusInvalid(f"{kind.kind} status does not fit its model: {exc}") from exc
    if dumped != status:
        raise StatusInvalid(f"{kind.kind} status changes when typed: {merge_patch(status, dumped)}")
    return dumped
