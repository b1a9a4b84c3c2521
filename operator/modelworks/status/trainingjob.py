"""decide(spec, facts, old status, now) -> Decision[Action] for a TrainingJob. Pure.

The facts are what one pass read (the Job, its pods, the MLflow run, the gate's baselines,
the version registered from the run); the actions are the writes that bring the world
closer to the spec, each idempotent. Where the status needs what an action makes (the run's
id, the version's number) the next pass reads it: such actions ask for a pass at once.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from modelworks import conditions
from modelworks import gate as gates
from modelworks.api import TRAINING_JOB
from modelworks.api.trainingjob import ModelTarget, TrainingJobSpec
from modelworks.conditions import Event
from modelworks.status import tenancy
from modelworks.status.decision import Decision, StatusBuilder

SUMMARY = TRAINING_JOB.summary
AT_ONCE = 1.0  # seconds: the next pass reads what this one's actions made
ACTIVE_POLL = 10.0  # seconds between passes while a run is in progress
RETRY = 20.0  # after MLflow did not answer
OPEN_RUN = ("RUNNING", "SCHEDULED")
ENDED_RUN = ("FINISHED", "FAILED", "KILLED")
# Status fields a pass keeps when it has nothing newer to say about them.
CARRIED = (
    "startTime",
    "completionTime",
    "attempts",
    "metrics",
    "progress",
    "qualityGate",
    "registeredModel",
    "mlflow",
    "dataValidation",
)
IMAGE_REASONS = ("ErrImagePull", "ImagePullBackOff", "InvalidImageName", "ErrImageNeverPull")
CONFIG_REASONS = ("CreateContainerConfigError", "CreateContainerError", "RunContainerError")


@dataclass(frozen=True)
class RunFacts:
    """The MLflow run of this training, as read from the tracking server."""

    experiment_id: str
    run_id: str
    url: str | None = None
    status: str | None = None  # RUNNING, FINISHED, FAILED, KILLED
    metrics: Mapping[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class Holder:
    """The model version that holds a baseline alias, and the metrics of its run."""

    version: str
    run_id: str | None
    metrics: Mapping[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class Registration:
    """The model version registered from the run, and the aliases it holds."""

    name: str
    version: str
    source: str
    aliases: tuple[str, ...] = ()


@dataclass(frozen=True)
class ModelSource:
    """Where the run logged its model: what a new version is registered from."""

    uri: str
    model_id: str | None = None


@dataclass(frozen=True)
class TrainingFacts:
    """Everything one pass read; the reconciler fills it, this module judges it."""

    job_name: str
    generation: int | None = None
    job: Mapping[str, Any] | None = None
    pods: Sequence[Mapping[str, Any]] = ()
    run: RunFacts | None = None
    experiment_id: str | None = None  # the run's experiment, when it exists
    mlflow_error: str | None = None  # transient: the tracking server did not answer
    # Read once the Job succeeded and the run was not judged yet: alias -> the version
    # holding it (None: none, or a version of this very run).
    baselines: Mapping[str, Holder | None] | None = None
    registration: Registration | None = None
    model_source: ModelSource | None = None  # looked up while nothing is registered
    registration_error: str | None = None  # permanent: e.g. the artifact is missing
    stale_jobs: tuple[str, ...] = ()  # Jobs of an earlier spec, still there
    namespace: str = ""  # the TrainingJob's
    # Read once the Job succeeded: which namespace owns spec.model (its owner tag, else the
    # namespace of its first version), and whether it exists without an owner tag.
    model_owner: str | None = None
    model_unclaimed: bool = False
    # Read before the Job exists: why spec.dataset.uri (runs:/, models:/) is not this
    # namespace's to read.
    dataset_refusal: str | None = None
    # Read while spec.dataValidation is set and no training Job exists yet.
    validation: Validation | None = None


@dataclass(frozen=True)
class Validation:
    """The data validation Job of this run, as read (state as :func:`job_state` says)."""

    job_name: str
    state: str = "Missing"
    message: str = ""  # the newest pod's termination message: the verdict, or an error
    failure: str = ""  # the Job's Failed condition message
    failed_pods: int = 0
    profile_uri: str | None = None  # schema.fromAlias: the reference profile to read
    note: str | None = None  # e.g. no version holds the alias yet
    refusal: str | None = None  # the alias' version is another namespace's


# --- actions: what act() does, each idempotent ----------------------------------------


@dataclass(frozen=True)
class StartRun:
    """The Job is missing: find the run by its key or create it (experiment too; None: look
    it up or create it), log the hyperparameters, then apply the Service and the Job."""

    experiment_id: str | None


@dataclass(frozen=True)
class ApplyJob:
    """Apply the Job of this run again with ``suspend``: pause or resume the same run."""

    experiment_id: str
    run_id: str
    suspend: bool


@dataclass(frozen=True)
class EndRun:
    """Close the run (FINISHED or FAILED) the trainer left open."""

    run_id: str
    state: str


@dataclass(frozen=True)
class Register:
    """Register the run's model as a new version (found by run id first)."""

    model: str
    run_id: str
    source: str
    model_id: str | None


