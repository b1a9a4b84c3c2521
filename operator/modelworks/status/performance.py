"""The performance check of a live DriftMonitor (``spec.performance``) from one pass to the
next: when it is due, the Job that runs it, its result judged by
:func:`modelworks.status.quality.decide_quality`. Pure: the observed facts and ``now`` come
in; ``status.performance``, the ``ModelQuality`` condition, the Events, the Job to create
and whether the model is degraded (the retraining trigger) come out."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from modelworks import conditions
from modelworks.api.common import parse_duration
from modelworks.api.driftmonitor import DriftMonitorSpec
from modelworks.builders.quality import (
    Window,
    build_performance_job,
    performance_job_name,
    performance_key,
)
from modelworks.conditions import Event
from modelworks.names import format_time, later, parse_time
from modelworks.status.quality import DEGRADED, MODEL_QUALITY, QualityFacts, decide_quality

JOB_POLL = 10.0
RETRY = 30.0
MESSAGE_LIMIT = 500
RESULT_KEYS = ("start", "end", "labelledRows", "metrics")


@dataclass(frozen=True)
class CheckJob:
    """The performance Job named in ``status.performance.checkJob``, as observed."""

    name: str
    finished: str | None = None  # "Complete" or "Failed"
    message: str = ""  # its pod's termination message
    failure: str = ""  # its Failed condition's message


@dataclass(frozen=True)
class PerformanceFacts:
    """What observe read for the performance check."""

    target: str
    model: str = ""
    served: str | None = None  # the target's stable version
    destination: str | None = None  # the target's spec.dataCapture.destination
    job: CheckJob | None = None  # None: no Job in flight (or it is gone)
    baselines: Mapping[str, float] = field(default_factory=dict)  # the served run's metrics
    problem: tuple[str, str] | None = None  # (reason, message): the facts could not be read


@dataclass(frozen=True)
class ApplyPerformanceJob:
    """Create the performance Job (keyed: a pass that dies before it stores the status
    finds the same Job)."""

    body: Mapping[str, Any]


@dataclass(frozen=True)
class PerformanceStep:
    status: Mapping[str, Any] | None  # status.performance (None: leave it out)
    condition: tuple[str, str, str] | None  # ModelQuality (None: unchanged)
    events: tuple[Event, ...] = ()
    job: Mapping[str, Any] | None = None  # the performance Job to create
    requeue: float = JOB_POLL
    degraded: bool = False  # the served version's quality dropped (the retraining trigger)
    reason: str = ""  # which metric and by how much


def performance_due(old: Mapping[str, Any], generation: int | None, now: str) -> float:
    """Seconds until the performance check is next looked at (<= 0: now): at once with a
    Job in flight, a new spec or no check yet."""
    perf = old.get("performance") or {}
    if perf.get("checkJob") or old.get("observedGeneration") != generation:
        return 0.0
    if not perf.get("nextCheckTime"):
        return 0.0
    return (parse_time(str(perf["nextCheckTime"])) - parse_time(now)).total_seconds()


def was_degraded(old: Mapping[str, Any], served: str | None) -> bool:
    """The last check of the version served now found it degraded."""
    cond = conditions.get(old.get("conditions"), MODEL_QUALITY) or {}
    perf = old.get("performance") or {}
    return (
        cond.get("status") == "False"
        and cond.get("reason") == DEGRADED
        and perf.get("servedVersion") == served
    )


def evidence(step: PerformanceStep) -> dict[str, Any]:
    """The performance drop as a retraining's evidence carries it."""
    status = step.status or {}
    return {
        "reason": step.reason[:MESSAGE_LIMIT],
        "labelledRows": status.get("labelledRows"),
        "windowStart": status.get("windowStart"),
        "windowEnd": status.get("windowEnd"),
        "metrics": [
            {k: m.get(k) for k in ("metric", "value", "baseline", "verdict")}
            for m in status.get("metrics") or []
        ],
    }


def job_result(job: CheckJob) -> dict[str, Any] | None:
    """The result a completed performance Job printed, or None."""
    if job.finished != "Complete" or not job.message:
        return None
    try:
        parsed = json.loads(job.message)
    except ValueError:
        return None
    if not isinstance(parsed, dict) or any(k not in parsed for k in RESULT_KEYS):
        return None
    return parsed


