"""Reconcile a DriftMonitor: check when due, score, report, retrain when drift persists.

Live mode reads the feature counters of the target ModelDeployment's serving pods
(those serving its stable version), keeps one snapshot per check in memory, and scores
the increase over the window against the reference profile of the served version.
Batch mode runs the check as a Job from the project image and reads its result from the
pod's termination message. Either way a declared drift (``consecutiveWindows`` drifting
windows in a row), or a schedule, may start a retraining TrainingJob.

``observe`` only reads the API server, MLflow, the pods and Prometheus; it also keeps
the counter snapshots and the reference profile in the pass's memory (no API write).
``decide`` is :func:`modelworks.status.driftmonitor.decide`; ``act`` creates the Job or
TrainingJob it decided on, both with deterministic names.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping, Sequence
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

from modelworks import conditions
from modelworks.api import API_VERSION, DRIFT_MONITOR, TRAINING_JOB
from modelworks.api.common import parse_duration
from modelworks.api.driftmonitor import DriftMonitorSpec, captured
from modelworks.builders.modeldeployment import selector
from modelworks.clients.datasets import TooLarge, profile_json
from modelworks.clients.http import Limits
from modelworks.clients.kube import Kube, KubeError
from modelworks.clients.mlflow import Registry, TrackingUnavailable
from modelworks.clients.prometheus import PrometheusError, query
from modelworks.clients.scrape import scrape_pods
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
    EVIDENCE_ANNOTATION,
    FEATURE_METRIC_PREFIX,
    MONITOR_GENERATION_ANNOTATION,
    MONITOR_UID_LABEL,
    PREDICTION_METRIC_PREFIX,
    SERVER_PORT,
    TRIGGER_ANNOTATION,
    VERSION_LABEL,
    format_time,
)
from modelworks.reconcilers.base import Context, KindReconciler, Learned
from modelworks.reconcilers.children import get_owned, owned_only
from modelworks.reconcilers.tenancy import uri_refusal
from modelworks.status import driftmonitor as status
from modelworks.status import performance as quality
from modelworks.status import snapshot as snap
from modelworks.status import tenancy
from modelworks.status.common import pod_ready
from modelworks.status.decision import Decision, unchanged
from modelworks.status.driftmonitor import (
    Action,
    ApplyBatchJob,
    BatchJob,
    Facts,
    LastRetrain,
    LiveCheck,
    RetrainFacts,
    StartRetrain,
    due,
    watches_predictions,
)

FEATURE_PREFIXES = (FEATURE_METRIC_PREFIX, PREDICTION_METRIC_PREFIX)


def shortcut(obj: Mapping[str, Any], spec: DriftMonitorSpec, now: str) -> Decision[Any] | None:
    """A suspended monitor, or one not due yet (and no batch check in flight), reads nothing."""
    old = obj.get("status") or {}
    if spec.suspend:
        return status.decide(spec, Facts(monitor=_identity(obj)), old, now)
    if spec.batch is not None and old.get("checkJob"):
        return None
    if spec.retrain is not None and snap.pending(old) is not None:
        return None  # a snapshot Job to poll
    wait = due(old, obj["metadata"].get("generation"), now)
    if spec.performance is not None and spec.target is not None:
        wait = min(wait, quality.performance_due(old, obj["metadata"].get("generation"), now))
    return unchanged(old, wait, "waiting") if wait > 0 else None


def observe(obj: Mapping[str, Any], spec: DriftMonitorSpec, ctx: Context) -> Facts:
    facts = Facts(monitor=_identity(obj), server=ctx.server)
    old = obj.get("status") or {}
    pending = snap.pending(old) if spec.retrain is not None else None
    if pending is not None:
        facts = replace(
            facts,
            snapshot=_snapshot_job(obj, pending, ctx.kube),
            retrain=_retrain_facts(obj, spec, ctx.kube),
        )
        now = format_time(datetime.now(UTC))
        if due(old, obj["metadata"].get("generation"), now) > 0:
            return replace(facts, snapshot_only=True)
    if spec.batch is not None:
        job = _batch_job(obj, ctx.kube)
        problem = _batch_refusal(obj, spec, ctx.registry) if job is None else None
        facts = replace(facts, job=job, problem=problem)
        ready = job is not None and job.finished is not None
    else:
        now = format_time(datetime.now(UTC))
        if spec.performance is not None:
            facts = replace(facts, performance=_performance(obj, spec, ctx))
            if due(old, obj["metadata"].get("generation"), now) > 0:
                return replace(facts, performance_only=True)
        problem, live = _live(obj, spec, ctx)
        facts = replace(
            facts, problem=problem, live=live, calibration_cells=ctx.bounds.calibration_cells
        )
        ready = live is not None
    if ready and spec.retrain is not None:
        facts = replace(facts, retrain=_retrain_facts(obj, spec, ctx.kube))
    return facts


def act(
    obj: Mapping[str, Any], spec: DriftMonitorSpec, actions: Sequence[Action], ctx: Context
) -> None:
    """Create the batch check Job or the retraining TrainingJob. Created, never applied: a
    pass that runs twice finds its own object under the deterministic name and leaves it
    as it is; one it does not own is never written over."""
    for action in actions:
        match action:
            case (
                ApplyBatchJob(body=body)
                | snap.ApplySnapshotJob(body=body)
                | quality.ApplyPerformanceJob(body=body)
            ):
                _create_check(ctx.kube, obj, body)
            case StartRetrain(body=body):
                _create_retrain(ctx.kube, obj, body)


def _create_check(kube: Kube, obj: Mapping[str, Any], body: Mapping[str, Any]) -> None:
    try:
        kube.create(body)
    except KubeError as exc:
        if exc.status != 409:
            raise
        get_owned(kube, "batch/v1", "Job", obj, body["metadata"]["name"])


def _create_retrain(kube: Kube, obj: Mapping[str, Any], body: Mapping[str, Any]) -> None:
    """The retraining TrainingJob; when the API refuses it the pass decides again knowing
    that (the refusal is a failed retraining, not an error retried for ever)."""
    try:
        kube.create(body)
        return
    except KubeError as exc:
        refusal = _refusal(kube, obj, body, exc)
    if refusal is not None:
        raise Learned(lambda f: replace(f, retrain=replace(f.retrain, refused=refusal)))


def _refusal(
    kube: Kube, obj: Mapping[str, Any], body: Mapping[str, Any], exc: KubeError
) -> tuple[str, str] | None:
    """(reason, message) why the TrainingJob cannot be created; None: it is this monitor's."""
    name, uid = body["metadata"]["name"], obj["metadata"]["uid"]
    if exc.status == 409:
        found = kube.get(API_VERSION, "TrainingJob", obj["metadata"]["namespace"], name)
        if found is None:
            raise exc  # deleted meanwhile: the next pass creates it
        if _labels(found).get(MONITOR_UID_LABEL) == uid:
            return None
        return "NameTaken", f"TrainingJob {name} exists and was not started by this monitor"
    if exc.status in (400, 403, 422):
        return "RetrainRefused", f"the API server refused TrainingJob {name}: {exc.message}"[:1000]
    raise exc


