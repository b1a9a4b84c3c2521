"""DriftMonitor: what a pass observed -> status, Events, and the writes to make. Pure.

:func:`decide` runs the drift engine on the counts it is given (live mode) or reads the
batch Job's result, then decides the status and whether to start a batch check or a
retraining; :func:`compute` builds the status of what the pass found.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any

from modelworks import conditions
from modelworks.api import DRIFT_MONITOR
from modelworks.api.common import parse_duration
from modelworks.api.driftmonitor import DriftMonitorSpec, captured
from modelworks.builders.driftmonitor import (
    build_batch_job,
    build_retrain,
    retrain_key,
    retrain_name,
)
from modelworks.builders.modeldeployment import ServerConfig
from modelworks.conditions import Event
from modelworks.drift.engine import (
    MAX_CELLS,
    Calibration,
    DatasetResult,
    DriftConfig,
    FeatureOverride,
    FeatureResult,
    WindowCounts,
    dataset_verdict,
    hysteresis,
    score_counts,
)
from modelworks.drift.profile import Profile
from modelworks.drift.statistics import STATISTICS
from modelworks.drift.window import Window
from modelworks.names import format_time, later, parse_time
from modelworks.schedule import Cron
from modelworks.status import performance as quality
from modelworks.status import snapshot as snap
from modelworks.status.decision import Decision, StatusBuilder
from modelworks.status.quality import MODEL_QUALITY

RESULT_LIMIT = 3800  # bytes: a batch Job reports through its termination message (4096)
JOB_POLL = 10.0  # seconds between looks at a running batch check
RETRY = 30.0  # seconds before a live check that could not run is tried again
# Retraining=False reasons of a retraining that failed or was never created: a new spec
# may retrain at once, without waiting for the cooldown.
RETRAIN_FAILURES = frozenset({"RetrainFailed", "RetrainRefused", "NameTaken"})


def config_of(spec: DriftMonitorSpec, max_cells: int = MAX_CELLS) -> DriftConfig:
    """The engine's configuration from the spec (``max_cells``: the operator's calibration
    budget for one check)."""
    return DriftConfig(
        method=spec.method,
        threshold=spec.threshold,
        features={
            f.name: FeatureOverride(
                method=f.method, threshold=f.threshold, enabled=f.enabled, type=f.type
            )
            for f in spec.features or []
        },
        calibration=Calibration(
            spec.calibration.samples, spec.calibration.quantile, max_cells=max_cells
        )
        if spec.calibration
        else None,
        correction=spec.correction,
        drift_share=spec.drift_share,
        min_samples=spec.min_samples,
    )


def watches_predictions(spec: DriftMonitorSpec, profile: Profile) -> bool:
    """Prediction drift is scored when the profile has outputs and spec.predictions allows."""
    return bool(profile.outputs) and (spec.predictions is None or spec.predictions.enabled)


def prediction_config(spec: DriftMonitorSpec, config: DriftConfig) -> DriftConfig:
    """How the model's outputs are scored: spec.predictions' method and threshold, else the
    monitor's (its threshold only for a method of the same kind); no per-feature overrides."""
    own = spec.predictions
    method = (own.method if own else None) or spec.method
    threshold = own.threshold if own else None
    if threshold is None and STATISTICS[method].kind == STATISTICS[spec.method].kind:
        threshold = spec.threshold
    return replace(config, method=method, threshold=threshold, features={})


def _num(value: float | None, digits: int = 6) -> float | None:
    if value is None:
        return None
    return float(f"{value:.{digits}g}")


def result_fields(
    result: DatasetResult, predictions: DatasetResult | None = None, drift_share: float = 0.5
) -> dict[str, Any]:
    """The status fields of one check (also what a batch Job prints). With ``predictions``
    (the model's outputs, scored) each output counts like a feature in the verdict and
    the drifted share (at least ``drift_share`` of all scored entries drifted: Drift)."""
    out: dict[str, Any] = {
        "verdict": result.verdict,
        "samples": result.samples,
        "features": score_entries(result.features),
    }
    share = result.drifted_share
    if predictions is not None:
        out["predictions"] = score_entries(predictions.features)
        out["verdict"], share = dataset_verdict(
            (*result.features, *predictions.features), drift_share
        )
    if share is not None:
        out["driftedShare"] = _num(share, 4)
    return out


def score_entries(results: tuple[FeatureResult, ...]) -> list[dict[str, Any]]:
    """One status entry per scored feature or output."""
    features = []
    for f in results:
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
    return features