@dataclass(frozen=True)
class SetAlias:
    model: str
    alias: str
    version: str


@dataclass(frozen=True)
class DeletePods:
    """The run ended: its pods go, as cleanPodPolicy says."""

    names: tuple[str, ...]


@dataclass(frozen=True)
class RemoveStaleJobs:
    """Jobs of an earlier spec go, with their pods."""

    names: tuple[str, ...]


@dataclass(frozen=True)
class StartValidation:
    """Apply the data validation Job of this run (deterministic name: never two)."""

    profile_uri: str | None
    note: str | None


Action = (
    StartValidation
    | StartRun
    | ApplyJob
    | EndRun
    | Register
    | SetAlias
    | DeletePods
    | RemoveStaleJobs
)
NEXT_PASS_READS = (StartRun, Register)  # what they make shows in the status a pass later


@dataclass(frozen=True)
class Failure:
    reason: str
    message: str


def pod_failure(pods: Sequence[Mapping[str, Any]]) -> Failure | None:
    """The most telling reason a training pod failed or cannot start, if any."""
    found: list[tuple[int, Failure]] = []
    for pod in pods:
        name = pod.get("metadata", {}).get("name", "?")
        status = pod.get("status") or {}
        if status.get("reason") in ("Evicted", "DeadlineExceeded", "OutOfmemory", "OutOfcpu"):
            found.append(
                (2, Failure(status["reason"], f"pod {name}: {status.get('message', '')}".strip()))
            )
        for cs in status.get("containerStatuses") or []:
            for state in (cs.get("state") or {}, cs.get("lastState") or {}):
                term = state.get("terminated")
                if term and term.get("reason") == "OOMKilled":
                    found.append(
                        (
                            0,
                            Failure(
                                "OOMKilled",
                                f"pod {name}: container {cs['name']} was killed for exceeding its memory limit",
                            ),
                        )
                    )
                elif term and term.get("exitCode", 0) != 0:
                    tail = (term.get("message") or "").strip().splitlines()[-1:] or [""]
                    found.append(
                        (
                            3,
                            Failure(
                                "Error",
                                f"pod {name}: container {cs['name']} exited with code {term['exitCode']}"
                                + (f": {tail[0][:300]}" if tail[0] else ""),
                            ),
                        )
                    )
            waiting = (cs.get("state") or {}).get("waiting") or {}
            reason = waiting.get("reason")
            if reason in IMAGE_REASONS:
                found.append(
                    (
                        1,
                        Failure(
                            "ImagePullBackOff",
                            f"pod {name}: cannot pull image {cs.get('image', '')}: {waiting.get('message', reason)}",
                        ),
                    )
                )
            elif reason in CONFIG_REASONS:
                found.append((1, Failure(reason, f"pod {name}: {waiting.get('message', reason)}")))
    return min(found, key=lambda f: f[0])[1] if found else None


def job_state(job: Mapping[str, Any] | None) -> tuple[str, str, str]:
    """(state, reason, message): state is Missing, Suspended, Active, Succeeded or Failed."""
    if job is None:
        return "Missing", "", ""
    conds = (job.get("status") or {}).get("conditions") or []
    for type_ in ("Failed", "FailureTarget"):
        c = conditions.get(conds, type_)
        if c and c.get("status") == "True":
            return "Failed", str(c.get("reason") or "Failed"), str(c.get("message") or "")
    for type_ in ("Complete", "SuccessCriteriaMet"):
        c = conditions.get(conds, type_)
        if c and c.get("status") == "True":
            return "Succeeded", "Completed", ""
    # Every index succeeded: the Job controller adds Complete a moment later.
    completions = (job.get("spec") or {}).get("completions")
    if completions and int((job.get("status") or {}).get("succeeded") or 0) >= int(completions):
        return "Succeeded", "Completed", ""
    c = conditions.get(conds, "Suspended")
    if c and c.get("status") == "True":
        return "Suspended", "Suspended", ""
    return "Active", "", ""


