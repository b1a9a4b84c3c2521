"""Reconcile a DriftMonitor: check when due, score, report, retrain when drift persists.

Live mode reads the feature counters of the target ModelDeployment's serving pods
(those serving its stable version), keeps one snapshot per check in memory, and scores
the increase over the window against the reference profile of the served version.
Batch mode runs the check as a Job from the project image and reads its result from the
pod's termination message. Either way a declared drift (``consecutiveWindows`` drifting
windows in a row), or a schedule, may start a retraining TrainingJob.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any, cast

from modelworks.api import API_VERSION, DRIFT_MONITOR
from modelworks.api.common import parse_duration
from modelworks.api.driftmonitor import DriftMonitorSpec
from modelworks.builders.driftmonitor import build_batch_job, build_retrain
from modelworks.builders.modeldeployment import ServerConfig, selector
from modelworks.clients.kube import Kube, KubeError
from modelworks.clients.mlflow import Registry, TrackingUnavailable
from modelworks.clients.prometheus import PrometheusError, query
from modelworks.clients.scrape import scrape_pods
from modelworks.conditions import Event
from modelworks.drift.engine import WindowCounts, score_counts
from modelworks.drift.profile import PROFILE_FILE, Profile
from modelworks.drift.window import (
    Snapshot,
    Window,
    pod_counts,
    prometheus_queries,
    prometheus_window,
    prune,
    window_counts,
)
from modelworks.names import (
    FEATURE_METRIC_PREFIX,
    MONITOR_LABEL,
    SERVER_PORT,
    VERSION_LABEL,
    format_time,
    later,
    parse_time,
)
from modelworks.reconcilers.base import validate
from modelworks.status.common import pod_ready
from modelworks.status.decision import Decision
from modelworks.status.driftmonitor import (
    CheckFacts,
    RetrainPlan,
    assess,
    compute,
    config_of,
    due,
    plan_retrain,
    result_fields,
)

JOB_POLL = 10.0
RETRY = 30.0
FEATURE_PREFIXES = (FEATURE_METRIC_PREFIX,)


def reconcile(
    obj: Mapping[str, Any],
    *,
    kube: Kube,
    registry: Registry,
    now: str,
    server: ServerConfig,
    memory: dict[str, Any] | None = None,
    **_: Any,
) -> Decision[Any]:
    parsed, refused = validate(DRIFT_MONITOR, obj, now)
    if refused is not None:
        return refused
    spec = cast(DriftMonitorSpec, parsed)
    memory = {} if memory is None else memory
    old = dict(obj.get("status") or {})
    generation = obj["metadata"].get("generation")
    if spec.suspend:
        status, events = compute(obj, spec, CheckFacts(), now)
        return Decision(status=status, events=events, result="suspended")
    interval = parse_duration(spec.interval)
    if spec.batch is not None:
        return _batch(obj, spec, kube, server, now, interval)
    wait = due(old, generation, now)
    if wait > 0:
        return Decision(status=old, requeue_after=wait, result="waiting")
    return _live(obj, spec, kube, registry, now, interval, memory)


# --- live mode ------------------------------------------------------------------------


def _live(
    obj: Mapping[str, Any],
    spec: DriftMonitorSpec,
    kube: Kube,
    registry: Registry,
    now: str,
    interval: float,
    memory: dict[str, Any],
) -> Decision[Any]:
    assert spec.target is not None
    ns = obj["metadata"]["namespace"]
    target_name = spec.target.model_deployment.name

    def problem(reason: str, message: str) -> Decision[Any]:
        # No nextCheckTime: the pass is retried by requeue, and an unchanged problem
        # writes nothing.
        status, events = compute(obj, spec, CheckFacts(problem=(reason, message)), now)
        status.pop("nextCheckTime", None)
        old = conditions_reason(obj)
        if old != reason:
            events.append(Event(reason, message, "Warning"))
        return Decision(status=status, events=events, requeue_after=min(interval, RETRY))

    target = kube.get(API_VERSION, "ModelDeployment", ns, target_name)
    if target is None:
        return problem("TargetNotFound", f"ModelDeployment {target_name} does not exist")
    uri = spec.reference.profile_uri if spec.reference else None
    if uri and not uri.startswith("runs:/"):
        return problem(
            "InvalidReference",
            "live mode reads spec.reference.profileUri from MLflow: use runs:/<run id>/<path>",
        )
    served = (target.get("status") or {}).get("stableVersion")
    model = target["spec"]["model"]["name"]
    if not served:
        return problem("TargetNotServing", f"ModelDeployment {target_name} serves no version yet")
    try:
        profile = _profile(memory, registry, spec, model, str(served))
    except TrackingUnavailable as exc:
        return problem("MLflowUnavailable", f"the MLflow server did not answer: {exc}")
    if profile is None:
        where = (
            spec.reference.profile_uri
            if spec.reference and spec.reference.profile_uri
            else (f"the run of {model} version {served}")
        )
        return problem("NoReferenceProfile", f"no reference profile ({PROFILE_FILE}) in {where}")

    window = parse_duration(spec.window)
    at = parse_time(now).timestamp()
    if spec.target.prometheus is not None:
        bucket_query, missing_query = prometheus_queries(
            ns, target_name, model, str(served), window
        )
        base_url = spec.target.prometheus.url
        try:
            counted = prometheus_window(
                query(base_url, bucket_query), query(base_url, missing_query), profile, str(served)
            )
        except PrometheusError as exc:
            return problem("PrometheusUnavailable", f"spec.target.prometheus: {exc}")
        since: float | None = at - window
    else:
        counted = _scrape_window(
            kube, ns, target_name, (model, str(served)), profile, at, window, memory
        )
        since = counted.since
    result = score_counts(
        profile,
        {f: WindowCounts(c, m) for f, (c, m) in counted.counts.items()},
        config_of(spec),
    )
    check = result_fields(result)
    base = (
        obj
        if (obj.get("status") or {}).get("servedVersion") in (None, str(served))
        else _fresh(obj)
    )
    facts = CheckFacts(
        check=check,
        served_version=str(served),
        pods=counted.pods,
        window_start=format_time(datetime.fromtimestamp(since, UTC)) if since is not None else None,
        next_check=later(now, interval),
    )
    return _finish(base, spec, kube, facts, check, now, interval, served=str(served))


def _scrape_window(
    kube: Kube,
    ns: str,
    target_name: str,
    key: tuple[str, str],
    profile: Profile,
    at: float,
    window: float,
    memory: dict[str, Any],
) -> Window:
    """Scrape the ready pods serving ``key`` (model, version) now; the increase since a
    snapshot kept in ``memory`` at least ``window`` ago (or since the pods started)."""
    served = key[1]
    pods = [
        p
        for p in kube.list("v1", "Pod", ns, labels=selector({"metadata": {"name": target_name}}))
        if pod_ready(p) and (p["metadata"].get("labels") or {}).get(VERSION_LABEL) == served
    ]
    scrapes = scrape_pods(pods, SERVER_PORT, FEATURE_PREFIXES)
    uids = {p["metadata"]["name"]: p["metadata"]["uid"] for p in pods}
    snapshot = Snapshot(
        at,
        {
            uids[s.pod]: pod_counts(
                ((x.name, x.labels, x.value) for x in s.samples), profile, served
            )
            for s in scrapes
            if s.error is None
        },
    )
    history = memory.get("history", []) if memory.get("version") == key else []
    counted = window_counts(snapshot, history, window)
    memory["history"] = prune([*history, snapshot], at, window)
    memory["version"] = key
    return counted


def conditions_reason(obj: Mapping[str, Any]) -> str | None:
    for cond in (obj.get("status") or {}).get("conditions") or []:
        if cond.get("type") == "Ready":
            return str(cond.get("reason"))
    return None


def _fresh(obj: Mapping[str, Any]) -> dict[str, Any]:
    """The object as if no window had drifted yet: a new served version starts over."""
    status = dict(obj.get("status") or {})
    status.pop("consecutiveDriftWindows", None)
    status["conditions"] = [
        c for c in status.get("conditions") or [] if c.get("type") != "DriftDetected"
    ]
    return {**obj, "status": status}


def _profile(
    memory: dict[str, Any], registry: Registry, spec: DriftMonitorSpec, model: str, version: str
) -> Profile | None:
    """The reference profile (cached: a version's profile never changes)."""
    uri = spec.reference.profile_uri if spec.reference else None
    key = uri or f"{model}/{version}"
    cache: dict[str, Profile | None] = memory.setdefault("profiles", {})
    if key in cache:
        return cache[key]
    if uri:
        run_id, _, path = uri.removeprefix("runs:/").partition("/")
        data = registry.json_artifact(run_id, path)
    else:
        mv = registry.get_version(model, version)
        data = registry.json_artifact(mv.run_id, PROFILE_FILE) if mv and mv.run_id else None
    profile = Profile.from_json(data) if isinstance(data, dict) else None
    cache.clear()  # keep one
    cache[key] = profile
    return profile


# --- batch mode -----------------------------------------------------------------------


def _batch(
    obj: Mapping[str, Any],
    spec: DriftMonitorSpec,
    kube: Kube,
    server: ServerConfig,
    now: str,
    interval: float,
) -> Decision[Any]:
    ns = obj["metadata"]["namespace"]
    old = dict(obj.get("status") or {})
    generation = obj["metadata"].get("generation")
    name = old.get("checkJob")
    if name:
        job = kube.get("batch/v1", "Job", ns, str(name))
        if job is not None:
            return _batch_result(obj, spec, kube, job, now, interval)
    wait = due(old, generation, now)
    if wait > 0 and not name:
        return Decision(status=old, requeue_after=wait, result="waiting")
    slot = int(parse_time(now).timestamp() // max(interval, 1.0))
    digest = hashlib.sha256(
        json.dumps([obj["metadata"]["uid"], generation, slot]).encode()
    ).hexdigest()[:8]
    job = build_batch_job(
        obj,
        spec,
        key=digest,
        image=server.image,
        pull_policy=server.pull_policy,
        tracking_uri=server.tracking_uri,
    )
    kube.apply(job)
    status, events = compute(
        obj,
        spec,
        CheckFacts(check_job=job["metadata"]["name"], waiting="the batch check is running"),
        now,
    )
    return Decision(status=status, events=events, requeue_after=JOB_POLL)


def _batch_result(
    obj: Mapping[str, Any],
    spec: DriftMonitorSpec,
    kube: Kube,
    job: Mapping[str, Any],
    now: str,
    interval: float,
) -> Decision[Any]:
    ns = obj["metadata"]["namespace"]
    jname = job["metadata"]["name"]
    conds = {c.get("type"): c for c in (job.get("status") or {}).get("conditions") or []}
    finished = [t for t in ("Complete", "Failed") if (conds.get(t) or {}).get("status") == "True"]
    if not finished:
        status, events = compute(
            obj,
            spec,
            CheckFacts(check_job=jname, waiting=f"batch check Job {jname} is running"),
            now,
        )
        return Decision(status=status, events=events, requeue_after=JOB_POLL)
    pods = kube.list("v1", "Pod", ns, labels={"batch.kubernetes.io/job-name": jname})
    message = _termination_message(pods)
    next_check = later(now, interval)
    check: dict[str, Any] | None = None
    if finished[0] == "Complete" and message:
        try:
            parsed = json.loads(message)
            if isinstance(parsed, dict) and "verdict" in parsed and "features" in parsed:
                check = parsed
        except ValueError:
            check = None
    if check is None:
        why = message or str((conds.get("Failed") or {}).get("message") or "no result")
        status, events = compute(
            obj,
            spec,
            CheckFacts(
                problem=("CheckFailed", f"batch check Job {jname}: {why[:500]}"),
                next_check=next_check,
            ),
            now,
        )
        events.append(Event("CheckFailed", f"batch check Job {jname}: {why[:500]}", "Warning"))
        return Decision(status=status, events=events, requeue_after=interval)
    check.pop("truncated", None)
    facts = CheckFacts(check=check, next_check=next_check)
    return _finish(obj, spec, kube, facts, check, now, interval, served=None)


def _termination_message(pods: list[dict[str, Any]]) -> str:
    for pod in sorted(pods, key=lambda p: p["metadata"].get("creationTimestamp", ""), reverse=True):
        for cs in (pod.get("status") or {}).get("containerStatuses") or []:
            term = (cs.get("state") or {}).get("terminated") or {}
            if term.get("message"):
                return str(term["message"]).strip()
    return ""


# --- both: status and retraining --------------------------------------------------------


def _finish(
    obj: Mapping[str, Any],
    spec: DriftMonitorSpec,
    kube: Kube,
    facts: CheckFacts,
    check: Mapping[str, Any],
    now: str,
    interval: float,
    *,
    served: str | None,
) -> Decision[Any]:
    old = dict(obj.get("status") or {})
    meta = obj["metadata"]
    _consecutive, declared, _newly = assess(spec, old, check)
    events: list[Event] = []
    plan = RetrainPlan(None)
    retrained = None
    if spec.retrain is not None:
        active = [
            tj
            for tj in kube.list(
                API_VERSION, "TrainingJob", meta["namespace"], labels={MONITOR_LABEL: meta["name"]}
            )
            if (tj.get("status") or {}).get("phase") not in ("Succeeded", "Failed")
        ]
        plan = plan_retrain(
            spec,
            old,
            declared=declared,
            active=len(active),
            created=str(meta.get("creationTimestamp") or now),
            now=now,
        )
        if plan.trigger is not None:
            retrained, failure = _start_retrain(obj, spec, kube, plan.trigger, check, now, served)
            if failure:
                events.append(Event("RetrainFailed", failure, "Warning"))
                plan = RetrainPlan(None, failure, plan.next_scheduled)
    facts = CheckFacts(
        check=facts.check,
        served_version=facts.served_version,
        pods=facts.pods,
        window_start=facts.window_start,
        next_check=facts.next_check,
        retrain=plan,
        retrained=retrained,
    )
    status, more = compute(obj, spec, facts, now)
    status.pop("checkJob", None)
    return Decision(status=status, events=more + events, requeue_after=interval)


def _start_retrain(
    obj: Mapping[str, Any],
    spec: DriftMonitorSpec,
    kube: Kube,
    trigger: str,
    check: Mapping[str, Any],
    now: str,
    served: str | None,
) -> tuple[str | None, str]:
    """Create the retraining TrainingJob; (its name, "") or (None, why not)."""
    assert spec.retrain is not None
    ns = obj["metadata"]["namespace"]
    source = None
    if spec.retrain.from_training_job is not None:
        source = spec.retrain.from_training_job.name
        found = kube.get(API_VERSION, "TrainingJob", ns, source)
        if found is None:
            return None, f"TrainingJob {source} (spec.retrain.fromTrainingJob) does not exist"
        training_spec = found["spec"]
    else:
        assert spec.retrain.template is not None
        training_spec = spec.retrain.template.wire()
    number = int((obj.get("status") or {}).get("retrainCount") or 0) + 1
    evidence = {
        "monitor": obj["metadata"]["name"],
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
    }
    tj = build_retrain(
        obj, training_spec, number=number, trigger=trigger, evidence=evidence, source=source
    )
    try:
        kube.apply(tj)
    except KubeError as exc:
        return None, f"could not create TrainingJob {tj['metadata']['name']}: {exc.message}"
    return str(tj["metadata"]["name"]), ""
