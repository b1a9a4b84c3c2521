"""What the ``modelworks`` command shows people: lineage tables, progress bars, outcomes.

Pure: objects come in as the plain dicts the API server returns, strings and plain
structures (ready for ``json.dumps``) go out. No I/O and no clock: ``now`` is passed in.
The command in ``cli.py`` does the listing and the polling.
"""

from __future__ import annotations

import textwrap
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from typing import Any

from modelworks import conditions
from modelworks.api import BY_KIND, DRIFT_MONITOR, MODEL_DEPLOYMENT, TRAINING_JOB
from modelworks.names import MONITOR_LABEL, RETRAIN_OF_LABEL, parse_time_or_none

# Metrics that measure the run's progress rather than the model.
PROGRESS_METRICS = frozenset({"progress", "epoch", "step"})
ELLIPSIS = "..."
TREE = "\\_ "  # ASCII, like `ps --forest`: safe on any terminal and in any log

Facts = Mapping[tuple[str, str], Mapping[str, Any]]


# --- small helpers ---------------------------------------------------------------------


def _status(obj: Mapping[str, Any]) -> dict[str, Any]:
    return dict(obj.get("status") or {})


def _meta(obj: Mapping[str, Any]) -> dict[str, Any]:
    return dict(obj.get("metadata") or {})


def _spec(obj: Mapping[str, Any]) -> dict[str, Any]:
    return dict(obj.get("spec") or {})


def _sort_key(obj: Mapping[str, Any]) -> tuple[str, str]:
    meta = _meta(obj)
    return str(meta.get("namespace") or ""), str(meta.get("name") or "")


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
    cond = conditions.get(_status(obj).get("conditions"), type_)
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
    generation = _meta(obj).get("generation")
    observed = _status(obj).get("observedGeneration")
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


# --- one object, summarised ------------------------------------------------------------


def _base(obj: Mapping[str, Any], kind: str) -> dict[str, Any]:
    meta = _meta(obj)
    st = _status(obj)
    return {
        "kind": kind,
        "name": meta.get("name"),
        "namespace": meta.get("namespace"),
        "phase": st.get("phase"),
        "condition": summary_condition(obj, kind),
        "stale": stale(obj),
    }


def training_job(obj: Mapping[str, Any]) -> dict[str, Any]:
    """What the lineage needs to know about one TrainingJob."""
    st = _status(obj)
    labels = _meta(obj).get("labels") or {}
    registered = st.get("registeredModel") or None
    gate = st.get("qualityGate") or None
    spec_model = _spec(obj).get("model") or {}
    return {
        **_base(obj, TRAINING_JOB.kind),
        "model": (registered or {}).get("name") or spec_model.get("name"),
        "registeredModel": (
            {k: registered.get(k) for k in ("name", "version", "alias")} if registered else None
        ),
        "progress": (st.get("progress") or {}).get("percent"),
        "qualityGate": (
            {"passed": gate.get("passed"), "summary": gate.get("summary")} if gate else None
        ),
        "runId": (st.get("mlflow") or {}).get("runId"),
        "driftMonitor": labels.get(MONITOR_LABEL),
        "retrainOf": labels.get(RETRAIN_OF_LABEL),
    }


def model_deployment(obj: Mapping[str, Any]) -> dict[str, Any]:
    """What the lineage needs to know about one ModelDeployment."""
    st = _status(obj)
    model = _spec(obj).get("model") or {}
    canary = st.get("canary") or {}
    rollback = st.get("rollback") or None
    return {
        **_base(obj, MODEL_DEPLOYMENT.kind),
        "modelRef": {k: model.get(k) for k in ("name", "version", "alias")},
        "resolvedVersion": (st.get("resolved") or {}).get("version"),
        "resolvedAlias": (st.get("resolved") or {}).get("alias"),
        "stableVersion": st.get("stableVersion"),
        "canary": (
            {k: canary.get(k) for k in ("version", "weight", "replicas", "readyReplicas")}
            if canary.get("version")
            else None
        ),
        "replicas": st.get("replicas"),
        "readyReplicas": st.get("readyReplicas"),
        "rollback": (
            {k: rollback.get(k) for k in ("fromVersion", "toVersion", "reason", "at")}
            if rollback
            else None
        ),
    }