def compact(fields: Mapping[str, Any], limit: int = RESULT_LIMIT) -> dict[str, Any]:
    """``fields`` cut to fit ``limit`` bytes of JSON: notes first, then undrifted features."""
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
    generation: int | None = None,
    degraded: bool = False,
) -> RetrainPlan:
    """Whether to start a retraining now: drift declared (or a schedule due), the cooldown
    since the last one passed (or it failed under an earlier ``generation`` of the spec),
    and fewer than ``maxConcurrent`` retrainings running."""
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
    elif retrain.on_drift and degraded:
        trigger = "performance"
    elif next_scheduled and parse_time(next_scheduled) <= parse_time(now):
        trigger = "schedule"
        next_scheduled = format_time(Cron.parse(retrain.schedule or "").next_after(parse_time(now)))
    if trigger is None:
        return RetrainPlan(None, next_scheduled=next_scheduled)
    last = (old.get("lastRetrain") or {}).get("at")
    cooldown = parse_duration(retrain.cooldown)
    if (
        trigger in ("drift", "performance")
        and last
        and not failed_under_older_spec(old, generation)
        and parse_time(last) + timedelta(seconds=cooldown) > parse_time(now)
    ):
        return RetrainPlan(
            None,
            f"{trigger}, but the last retraining started at {last} (cooldown {retrain.cooldown})",
            next_scheduled,
        )
    if active >= retrain.max_concurrent:
        return RetrainPlan(
            None,
            f"{active} retraining(s) still running (maxConcurrent {retrain.max_concurrent})",
            next_scheduled,
        )
    return RetrainPlan(trigger, "", next_scheduled)


def failed_under_older_spec(old: Mapping[str, Any], generation: int | None) -> bool:
    """The last retraining failed (or was refused) and the spec changed since."""
    cond = conditions.get(old.get("conditions"), "Retraining") or {}
    return (
        cond.get("status") == "False"
        and cond.get("reason") in RETRAIN_FAILURES
        and cond.get("observedGeneration") != generation
    )


# --- what a pass observed, and what it may write --------------------------------------


@dataclass(frozen=True)
class LiveCheck:
    """What the serving pods (or Prometheus) counted for the served version."""

    served: str  # the target's stable version
    profile: Profile  # its reference profile
    window: Window  # counts per feature, pods, since (the baseline snapshot's time)
    prometheus: bool = False  # the window is Prometheus's [now - spec.window, now]
    outputs: Window | None = None  # counts per model output (prediction drift), if watched
    capture: snap.Capture | None = None  # what the target captures (retraining on fresh data)


@dataclass(frozen=True)
class BatchJob:
    """The batch check Job named in ``status.checkJob``, as found."""

    name: str
    finished: str | None = None  # "Complete" or "Failed"
    message: str = ""  # the check pod's termination message
    failure: str = ""  # the message of the Job's Failed condition


@dataclass(frozen=True)
class LastRetrain:
    """The TrainingJob named in ``status.lastRetrain``, as found."""

    name: str
    state: str  # "Running", "Succeeded" or "Failed"
    message: str = ""  # its summary condition's message


@dataclass(frozen=True)
class RetrainFacts:
    active: int = 0  # this monitor's retraining TrainingJobs (by uid) not finished yet
    source_spec: Mapping[str, Any] | None = None  # spec.retrain.fromTrainingJob's (None: absent)
    last: LastRetrain | None = None  # None: no record, or its TrainingJob is gone
    refused: tuple[str, str] | None = None  # (reason, message): the API refused this pass's
    running: frozenset[str] = frozenset()  # the names of those ``active`` ones


@dataclass(frozen=True)
class Facts:
    """What ``observe`` read for one pass of a DriftMonitor."""

    monitor: Mapping[str, Any]  # the object's apiVersion, kind and metadata
    server: ServerConfig | None = None  # image and MLflow address for a batch check Job
    problem: tuple[str, str] | None = None  # (reason, message): no live check possible
    live: LiveCheck | None = None
    job: BatchJob | None = None  # batch mode: the check Job in flight, if it still exists
    retrain: RetrainFacts = field(default_factory=RetrainFacts)
    calibration_cells: int = MAX_CELLS  # the operator's budget for a live check's bootstrap
    snapshot: snap.SnapshotJob | None = None  # the snapshot Job in flight (None: none, or gone)
    snapshot_only: bool = False  # a snapshot Job is in flight and no check is due: poll it
    performance: quality.PerformanceFacts | None = None  # spec.performance's check
    performance_only: bool = False  # the performance check is due, the drift check is not