def training_state(job: Mapping[str, Any] | None, run: RunFacts | None) -> tuple[str, str, str]:
    """:func:`job_state`, except for a Job gone after its run ended (its
    ttlSecondsAfterFinished deleted it before the final status was written): the run says
    how the training ended, and nothing starts it again."""
    if job is None and run is not None and run.status in ENDED_RUN:
        if run.status == "FINISHED":
            return "Succeeded", "Completed", ""
        message = f"MLflow run {run.run_id} ended {run.status}; its Job is gone"
        return "Failed", "RunFailed", message
    return job_state(job)


def progress(spec: TrainingJobSpec, metrics: Mapping[str, float]) -> dict[str, Any] | None:
    """Step/epoch from the run's metrics; a percentage when the epochs or steps are known."""
    out: dict[str, Any] = {}
    params = spec.hyperparameters or {}
    for metric, total_keys in (
        ("epoch", ("epochs", "num_epochs")),
        ("step", ("steps", "max_steps")),
    ):
        if metric in metrics:
            out[metric] = int(metrics[metric])
            for key in total_keys:
                total = params.get(key)
                if isinstance(total, int | float) and not isinstance(total, bool) and total > 0:
                    out["percent"] = round(
                        min(100.0, 100.0 * (metrics[metric] + (metric == "epoch")) / total), 1
                    )
    if "progress" in metrics and "percent" not in out:
        value = metrics["progress"]
        out["percent"] = round(100.0 * value if value <= 1.0 else value, 1)
    return out or None


def decide(
    spec: TrainingJobSpec, facts: TrainingFacts, old: Mapping[str, Any], now: str
) -> Decision[Action]:
    """The whole new status of the TrainingJob, its Events, and the writes to make."""
    b = StatusBuilder(TRAINING_JOB, old, facts.generation, now)
    b.set(jobName=facts.job_name, **{key: old[key] for key in CARRIED if key in old})
    if facts.dataset_refusal:
        return _dataset_refused(b, facts)
    held = _validate(b, spec, facts, old)
    if held is not None:
        return held
    _record(b, spec, facts)
    actions = [*_upkeep(spec, facts), *_judge(b, spec, facts)]
    if facts.mlflow_error:
        return b.decide(actions=actions, requeue_after=RETRY, result="retry")
    if any(isinstance(action, NEXT_PASS_READS) for action in actions):
        requeue: float | None = AT_ONCE
    else:
        requeue = ACTIVE_POLL if b.fields["phase"] in ("Pending", "Running") else None
    return b.decide(events=_claim(facts, actions), actions=actions, requeue_after=requeue)


def _dataset_refused(b: StatusBuilder, facts: TrainingFacts) -> Decision[Action]:
    """spec.dataset.uri is another namespace's run or model: no run, no pod, a settled
    failure (a new spec is a new generation, judged again)."""
    message = f"spec.dataset.uri: {facts.dataset_refusal}"
    b.put("JobCreated", False, tenancy.OWNED_ELSEWHERE, message)
    b.summarise(["JobCreated"], tenancy.OWNED_ELSEWHERE, message)
    b.set(phase="Failed")
    return b.decide(actions=[RemoveStaleJobs(facts.stale_jobs)] if facts.stale_jobs else [])


VALIDATED = "DataValidated"


