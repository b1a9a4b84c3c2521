"""(TrainingJob, observed Job and pods, MLflow facts, now) -> status. Pure."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from modelworks import conditions
from modelworks.api.trainingjob import TrainingJobSpec
from modelworks.gate import GateOutcome

SUMMARY = "Succeeded"
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
class Registration:
    name: str
    version: str
    source: str
    alias: str | None = None


@dataclass(frozen=True)
class TrainingFacts:
    """Everything one pass observed; the reconciler fills it, this module judges it."""

    job_name: str
    job: Mapping[str, Any] | None = None
    pods: Sequence[Mapping[str, Any]] = ()
    run: RunFacts | None = None
    mlflow_error: str | None = None  # transient: the tracking server did not answer
    gate: GateOutcome | None = None
    registration: Registration | None = None
    registration_error: str | None = None  # permanent: e.g. the artifact is missing


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


def compute(
    obj: Mapping[str, Any], spec: TrainingJobSpec, facts: TrainingFacts, now: str
) -> dict[str, Any]:
    """The whole new status of the TrainingJob."""
    generation = obj["metadata"].get("generation")
    old = dict(obj.get("status") or {})
    conds: list[dict[str, Any]] = list(old.get("conditions") or [])

    def put(type_: str, status: bool | str, reason: str, message: str) -> None:
        nonlocal conds
        conds = conditions.set_condition(
            conds, type_, status, reason, message, now=now, generation=generation
        )

    status: dict[str, Any] = {"observedGeneration": generation, "jobName": facts.job_name}
    for key in (
        "startTime",
        "completionTime",
        "attempts",
        "metrics",
        "progress",
        "qualityGate",
        "registeredModel",
    ):
        if key in old:
            status[key] = old[key]
    conds = conditions.remove(conds, "Stalled")  # a valid spec is never stalled

    if facts.run is not None:
        mlflow: dict[str, Any] = {
            "experimentId": facts.run.experiment_id,
            "runId": facts.run.run_id,
        }
        if facts.run.url:
            mlflow["runUrl"] = facts.run.url
        status["mlflow"] = mlflow
        if facts.run.metrics:
            status["metrics"] = {k: float(v) for k, v in sorted(facts.run.metrics.items())}
            prog = progress(spec, facts.run.metrics)
            if prog:
                status["progress"] = prog
    elif "mlflow" in old:
        status["mlflow"] = old["mlflow"]

    state, job_reason, job_message = job_state(facts.job)
    job_status = (facts.job or {}).get("status") or {}
    if job_status.get("startTime"):
        status["startTime"] = job_status["startTime"]
    if job_status.get("completionTime"):
        status["completionTime"] = job_status["completionTime"]
    if facts.job is not None:
        status["attempts"] = int(job_status.get("failed") or 0) + (
            1
            if (job_status.get("active") or job_status.get("succeeded") or state == "Succeeded")
            else 0
        )
    failure = pod_failure(facts.pods)

    # --- the run and the Job ------------------------------------------------------
    if facts.run is None:
        reason, message = (
            ("MLflowUnavailable", f"cannot create the MLflow run: {facts.mlflow_error}")
            if facts.mlflow_error
            else ("CreatingRun", "creating the MLflow run before any pod starts")
        )
        put("JobCreated", False, reason, message)
        put("Running", False, reason, message)
        put(SUMMARY, "Unknown", reason, message)
        status["phase"] = "Pending"
        status["conditions"] = conds
        return status
    if facts.job is None:
        put("JobCreated", False, "Creating", f"creating Job {facts.job_name}")
    else:
        put(
            "JobCreated",
            True,
            "Created",
            f"Job {facts.job_name} runs MLflow run {facts.run.run_id}",
        )

    if state == "Failed":
        reason = failure.reason if failure else job_reason
        message = failure.message if failure else (job_message or f"Job {facts.job_name} failed")
        if failure and job_reason and job_reason != failure.reason:
            message = f"{job_reason}: {message}"
        put("Running", False, reason, message)
        put(SUMMARY, False, reason, message)
        status["phase"] = "Failed"
        status["conditions"] = conds
        return status

    if state == "Suspended" or (spec.suspend and state != "Succeeded"):
        put("Running", False, "Suspended", "spec.suspend is true: no training pods run")
        put("Suspended", True, "Suspended", "spec.suspend is true")
        put(SUMMARY, "Unknown", "Suspended", "suspended; set spec.suspend to false to resume")
        status["phase"] = "Suspended"
        status["conditions"] = conds
        return status
    conds = conditions.remove(conds, "Suspended")

    if state in ("Missing", "Active"):
        active = int(job_status.get("active") or 0)
        ready = int(job_status.get("ready") or 0)
        if failure and failure.reason in ("ImagePullBackOff", *CONFIG_REASONS):
            put("Running", False, failure.reason, failure.message)
            put(SUMMARY, "Unknown", failure.reason, failure.message)
            status["phase"] = "Pending"
        elif ready or (active and _any_running(facts.pods)):
            put(
                "Running",
                True,
                "Training",
                f"{max(ready, 1)} of {spec.replicas} training pods running",
            )
            put(SUMMARY, "Unknown", "Training", "training is in progress")
            status["phase"] = "Running"
        elif _any_finished(facts.pods) or job_status.get("succeeded"):
            # The pods are done and the Job controller has not counted them yet: still
            # running (not back to Pending), for the seconds until the Job completes.
            message = f"the training pods finished; Job {facts.job_name} is completing"
            put("Running", True, "Finishing", message)
            put(SUMMARY, "Unknown", "Finishing", message)
            status["phase"] = "Running"
        else:
            put("Running", False, "Pending", "waiting for the training pods to start")
            put(SUMMARY, "Unknown", "Pending", "waiting for the training pods to start")
            status["phase"] = "Pending"
        status["conditions"] = conds
        return status

    # --- the Job succeeded: gate, then registration --------------------------------
    put("Running", False, "Finished", f"Job {facts.job_name} completed")
    if facts.gate is None:
        reason = "MLflowUnavailable" if facts.mlflow_error else "Evaluating"
        message = (
            f"cannot read the run's metrics: {facts.mlflow_error}"
            if facts.mlflow_error
            else "reading the run's metrics"
        )
        put(SUMMARY, "Unknown", reason, message)
        status["phase"] = "Running"
        status["conditions"] = conds
        return status

    gate = facts.gate
    status["qualityGate"] = {
        "passed": gate.passed,
        "summary": gate.summary or "no rules",
        "results": [
            {
                k: v
                for k, v in {
                    "metric": r.metric,
                    "op": r.op,
                    "value": r.value,
                    "threshold": r.threshold,
                    "passed": r.passed,
                }.items()
                if v is not None
            }
            for r in gate.results
        ],
    }
    if not gate.passed:
        message = f"quality gate failed: {gate.summary}; nothing was registered"
        put("QualityGatePassed", False, "QualityGateFailed", message)
        if spec.model is not None:
            put(
                "ModelRegistered",
                False,
                "QualityGateFailed",
                "not registered: the quality gate failed",
            )
        put(SUMMARY, False, "QualityGateFailed", message)
        status["phase"] = "Failed"
        status["conditions"] = conds
        return status
    put("QualityGatePassed", True, "Passed", gate.summary or "no quality gate rules")

    if spec.model is None:
        put(SUMMARY, True, "Completed", "training completed; no model registration was requested")
        status["phase"] = "Succeeded"
    elif facts.registration_error:
        put("ModelRegistered", False, "ArtifactMissing", facts.registration_error)
        put(SUMMARY, False, "ArtifactMissing", facts.registration_error)
        status["phase"] = "Failed"
    elif facts.registration is None:
        reason = "MLflowUnavailable" if facts.mlflow_error else "Registering"
        message = facts.mlflow_error or f"registering {spec.model.name}"
        put("ModelRegistered", False, reason, message)
        put(SUMMARY, "Unknown", reason, message)
        status["phase"] = "Running"
    else:
        reg = facts.registration
        status["registeredModel"] = {
            k: v
            for k, v in {
                "name": reg.name,
                "version": reg.version,
                "alias": reg.alias,
                "source": reg.source,
            }.items()
            if v
        }
        alias = f" as @{reg.alias}" if reg.alias else ""
        message = f"registered {reg.name} version {reg.version}{alias}"
        put("ModelRegistered", True, "Registered", message)
        put(SUMMARY, True, "ModelRegistered", message)
        status["phase"] = "Succeeded"
    status["conditions"] = conds
    return status


def _any_running(pods: Sequence[Mapping[str, Any]]) -> bool:
    return any((p.get("status") or {}).get("phase") == "Running" for p in pods)


def _any_finished(pods: Sequence[Mapping[str, Any]]) -> bool:
    return any((p.get("status") or {}).get("phase") == "Succeeded" for p in pods)
