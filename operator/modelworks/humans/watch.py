"""``modelworks watch``: one line per state of a TrainingJob, then its outcome. Pure."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from modelworks.api import TRAINING_JOB
from modelworks.humans.common import (
    gate_verdict,
    key_metrics,
    meta_of,
    metrics_text,
    number,
    spec_of,
    stale,
    status_of,
    summary_condition,
)

BAR_WIDTH = 24


def progress_bar(percent: Any, width: int = BAR_WIDTH) -> str:
    """``[#########---------------]  37.5%``; ``[------------------------]     ?`` when unknown."""
    if isinstance(percent, bool) or not isinstance(percent, int | float):
        return "[" + "-" * width + "]" + "?".rjust(7)
    value = min(100.0, max(0.0, float(percent)))
    filled = int(value / 100 * width + 1e-9)
    return "[" + "#" * filled + "-" * (width - filled) + "]" + f"{value:6.1f}%"


def watch_line(obj: Mapping[str, Any]) -> str:
    """One line of ``modelworks watch``: phase, progress bar, epoch/step, key metrics."""
    st = status_of(obj)
    name = meta_of(obj).get("name")
    phase = st.get("phase") or "-"
    cond = summary_condition(obj, TRAINING_JOB.kind) or {}
    if not st:
        phase = "(no status yet: is the operator running?)"
    elif stale(obj):
        phase += " (spec changed: waiting for the operator)"
    elif phase in ("Pending", "Suspended") and cond.get("reason") not in (None, phase):
        phase += f" ({cond['reason']})"
    prog = st.get("progress") or {}
    parts = [f"tj/{name}", phase.ljust(9), progress_bar(prog.get("percent"))]
    for counter in ("epoch", "step"):
        if prog.get(counter) is not None:
            parts.append(f"{counter} {prog[counter]}")
    gate_metrics = [
        str(rule.get("metric")) for rule in (spec_of(obj).get("qualityGate") or []) if rule
    ]
    text = metrics_text(key_metrics(st.get("metrics"), prefer=gate_metrics))
    if text:
        parts.append(text)
    return "  ".join(parts)


def finished(obj: Mapping[str, Any] | None) -> int | None:
    """The exit code once the run of the current generation has ended: 0 succeeded, 1 failed.

    None while it goes on. A deleted object (None) counts as failed.
    """
    if obj is None:
        return 1
    if stale(obj):
        return None
    phase = status_of(obj).get("phase")
    if phase == "Succeeded":
        return 0
    if phase == "Failed":
        return 1
    return None


def outcome_lines(obj: Mapping[str, Any] | None, *, name: str = "") -> list[str]:
    """What to print when the watch ends: the registered version or why it failed."""
    if obj is None:
        return [f"Failed: tj/{name} was deleted"]
    st = status_of(obj)
    cond = summary_condition(obj, TRAINING_JOB.kind) or {}
    gate = st.get("qualityGate") or {}
    lines: list[str] = []
    if st.get("phase") == "Succeeded":
        reg = st.get("registeredModel") or {}
        if reg.get("version"):
            alias = f" as @{reg['alias']}" if reg.get("alias") else ""
            lines.append(f"Succeeded: registered {reg.get('name')} version {reg['version']}{alias}")
        else:
            lines.append(f"Succeeded: {cond.get('message') or 'training completed'}")
    else:
        reason = cond.get("reason") or "Failed"
        message = str(cond.get("message") or "").strip()
        lines.append(f"Failed: {reason}" + (f": {message}" if message else ""))
    if gate.get("summary"):
        verdict = gate_verdict(gate.get("passed"), " ") or " not evaluated"
        lines.append(f"  quality gate{verdict}: {gate['summary']}")
    text = metrics_text(key_metrics(st.get("metrics"), limit=6))
    if text:
        lines.append(f"  metrics: {text}")
    run = st.get("mlflow") or {}
    if run.get("runUrl") or run.get("runId"):
        lines.append(f"  MLflow run: {run.get('runUrl') or run.get('runId')}")
    return lines


def timeout_lines(obj: Mapping[str, Any] | None, seconds: float) -> list[str]:
    where = watch_line(obj) if obj is not None else "the TrainingJob does not exist"
    return [f"Timed out after {number(seconds)}s: {where}"]