RECONCILER: KindReconciler[DriftMonitorSpec, Facts, Action] = KindReconciler(
    kind=DRIFT_MONITOR, shortcut=shortcut, observe=observe, decide=status.decide, act=act
)


reconcile = RECONCILER.run


def _identity(obj: Mapping[str, Any]) -> dict[str, Any]:
    return {k: obj[k] for k in ("apiVersion", "kind", "metadata") if k in obj}


# --- live mode ------------------------------------------------------------------------


def _live(
    obj: Mapping[str, Any], spec: DriftMonitorSpec, ctx: Context
) -> tuple[tuple[str, str] | None, LiveCheck | None]:
    """The served version's counts over the window, or (reason, message) why none."""
    assert spec.target is not None
    ns = obj["metadata"]["namespace"]
    target_name = spec.target.model_deployment.name
    target = ctx.kube.get(API_VERSION, "ModelDeployment", ns, target_name)
    if target is None:
        return ("TargetNotFound", f"ModelDeployment {target_name} does not exist"), None
    uri = spec.reference.profile_uri if spec.reference else None
    if uri and not uri.startswith("runs:/"):
        return (
            "InvalidReference",
            "live mode reads spec.reference.profileUri from MLflow: use runs:/<run id>/<path>",
        ), None
    served = (target.get("status") or {}).get("stableVersion")
    model = target["spec"]["model"]["name"]
    if not served:
        return ("TargetNotServing", f"ModelDeployment {target_name} serves no version yet"), None
    try:
        refused = uri_refusal(ns, uri or f"models:/{model}/{served}", ctx.registry)
        if refused:
            return (tenancy.OWNED_ELSEWHERE, refused), None
        profile = _profile(ctx, spec, model, str(served))
    except TrackingUnavailable as exc:
        return ("MLflowUnavailable", f"the MLflow server did not answer: {exc}"), None
    except TooLarge as exc:
        return (
            "ProfileTooLarge",
            f"reference profile not loaded: {exc} bytes (MODELWORKS_PROFILE_MAX_BYTES)",
        ), None
    if profile is None:
        where = uri or f"the run of {model} version {served}"
        return ("NoReferenceProfile", f"no reference profile ({PROFILE_FILE}) in {where}"), None
    key = (ns, target_name, model, str(served))
    outputs = watches_predictions(spec, profile)
    if spec.target.prometheus is not None:
        url = spec.target.prometheus.url
        try:
            window = _prometheus_window(url, key, profile, spec, ctx.bounds.prometheus)
            answered = (
                _prometheus_window(url, key, profile, spec, ctx.bounds.prometheus, outputs=True)
                if outputs
                else None
            )
        except PrometheusError as exc:
            return ("PrometheusUnavailable", f"spec.target.prometheus: {exc}"), None
        live = LiveCheck(str(served), profile, window, prometheus=True, outputs=answered)
    else:
        window, answered = _scrape_window(ctx, key, profile, parse_duration(spec.window), outputs)
        live = LiveCheck(str(served), profile, window, outputs=answered)
    return None, replace(live, capture=_capture(target) if captured(spec) else None)


