"""DriftMonitor: what a check found -> status, Events, and whether to retrain. Pure."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from modelworks import conditions
from modelworks.api.common import parse_duration
from modelworks.api.driftmonitor import DriftMonitorSpec
from modelworks.conditions import Event
from modelworks.drift.engine import (
    Calibration,
    DatasetResult,
    DriftConfig,
    FeatureOverride,
    hysteresis,
)
from modelworks.names import format_time, parse_time
from modelworks.schedule import Cron

RESULT_LIMIT = 3800  # bytes: a batch Job reports through its termination message (4096)


def config_of(spec: DriftMonitorSpec) -> DriftConfig:
    """The engine's configuration from the spec."""
    return DriftConfig(
        method=spec.method,
        threshold=spec.threshold,
        features={
            f.name: FeatureOverride(
                method=f.method, threshold=f.threshold, enabled=f.enabled, type=f.type
            )
            for f in spec.features or []
        },
        calibration=Calibration(spec.calibration.samples, spec.calibration.quantile)
        if spec.calibration
        else None,
        correction=spec.correction,
        drift_share=spec.drift_share,
        min_samples=spec.min_samples,
    )


def _num(value: float | None, digits: int = 6) -> float | None:
    if value is None:
        return None
    return float(f"{value:.{digits}g}")


def result_fields(result: DatasetResult) -> dict[str, Any]:
    """The status fields of one check (also what a batch Job prints)."""
    features = []
    for f in result.features:
        entry: dict[str, Any] = {
            "name": f.name,
            "method": f.method,
            "score": _num(f.score),
            "threshold": _num(f.threshold),
            "drifted": f.drifted,
            "samples": f.samples,
            "missing": f.missing or None,
            "approximate": f.approximate or None,
            "note": f.note or None,
        }
        features.append({k: v for k, v in entry.items() if v is not None})
    out: dict[str, Any] = {
        "verdict": result.verdict,
        "samples": result.samples,
        "features": features,
    }
    if result.drifted_share is not None:
        out["driftedShare"] = _num(result.drifted_share, 4)
    return out


def compact(fields: Mapping[str, Any], limit: int = RESULT_LIMIT) -> dict[str, Any]:
    """``fields`` cut to fit ``limit`` bytes of JSON: notes first, then undrifted features."""
    import json

    out = dict(fields)

    def size() -> int:
        return len(json.dumps(out, separators=(",", ":")))

    if size() <= limit:
        return out
    out["features"] = [{k: v for k, v in f.items() if k != "note"} for f in out["features"]]
    while size() > limit and out["features"]:
        rest = [f for f in out["features"] if not f.get("drifted")]
        drop = rest[-1] if rest else out["features"][-1]
        out["features"] = [f for f in out["features"] if f is not drop]
        out["truncated"] = True
    return out


def due(old: Mapping[str, Any], generation: int | None, now: str) -> float:
    """Seconds until the next check (<= 0: check now). A new spec is checked at once."""
    if old.get("observedGeneration") != generation or not old.get("nextCheckTime"):
        return 0.0
    return (parse_time(str(old["nextCheckTime"])) - parse_time(now)).total_seconds()


@dataclass(frozen=True)
class RetrainPlan:
    trigger: str | None  # "drift" or "schedule": start one now
    reason: str = ""  # why (or why not)
    next_scheduled: str | None = None


