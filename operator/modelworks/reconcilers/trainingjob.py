"""Reconcile a TrainingJob: observe (reads) -> status.trainingjob.decide (pure) -> act.

Every side effect is looked up by its key before it is made: the MLflow run by its
``modelworks.dev/source`` tag, the Job by its deterministic name, the model version by
the run id. A pass that dies half way and runs again creates nothing twice.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from contextlib import suppress
from dataclasses import replace
from typing import Any

from modelworks import conditions
from modelworks.api import TRAINING_JOB
from modelworks.api.trainingjob import TrainingJobSpec
from modelworks.builders.trainingjob import (
    RunRef,
    build_job,
    build_service,
    build_validation_job,
    experiment_name,
    job_name,
    lineage_tags,
    source_key,
    training_key,
    validation_job_name,
    version_tags,
)
from modelworks.clients.kube import Kube
from modelworks.clients.mlflow import ArtifactMissing, Registry, RunInfo, TrackingUnavailable
from modelworks.drift.profile import PROFILE_FILE
from modelworks.names import (
    EXPERIMENT_ANNOTATION,
    NAMESPACE_TAG,
    RUN_ANNOTATION,
    TRAINING_JOB_LABEL,
    TRAINING_KEY_LABEL,
)
from modelworks.reconcilers.base import Context, KindReconciler
from modelworks.reconcilers.children import get_owned, owned_only
from modelworks.reconcilers.driftmonitor import termination_message
from modelworks.reconcilers.tenancy import uri_refusal
from modelworks.status import tenancy
from modelworks.status import trainingjob as status
from modelworks.status.decision import REJECTED_REASONS, Decision, unchanged
from modelworks.status.deletion import KILLED, run_left_open
from modelworks.status.trainingjob import (
    ENDED_RUN,
    Action,
    ApplyJob,
    DeletePods,
    EndRun,
    Holder,
    ModelSource,
    Register,
    Registration,
    RemoveStaleJobs,
    RunFacts,
    SetAlias,
    StartRun,
    StartValidation,
    TrainingFacts,
    Validation,
    job_state,
)

JOB_NAME_LABEL = "batch.kubernetes.io/job-name"


def shortcut(obj: Mapping[str, Any], spec: TrainingJobSpec, now: str) -> Decision[Any] | None:
    """A finished run of the current spec needs nothing more: no API or MLflow calls."""
    old = obj.get("status") or {}
    summary = conditions.get(old.get("conditions"), TRAINING_JOB.summary)
    settled = (
        old.get("observedGeneration") == obj["metadata"].get("generation")
        and old.get("jobName") == job_name(obj, spec)
        and old.get("phase") in ("Succeeded", "Failed")
        and summary is not None
        and summary.get("status") in ("True", "False")
        and summary.get("reason") not in REJECTED_REASONS
    )
    return unchanged(old, None, "settled") if settled else None


def observe(obj: Mapping[str, Any], spec: TrainingJobSpec, ctx: Context) -> TrainingFacts:
    """Reads only: stale Jobs (when the spec changed), the Job, its pods, then MLflow."""
    meta = obj["metadata"]
    ns, jname = meta["namespace"], job_name(obj, spec)
    stale: tuple[str, ...] = ()
    first = (obj.get("status") or {}).get("jobName") != jname  # first pass, or a new spec
    if first:
        stale = _stale_jobs(ctx.kube, obj, training_key(spec))
    job = get_owned(ctx.kube, "batch/v1", "Job", obj, jname)
    if job is None:
        _service_free(obj, spec, ctx.kube)
    state = job_state(job)[0]
    pods: list[dict[str, Any]] = []
    if job and (
        state in ("Active", "Failed") or (state == "Succeeded" and spec.clean_pod_policy != "None")
    ):
        found = ctx.kube.list("v1", "Pod", ns, labels={JOB_NAME_LABEL: jname})
        pods = owned_only(found, job["metadata"]["uid"])
    facts = TrainingFacts(
        jname,
        generation=meta.get("generation"),
        job=job,
        pods=tuple(pods),
        stale_jobs=stale,
        namespace=ns,
    )
    try:
        if job is None and spec.dataset is not None:
            refusal = uri_refusal(ns, spec.dataset.uri, ctx.registry)
            if refusal:
                return replace(facts, dataset_refusal=refusal)
        if job is None and spec.data_validation is not None:
            facts = replace(facts, validation=_validation(obj, spec, ctx))
        experiment_id, run = _run_of(obj, spec, job, ctx.registry, searched=not first)
    except TrackingUnavailable as exc:
        return replace(facts, mlflow_error=str(exc))
    facts = replace(facts, experiment_id=experiment_id)
    if run is None:
        return facts
    url = ctx.registry.run_url(run.experiment_id, run.run_id)
    run_facts = RunFacts(run.experiment_id, run.run_id, url, run.status, run.metrics)
    facts = replace(facts, run=run_facts)
    if status.training_state(job, run_facts)[0] != "Succeeded":
        return facts
    judged = status.judged((obj.get("status") or {}).get("qualityGate"), run.run_id)
    return _outcome(spec, facts, run, ctx.registry, judged=judged is not None)


def _validation(obj: Mapping[str, Any], spec: TrainingJobSpec, ctx: Context) -> Validation:
    """The validation Job of this run and, once it finished, what its newest pod reported;
    while it is missing, where its schema comes from (schema.fromAlias)."""
    name = validation_job_name(obj, spec)
    stored = (obj.get("status") or {}).get("dataValidation") or {}
    if stored.get("jobName") == name and stored.get("passed") is True:
        return Validation(name, "Succeeded")
    job = get_owned(ctx.kube, "batch/v1", "Job", obj, name)
    if job is None:
        return _reference(obj, spec, ctx.registry, name)
    state = job_state(job)[0]
    failed = int((job.get("status") or {}).get("failed") or 0)
    message = ""
    if state in ("Succeeded", "Failed") or failed:
        ns = obj["metadata"]["namespace"]
        found = ctx.kube.list("v1", "Pod", ns, labels={JOB_NAME_LABEL: name})
        message = termination_message(owned_only(found, job["metadata"]["uid"]))
    failure = job_state(job)[2]
    return Validation(name, state, message=message, failure=failure, failed_pods=failed)


def _reference(
    obj: Mapping[str, Any], spec: TrainingJobSpec, registry: Registry, name: str
) -> Validation:
    """Before the Job exists: the reference profile schema.fromAlias points at (None and a
    note when no version holds the alias yet: the other checks run, the schema is skipped)."""
    assert spec.data_validation is not None
    schema = spec.data_validation.table_schema
    if schema is None or schema.from_alias is None or spec.model is None:
        return Validation(name)
    model, alias = spec.model.name, schema.from_alias
    held = registry.version_by_alias(model, alias)
    if held is None or not held.run_id:
        note = f"schema not checked: no version of {model} holds @{alias} yet"
        return Validation(name, note=note)
    uri = f"runs:/{held.run_id}/{PROFILE_FILE}"
    refusal = uri_refusal(obj["metadata"]["namespace"], uri, registry)
    note = f"schema from the reference profile of {model} version {held.version} (@{alias})"
    return Validation(name, profile_uri=uri, note=note, refusal=refusal)


def _run_of(
    obj: Mapping[str, Any],
    spec: TrainingJobSpec,
    job: Mapping[str, Any] | None,
    registry: Registry,
    *,
    searched: bool,
) -> tuple[str | None, RunInfo | None]:
    """(experiment id, run): the Job remembers its run. On the first pass of a spec with no
    Job there is no run to read yet: StartRun finds it by its key or creates it (one search,
    not two); the experiment is looked up all the same, so an MLflow outage shows as a
    condition on the first pass. A later pass (``searched``: the status already names this
    spec's Job) that finds no Job looks for the run by its key: a run that ended (its Job
    deleted by its TTL before the final status was written) is not started again."""
    annotations = ((job or {}).get("metadata") or {}).get("annotations") or {}
    if RUN_ANNOTATION in annotations:
        run = registry.get_run(annotations[RUN_ANNOTATION])
        return run.experiment_id, run
    experiment = registry.experiment_id(experiment_name(obj, spec))
    if experiment is None or (job is None and not searched):
        return experiment, None
    return experiment, registry.find_run(experiment, source_key(obj, spec))


def _outcome(
    spec: TrainingJobSpec, facts: TrainingFacts, run: RunInfo, registry: Registry, *, judged: bool
) -> TrainingFacts:
    """The Job succeeded: who owns the model, then what the gate (unless the run was judged
    already) and the registration need, as far as MLflow answers (nothing of a model another
    namespace owns)."""
    try:
        if spec.model is not None:
            owner = registry.ownership(spec.model.name)
            unclaimed = owner.exists and not owner.tagged
            facts = replace(facts, model_unclaimed=unclaimed, model_owner=owner.owner)
            if tenancy.write_refusal(facts.namespace, spec.model.name, owner.owner):
                return facts
        if not judged:
            facts = replace(facts, baselines=_baselines(spec, run, registry))
        if spec.model is None:
            return facts
        found = registry.find_version(spec.model.name, run.run_id)
        if found is not None:
            registration = Registration(found.name, found.version, found.source, found.aliases)
            return replace(facts, registration=registration)
        uri, model_id = registry.model_source(run, spec.model.artifact_path)
        return replace(facts, model_source=ModelSource(uri, model_id))
    except ArtifactMissing as exc:
        return replace(facts, registration_error=str(exc))
    except TrackingUnavailable as exc:
        return replace(facts, mlflow_error=str(exc))


def _baselines(spec: TrainingJobSpec, run: RunInfo, registry: Registry) -> dict[str, Holder | None]:
    """alias -> the version that holds it and its run's metrics (None: no version does).

    A version of this very run holding the alias (a pass moved it and died before it wrote
    the status) is no baseline: the run would be compared with itself.
    """
    out: dict[str, Holder | None] = {}
    if spec.model is None:
        return out
    for rule in spec.quality_gate or []:
        if rule.baseline is None or rule.baseline.alias in out:
            continue
        held = registry.version_by_alias(spec.model.name, rule.baseline.alias)
        if held is None or held.run_id == run.run_id:
            out[rule.baseline.alias] = None
            continue
        metrics = registry.get_run(held.run_id).metrics if held.run_id else {}
        out[rule.baseline.alias] = Holder(held.version, held.run_id, metrics)
    return out


def _service_free(obj: Mapping[str, Any], spec: TrainingJobSpec, kube: Kube) -> None:
    """Before StartRun applies the headless Service: its name is this TrainingJob's own."""
    service = build_service(obj, spec)
    if service is not None:
        get_owned(kube, "v1", "Service", obj, service["metadata"]["name"])