def drift_monitor(obj: Mapping[str, Any]) -> dict[str, Any]:
    """What the lineage needs to know about one DriftMonitor (fields may be missing)."""
    st = _status(obj)
    spec = _spec(obj)
    target = ((spec.get("target") or {}).get("modelDeployment") or {}).get("name")
    last = st.get("lastRetrain") or None
    return {
        **_base(obj, DRIFT_MONITOR.kind),
        "target": target,
        "batch": bool(spec.get("batch")),
        "verdict": st.get("verdict"),
        "driftedShare": st.get("driftedShare"),
        "lastCheckTime": st.get("lastCheckTime"),
        "servedVersion": st.get("servedVersion"),
        "lastRetrain": (
            {k: last.get(k) for k in ("trainingJob", "at", "reason")} if last else None
        ),
    }


def placements(dep: Mapping[str, Any]) -> list[tuple[str | None, str]]:
    """(version, role) for each version a deployment has to do with.

    ``stable`` serves, ``canary`` takes a share of the traffic, ``rolling out`` is where a
    rolling update is heading, ``target`` is what the spec resolves to but nothing serves
    (after a rollback, say); ``unresolved`` (version None) when nothing is known yet.
    """
    out: list[tuple[str | None, str]] = []
    stable = dep.get("stableVersion")
    canary = (dep.get("canary") or {}).get("version")
    resolved = dep.get("resolvedVersion")
    if stable:
        out.append((str(stable), "stable"))
    if canary and canary != stable:
        out.append((str(canary), "canary"))
    if resolved and resolved not in (stable, canary):
        role = "rolling out" if dep.get("phase") == "Progressing" else "target"
        out.append((str(resolved), role))
    return out or [(None, "unresolved")]


# --- the lineage -------------------------------------------------------------------------


def lineage(
    training_jobs: Iterable[Mapping[str, Any]],
    deployments: Iterable[Mapping[str, Any]],
    monitors: Iterable[Mapping[str, Any]],
    *,
    registry: Facts | None = None,
) -> dict[str, Any]:
    """All objects, grouped by model name, then by version: TJ -> version -> MDEP -> DMON.

    ``registry`` maps (model, version) to MLflow facts (``runId``, ``aliases``,
    ``metrics``). Without it the aliases are what the objects last saw. Version ``None``
    collects what has no version yet: a TrainingJob still running, a deployment that
    resolved nothing. TrainingJobs without a model and monitors without a deployment
    to attach to are under ``unattached``.
    """
    models: dict[str, dict[str | None, dict[str, Any]]] = {}

    def slot(model: str, version: str | None) -> dict[str, Any]:
        versions = models.setdefault(model, {})
        if version not in versions:
            versions[version] = {
                "version": version,
                "aliases": [],
                "mlflow": None,
                "trainingJobs": [],
                "deployments": [],
            }
        return versions[version]

    loose_jobs: list[dict[str, Any]] = []
    alias_claims: dict[str, dict[str, list[tuple[int, str]]]] = {}  # model -> alias -> claims

    def claim(model: str, alias: Any, version: Any, strength: int) -> None:
        if alias and version:
            alias_claims.setdefault(model, {}).setdefault(str(alias), []).append(
                (strength, str(version))
            )

    for obj in sorted(training_jobs, key=_sort_key):
        tj = training_job(obj)
        if not tj["model"]:
            loose_jobs.append(tj)
            continue
        reg = tj["registeredModel"] or {}
        version = str(reg["version"]) if reg.get("version") else None
        slot(tj["model"], version)["trainingJobs"].append(tj)
        claim(tj["model"], reg.get("alias"), version, 0)

    by_target: dict[tuple[Any, Any], list[tuple[str | None, dict[str, Any]]]] = {}
    for obj in sorted(deployments, key=_sort_key):
        dep = model_deployment(obj)
        model = dep["modelRef"].get("name") or "-"
        claim(model, dep["resolvedAlias"], dep["resolvedVersion"], 1)
        for version, role in placements(dep):
            entry = {**dep, "role": role, "driftMonitors": []}
            slot(model, version)["deployments"].append(entry)
            by_target.setdefault((dep["namespace"], dep["name"]), []).append((version, entry))

    loose_monitors: list[dict[str, Any]] = []
    for obj in sorted(monitors, key=_sort_key):
        mon = drift_monitor(obj)
        entries = by_target.get((mon["namespace"], mon["target"])) if mon["target"] else None
        if not entries:
            loose_monitors.append(mon)
            continue
        served = mon["servedVersion"]
        chosen = (
            next((e for v, e in entries if served and v == str(served)), None)
            or next((e for _, e in entries if e["role"] == "stable"), None)
            or entries[0][1]
        )
        chosen["driftMonitors"].append(mon)

    out_models = []
    for model in sorted(models):
        versions = models[model]
        holders = _alias_holders(alias_claims.get(model, {}))
        facts_by_version = {v: (registry or {}).get((model, v)) for v in versions if v is not None}
        # Aliases the registry places: authoritative over what the objects last saw.
        registry_aliases = {
            a for f in facts_by_version.values() if f for a in (f.get("aliases") or ())
        }
        for version, entry in versions.items():
            facts = facts_by_version.get(version) if version is not None else None
            if facts:
                entry["aliases"] = sorted(str(a) for a in facts.get("aliases") or ())
                entry["mlflow"] = {
                    "runId": facts.get("runId"),
                    "metrics": dict(facts.get("metrics") or {}),
                }
            elif version is not None:
                entry["aliases"] = sorted(
                    a for a, v in holders.items() if v == version and a not in registry_aliases
                )
        out_models.append(
            {
                "name": model,
                "versions": [versions[v] for v in sorted(versions, key=version_key)],
            }
        )
    return {
        "models": out_models,
        "unattached": {"trainingJobs": loose_jobs, "driftMonitors": loose_monitors},
    }