@dataclass(frozen=True)
class ApplyBatchJob:
    """Start a batch check: its name is keyed by uid, generation and the check it is for."""

    body: Mapping[str, Any]


@dataclass(frozen=True)
class StartRetrain:
    """Create the retraining TrainingJob ``<monitor>-r-<key>`` (create, never apply: one of
    this monitor's found under that name is this decision's, started by a pass whose status
    write was lost)."""

    body: Mapping[str, Any]


Action = ApplyBatchJob | StartRetrain | snap.ApplySnapshotJob | quality.ApplyPerformanceJob


@dataclass(frozen=True)
class CheckFacts:
    """What one pass found, as the status reports it."""

    problem: tuple[str, str] | None = None  # (reason, message): no check possible
    check: Mapping[str, Any] | None = None  # result_fields() of a new window
    served_version: str | None = None
    pods: int | None = None
    window_start: str | None = None
    next_check: str | None = None
    check_job: str | None = None  # a batch Job in flight
    retrain: RetrainPlan = field(default_factory=lambda: RetrainPlan(None))
    retrained: str | None = None  # the TrainingJob started in this pass
    refused: tuple[str, str, str] | None = None  # (TrainingJob, reason, message): not created
    last_retrain: LastRetrain | None = None
    waiting: str = ""  # what a batch check waits for
    snapshot: snap.Step = field(default_factory=snap.Step)
    performance: quality.PerformanceStep | None = None


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


# --- decide ---------------------------------------------------------------------------


def decide(
    spec: DriftMonitorSpec, facts: Facts, old: Mapping[str, Any], now: str
) -> Decision[Action]:
    """The status, Events and writes of one pass, from what ``observe`` read."""
    meta = facts.monitor["metadata"]
    interval = parse_duration(spec.interval)
    if spec.suspend:
        return replace(compute(meta, spec, CheckFacts(), old, now), result="suspended")
    if facts.snapshot_only:
        return _snapshot_progress(spec, facts, old, CheckFacts(), now, interval)
    if spec.batch is not None:
        return _decide_batch(spec, facts, old, now, interval)
    if facts.performance_only:
        return _performance_only(spec, facts, old, now)
    if facts.problem is not None:
        return _live_problem(meta, spec, old, facts.problem, now, interval)
    live = facts.live
    assert live is not None, "observe reports a live check or a problem"
    config = config_of(spec, facts.calibration_cells)
    result = score_counts(
        live.profile,
        {f: WindowCounts(c, m) for f, (c, m) in live.window.counts.items()},
        config,
    )
    predictions = None
    if live.outputs is not None and watches_predictions(spec, live.profile):
        predictions = score_counts(
            live.profile.outputs,
            {f: WindowCounts(c, m) for f, (c, m) in live.outputs.counts.items()},
            prediction_config(spec, config),
        )
    since = (
        parse_time(now).timestamp() - parse_duration(spec.window)
        if live.prometheus
        else live.window.since
    )
    found = CheckFacts(
        check=result_fields(result, predictions, spec.drift_share),
        served_version=live.served,
        pods=live.window.pods,
        window_start=format_time(datetime.fromtimestamp(since, UTC)) if since is not None else None,
        next_check=later(now, interval),
        performance=_performance(spec, facts, old, now),
    )
    base = old if old.get("servedVersion") in (None, live.served) else fresh(old)
    decided = _finish(spec, facts, base, found, now, interval, served=live.served)
    return _with_performance(decided, found.performance)


def _performance(
    spec: DriftMonitorSpec, facts: Facts, old: Mapping[str, Any], now: str
) -> quality.PerformanceStep | None:
    """This pass's part of the performance check (spec.performance), if any."""
    if spec.performance is None or facts.performance is None:
        return None
    server = (facts.server.image, facts.server.pull_policy) if facts.server else ("", "")
    return quality.step(spec, facts.performance, old, facts.monitor, server, now)


def _with_performance(
    decided: Decision[Action], step: quality.PerformanceStep | None
) -> Decision[Action]:
    """The performance Job to create, and the next look at it."""
    if step is None:
        return decided
    job = (quality.ApplyPerformanceJob(step.job),) if step.job is not None else ()
    requeue = (
        step.requeue if decided.requeue_after is None else min(decided.requeue_after, step.requeue)
    )
    return replace(decided, actions=(*decided.actions, *job), requeue_after=max(1.0, requeue))