def _stale_jobs(kube: Kube, obj: Mapping[str, Any], key: str) -> tuple[str, ...]:
    """Jobs of an earlier spec of this TrainingJob (owned by its uid), not yet being deleted."""
    meta = obj["metadata"]
    found = kube.list(
        "batch/v1", "Job", meta["namespace"], labels={TRAINING_JOB_LABEL: meta["name"]}
    )
    return tuple(
        job["metadata"]["name"]
        for job in owned_only(found, meta["uid"])
        if (job["metadata"].get("labels") or {}).get(TRAINING_KEY_LABEL) != key
        and not job["metadata"].get("deletionTimestamp")
    )


def act(
    obj: Mapping[str, Any], spec: TrainingJobSpec, actions: Sequence[Action], ctx: Context
) -> None:
    """The decided writes, in order; each finds what it would create before creating it."""
    ns = obj["metadata"]["namespace"]
    kube, registry = ctx.kube, ctx.registry
    for action in actions:
        match action:
            case RemoveStaleJobs(names=names):
                for name in names:
                    kube.delete("batch/v1", "Job", ns, name, propagation="Background")
            case StartValidation(profile_uri=profile_uri, note=note):
                kube.apply(
                    build_validation_job(obj, spec, ctx.server, profile_uri=profile_uri, note=note)
                )
            case StartRun(experiment_id=experiment_id):
                _start_run(obj, spec, experiment_id, ctx)
            case ApplyJob(experiment_id=experiment_id, run_id=run_id):
                _apply_job(kube, obj, spec, RunRef(registry.tracking_uri, experiment_id, run_id))
            case DeletePods(names=names):
                for name in names:
                    kube.delete("v1", "Pod", ns, name)
            case EndRun(run_id=run_id, state=state):
                _end_run(registry, run_id, state)
            case Register(model=model, run_id=run_id, source=source, model_id=model_id):
                tags = version_tags(obj, spec, run_id)
                registry.create_version(model, run_id, source, model_id, tags=tags, namespace=ns)
            case SetAlias(model=model, alias=alias, version=version):
                registry.set_alias(model, alias, version, namespace=ns)