def step(
    spec: DriftMonitorSpec,
    facts: PerformanceFacts,
    old: Mapping[str, Any],
    monitor: Mapping[str, Any],
    server: tuple[str, str],
    now: str,
) -> PerformanceStep:
    """This pass's part of the performance check."""
    perf = spec.performance
    assert perf is not None
    previous = dict(old.get("performance") or {})
    keep = was_degraded(old, facts.served)
    if facts.problem is not None:
        return PerformanceStep(previous or None, ("Unknown", *facts.problem), requeue=RETRY)
    if facts.destination is None:
        outcome = decide_quality(perf, QualityFacts(None, captures=False, target=facts.target))
        rest = {k: v for k, v in previous.items() if k != "checkJob"} or None
        return PerformanceStep(rest, outcome.condition, requeue=parse_duration(perf.interval))
    if facts.served is None:
        message = f"ModelDeployment {facts.target} serves no version yet"
        return PerformanceStep(
            previous or None, ("Unknown", "TargetNotServing", message), requeue=RETRY
        )
    if facts.job is not None:
        if facts.job.finished is None:
            return PerformanceStep(previous, None, degraded=keep, reason=_reason(previous, keep))
        return _judged(spec, facts, facts.job, previous, now)
    wait = performance_due(old, monitor["metadata"].get("generation"), now)
    if wait > 0:
        return PerformanceStep(
            previous or None, None, requeue=wait, degraded=keep, reason=_reason(previous, keep)
        )
    return _start(spec, facts, previous, monitor, server, now)


def _reason(previous: Mapping[str, Any], degraded: bool) -> str:
    """Which metrics dropped in the last check (as decide_quality said it)."""
    if not degraded:
        return ""
    bad = [m for m in previous.get("metrics") or [] if m.get("verdict") == "Degraded"]
    return "; ".join(f"{m.get('metric')} {m.get('reason', '')}".strip() for m in bad)


def _start(
    spec: DriftMonitorSpec,
    facts: PerformanceFacts,
    previous: dict[str, Any],
    monitor: Mapping[str, Any],
    server: tuple[str, str],
    now: str,
) -> PerformanceStep:
    """The Job of the check due now, keyed by the due time it is for."""
    assert spec.performance is not None and facts.destination is not None
    meta = monitor["metadata"]
    key = performance_key(str(meta["uid"]), meta.get("generation"), previous.get("nextCheckTime"))
    start = parse_time(now) - timedelta(seconds=parse_duration(spec.performance.window))
    window = Window(facts.destination, facts.model, facts.served, format_time(start), now)
    image, pull_policy = server
    body = build_performance_job(
        monitor, spec, window, key=key, image=image, pull_policy=pull_policy
    )
    status = {**previous, "checkJob": performance_job_name(monitor, key)}
    pending = None if previous.get("lastCheckTime") else ("Unknown", "Pending", "checking")
    return PerformanceStep(status, pending, job=body)


def _judged(
    spec: DriftMonitorSpec,
    facts: PerformanceFacts,
    job: CheckJob,
    previous: dict[str, Any],
    now: str,
) -> PerformanceStep:
    """A finished Job: its result judged, the next check at the interval (a failed Job is
    retried then, never at once)."""
    assert spec.performance is not None
    interval = parse_duration(spec.performance.interval)
    result = job_result(job)
    failure = None
    if result is None:
        failure = f"Job {job.name}: {(job.message or job.failure or 'no result')[:MESSAGE_LIMIT]}"
    outcome = decide_quality(
        spec.performance,
        QualityFacts(
            result,
            baselines=facts.baselines,
            served_version=facts.served,
            target=facts.target,
            failure=failure,
        ),
    )
    base = {k: v for k, v in previous.items() if k != "checkJob"}
    status = {**base, **outcome.status} if result is not None else base
    if result is not None:
        status["lastCheckTime"] = now
    status["nextCheckTime"] = later(now, interval)
    return PerformanceStep(
        status,
        outcome.condition,
        tuple(outcome.events),
        requeue=interval,
        degraded=outcome.degraded,
        reason=outcome.reason,
    )