def _capture(target: Mapping[str, Any]) -> snap.Capture:
    """What the target captures: where (``spec.dataCapture.destination``), which model."""
    capture = target["spec"].get("dataCapture") or {}
    return snap.Capture(
        target=str(target["metadata"]["name"]),
        model=str(target["spec"]["model"]["name"]),
        destination=capture.get("destination") or None,
    )


def _performance(
    obj: Mapping[str, Any], spec: DriftMonitorSpec, ctx: Context
) -> quality.PerformanceFacts:
    """The performance check's facts: the target's served version and capture, the Job in
    flight (its result once it finished) and then the baseline metrics of the served
    version's MLflow run."""
    assert spec.target is not None
    ns, name = obj["metadata"]["namespace"], spec.target.model_deployment.name
    target = ctx.kube.get(API_VERSION, "ModelDeployment", ns, name)
    if target is None:
        return quality.PerformanceFacts(
            name, problem=("TargetNotFound", f"ModelDeployment {name} does not exist")
        )
    capture = _capture(target)
    served = (target.get("status") or {}).get("stableVersion")
    facts = quality.PerformanceFacts(
        name,
        model=capture.model,
        served=str(served) if served else None,
        destination=capture.destination,
    )
    job_name = ((obj.get("status") or {}).get("performance") or {}).get("checkJob")
    job = get_owned(ctx.kube, "batch/v1", "Job", obj, str(job_name)) if job_name else None
    if job is None:
        return facts
    found = _finished(obj, job, ctx.kube)
    check = quality.CheckJob(found.name, found.finished, found.message, found.failure)
    facts = replace(facts, job=check)
    if found.finished is None or facts.served is None:
        return facts
    try:
        mv = ctx.registry.get_version(capture.model, facts.served)
        baselines = ctx.registry.get_run(mv.run_id).metrics if mv and mv.run_id else {}
    except TrackingUnavailable as exc:
        return replace(
            facts, problem=("MLflowUnavailable", f"the MLflow server did not answer: {exc}")
        )
    return replace(facts, baselines=baselines)


def _prometheus_window(
    url: str,
    key: tuple[str, str, str, str],
    profile: Profile,
    spec: DriftMonitorSpec,
    limits: Limits,
    *,
    outputs: bool = False,
) -> Window:
    """The increase of the served version's counters over the window, from Prometheus."""
    ns, target_name, model, served = key
    buckets, missing = prometheus_queries(
        ns, target_name, model, served, parse_duration(spec.window), outputs=outputs
    )
    return prometheus_window(
        query(url, buckets, limits),
        query(url, missing, limits),
        profile,
        served,
        outputs=outputs,
    )