def _start_run(
    obj: Mapping[str, Any], spec: TrainingJobSpec, experiment_id: str | None, ctx: Context
) -> None:
    """The run (found by its key, else created, its params logged), then its Service and Job."""
    meta, registry = obj["metadata"], ctx.registry
    experiment = experiment_id or registry.ensure_experiment(
        experiment_name(obj, spec), tags={NAMESPACE_TAG: meta["namespace"]}
    )
    run = registry.ensure_run(
        experiment,
        source_key(obj, spec),
        run_name=f"{meta['name']}-{training_key(spec)}",
        tags=lineage_tags(obj, spec),
        params=spec.hyperparameters or {},
    )
    if run.status in ENDED_RUN:
        return  # trained already, its Job gone: the next pass reads the run's outcome
    service = build_service(obj, spec)
    if service is not None:
        ctx.kube.apply(service)
    _apply_job(ctx.kube, obj, spec, RunRef(registry.tracking_uri, run.experiment_id, run.run_id))


def _apply_job(
    kube: Kube, obj: Mapping[str, Any], spec: TrainingJobSpec, ref: RunRef
) -> dict[str, Any]:
    """Server-side apply of the whole desired Job (the run's ids recorded on it)."""
    desired = build_job(obj, spec, ref)
    desired["metadata"]["annotations"][EXPERIMENT_ANNOTATION] = ref.experiment_id
    return kube.apply(desired)


def _end_run(registry: Registry, run_id: str, state: str) -> None:
    """The run's end state is cosmetic: if MLflow is down the next pass tries again."""
    with suppress(TrackingUnavailable):
        registry.end_run(run_id, state)


RECONCILER: KindReconciler[TrainingJobSpec, TrainingFacts, Action] = KindReconciler(
    kind=TRAINING_JOB, shortcut=shortcut, observe=observe, decide=status.decide, act=act
)


reconcile = RECONCILER.run


def end_open_run(body: Mapping[str, Any], registry: Registry) -> str | None:
    """End, KILLED, the MLflow run a deleted TrainingJob left open; its id, or None."""
    run_id = run_left_open(body)
    if run_id is not None:
        registry.end_run(run_id, KILLED)
    return run_id