def _validate(
    b: StatusBuilder, spec: TrainingJobSpec, facts: TrainingFacts, old: Mapping[str, Any]
) -> Decision[Action] | None:
    """spec.dataValidation holds everything back (the run, the Job) until the check passed:
    None when training may go on, else the decision of a pass that waits or fails."""
    check = facts.validation
    if spec.data_validation is None:
        b.drop(VALIDATED)
        b.set(dataValidation=None)
        return None
    if check is None or _passed_before(old, check.job_name):
        return None
    stale: list[Action] = [RemoveStaleJobs(facts.stale_jobs)] if facts.stale_jobs else []
    if check.refusal:
        message = f"spec.dataValidation.schema.fromAlias: {check.refusal}"
        return _not_validated(b, stale, tenancy.OWNED_ELSEWHERE, message, check)
    if check.state == "Succeeded":
        verdict = _verdict(check.message)
        if verdict is not None and verdict.get("passed") is True:
            b.set(dataValidation=_validation_status(check, verdict))
            b.put(VALIDATED, True, "Passed", str(verdict.get("summary") or "passed"))
            return None
        message = f"the validation Job {check.job_name} gave no verdict: {check.message[:300]}"
        return _not_validated(b, stale, "ValidationJobFailed", message, check)
    if check.state == "Failed":
        return _validation_failed(b, stale, check)
    actions: list[Action] = [*stale]
    if check.state == "Missing":
        actions.append(StartValidation(check.profile_uri, check.note))
    message = f"the validation Job {check.job_name} checks {_uri(spec)}"
    if check.failed_pods:
        message += f"; attempt {check.failed_pods + 1} (the last one: {check.message[:300]})"
    b.put(VALIDATED, "Unknown", "Validating", message)
    _waiting(b, "Pending", "Validating", message)
    b.set(dataValidation={"jobName": check.job_name})
    requeue = AT_ONCE if check.state == "Missing" else ACTIVE_POLL
    return b.decide(actions=actions, requeue_after=requeue)


def _uri(spec: TrainingJobSpec) -> str:
    return spec.dataset.uri if spec.dataset else "the dataset"


def _passed_before(old: Mapping[str, Any], job: str) -> bool:
    stored = old.get("dataValidation") or {}
    return bool(stored.get("jobName") == job and stored.get("passed") is True)


def _verdict(message: str) -> dict[str, Any] | None:
    """The verdict JSON a validation pod wrote, or None (an error text, or nothing)."""
    try:
        data = json.loads(message)
    except ValueError:
        return None
    return data if isinstance(data, dict) and isinstance(data.get("passed"), bool) else None