def plan_retrain(
    spec: DriftMonitorSpec,
    old: Mapping[str, Any],
    *,
    declared: bool,
    active: int,
    created: str,
    now: str,
) -> RetrainPlan:
    """Whether to start a retraining now: drift declared (or a schedule due), the cooldown
    since the last one passed, and fewer than ``maxConcurrent`` retrainings running."""
    retrain = spec.retrain
    if retrain is None:
        return RetrainPlan(None)
    next_scheduled = old.get("nextScheduledRetrain")
    if retrain.schedule:
        cron = Cron.parse(retrain.schedule)
        if not next_scheduled:
            next_scheduled = format_time(cron.next_after(parse_time(created)))
    else:
        next_scheduled = None
    trigger = None
    if retrain.on_drift and declared:
        trigger = "drift"
    elif next_scheduled and parse_time(next_scheduled) <= parse_time(now):
        trigger = "schedule"
        next_scheduled = format_time(Cron.parse(retrain.schedule or "").next_after(parse_time(now)))
    if trigger is None:
        return RetrainPlan(None, next_scheduled=next_scheduled)
    last = (old.get("lastRetrain") or {}).get("at")
    cooldown = parse_duration(retrain.cooldown)
    if (
        trigger == "drift"
        and last
        and parse_time(last) + timedelta(seconds=cooldown) > parse_time(now)
    ):
        return RetrainPlan(
            None,
            f"drift, but the last retraining started at {last} (cooldown {retrain.cooldown})",
            next_scheduled,
        )
    if active >= retrain.max_concurrent:
        return RetrainPlan(
            None,
            f"{active} retraining(s) still running (maxConcurrent {retrain.max_concurrent})",
            next_scheduled,
        )
    return RetrainPlan(trigger, "", next_scheduled)


@dataclass(frozen=True)
class CheckFacts:
    """One pass of a DriftMonitor."""

    problem: tuple[str, str] | None = None  # (reason, message): no check possible
    check: Mapping[str, Any] | None = None  # result_fields() of a new window
    served_version: str | None = None
    pods: int | None = None
    window_start: str | None = None
    next_check: str | None = None
    check_job: str | None = None  # a batch Job in flight
    retrain: RetrainPlan = field(default_factory=lambda: RetrainPlan(None))
    retrained: str | None = None  # the TrainingJob started in this pass
    waiting: str = ""  # what a batch check waits for


def assess(
    spec: DriftMonitorSpec, old: Mapping[str, Any], check: Mapping[str, Any]
) -> tuple[int, bool, bool]:
    """``(consecutive drifting windows, declared, newly declared)`` after this window."""
    verdict = check.get("verdict")
    drift = None if verdict == "InsufficientData" else verdict == "Drift"
    previous = int(old.get("consecutiveDriftWindows") or 0)
    h = hysteresis(previous, drift, spec.consecutive_windows)
    was = conditions.is_true(old.get("conditions"), "DriftDetected")
    return h.consecutive, h.declared, h.declared and not was