def _alias_holders(claims: Mapping[str, list[tuple[int, str]]]) -> dict[str, str]:
    """alias -> version: what a deployment resolved wins over what a TrainingJob set; newest wins."""
    return {
        alias: max(found, key=lambda c: (c[0], version_key(c[1])))[1]
        for alias, found in claims.items()
    }


def model_versions(tree: Mapping[str, Any]) -> list[tuple[str, str]]:
    """Every (model, version) in a lineage: what to ask the registry about."""
    return [
        (m["name"], v["version"])
        for m in tree.get("models") or ()
        for v in m.get("versions") or ()
        if v.get("version") is not None and m["name"] != "-"
    ]


# --- the lineage as a table ---------------------------------------------------------------

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
        notes.append(f"gate{_gate_verdict(gate.get('passed'), ' ')}: {gate['summary']}")
    if tj.get("retrainOf") or tj.get("driftMonitor"):
        text = "retrain"
        if tj.get("retrainOf"):
            text += f" of tj/{tj['retrainOf']}"
        if tj.get("driftMonitor"):
            text += f" by dmon/{tj['driftMonitor']}"
        notes.append(text)
    return notes


def _gate_verdict(passed: Any, prefix: str = "") -> str:
    if passed is True:
        return prefix + "passed"
    if passed is False:
        return prefix + "failed"
    return ""


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


# --- watching a TrainingJob ---------------------------------------------------------------

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
    st = _status(obj)
    name = _meta(obj).get("name")
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
        str(rule.get("metric")) for rule in (_spec(obj).get("qualityGate") or []) if rule
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
    phase = _status(obj).get("phase")
    if phase == "Succeeded":
        return 0
    if phase == "Failed":
        return 1
    return None


def outcome_lines(obj: Mapping[str, Any] | None, *, name: str = "") -> list[str]:
    """What to print when the watch ends: the registered version or why it failed."""
    if obj is None:
        return [f"Failed: tj/{name} was deleted"]
    st = _status(obj)
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
        verdict = _gate_verdict(gate.get("passed"), " ") or " not evaluated"
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