def _scrape_window(
    ctx: Context, key: tuple[str, str, str, str], profile: Profile, window: float, outputs: bool
) -> tuple[Window, Window | None]:
    """Scrape the ready pods serving ``key``'s version now; the increase since a snapshot
    kept in memory at least ``window`` ago (or since the pods started), of the features
    and (``outputs``) of the model's answers. Snapshots are stamped with the time they
    were taken."""
    ns, target_name, model, served = key
    at = time.time()
    pods = [
        p
        for p in ctx.kube.list(
            "v1", "Pod", ns, labels=selector({"metadata": {"name": target_name}})
        )
        if pod_ready(p) and (p["metadata"].get("labels") or {}).get(VERSION_LABEL) == served
    ]
    scrapes = scrape_pods(pods, SERVER_PORT, FEATURE_PREFIXES, ctx.bounds.metrics)
    uids = {p["metadata"]["name"]: p["metadata"]["uid"] for p in pods}
    memory = ctx.memory
    same = memory.get("version") == (model, served)
    windows: list[Window | None] = []
    for kind, wanted in (("history", True), ("outputs", outputs)):
        if not wanted:
            memory.pop(kind, None)
            windows.append(None)
            continue
        snapshot = Snapshot(
            at,
            {
                uids[s.pod]: pod_counts(
                    ((x.name, x.labels, x.value) for x in s.samples),
                    profile,
                    served,
                    outputs=kind == "outputs",
                )
                for s in scrapes
                if s.error is None
            },
        )
        history = memory.get(kind, []) if same else []
        windows.append(window_counts(snapshot, history, window))
        memory[kind] = prune([*history, snapshot], at, window)
    memory["version"] = (model, served)
    features, answered = windows
    assert features is not None
    return features, answered


def _profile(ctx: Context, spec: DriftMonitorSpec, model: str, version: str) -> Profile | None:
    """The reference profile (cached: a version's profile never changes), downloaded within
    the operator's size and time limits."""
    uri = spec.reference.profile_uri if spec.reference else None
    key = uri or f"{model}/{version}"
    cache: dict[str, Profile | None] = ctx.memory.setdefault("profiles", {})
    if key in cache:
        return cache[key]
    registry, limits = ctx.registry, ctx.bounds.profile
    if uri:
        run_id, _, path = uri.removeprefix("runs:/").partition("/")
        data = profile_json(registry, run_id, path, limits)
    else:
        mv = registry.get_version(model, version)
        data = profile_json(registry, mv.run_id, PROFILE_FILE, limits) if mv and mv.run_id else None
    profile = Profile.from_json(data) if isinstance(data, dict) else None
    cache.clear()  # keep one
    cache[key] = profile
    return profile


# --- batch mode and retraining -------------------------------------------------------


def _batch_refusal(
    obj: Mapping[str, Any], spec: DriftMonitorSpec, registry: Registry
) -> tuple[str, str] | None:
    """Before a check Job starts: (reason, message) when a URI it would read is a run or a
    model of another namespace's."""
    assert spec.batch is not None
    ref = spec.reference
    uris = [spec.batch.current_uri, *((ref.dataset_uri, ref.profile_uri) if ref else ())]
    ns = obj["metadata"]["namespace"]
    try:
        for uri in (u for u in uris if u):
            if refused := uri_refusal(ns, uri, registry):
                return tenancy.OWNED_ELSEWHERE, refused
    except TrackingUnavailable as exc:
        return "MLflowUnavailable", f"the MLflow server did not answer: {exc}"
    return None


def _batch_job(obj: Mapping[str, Any], kube: Kube) -> BatchJob | None:
    """The check Job named in ``status.checkJob``; its result once it finished."""
    name = (obj.get("status") or {}).get("checkJob")
    if not name:
        return None
    job = get_owned(kube, "batch/v1", "Job", obj, str(name))
    return _finished(obj, job, kube) if job is not None else None


