"""Reconcile a TrainingJob: observe, act (run, Job, registration), compute status.

Every side effect is looked up by its key before it is made: the MLflow run by its
``modelworks.dev/source`` tag, the Job by its deterministic name, the model version by
the run id. A pass that dies half way and runs again creates nothing twice.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from contextlib import suppress
from dataclasses import replace
from typing import Any, cast

from modelworks import conditions
from modelworks import gate as gates
from modelworks.api import TRAINING_JOB
from modelworks.api.trainingjob import TrainingJobSpec
from modelworks.builders.trainingjob import (
    RunRef,
    build_job,
    build_service,
    experiment_name,
    job_name,
    lineage_tags,
    source_key,
    training_key,
    version_tags,
)
from modelworks.clients.kube import Kube
from modelworks.clients.mlflow import ArtifactMissing, Registry, RunInfo, TrackingUnavailable
from modelworks.conditions import Event
from modelworks.names import (
    EXPERIMENT_ANNOTATION,
    NAMESPACE_TAG,
    RUN_ANNOTATION,
    TRAINING_JOB_LABEL,
    TRAINING_KEY_LABEL,
)
from modelworks.reconcilers.base import validate
from modelworks.status.decision import Decision
from modelworks.status.trainingjob import Registration, RunFacts, TrainingFacts, compute, job_state

ACTIVE_POLL = 10.0  # seconds between passes while a run is in progress
RETRY = 20.0  # after MLflow did not answer


def reconcile(
    obj: Mapping[str, Any], *, kube: Kube, registry: Registry, now: str, **_: Any
) -> Decision[Any]:
    parsed, refused = validate(TRAINING_JOB, obj, now)
    if refused is not None:
        return refused
    spec = cast(TrainingJobSpec, parsed)
    old = dict(obj.get("status") or {})
    jname = job_name(obj, spec)
    if _settled(obj, old, jname):
        return Decision(status=old, result="settled")

    if old.get("jobName") != jname:  # first pass, or the spec changed: earlier Jobs go
        _remove_stale_jobs(
            kube, obj["metadata"]["namespace"], obj["metadata"]["name"], training_key(spec)
        )
    facts = _observe_and_act(obj, spec, jname, kube, registry)
    status = compute(obj, spec, facts, now)
    events = [
        Event(reason, message, type_)
        for type_, reason, message in conditions.transitions(
            old.get("conditions"), status["conditions"]
        )
    ]
    phase = status["phase"]
    requeue = (
        RETRY if facts.mlflow_error else (ACTIVE_POLL if phase in ("Pending", "Running") else None)
    )
    return Decision(
        status=status,
        events=events,
        requeue_after=requeue,
        result="retry" if facts.mlflow_error else "ok",
    )


def _settled(obj: Mapping[str, Any], old: Mapping[str, Any], jname: str) -> bool:
    """A finished run of the current spec needs nothing more: no API or MLflow calls."""
    summary = conditions.get(old.get("conditions"), "Succeeded")
    return (
        old.get("observedGeneration") == obj["metadata"].get("generation")
        and old.get("jobName") == jname
        and old.get("phase") in ("Succeeded", "Failed")
        and summary is not None
        and summary.get("status") in ("True", "False")
    )


def _observe_and_act(
    obj: Mapping[str, Any], spec: TrainingJobSpec, jname: str, kube: Kube, registry: Registry
) -> TrainingFacts:
    meta = obj["metadata"]
    ns = meta["namespace"]
    job = kube.get("batch/v1", "Job", ns, jname)
    try:
        run = _run_of(obj, spec, job, registry)
    except TrackingUnavailable as exc:
        return TrainingFacts(jname, job=job, mlflow_error=str(exc))

    ref = RunRef(registry.tracking_uri, run.experiment_id, run.run_id)
    if job is None:
        service = build_service(obj, spec)
        if service is not None:
            kube.apply(service)
        job = _apply_job(kube, obj, spec, ref)
    elif bool((job.get("spec") or {}).get("suspend")) != spec.suspend:
        job = _apply_job(kube, obj, spec, ref)  # suspend or resume the same run

    state = job_state(job)[0]
    pods: list[dict[str, Any]] = []
    if state in ("Active", "Failed") or (state == "Succeeded" and spec.clean_pod_policy != "None"):
        pods = kube.list("v1", "Pod", ns, labels={"batch.kubernetes.io/job-name": jname})
    if state in ("Succeeded", "Failed"):
        _clean_pods(kube, ns, pods, spec.clean_pod_policy)
    run_facts = RunFacts(
        run.experiment_id,
        run.run_id,
        registry.run_url(run.experiment_id, run.run_id),
        run.status,
        run.metrics,
    )
    facts = TrainingFacts(jname, job=job, pods=pods, run=run_facts)
    if state == "Failed":
        _safely(lambda: registry.end_run(run.run_id, "FAILED"))
        return facts
    if state != "Succeeded":
        return facts
    return _finish(obj, spec, facts, run, registry)


def _apply_job(
    kube: Kube, obj: Mapping[str, Any], spec: TrainingJobSpec, ref: RunRef
) -> dict[str, Any]:
    """Server-side apply of the whole desired Job (the run's ids recorded on it)."""
    desired = build_job(obj, spec, ref)
    desired["metadata"]["annotations"][EXPERIMENT_ANNOTATION] = ref.experiment_id
    return kube.apply(desired)


def _run_of(
    obj: Mapping[str, Any], spec: TrainingJobSpec, job: Mapping[str, Any] | None, registry: Registry
) -> RunInfo:
    """The MLflow run of this training: the Job remembers it; else found by tag or created."""
    annotations = ((job or {}).get("metadata") or {}).get("annotations") or {}
    if RUN_ANNOTATION in annotations:
        return registry.get_run(annotations[RUN_ANNOTATION])
    meta = obj["metadata"]
    experiment = registry.ensure_experiment(
        experiment_name(obj, spec), tags={NAMESPACE_TAG: meta["namespace"]}
    )
    return registry.ensure_run(
        experiment,
        source_key(obj, spec),
        run_name=f"{meta['name']}-{training_key(spec)}",
        tags=lineage_tags(obj, spec),
        params=spec.hyperparameters or {},
    )


def _finish(
    obj: Mapping[str, Any],
    spec: TrainingJobSpec,
    facts: TrainingFacts,
    run: RunInfo,
    registry: Registry,
) -> TrainingFacts:
    """The Job succeeded: close the run, apply the gate, register what passes."""
    try:
        registry.end_run(run.run_id, "FINISHED")
        run = registry.get_run(run.run_id)
        rules = list(spec.quality_gate or [])
        if spec.model is not None:
            model_name = spec.model.name
            baselines = {
                r.baseline.alias: registry.alias_metrics(model_name, r.baseline.alias)
                for r in rules
                if r.baseline is not None
            }
        else:
            baselines = {}
        gate = gates.evaluate(rules, run.metrics, baselines)
        facts = _with(facts, run, gate=gate)
        if not gate.passed or spec.model is None:
            return facts
        try:
            version = registry.register(
                spec.model.name,
                run,
                spec.model.artifact_path,
                tags=version_tags(obj, spec, run.run_id),
            )
        except ArtifactMissing as exc:
            return _with(facts, run, gate=gate, registration_error=str(exc))
        if spec.model.alias:
            registry.set_alias(spec.model.name, spec.model.alias, version.version)
        return _with(
            facts,
            run,
            gate=gate,
            registration=Registration(
                version.name, version.version, version.source, spec.model.alias
            ),
        )
    except TrackingUnavailable as exc:
        return TrainingFacts(
            facts.job_name,
            job=facts.job,
            pods=facts.pods,
            run=facts.run,
            mlflow_error=str(exc),
            gate=facts.gate,
        )


def _with(facts: TrainingFacts, run: RunInfo, **changes: Any) -> TrainingFacts:
    """The facts with the run's fresh metrics and the given fields replaced."""
    assert facts.run is not None
    fresh = replace(facts.run, status=run.status, metrics=run.metrics)
    return replace(facts, run=fresh, **changes)


def _clean_pods(kube: Kube, ns: str, pods: list[dict[str, Any]], policy: str) -> None:
    """The run has ended: delete its pods as cleanPodPolicy says (None keeps them to debug).

    Done in the pass that sees the end (the failure reason is read from the pods first,
    in the same pass), and again on later passes until the status is final.
    """
    for pod in pods:
        phase = (pod.get("status") or {}).get("phase")
        if pod["metadata"].get("deletionTimestamp"):
            continue
        if policy == "All" or (policy == "Running" and phase in ("Running", "Pending")):
            kube.delete("v1", "Pod", ns, pod["metadata"]["name"])


def _remove_stale_jobs(kube: Kube, ns: str, name: str, key: str) -> None:
    """Jobs of an earlier spec of this TrainingJob are deleted with their pods."""
    for job in kube.list("batch/v1", "Job", ns, labels={TRAINING_JOB_LABEL: name}):
        labels = job["metadata"].get("labels") or {}
        if labels.get(TRAINING_KEY_LABEL) != key and not job["metadata"].get("deletionTimestamp"):
            kube.delete("batch/v1", "Job", ns, job["metadata"]["name"], propagation="Background")


def _safely(action: Callable[[], None]) -> None:
    """The run's end state is cosmetic: if MLflow is down the next pass tries again."""
    with suppress(TrackingUnavailable):
        action()
