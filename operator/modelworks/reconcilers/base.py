"""The first steps every reconciler takes: validate the spec, or say why not."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from modelworks import conditions
from modelworks.api import Kind
from modelworks.api.common import ApiModel
from modelworks.api.validate import parse_spec
from modelworks.reconcilers.outcome import Event, Outcome
from modelworks.status.common import invalid_spec, merge_patch, typed


def validate(
    kind: Kind, obj: Mapping[str, Any], now: str
) -> tuple[ApiModel | None, Outcome | None]:
    """The parsed spec, or an Outcome that reports the invalid spec (posting the Event once)."""
    spec, errors = parse_spec(kind, obj)
    if spec is not None:
        return spec, None
    status = invalid_spec(kind, obj, errors, now)
    before = conditions.get((obj.get("status") or {}).get("conditions"), kind.summary)
    already = (
        before is not None
        and before.get("reason") == "InvalidSpec"
        and before.get("observedGeneration") == status.get("observedGeneration")
    )
    events = [] if already else [Event("InvalidSpec", "; ".join(errors), "Warning")]
    return None, Outcome(status=status, events=events, result="invalid")


def status_changes(kind: Kind, old: Mapping[str, Any], new: Mapping[str, Any]) -> dict[str, Any]:
    """The merge patch that stores ``new`` (checked against the kind's model) over ``old``."""
    return merge_patch(old, typed(kind, new))
