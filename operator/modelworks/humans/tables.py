"""The lineage as a table for a terminal: one row per object, NOTES that wrap. Pure."""

from __future__ import annotations

import textwrap
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from modelworks.api import BY_KIND
from modelworks.humans.common import (
    ELLIPSIS,
    ago,
    clip,
    gate_verdict,
    key_metrics,
    metrics_text,
    number,
)

TREE = "\\_ "  # ASCII, like `ps --forest`: safe on any terminal and in any log
HEADERS = ("MODEL", "VERSION", "OBJECT", "PHASE", "CONDITION", "NOTES")
MIN_NOTES = 24  # what NOTES gets before names are cut
LEAST_NOTES = 16  # what NOTES gets when names are cut to their floors
FLOORS = {"version": 8, "namespace": 10, "model": 8, "object": 14}
MAX_NOTE_LINES = 3


def _ref(obj: Mapping[str, Any]) -> str:
    return f"{BY_KIND[obj['kind']].short_names[0]}/{obj['name']}"


def _condition_cell(obj: Mapping[str, Any]) -> str:
    cond = obj.get("condition")
    return f"{cond['type']}={cond['status']}" if cond else "-"


def _problem(obj: Mapping[str, Any]) -> str | None:
    """``Reason: message`` of a summary condition that is False."""
    cond = obj.get("condition") or {}
    if cond.get("status") != "False":
        return None
    message = str(cond.get("message") or "").strip()
    if not message and cond.get("reason") == obj.get("phase"):
        return None  # the PHASE column says it already
    return f"{cond.get('reason')}: {message}" if message else str(cond.get("reason"))


def training_job_notes(tj: Mapping[str, Any]) -> list[str]:
    notes: list[str] = []
    if tj.get("stale"):
        notes.append("spec changed: waiting for the operator")
    cond = tj.get("condition") or {}
    if tj.get("phase") in ("Pending", "Running") and tj.get("progress") is not None:
        notes.append(f"{number(round(float(tj['progress']), 1))}% done")
    problem = _problem(tj)
    if problem:
        notes.append(problem)
    elif cond.get("status") == "Unknown" and cond.get("reason") not in (
        None,
        "Training",
        "Finishing",
    ):
        notes.append(str(cond["reason"]))
    gate = tj.get("qualityGate") or {}
    if gate.get("summary") and cond.get("reason") != "QualityGateFailed":
        notes.append(f"gate{gate_verdict(gate.get('passed'), ' ')}: {gate['summary']}")
    if tj.get("retrainOf") or tj.get("driftMonitor"):
        text = "retrain"
        if tj.get("retrainOf"):
            text += f" of tj/{tj['retrainOf']}"
        if tj.get("driftMonitor"):
            text += f" by dmon/{tj['driftMonitor']}"
        notes.append(text)
    return notes


def model_deployment_notes(dep: Mapping[str, Any]) -> list[str]:
    notes: list[str] = []
    role = dep.get("role")
    canary = dep.get("canary") or {}
    if role == "canary":
        text = f"canary {canary.get('weight')}%" if canary.get("weight") is not None else "canary"
        if canary.get("replicas") is not None:
            text += f", {canary.get('readyReplicas') or 0}/{canary['replicas']} ready"
        notes.append(text)
    elif role == "stable":
        text = "stable"
        if dep.get("replicas") is not None:
            text += f", {dep.get('readyReplicas') or 0}/{dep['replicas']} ready"
        notes.append(text)
    elif role:
        notes.append(str(role))
    model = dep.get("modelRef") or {}
    if model.get("alias"):
        notes.append(f"follows @{model['alias']}")
    elif model.get("version"):
        notes.append(f"pins version {model['version']}")
    rollback = dep.get("rollback") or {}
    if rollback.get("fromVersion"):
        to = f" to {rollback['toVersion']}" if rollback.get("toVersion") else ""
        notes.append(f"rolled back from {rollback['fromVersion']}{to} ({rollback.get('reason')})")
    problem = _problem(dep)
    if problem:
        notes.append(problem)
    if dep.get("stale"):
        notes.append("spec changed: waiting for the operator")
    return notes


def drift_monitor_notes(
    mon: Mapping[str, Any], now: datetime, *, attached: bool = True
) -> list[str]:
    notes: list[str] = []
    verdict = mon.get("verdict")
    if verdict:
        text = str(verdict)
        share = mon.get("driftedShare")
        if isinstance(share, int | float) and not isinstance(share, bool):
            text += f", {round(100 * share)}% of features drifted"
        notes.append(text)
    else:
        notes.append("no verdict yet")
    if mon.get("lastCheckTime"):
        notes.append(f"checked {ago(mon['lastCheckTime'], now)}")
    last = mon.get("lastRetrain") or {}
    if last.get("trainingJob"):
        when = f" {ago(last['at'], now)}" if last.get("at") else ""
        notes.append(f"retrained tj/{last['trainingJob']}{when}")
    if mon.get("batch"):
        notes.append("batch mode")
    elif mon.get("target") and not attached:
        notes.append(f"target mdep/{mon['target']} not found")
    problem = _problem(mon)
    if problem:
        notes.append(problem)
    return notes


def _version_cell(entry: Mapping[str, Any]) -> str:
    version = entry.get("version")
    if version is None:
        return "-"
    aliases = " ".join(f"@{a}" for a in entry.get("aliases") or ())
    return f"{version} {aliases}".strip()