def _performance_only(
    spec: DriftMonitorSpec, facts: Facts, old: Mapping[str, Any], now: str
) -> Decision[Action]:
    """The performance check is due, the drift check is not: only its Job and result. A
    newly found drop brings the next check forward, which decides the retraining."""
    meta = facts.monitor["metadata"]
    step = _performance(spec, facts, old, now)
    served = facts.performance.served if facts.performance else None
    sooner = (
        step is not None
        and step.degraded
        and spec.retrain is not None
        and not quality.was_degraded(old, served)
    )
    found = CheckFacts(performance=step, next_check=now if sooner else None)
    decided = compute(meta, spec, found, old, now)
    wait = 1.0 if sooner else max(1.0, due(old, meta.get("generation"), now))
    return _with_performance(replace(decided, requeue_after=wait), step)


def _live_problem(
    meta: Mapping[str, Any],
    spec: DriftMonitorSpec,
    old: Mapping[str, Any],
    problem: tuple[str, str],
    now: str,
    interval: float,
) -> Decision[Action]:
    """No check possible: no nextCheckTime (a requeue retries; an unchanged problem writes
    nothing), and an Event when the reason is new."""
    reason, message = problem
    decided = compute(meta, spec, CheckFacts(problem=problem), old, now)
    status = {k: v for k, v in decided.status.items() if k != "nextCheckTime"}
    before = conditions.get(old.get("conditions"), "Ready") or {}
    news = [Event(reason, message, "Warning")] if before.get("reason") != reason else []
    return Decision(status=status, events=decided.events + news, requeue_after=min(interval, RETRY))


def fresh(old: Mapping[str, Any]) -> dict[str, Any]:
    """The status as if no window had drifted yet: a new served version starts over."""
    status = dict(old)
    status.pop("consecutiveDriftWindows", None)
    status["conditions"] = [
        c for c in status.get("conditions") or [] if c.get("type") != "DriftDetected"
    ]
    return status


def _decide_batch(
    spec: DriftMonitorSpec, facts: Facts, old: Mapping[str, Any], now: str, interval: float
) -> Decision[Action]:
    meta = facts.monitor["metadata"]
    job = facts.job
    if job is None and facts.problem is not None:
        return _live_problem(meta, spec, old, facts.problem, now, interval)
    if job is None:
        return _start_check(spec, facts, old, now, interval)
    if job.finished is None:
        running = CheckFacts(check_job=job.name, waiting=f"batch check Job {job.name} is running")
        return replace(compute(meta, spec, running, old, now), requeue_after=JOB_POLL)
    check = batch_result(job)
    if check is None:
        why = job.message or job.failure or "no result"
        message = f"batch check Job {job.name}: {why[:500]}"
        failed = CheckFacts(problem=("CheckFailed", message), next_check=later(now, interval))
        decided = compute(meta, spec, failed, old, now)
        return Decision(
            status=decided.status,
            events=[*decided.events, Event("CheckFailed", message, "Warning")],
            requeue_after=interval,
        )
    found = CheckFacts(check=check, next_check=later(now, interval))
    return _finish(spec, facts, old, found, now, interval, served=None)


def batch_result(job: BatchJob) -> dict[str, Any] | None:
    """The check a completed Job printed (result_fields()), or None."""
    if job.finished != "Complete" or not job.message:
        return None
    try:
        parsed = json.loads(job.message)
    except ValueError:
        return None
    if not (isinstance(parsed, dict) and "verdict" in parsed and "features" in parsed):
        return None
    parsed.pop("truncated", None)
    return parsed


def check_key(uid: str, generation: int | None, due_at: str | None) -> str:
    """The batch check Job's key: one Job per object, generation and due check
    (``status.nextCheckTime`` when it started: a pass that dies before it stores the status
    starts the same Job again, whenever it runs)."""
    return hashlib.sha256(json.dumps([uid, generation, due_at]).encode()).hexdigest()[:8]


def _start_check(
    spec: DriftMonitorSpec, facts: Facts, old: Mapping[str, Any], now: str, interval: float
) -> Decision[Action]:
    meta = facts.monitor["metadata"]
    assert facts.server is not None
    job = build_batch_job(
        facts.monitor,
        spec,
        key=check_key(meta["uid"], meta.get("generation"), old.get("nextCheckTime")),
        image=facts.server.image,
        pull_policy=facts.server.pull_policy,
        tracking_uri=facts.server.tracking_uri,
    )
    started = CheckFacts(check_job=job["metadata"]["name"], waiting="the batch check is running")
    decided = compute(meta, spec, started, old, now)
    return replace(decided, actions=(ApplyBatchJob(job),), requeue_after=JOB_POLL)