def _validation_status(check: Validation, verdict: Mapping[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {"jobName": check.job_name, "passed": bool(verdict["passed"])}
    out["summary"] = str(verdict.get("summary") or "")
    if isinstance(verdict.get("rows"), int):
        out["rows"] = verdict["rows"]
    keys = ("rule", "column", "message", "value", "limit")
    failures = [
        {k: f[k] for k in keys if f.get(k) is not None}
        for f in verdict.get("failures") or []
        if isinstance(f, dict) and f.get("rule") and f.get("message")
    ]
    if failures:
        out["failures"] = failures
    return out


def _validation_failed(
    b: StatusBuilder, stale: list[Action], check: Validation
) -> Decision[Action]:
    """A data verdict (the pod's JSON) fails the run as DataInvalid; anything else is the
    check that could not run, after the Job controller's retries: ValidationJobFailed."""
    verdict = _verdict(check.message)
    if verdict is not None and verdict.get("passed") is False:
        b.set(dataValidation=_validation_status(check, verdict))
        message = f"{verdict.get('summary') or 'the data failed a check'}; nothing was trained"
        return _not_validated(b, stale, "DataInvalid", message, check)
    cause = check.message or check.failure or "no message"
    message = (
        f"the validation Job {check.job_name} could not check the data "
        f"({check.failed_pods} attempts): {cause[:500]}"
    )
    return _not_validated(b, stale, "ValidationJobFailed", message, check)


def _not_validated(
    b: StatusBuilder, stale: list[Action], reason: str, message: str, check: Validation
) -> Decision[Action]:
    """A settled failure: no run, no training pod; a new spec (generation) checks again."""
    b.put(VALIDATED, False, reason, message)
    b.summarise([VALIDATED], reason, message)
    b.set(phase="Failed")
    if "dataValidation" not in b.fields or b.fields["dataValidation"].get("jobName") != (
        check.job_name
    ):
        b.set(dataValidation={"jobName": check.job_name, "passed": False, "summary": message})
    return b.decide(actions=stale)


def _claim(facts: TrainingFacts, actions: Sequence[Action]) -> list[Event]:
    """An Event when this pass's write claims a model that no namespace owned yet."""
    writes = [a.model for a in actions if isinstance(a, Register | SetAlias)]
    if not writes or not facts.model_unclaimed:
        return []
    message = f"model {writes[0]} had no owner tag; namespace {facts.namespace} claims it"
    return [Event("ModelClaimed", message, "Normal")]


def _record(b: StatusBuilder, spec: TrainingJobSpec, facts: TrainingFacts) -> None:
    """What the run and the Job say, whatever the verdict: ids, metrics, times, attempts."""
    if facts.run is not None:
        run = facts.run
        mlflow = {"experimentId": run.experiment_id, "runId": run.run_id}
        b.set(mlflow={**mlflow, "runUrl": run.url} if run.url else mlflow)
        if run.metrics:
            b.set(metrics={k: float(v) for k, v in sorted(run.metrics.items())})
            b.set(progress=progress(spec, run.metrics) or b.fields.get("progress"))
    if facts.job is None:
        return
    job_status = facts.job.get("status") or {}
    for key in ("startTime", "completionTime"):
        if job_status.get(key):
            b.set(**{key: job_status[key]})
    counted = job_status.get("active") or job_status.get("succeeded")
    running = 1 if (counted or job_state(facts.job)[0] == "Succeeded") else 0
    b.set(attempts=int(job_status.get("failed") or 0) + running)


def _upkeep(spec: TrainingJobSpec, facts: TrainingFacts) -> list[Action]:
    """Writes that follow from the facts alone: stale Jobs, the run and its Job, clean-up."""
    actions: list[Action] = []
    if facts.stale_jobs:
        actions.append(RemoveStaleJobs(facts.stale_jobs))
    run = facts.run
    state = training_state(facts.job, run)[0]
    if facts.job is None and state == "Missing" and not facts.mlflow_error:
        actions.append(StartRun(run.experiment_id if run else facts.experiment_id))
    elif run is not None and facts.job is not None and _suspended(facts.job) != spec.suspend:
        actions.append(ApplyJob(run.experiment_id, run.run_id, spec.suspend))
    if state not in ("Succeeded", "Failed"):
        return actions
    doomed = _doomed_pods(facts.pods, spec.clean_pod_policy)
    if doomed:
        actions.append(DeletePods(doomed))
    if run is not None and run.status in OPEN_RUN:
        actions.append(EndRun(run.run_id, "FINISHED" if state == "Succeeded" else "FAILED"))
    return actions


def _doomed_pods(pods: Sequence[Mapping[str, Any]], policy: str) -> tuple[str, ...]:
    """The run has ended: the pods cleanPodPolicy deletes (None keeps them to debug)."""
    names = []
    for pod in pods:
        if (pod.get("metadata") or {}).get("deletionTimestamp"):
            continue
        phase = (pod.get("status") or {}).get("phase")
        if policy == "All" or (policy == "Running" and phase in ("Running", "Pending")):
            names.append(str(pod["metadata"]["name"]))
    return tuple(names)


def _judge(b: StatusBuilder, spec: TrainingJobSpec, facts: TrainingFacts) -> list[Action]:
    """Conditions and phase: the run, then the Job, then (once it succeeded) gate and model."""
    if facts.run is None:
        reason, message = (
            ("MLflowUnavailable", f"cannot create the MLflow run: {facts.mlflow_error}")
            if facts.mlflow_error
            else ("CreatingRun", "creating the MLflow run before any pod starts")
        )
        _waiting(b, "Pending", reason, message, also=("JobCreated", "Running"))
        return []
    state, reason, message = training_state(facts.job, facts.run)
    if facts.job is not None:
        runs = f"Job {facts.job_name} runs MLflow run {facts.run.run_id}"
        b.put("JobCreated", True, "Created", runs)
    elif state == "Missing":
        b.put("JobCreated", False, "Creating", f"creating Job {facts.job_name}")
    if state == "Failed":
        _failed(b, facts, reason, message)
        return []
    if state == "Suspended" or (spec.suspend and state != "Succeeded"):
        b.put("Running", False, "Suspended", "spec.suspend is true: no training pods run")
        b.put("Suspended", True, "Suspended", "spec.suspend is true")
        b.put(SUMMARY, "Unknown", "Suspended", "suspended; set spec.suspend to false to resume")
        b.set(phase="Suspended")
        return []
    b.drop("Suspended")
    if state in ("Missing", "Active"):
        _in_progress(b, spec, facts)
        return []
    return _finished(b, spec, facts)


def _waiting(
    b: StatusBuilder, phase: str, reason: str, message: str, also: Sequence[str] = ()
) -> None:
    """Not done yet: the summary (and the conditions in ``also``) say what it waits for."""
    for type_ in also:
        b.put(type_, False, reason, message)
    b.put(SUMMARY, "Unknown", reason, message)
    b.set(phase=phase)


def _failed(b: StatusBuilder, facts: TrainingFacts, job_reason: str, job_message: str) -> None:
    failure = pod_failure(facts.pods)
    reason = failure.reason if failure else job_reason
    message = failure.message if failure else (job_message or f"Job {facts.job_name} failed")
    if failure and job_reason and job_reason != failure.reason:
        message = f"{job_reason}: {message}"
    b.put("Running", False, reason, message)
    b.summarise(["Running"], reason, message)
    b.set(phase="Failed")


def _in_progress(b: StatusBuilder, spec: TrainingJobSpec, facts: TrainingFacts) -> None:
    job_status = (facts.job or {}).get("status") or {}
    active = int(job_status.get("active") or 0)
    ready = int(job_status.get("ready") or 0)
    failure = pod_failure(facts.pods)
    if failure and failure.reason in ("ImagePullBackOff", *CONFIG_REASONS):
        _waiting(b, "Pending", failure.reason, failure.message, also=("Running",))
    elif ready or (active and _any_running(facts.pods)):
        running = f"{max(ready, 1)} of {spec.replicas} training pods running"
        b.put("Running", True, "Training", running)
        _waiting(b, "Running", "Training", "training is in progress")
    elif _any_finished(facts.pods) or job_status.get("succeeded"):
        # The pods are done and the Job controller has not counted them yet: still
        # running (not back to Pending), for the seconds until the Job completes.
        message = f"the training pods finished; Job {facts.job_name} is completing"
        b.put("Running", True, "Finishing", message)
        _waiting(b, "Running", "Finishing", message)
    else:
        message = "waiting for the training pods to start"
        _waiting(b, "Pending", "Pending", message, also=("Running",))


def _finished(b: StatusBuilder, spec: TrainingJobSpec, facts: TrainingFacts) -> list[Action]:
    """The Job succeeded: the quality gate, then the registration."""
    assert facts.run is not None
    b.put("Running", False, "Finished", f"Job {facts.job_name} completed")
    if _owned_elsewhere(b, spec, facts):
        return []
    verdict = gate_verdict(spec, facts, b.fields.get("qualityGate"))
    if verdict is None:
        if facts.mlflow_error:
            message = f"cannot read the run's metrics: {facts.mlflow_error}"
            _waiting(b, "Running", "MLflowUnavailable", message)
        else:
            _waiting(b, "Running", "Evaluating", "reading the run's metrics")
        return []
    b.set(qualityGate=verdict)
    summary = str(verdict.get("summary") or "")
    if not verdict.get("passed"):
        message = f"quality gate failed: {summary}; nothing was registered"
        b.put("QualityGatePassed", False, "QualityGateFailed", message)
        if spec.model is not None:
            refused = "not registered: the quality gate failed"
            b.put("ModelRegistered", False, "QualityGateFailed", refused)
        b.summarise(["QualityGatePassed"], "QualityGateFailed", message)
        b.set(phase="Failed")
        return []
    passed = summary if verdict.get("results") else "no quality gate rules"
    b.put("QualityGatePassed", True, "Passed", passed)
    if spec.model is None:
        done = "training completed; no model registration was requested"
        b.summarise(["QualityGatePassed"], "Completed", done)
        b.set(phase="Succeeded")
        return []
    return _registration(b, spec.model, facts)


def _owned_elsewhere(b: StatusBuilder, spec: TrainingJobSpec, facts: TrainingFacts) -> bool:
    """spec.model belongs to another namespace: nothing is registered, no alias moves, and
    the TrainingJob fails (a settled failure: retrying cannot change the owner)."""
    if spec.model is None:
        return False
    refusal = tenancy.write_refusal(facts.namespace, spec.model.name, facts.model_owner)
    if refusal is None:
        return False
    b.put("ModelRegistered", False, tenancy.OWNED_ELSEWHERE, refusal)
    b.summarise(["ModelRegistered"], tenancy.OWNED_ELSEWHERE, refusal)
    b.set(phase="Failed")
    return True


def judged(stored: Mapping[str, Any] | None, run_id: str) -> Mapping[str, Any] | None:
    """The verdict stored for ``run_id``, if that run was judged already."""
    if stored and stored.get("runId") == run_id and stored.get("passed") is not None:
        return stored
    return None


def gate_verdict(
    spec: TrainingJobSpec, facts: TrainingFacts, stored: Mapping[str, Any] | None
) -> dict[str, Any] | None:
    """The gate's verdict on the run, as stored; None while it cannot be judged yet.

    A run is judged once, against the versions that held the baseline aliases then: later
    passes of the same run (a suspend toggle, a resync) keep the stored verdict, since the
    alias may since have moved to this run's own version. With no stored verdict (a lost
    status write), a version registered from the run proves the gate passed.
    """
    assert facts.run is not None
    kept = judged(stored, facts.run.run_id)
    if kept is not None:
        return dict(kept)
    if facts.baselines is None or facts.mlflow_error:
        return None
    metrics = {alias: (h.metrics if h else None) for alias, h in facts.baselines.items()}
    gate = gates.evaluate(list(spec.quality_gate or []), facts.run.metrics, metrics)
    out = gate_status(gate, facts.run.run_id, facts.baselines)
    reg = facts.registration
    if reg is not None and not gate.passed:
        out["passed"] = True
        out["summary"] = f"passed: version {reg.version} was registered (now {out['summary']})"
    return out


def gate_status(
    gate: gates.GateOutcome,
    run_id: str | None = None,
    baselines: Mapping[str, Holder | None] | None = None,
) -> dict[str, Any]:
    """The gate as stored: the verdict, one line, each rule (unset fields left out), the run
    judged and the versions it was compared with."""
    results = [
        {
            key: value
            for key, value in {
                "metric": r.metric,
                "op": r.op,
                "value": r.value,
                "threshold": r.threshold,
                "passed": r.passed,
            }.items()
            if value is not None
        }
        for r in gate.results
    ]
    out: dict[str, Any] = {
        "passed": gate.passed,
        "summary": gate.summary or "no rules",
        "results": results,
    }
    if run_id is not None:
        out["runId"] = run_id
    held = {
        alias: {k: v for k, v in {"version": h.version, "runId": h.run_id}.items() if v}
        for alias, h in sorted((baselines or {}).items())
        if h is not None
    }
    if held:
        out["baselines"] = held
    return out


def _registration(b: StatusBuilder, model: ModelTarget, facts: TrainingFacts) -> list[Action]:
    """The gate passed: register the run's model once, then point the alias at it."""
    assert facts.run is not None
    reg = facts.registration
    order = ["QualityGatePassed", "ModelRegistered"]
    if facts.registration_error:
        b.put("ModelRegistered", False, "ArtifactMissing", facts.registration_error)
        b.summarise(order, "ArtifactMissing", facts.registration_error)
        b.set(phase="Failed")
        return []
    if reg is None:
        source = facts.model_source
        reason = "MLflowUnavailable" if facts.mlflow_error else "Registering"
        message = facts.mlflow_error or f"registering {model.name}"
        _waiting(b, "Running", reason, message, also=("ModelRegistered",))
        if source is None or facts.mlflow_error:
            return []
        return [Register(model.name, facts.run.run_id, source.uri, source.model_id)]
    registered = {"name": reg.name, "version": reg.version, "alias": model.alias}
    b.set(registeredModel={k: v for k, v in {**registered, "source": reg.source}.items() if v})
    alias = f" as @{model.alias}" if model.alias else ""
    message = f"registered {reg.name} version {reg.version}{alias}"
    b.put("ModelRegistered", True, "Registered", message)
    b.summarise(order, "ModelRegistered", message)
    b.set(phase="Succeeded")
    if model.alias and model.alias not in reg.aliases:
        return [SetAlias(reg.name, model.alias, reg.version)]
    return []


def _suspended(job: Mapping[str, Any] | None) -> bool:
    return bool(((job or {}).get("spec") or {}).get("suspend"))


def _any_running(pods: Sequence[Mapping[str, Any]]) -> bool:
    return any((p.get("status") or {}).get("phase") == "Running" for p in pods)


def _any_finished(pods: Sequence[Mapping[str, Any]]) -> bool:
    return any((p.get("status") or {}).get("phase") == "Succeeded" for p in pods)