def lineage_rows(tree: Mapping[str, Any], now: datetime) -> list[dict[str, Any]]:
    """One row per object (and per MLflow version with facts), in lineage order."""
    rows: list[dict[str, Any]] = []

    def row(
        model: str, version: str, depth: int, obj: Mapping[str, Any] | None, **cells: Any
    ) -> None:
        rows.append(
            {
                "namespace": (obj or {}).get("namespace") or "",
                "model": model,
                "version": version,
                "object": ("   " * (depth - 1) + TREE if depth else "") + cells.get("ref", ""),
                "phase": cells.get("phase", ""),
                "condition": cells.get("condition", ""),
                "notes": cells.get("notes", []),
            }
        )

    def put(model: str, version: str, depth: int, obj: Mapping[str, Any], notes: list[str]) -> None:
        row(
            model,
            version,
            depth,
            obj,
            ref=_ref(obj),
            phase=obj.get("phase") or "-",
            condition=_condition_cell(obj),
            notes=notes,
        )

    for model in tree.get("models") or ():
        for entry in model.get("versions") or ():
            version = _version_cell(entry)
            facts = entry.get("mlflow")
            if facts:
                run = str(facts.get("runId") or "?")
                row(
                    model["name"],
                    version,
                    0,
                    None,
                    ref=f"mlflow run {run[:12]}",
                    notes=[metrics_text(key_metrics(facts.get("metrics"))) or "no metrics"],
                )
            for tj in entry.get("trainingJobs") or ():
                put(model["name"], version, 0, tj, training_job_notes(tj))
            for dep in entry.get("deployments") or ():
                put(model["name"], version, 1, dep, model_deployment_notes(dep))
                for mon in dep.get("driftMonitors") or ():
                    put(model["name"], version, 2, mon, drift_monitor_notes(mon, now))
    loose = tree.get("unattached") or {}
    for tj in loose.get("trainingJobs") or ():
        put("-", "-", 0, tj, ["no spec.model: tracking only", *training_job_notes(tj)])
    for mon in loose.get("driftMonitors") or ():
        put("-", "-", 0, mon, drift_monitor_notes(mon, now, attached=False))
    return rows


def status_table(
    tree: Mapping[str, Any], *, now: datetime, width: int = 120, namespaces: bool = False
) -> str:
    """The lineage as a table that fits ``width`` columns; NOTES wrap, long names are cut.

    The model and version are printed on the first row of their group only.
    ``namespaces`` adds a NAMESPACE column (``-A``).
    """
    rows = lineage_rows(tree, now)
    if not rows:
        return ""
    keys = ["model", "version", "object", "phase", "condition"]
    headers = list(HEADERS[:-1])
    if namespaces:
        keys.insert(0, "namespace")
        headers.insert(0, "NAMESPACE")
    # Show a model and a version once per group.
    shown: list[dict[str, Any]] = []
    last_model, last_version = None, None
    for r in rows:
        cells = dict(r)
        if r["model"] == last_model:
            cells["model"] = ""
            if r["version"] == last_version:
                cells["version"] = ""
        last_model, last_version = r["model"], r["version"]
        shown.append(cells)
    widths = [
        max(len(h), *(len(str(c[k])) for c in shown)) for h, k in zip(headers, keys, strict=True)
    ]
    gap = 2
    fixed = sum(widths) + gap * len(widths)
    # Too wide: give NOTES its minimum by cutting the widest of the name columns, one
    # character at a time, each down to a floor (past the floors the lines overflow).
    floors = {
        keys.index(k): max(f, len(headers[keys.index(k)])) for k, f in FLOORS.items() if k in keys
    }
    while fixed + MIN_NOTES > width:
        over = [i for i, f in floors.items() if widths[i] > f]
        if not over:
            break
        widest = max(over, key=lambda i: widths[i])
        widths[widest] -= 1
        fixed -= 1
    notes_width = max(LEAST_NOTES, width - fixed)
    lines = [_join([*headers, "NOTES"], widths, gap)]
    for cells in shown:
        wrapped = wrap_notes(cells["notes"], notes_width)
        first = [clip(str(cells[k]), w) for k, w in zip(keys, widths, strict=True)]
        lines.append(_join([*first, wrapped[0]], widths, gap))
        for more in wrapped[1:]:
            lines.append(_join([*([""] * len(keys)), more], widths, gap))
    return "\n".join(lines) + "\n"


def wrap_notes(parts: Sequence[str], width: int, max_lines: int = MAX_NOTE_LINES) -> list[str]:
    """Notes joined with ``; `` into lines of ``width``, broken between notes when they can be.

    At most ``max_lines`` lines; the last one says with an ellipsis that there was more.
    """
    lines: list[str] = []
    current = ""
    for part in (p for p in parts if p):
        joined = f"{current}; {part}" if current else part
        if len(joined) <= width:
            current = joined
            continue
        if current:
            lines.append(current + ";")
        if len(part) <= width:
            current = part
        else:
            chunks = textwrap.wrap(part, width, break_on_hyphens=False) or [""]
            lines += chunks[:-1]
            current = chunks[-1]
    if current:
        lines.append(current)
    if len(lines) > max_lines:
        rest = " ".join(lines[max_lines - 1 :])
        lines = [*lines[: max_lines - 1], clip(rest + " " + ELLIPSIS, width)]
    return lines or [""]


def _join(cells: Sequence[str], widths: Sequence[int], gap: int) -> str:
    head = "".join(c.ljust(w + gap) for c, w in zip(cells[:-1], widths, strict=True))
    return (head + cells[-1]).rstrip()
