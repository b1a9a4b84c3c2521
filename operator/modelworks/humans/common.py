"""Reading an object's parts and writing numbers, times and metrics for people. Pure."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from typing import Any

from modelworks import conditions
from modelworks.api import BY_KIND
from modelworks.names import parse_time_or_none

# Metrics that measure the run's progress rather than the model.
PROGRESS_METRICS = frozenset({"progress", "epoch", "step"})
ELLIPSIS = "..."


def status_of(obj: Mapping[str, Any]) -> dict[str, Any]:
    return dict(obj.get("status") or {})


def meta_of(obj: Mapping[str, Any]) -> dict[str, Any]:
    return dict(obj.get("metadata") or {})


def spec_of(obj: Mapping[str, Any]) -> dict[str, Any]:
    return dict(obj.get("spec") or {})


def version_key(version: str | None) -> tuple[int, int, str]:
    """Numeric versions in numeric order, other strings after them, None (unregistered) last."""
    if version is None:
        return (2, 0, "")
    if version.isdigit():
        return (0, int(version), "")
    return (1, 0, version)


def summary_condition(obj: Mapping[str, Any], kind: str) -> dict[str, Any] | None:
    """The kind's summary condition (Ready; Succeeded for a TrainingJob), trimmed."""
    type_ = BY_KIND[kind].summary
    cond = conditions.get(status_of(obj).get("conditions"), type_)
    if cond is None:
        return None
    return {
        "type": type_,
        "status": cond.get("status"),
        "reason": cond.get("reason"),
        "message": cond.get("message") or "",
    }


def stale(obj: Mapping[str, Any]) -> bool:
    """True when the operator has not yet looked at the object's current generation."""
    generation = meta_of(obj).get("generation")
    observed = status_of(obj).get("observedGeneration")
    return isinstance(generation, int) and isinstance(observed, int) and observed < generation


def number(value: Any) -> str:
    """A metric for people: four significant digits, integers without a point."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return str(value)
    if float(value).is_integer() and abs(value) < 1e15:
        return str(int(value))
    return f"{value:.4g}"


def ago(text: Any, now: datetime) -> str:
    """``42s ago``, ``3m ago``, ``2h ago``, ``5d ago``; the text itself when it is no time."""
    when = parse_time_or_none(text)
    if when is None:
        return str(text)
    seconds = int((now - when).total_seconds())
    if seconds < 0:
        return "just now"
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds // size}{unit} ago"
    return f"{seconds}s ago"


def clip(text: str, width: int) -> str:
    """``text`` cut to ``width`` characters, the cut marked with an ellipsis."""
    if width <= 0:
        return ""
    if len(text) <= width:
        return text
    if width <= len(ELLIPSIS):
        return text[:width]
    return text[: width - len(ELLIPSIS)] + ELLIPSIS


def key_metrics(
    metrics: Mapping[str, Any] | None, prefer: Sequence[str] = (), limit: int = 4
) -> list[tuple[str, float]]:
    """The metrics worth a glance: ``prefer`` first (the gate's), then ``val*``, then the rest.

    Progress counters (progress, epoch, step) are left out: the progress bar shows them.
    """
    values = {
        k: float(v)
        for k, v in (metrics or {}).items()
        if isinstance(v, int | float) and not isinstance(v, bool) and k not in PROGRESS_METRICS
    }
    order = [m for m in dict.fromkeys(prefer) if m in values]
    order += sorted(k for k in values if k.startswith("val") and k not in order)
    order += sorted(k for k in values if k not in order)
    return [(k, values[k]) for k in order[:limit]]


def metrics_text(pairs: Iterable[tuple[str, float]]) -> str:
    return " ".join(f"{k}={number(v)}" for k, v in pairs)


def gate_verdict(passed: Any, prefix: str = "") -> str:
    if passed is True:
        return prefix + "passed"
    if passed is False:
        return prefix + "failed"
    return ""