def _finish(
    spec: DriftMonitorSpec,
    facts: Facts,
    old: Mapping[str, Any],
    found: CheckFacts,
    now: str,
    interval: float,
    *,
    served: str | None,
) -> Decision[Action]:
    """A scored window: its status, and the retraining (or its snapshot) it starts."""
    assert found.check is not None
    _consecutive, declared, _newly = assess(spec, old, found.check)
    if spec.retrain is not None and snap.pending(old) is not None:
        return _snapshot_progress(spec, facts, old, found, now, interval)
    plan, action, failure, step = _retrain(
        spec, facts, old, (declared, found.performance), found.check, now, served
    )
    retrained = str(action.body["metadata"]["name"]) if isinstance(action, StartRetrain) else None
    if step.condition is None and facts.live is not None:
        before = conditions.get(old.get("conditions"), snap.CONDITION)
        step = replace(step, condition=snap.standing(spec, facts.live.capture, before))
    found = replace(
        found, retrain=plan, retrained=retrained, last_retrain=facts.retrain.last, snapshot=step
    )
    if facts.retrain.refused is not None and action is None and plan.trigger is not None:
        name = retrain_name(facts.monitor["metadata"]["name"], _retrain_key(facts, old))
        found = replace(found, refused=(name, *facts.retrain.refused))
        failure = ""  # told by _retrain_news
    decided = compute(facts.monitor["metadata"], spec, found, old, now)
    failed = [Event("RetrainFailed", failure, "Warning")] if failure else []
    return Decision(
        status=decided.status,
        events=decided.events + failed,
        actions=(action,) if action is not None else (),
        requeue_after=JOB_POLL if step.job is not None else interval,
    )


def _retrain(
    spec: DriftMonitorSpec,
    facts: Facts,
    old: Mapping[str, Any],
    triggers: tuple[bool, quality.PerformanceStep | None],
    check: Mapping[str, Any],
    now: str,
    served: str | None,
) -> tuple[RetrainPlan, Action | None, str, snap.Step]:
    """The retraining plan, what to start (the TrainingJob, or first its snapshot Job), why
    it cannot start ("" if it can), and the snapshot's part of the status."""
    none = snap.Step()
    declared, performance = triggers
    if spec.retrain is None:
        return RetrainPlan(None), None, "", none
    key = _retrain_key(facts, old)
    # A retraining of this very decision that exists already was started by a pass whose
    # status write was lost: it is this decision's, not one that blocks it.
    mine = retrain_name(facts.monitor["metadata"]["name"], key) in facts.retrain.running
    plan = plan_retrain(
        spec,
        old,
        declared=declared,
        active=facts.retrain.active - mine,
        created=str(facts.monitor["metadata"].get("creationTimestamp") or now),
        now=now,
        generation=facts.monitor["metadata"].get("generation"),
        degraded=performance is not None and performance.degraded,
    )
    if plan.trigger is None:
        return plan, None, "", none
    training_spec, source, failure = _training_spec(spec, facts)
    if training_spec is None:
        return RetrainPlan(None, failure, plan.next_scheduled), None, failure, none
    if facts.retrain.refused is not None:
        return plan, None, facts.retrain.refused[1], none
    why = evidence(facts.monitor["metadata"]["name"], plan.trigger, check, now, served)
    if plan.trigger == "performance" and performance is not None:
        why["performance"] = quality.evidence(performance)
    if captured(spec) is not None:
        step = _start_snapshot(spec, facts, key, plan.trigger, why, now)
        if step.job is None:
            return RetrainPlan(None, "", plan.next_scheduled), None, "", step
        return plan, step.job, "", step
    body = build_retrain(
        facts.monitor, training_spec, key=key, trigger=plan.trigger, evidence=why, source=source
    )
    return plan, StartRetrain(body), "", none


def _training_spec(
    spec: DriftMonitorSpec, facts: Facts
) -> tuple[Mapping[str, Any] | None, str | None, str]:
    """The spec a retraining copies, the TrainingJob it copies (if any), and why none."""
    assert spec.retrain is not None
    if spec.retrain.from_training_job is None:
        assert spec.retrain.template is not None
        return spec.retrain.template.wire(), None, ""
    source = spec.retrain.from_training_job.name
    if facts.retrain.source_spec is None:
        return None, source, f"TrainingJob {source} (spec.retrain.fromTrainingJob) does not exist"
    return facts.retrain.source_spec, source, ""


