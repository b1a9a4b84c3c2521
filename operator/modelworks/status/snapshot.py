"""A DriftMonitor's retraining on fresh data: the snapshot Job's decisions. Pure.

When a retraining is decided and ``spec.retrain.dataset.source`` is Captured, the monitor
first runs a snapshot Job (named by the retraining decision's key) and records it in
``status.snapshot`` (phase Running); the TrainingJob starts once the Job reported the
snapshot (phase Ready). A failed Job (phase Failed) starts nothing: the next retraining
decision, at the monitor's pace, takes a new snapshot.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from modelworks.api.common import parse_duration
from modelworks.api.driftmonitor import DriftMonitorSpec, captured
from modelworks.builders.driftmonitor import build_snapshot_job
from modelworks.conditions import Event
from modelworks.names import format_time, parse_time

CONDITION = "SnapshotReady"
MESSAGE_LIMIT = 1000


@dataclass(frozen=True)
class SnapshotJob:
    """The snapshot Job named in ``status.snapshot.job``, as found (None: it is gone)."""

    name: str
    finished: str | None = None  # "Complete" or "Failed"
    message: str = ""  # the pod's termination message: the result, or the error
    failure: str = ""  # the message of the Job's Failed condition
    trigger: str = "drift"  # the retraining decision's, from the Job's annotations
    evidence: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Capture:
    """What the target ModelDeployment captures (``spec.dataCapture``)."""

    target: str  # the ModelDeployment's name
    model: str  # its model's name (the capture's model= partition)
    destination: str | None  # None: it captures nothing


@dataclass(frozen=True)
class ApplySnapshotJob:
    """Start the snapshot Job ``<monitor>-snap-<key>`` (created, never applied)."""

    body: Mapping[str, Any]


@dataclass(frozen=True)
class Step:
    """What the snapshot part of a pass decided."""

    status: Mapping[str, Any] | None = None  # the new status.snapshot (None: unchanged)
    condition: tuple[bool, str, str] | None = None  # SnapshotReady (None: unchanged)
    events: tuple[Event, ...] = ()
    job: ApplySnapshotJob | None = None
    ready: Mapping[str, Any] | None = None  # the Job's result: start the TrainingJob on it
    trigger: str | None = None


def pending(old: Mapping[str, Any]) -> str | None:
    """The snapshot Job in flight (``status.snapshot`` phase Running), if any."""
    snap = old.get("snapshot") or {}
    return str(snap["job"]) if snap.get("phase") == "Running" and snap.get("job") else None


def no_capture(spec: DriftMonitorSpec, capture: Capture | None) -> tuple[bool, str, str] | None:
    """SnapshotReady=False naming the field when the target captures nothing."""
    if captured(spec) is None or capture is None or capture.destination:
        return None
    return (
        False,
        "NoDataCapture",
        f"spec.retrain.dataset.source is Captured, but ModelDeployment {capture.target} has "
        "no spec.dataCapture: no snapshot can be taken and no retraining starts",
    )


def config(
    spec: DriftMonitorSpec,
    monitor: Mapping[str, Any],
    capture: Capture,
    columns: list[str],
    now: str,
) -> dict[str, Any]:
    """What the snapshot Job is told: where, which window, which columns, how to split."""
    dataset = captured(spec)
    assert dataset is not None and dataset.target is not None and capture.destination
    window = parse_duration(dataset.window or spec.window)
    start = format_time(parse_time(now) - timedelta(seconds=window))
    return {
        "destination": capture.destination,
        "namespace": monitor["metadata"]["namespace"],
        "monitor": monitor["metadata"]["name"],
        "model": capture.model,
        "start": start,
        "end": now,
        "target": dataset.target,
        "minRows": dataset.min_rows,
        "holdoutFraction": dataset.holdout_fraction,
        "columns": columns,
    }


def start(
    spec: DriftMonitorSpec,
    monitor: Mapping[str, Any],
    capture: Capture | None,
    *,
    key: str,
    trigger: str,
    evidence: Mapping[str, Any],
    columns: list[str],
    server: tuple[str, str, str],
    now: str,
) -> Step:
    """A retraining was decided: start its snapshot Job (or say why none can run)."""
    refused = no_capture(spec, capture)
    if refused is not None or capture is None:
        refused = refused or (False, "NoDataCapture", "the target is not known")
        return Step(condition=refused, events=(Event("SnapshotFailed", refused[2], "Warning"),))
    cfg = config(spec, monitor, capture, columns, now)
    body = build_snapshot_job(
        monitor, spec, cfg, key=key, trigger=trigger, evidence=evidence, server=server
    )
    name = body["metadata"]["name"]
    message = f"snapshot Job {name} is reading the captured rows of {cfg['start']} .. {now}"
    status = {
        "job": name,
        "key": key,
        "phase": "Running",
        "windowStart": cfg["start"],
        "windowEnd": now,
        "message": message,
    }
    news = Event("SnapshotStarted", message, "Normal")
    return Step(status, (False, "Materialising", message), (news,), ApplySnapshotJob(body))


def result(job: SnapshotJob) -> dict[str, Any] | None:
    """The snapshot a completed Job reported, or None."""
    if job.finished != "Complete" or not job.message:
        return None
    try:
        parsed = json.loads(job.message)
    except ValueError:
        return None
    ok = isinstance(parsed, dict) and all(parsed.get(k) for k in ("uri", "digest"))
    return parsed if ok else None


def progress(old: Mapping[str, Any], job: SnapshotJob | None, monitor: str) -> Step:
    """The snapshot Job in flight: still running, ready (start the TrainingJob), or failed."""
    snap = dict(old.get("snapshot") or {})
    name = str(snap.get("job") or "")
    if job is not None and job.finished is None:
        return Step()
    found = result(job) if job is not None else None
    if found is None:
        why = "it no longer exists" if job is None else (job.message or job.failure or "no result")
        reason = "TooFewRows" if why.startswith("TooFewRows:") else "SnapshotFailed"
        message = f"snapshot Job {name}: {why}"[:MESSAGE_LIMIT]
        status = {**snap, "phase": "Failed", "message": message}
        news = Event(reason, message, "Warning")
        return Step(status, (False, reason, message), (news,))
    fields = ("uri", "digest", "holdoutUri", "rows", "holdoutRows", "reused")
    status = {**snap, **{k: found[k] for k in fields if found.get(k) is not None}}
    how = "reused" if found.get("reused") else "written"
    message = (
        f"snapshot {found['digest']} {how}: {found.get('rows')} training rows, "
        f"{found.get('holdoutRows')} holdout rows, at {found['uri']}"
    )
    status.update(phase="Ready", message=message)
    assert job is not None
    news = Event("SnapshotReady", f"{message} (monitor {monitor})", "Normal")
    reason = "Reused" if found.get("reused") else "Materialised"
    return Step(status, (True, reason, message), (news,), ready=found, trigger=job.trigger)


def standing(
    spec: DriftMonitorSpec, capture: Capture | None, old: Mapping[str, Any] | None
) -> tuple[bool, str, str] | None:
    """SnapshotReady between retrainings: NoDataCapture while the target captures nothing,
    and no longer once it does."""
    missing = no_capture(spec, capture)
    if missing is not None:
        return missing
    if captured(spec) is not None and (old or {}).get("reason") == "NoDataCapture":
        return (
            False,
            "Waiting",
            "the target captures its traffic: a snapshot is taken when a retraining is decided",
        )
    return None


def refused(old: Mapping[str, Any], training_job: str, message: str) -> Mapping[str, Any]:
    """status.snapshot when the API refused the TrainingJob that was to train on it."""
    return {
        **dict(old.get("snapshot") or {}),
        "phase": "Failed",
        "trainingJob": training_job,
        "message": message[:MESSAGE_LIMIT],
    }