def _finished(obj: Mapping[str, Any], job: Mapping[str, Any], kube: Kube) -> BatchJob:
    """A Job of the monitor's: Complete or Failed (or None), and its pod's message."""
    name = str(job["metadata"]["name"])
    conds = {c.get("type"): c for c in (job.get("status") or {}).get("conditions") or []}
    finished = [t for t in ("Complete", "Failed") if (conds.get(t) or {}).get("status") == "True"]
    if not finished:
        return BatchJob(name)
    ns = obj["metadata"]["namespace"]
    found = kube.list("v1", "Pod", ns, labels={"batch.kubernetes.io/job-name": name})
    pods = owned_only(found, job["metadata"]["uid"])
    return BatchJob(
        name,
        finished=finished[0],
        message=termination_message(pods),
        failure=str((conds.get("Failed") or {}).get("message") or ""),
    )


def _snapshot_job(obj: Mapping[str, Any], name: str, kube: Kube) -> snap.SnapshotJob | None:
    """The snapshot Job in flight (None: gone), its result once it finished, and the
    retraining decision it carries (trigger and evidence annotations)."""
    job = get_owned(kube, "batch/v1", "Job", obj, name)
    if job is None:
        return None
    notes = job["metadata"].get("annotations") or {}
    try:
        evidence = json.loads(notes.get(EVIDENCE_ANNOTATION) or "{}")
    except ValueError:
        evidence = {}
    found = _finished(obj, job, kube)
    return snap.SnapshotJob(
        name,
        finished=found.finished,
        message=found.message,
        failure=found.failure,
        trigger=str(notes.get(TRIGGER_ANNOTATION) or "drift"),
        evidence=evidence if isinstance(evidence, dict) else {},
    )


def termination_message(pods: list[dict[str, Any]]) -> str:
    """The newest pod's termination message (where a batch check prints its result)."""
    for pod in sorted(pods, key=lambda p: p["metadata"].get("creationTimestamp", ""), reverse=True):
        for cs in (pod.get("status") or {}).get("containerStatuses") or []:
            term = (cs.get("state") or {}).get("terminated") or {}
            if term.get("message"):
                return str(term["message"]).strip()
    return ""


def _retrain_facts(obj: Mapping[str, Any], spec: DriftMonitorSpec, kube: Kube) -> RetrainFacts:
    """How many of this monitor's retrainings (known by its uid) started for the current
    spec are not finished (one stuck under an earlier spec blocks no fixed one), the last
    one's state, and the spec a retraining would copy."""
    assert spec.retrain is not None
    meta = obj["metadata"]
    mine = kube.list(
        API_VERSION, "TrainingJob", meta["namespace"], labels={MONITOR_UID_LABEL: meta["uid"]}
    )
    states = {tj["metadata"]["name"]: _retrain_state(tj) for tj in mine}
    last_name = str(((obj.get("status") or {}).get("lastRetrain") or {}).get("trainingJob") or "")
    last = LastRetrain(last_name, *states[last_name]) if last_name in states else None
    source_spec = None
    if spec.retrain.from_training_job is not None:
        name = spec.retrain.from_training_job.name
        found = kube.get(API_VERSION, "TrainingJob", meta["namespace"], name)
        source_spec = found["spec"] if found is not None else None
    generation = str(meta.get("generation"))
    running = tuple(
        tj["metadata"]["name"]
        for tj in mine
        if states[tj["metadata"]["name"]][0] == "Running"
        and (tj["metadata"].get("annotations") or {}).get(MONITOR_GENERATION_ANNOTATION)
        == generation
    )
    return RetrainFacts(
        active=len(running), source_spec=source_spec, last=last, running=frozenset(running)
    )


def _retrain_state(tj: Mapping[str, Any]) -> tuple[str, str]:
    """("Running" | "Succeeded" | "Failed", message): a TrainingJob whose summary says it
    failed is finished, whatever its phase (it can never run as it is)."""
    status = tj.get("status") or {}
    summary = conditions.get(status.get("conditions"), TRAINING_JOB.summary) or {}
    message = str(summary.get("message") or "")
    if status.get("phase") == "Succeeded" or summary.get("status") == "True":
        return "Succeeded", message
    if status.get("phase") == "Failed" or summary.get("status") == "False":
        return "Failed", message or str(summary.get("reason") or "failed")
    return "Running", message


def _labels(obj: Mapping[str, Any]) -> dict[str, str]:
    return dict((obj.get("metadata") or {}).get("labels") or {})