def _start_snapshot(
    spec: DriftMonitorSpec,
    facts: Facts,
    key: str,
    trigger: str,
    why: Mapping[str, Any],
    now: str,
) -> snap.Step:
    """The snapshot Job of a retraining decided on captured rows."""
    live, server = facts.live, facts.server
    assert server is not None
    return snap.start(
        spec,
        facts.monitor,
        live.capture if live is not None else None,
        key=key,
        trigger=trigger,
        evidence=why,
        columns=[f.name for f in live.profile.features] if live is not None else [],
        server=(server.image, server.pull_policy, server.tracking_uri),
        now=now,
    )


def _snapshot_progress(
    spec: DriftMonitorSpec,
    facts: Facts,
    old: Mapping[str, Any],
    found: CheckFacts,
    now: str,
    interval: float,
) -> Decision[Action]:
    """A snapshot Job is in flight: wait for it, start the TrainingJob on the snapshot it
    reported, or say why it failed (the next retraining decision takes a new one)."""
    meta = facts.monitor["metadata"]
    step = snap.progress(old, facts.snapshot, str(meta["name"]))
    plan = RetrainPlan(None, "", old.get("nextScheduledRetrain"))
    action: StartRetrain | None = None
    if step.ready is not None:
        key = str((old.get("snapshot") or {}).get("key") or "")
        training_job = retrain_name(str(meta["name"]), key)
        action, failure = _retrain_on_snapshot(spec, facts, key, step)
        if action is not None:
            plan = RetrainPlan(step.trigger or "drift", "", plan.next_scheduled)
            status = {**(step.status or {}), "trainingJob": training_job}
            step = replace(step, status=status)
        else:
            refused = facts.retrain.refused or ("RetrainFailed", failure)
            found = replace(found, refused=(training_job, *refused))
            step = replace(step, status=snap.refused(old, training_job, refused[1]))
    retrained = str(action.body["metadata"]["name"]) if action is not None else None
    found = replace(
        found, retrain=plan, retrained=retrained, last_retrain=facts.retrain.last, snapshot=step
    )
    decided = compute(meta, spec, found, old, now)
    if step.status is None:
        requeue = JOB_POLL
    elif found.check is not None:
        requeue = interval
    else:
        requeue = max(1.0, due(old, meta.get("generation"), now))
    actions: tuple[Action, ...] = (action,) if action is not None else ()
    return replace(decided, actions=actions, requeue_after=requeue)


def _retrain_on_snapshot(
    spec: DriftMonitorSpec, facts: Facts, key: str, step: snap.Step
) -> tuple[StartRetrain | None, str]:
    """The retraining TrainingJob on the snapshot ``step`` reported, or why it cannot start."""
    assert step.ready is not None and facts.snapshot is not None
    training_spec, source, failure = _training_spec(spec, facts)
    if training_spec is None:
        return None, failure
    if facts.retrain.refused is not None:
        return None, facts.retrain.refused[1]
    body = build_retrain(
        facts.monitor,
        training_spec,
        key=key,
        trigger=step.trigger or "drift",
        evidence=facts.snapshot.evidence,
        source=source,
        snapshot=step.ready,
        storage=spec.storage.wire() if spec.storage is not None else None,
    )
    return StartRetrain(body), ""


def _retrain_key(facts: Facts, old: Mapping[str, Any]) -> str:
    return retrain_key(facts.monitor["metadata"]["uid"], old.get("lastCheckTime"))


def evidence(
    monitor: str, trigger: str, check: Mapping[str, Any], now: str, served: str | None
) -> dict[str, Any]:
    """Why a retraining started, as its TrainingJob's annotation carries it."""
    return {
        "monitor": monitor,
        "trigger": trigger,
        "at": now,
        "servedVersion": served,
        "verdict": check.get("verdict"),
        "driftedShare": check.get("driftedShare"),
        "features": [
            {k: f.get(k) for k in ("name", "method", "score", "threshold")}
            for f in check.get("features") or []
            if f.get("drifted")
        ],
        "predictions": [
            {k: f.get(k) for k in ("name", "method", "score", "threshold")}
            for f in check.get("predictions") or []
            if f.get("drifted")
        ],
    }


# --- the status of what a pass found ---------------------------------------------------

KEEP = (
    "verdict",
    "driftedShare",
    "samples",
    "servedVersion",
    "consecutiveDriftWindows",
    "lastCheckTime",
    "nextCheckTime",
    "features",
    "predictions",
    "lastRetrain",
    "retrainCount",
    "nextScheduledRetrain",
    "windowStart",
    "pods",
    "snapshot",
    "performance",
)