def compute(
    obj: Mapping[str, Any], spec: DriftMonitorSpec, facts: CheckFacts, now: str
) -> tuple[dict[str, Any], list[Event]]:
    """The whole new status and the Events of this pass."""
    generation = (obj.get("metadata") or {}).get("generation")
    old = dict(obj.get("status") or {})
    name = obj["metadata"]["name"]
    status: dict[str, Any] = {"observedGeneration": generation}
    keep = (
        "verdict",
        "driftedShare",
        "samples",
        "servedVersion",
        "consecutiveDriftWindows",
        "lastCheckTime",
        "nextCheckTime",
        "features",
        "lastRetrain",
        "retrainCount",
        "nextScheduledRetrain",
        "windowStart",
        "pods",
    )
    status.update({k: old[k] for k in keep if k in old})
    events: list[Event] = []
    conds = conditions.remove(old.get("conditions"), "Stalled")

    def put(type_: str, value: bool, reason: str, message: str) -> None:
        nonlocal conds
        conds = conditions.set_condition(
            conds, type_, value, reason, message, now=now, generation=generation
        )

    if facts.served_version is not None:
        status["servedVersion"] = facts.served_version
    if facts.pods is not None:
        status["pods"] = facts.pods
    if facts.next_check is not None:
        status["nextCheckTime"] = facts.next_check
    if facts.check_job:
        status["checkJob"] = facts.check_job
    if facts.retrain.next_scheduled:
        status["nextScheduledRetrain"] = facts.retrain.next_scheduled

    declared = conditions.is_true(old.get("conditions"), "DriftDetected")
    if spec.suspend:
        put("Ready", True, "Suspended", "checks are suspended (spec.suspend)")
        status["phase"] = "Suspended"
        status.pop("nextCheckTime", None)
    elif facts.problem is not None:
        reason, message = facts.problem
        put("Ready", False, reason, message)
        status["phase"] = "Failed" if reason in ("InvalidReference", "CheckFailed") else "Pending"
    elif facts.check is not None:
        check = facts.check
        consecutive, declared, newly = assess(spec, old, check)
        status.update(
            {
                "verdict": check["verdict"],
                "samples": check.get("samples", 0),
                "features": list(check.get("features") or []),
                "consecutiveDriftWindows": consecutive,
                "lastCheckTime": now,
            }
        )
        if "driftedShare" in check:
            status["driftedShare"] = check["driftedShare"]
        else:
            status.pop("driftedShare", None)
        if facts.window_start:
            status["windowStart"] = facts.window_start
        drifted = [f["name"] for f in check.get("features") or [] if f.get("drifted")]
        scored = [f for f in check.get("features") or [] if f.get("score") is not None]
        summary = (
            f"{len(drifted)} of {len(scored)} features drifted"
            + (f" ({', '.join(drifted)})" if drifted else "")
            + f" in {check.get('samples', 0)} rows"
        )
        if check["verdict"] == "InsufficientData":
            put(
                "Ready",
                True,
                "InsufficientData",
                f"fewer than {spec.min_samples} rows in the window ({check.get('samples', 0)})",
            )
        else:
            put("Ready", True, "Monitoring", f"last window: {summary}")
        if declared:
            put(
                "DriftDetected",
                True,
                "DriftDetected",
                f"{summary}; {consecutive} drifting window(s) in a row",
            )
            if newly:
                events.append(Event("DriftDetected", summary, "Warning"))
        else:
            was = conditions.is_true(old.get("conditions"), "DriftDetected")
            reason = "InsufficientData" if check["verdict"] == "InsufficientData" else "NoDrift"
            if check["verdict"] == "Drift":
                reason = "DriftPending"
                summary += f"; {consecutive} of {spec.consecutive_windows} windows in a row"
            put("DriftDetected", False, reason, summary)
            if was and check["verdict"] == "NoDrift":
                events.append(Event("DriftResolved", summary, "Normal"))
        status["phase"] = "Drifting" if declared else "Monitoring"
    else:
        # Between checks (or waiting for a batch Job): nothing new to say.
        if conditions.get(conds, "Ready") is None:
            put("Ready", False, "Waiting", facts.waiting or "waiting for the first check")
        elif facts.waiting:
            ready = conditions.get(conds, "Ready") or {}
            put(
                "Ready",
                ready.get("status") == "True",
                str(ready.get("reason") or "Waiting"),
                str(ready.get("message") or facts.waiting),
            )
        status["phase"] = old.get("phase") or "Pending"
        if status["phase"] in ("Suspended", "Failed"):
            status["phase"] = "Pending"
    if conditions.get(conds, "DriftDetected") is None:
        put("DriftDetected", False, "NoCheckYet", "no window has been scored yet")

    if facts.retrained:
        count = int(old.get("retrainCount") or 0) + 1
        status["retrainCount"] = count
        reason = facts.retrain.trigger or "drift"
        detail = status.get("verdict", "")
        status["lastRetrain"] = {
            "trainingJob": facts.retrained,
            "at": now,
            "reason": f"{reason}" + (f" ({detail})" if reason == "drift" and detail else ""),
        }
        events.append(
            Event(
                "RetrainStarted",
                f"TrainingJob {facts.retrained} started ({reason}) by {name}",
                "Normal",
            )
        )
    elif facts.retrain.reason and facts.check is not None and declared:
        events.append(Event("RetrainSkipped", facts.retrain.reason, "Normal"))
    status["conditions"] = conds
    return status, events