def compute(
    meta: Mapping[str, Any],
    spec: DriftMonitorSpec,
    found: CheckFacts,
    old: Mapping[str, Any],
    now: str,
) -> Decision[Action]:
    """The whole new status and the Events of this pass.

    The Events are this kind's own (drift declared or resolved, retraining started or
    skipped), not the builder's condition transitions: a Ready that turns Monitoring or a
    DriftDetected that turns NoDrift is not news here.
    """
    b = StatusBuilder(DRIFT_MONITOR, old, meta.get("generation"), now)
    b.set(**{k: old[k] for k in KEEP if k in old})
    found_fields = {
        "servedVersion": found.served_version,
        "pods": found.pods,
        "nextCheckTime": found.next_check,
        "checkJob": found.check_job or None,
        "nextScheduledRetrain": found.retrain.next_scheduled or None,
    }
    b.set(**{k: v for k, v in found_fields.items() if v is not None})
    if found.snapshot.status is not None:
        b.set(snapshot=dict(found.snapshot.status))
    if found.snapshot.condition is not None:
        b.put(snap.CONDITION, *found.snapshot.condition)
    perf_events = _performance_status(b, spec, found.performance)
    declared = conditions.is_true(old.get("conditions"), "DriftDetected")
    events: list[Event] = []
    if spec.suspend:
        b.put("Ready", True, "Suspended", "checks are suspended (spec.suspend)")
        b.set(phase="Suspended", nextCheckTime=None)
    elif found.problem is not None:
        reason, message = found.problem
        b.put("Ready", False, reason, message)
        b.set(phase="Failed" if reason in ("InvalidReference", "CheckFailed") else "Pending")
    elif found.check is not None:
        declared, events = _checked(b, spec, old, found.check, found.window_start)
        events = prediction_news(old, found.check) + events
    else:
        _waiting(b, old, found.waiting)
    if b.condition("DriftDetected") is None:
        b.put("DriftDetected", False, "NoCheckYet", "no window has been scored yet")
    events += list(found.snapshot.events) + perf_events
    events += _retrain_news(b, old, found, declared, str(meta["name"]))
    return replace(b.decide(), events=events)


def _performance_status(
    b: StatusBuilder, spec: DriftMonitorSpec, step: quality.PerformanceStep | None
) -> list[Event]:
    """status.performance and ModelQuality (gone with spec.performance)."""
    if spec.performance is None:
        b.set(performance=None)
        b.drop(MODEL_QUALITY)
        return []
    if step is None:
        return []
    b.set(performance=dict(step.status) if step.status else None)
    if step.condition is not None:
        b.put(MODEL_QUALITY, *step.condition)
    return list(step.events)


def _drifted_of(entries: list[Mapping[str, Any]], what: str) -> str:
    drifted = [f["name"] for f in entries if f.get("drifted")]
    scored = [f for f in entries if f.get("score") is not None]
    names = f" ({', '.join(drifted)})" if drifted else ""
    return f"{len(drifted)} of {len(scored)} {what} drifted{names}"


def summary_of(check: Mapping[str, Any]) -> str:
    """``2 of 4 features drifted (a, b) and 1 of 2 outputs drifted (score) in 500 rows``."""
    text = _drifted_of(check.get("features") or [], "features")
    if "predictions" in check:
        text += " and " + _drifted_of(check.get("predictions") or [], "outputs")
    return text + f" in {check.get('samples', 0)} rows"


def prediction_news(old: Mapping[str, Any], check: Mapping[str, Any]) -> list[Event]:
    """A Warning when the model's outputs drift in this window and did not in the last."""
    now = [f["name"] for f in check.get("predictions") or [] if f.get("drifted")]
    before = any(f.get("drifted") for f in old.get("predictions") or [])
    if not now or before:
        return []
    scored = [f for f in check.get("predictions") or [] if f.get("score") is not None]
    message = f"prediction drift: {len(now)} of {len(scored)} outputs drifted ({', '.join(now)})"
    return [Event("PredictionDrift", message, "Warning")]


def _checked(
    b: StatusBuilder,
    spec: DriftMonitorSpec,
    old: Mapping[str, Any],
    check: Mapping[str, Any],
    window_start: str | None,
) -> tuple[bool, list[Event]]:
    """A scored window's fields and conditions; ``(drift declared, Events)``."""
    consecutive, declared, newly = assess(spec, old, check)
    b.set(
        verdict=check["verdict"],
        samples=check.get("samples", 0),
        features=list(check.get("features") or []),
        predictions=list(check["predictions"]) if "predictions" in check else None,
        consecutiveDriftWindows=consecutive,
        lastCheckTime=b.now,
        driftedShare=check.get("driftedShare"),
        windowStart=window_start or old.get("windowStart"),
    )
    summary = summary_of(check)
    if check["verdict"] == "InsufficientData":
        rows = check.get("samples", 0)
        message = f"fewer than {spec.min_samples} rows in the window ({rows})"
        b.put("Ready", True, "InsufficientData", message)
    else:
        b.put("Ready", True, "Monitoring", f"last window: {summary}")
    b.set(phase="Drifting" if declared else "Monitoring")
    if declared:
        windows = f"{consecutive} drifting window(s) in a row"
        b.put("DriftDetected", True, "DriftDetected", f"{summary}; {windows}")
        return True, [Event("DriftDetected", summary, "Warning")] if newly else []
    was = conditions.is_true(old.get("conditions"), "DriftDetected")
    reason = "InsufficientData" if check["verdict"] == "InsufficientData" else "NoDrift"
    if check["verdict"] == "Drift":
        reason = "DriftPending"
        summary += f"; {consecutive} of {spec.consecutive_windows} windows in a row"
    b.put("DriftDetected", False, reason, summary)
    resolved = was and check["verdict"] == "NoDrift"
    return False, [Event("DriftResolved", summary, "Normal")] if resolved else []


def _waiting(b: StatusBuilder, old: Mapping[str, Any], waiting: str) -> None:
    """Between checks (or waiting for a batch Job): nothing new to say."""
    ready = b.condition("Ready")
    if ready is None:
        b.put("Ready", False, "Waiting", waiting or "waiting for the first check")
    elif waiting:
        b.put(
            "Ready",
            ready.get("status") == "True",
            str(ready.get("reason") or "Waiting"),
            str(ready.get("message") or waiting),
        )
    phase = old.get("phase") or "Pending"
    b.set(phase="Pending" if phase in ("Suspended", "Failed") else phase)


def _retrain_news(
    b: StatusBuilder, old: Mapping[str, Any], found: CheckFacts, declared: bool, name: str
) -> list[Event]:
    """The retraining started (or refused) in this pass: count, lastRetrain, the Retraining
    condition and an Event; else what became of the last one, or why none started."""
    if found.retrained:
        reason = found.retrain.trigger or "drift"
        detail = b.fields.get("verdict", "")
        b.set(
            retrainCount=int(old.get("retrainCount") or 0) + 1,
            lastRetrain={
                "trainingJob": found.retrained,
                "at": b.now,
                "reason": _retrain_reason(reason, detail, found.performance),
            },
        )
        message = f"TrainingJob {found.retrained} started ({reason}) by {name}"
        b.put("Retraining", True, "Started", message)
        return [Event("RetrainStarted", message, "Normal")]
    if found.refused is not None:
        return _refused(b, found.retrain.trigger or "drift", found.refused)
    news = _last_retrain(b, found.last_retrain)
    degraded = found.performance is not None and found.performance.degraded
    if found.retrain.reason and found.check is not None and (declared or degraded):
        news.append(Event("RetrainSkipped", found.retrain.reason, "Normal"))
    return news


def _retrain_reason(trigger: str, detail: str, performance: quality.PerformanceStep | None) -> str:
    """``drift (Drift)``, ``performance (roc_auc 0.61 worse than ...)`` or ``schedule``."""
    if trigger == "drift" and detail:
        return f"drift ({detail})"
    if trigger == "performance" and performance is not None and performance.reason:
        return f"performance ({performance.reason})"[:300]
    return trigger


def _refused(b: StatusBuilder, trigger: str, refused: tuple[str, str, str]) -> list[Event]:
    """The API refused the retraining: it counts as one that failed (the cooldown runs from
    now; a new spec may retrain at once)."""
    training_job, reason, message = refused
    b.set(lastRetrain={"trainingJob": training_job, "at": b.now, "reason": f"{trigger} ({reason})"})
    b.put("Retraining", False, reason, message)
    return [Event("RetrainFailed", message, "Warning")]


def _last_retrain(b: StatusBuilder, last: LastRetrain | None) -> list[Event]:
    """The Retraining condition from the last retraining's TrainingJob; a Warning when it
    is newly found failed."""
    if last is None:
        return []
    before = b.condition("Retraining") or {}
    if last.state == "Running":
        b.put("Retraining", True, "Running", f"TrainingJob {last.name} is running")
        return []
    if last.state == "Succeeded":
        b.put("Retraining", False, "Succeeded", f"TrainingJob {last.name} succeeded")
        return []
    message = f"TrainingJob {last.name} failed: {last.message}"[:1000]
    b.put("Retraining", False, "RetrainFailed", message)
    news = before.get("reason") != "RetrainFailed"
    return [Event("RetrainFailed", message, "Warning")] if news else []
