"""TrainingJob builders, quality gate and status: table-driven, plain data."""

from __future__ import annotations

import json
from dataclasses import replace
from typing import Any

import pytest

from modelworks import conditions
from modelworks import gate as gates
from modelworks.api import TRAINING_JOB
from modelworks.api.trainingjob import GateRule, TrainingJobSpec
from modelworks.builders.trainingjob import RunRef, build_job, build_service, job_name, training_key
from modelworks.status.common import typed
from modelworks.status.trainingjob import (
    ACTIVE_POLL,
    AT_ONCE,
    RETRY,
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
    TrainingFacts,
    decide,
    gate_verdict,
    job_state,
    pod_failure,
    progress,
)

NOW = "2026-01-01T00:00:00Z"
RUN = RunRef("http://mlflow:5000", "7", "abc123")


def tj(
    spec: dict[str, Any], *, labels: dict[str, str] | None = None, generation: int = 1
) -> dict[str, Any]:
    return {
        "apiVersion": "modelworks.dev/v1alpha1",
        "kind": "TrainingJob",
        "metadata": {
            "name": "churn",
            "namespace": "ml",
            "uid": "u-1",
            "generation": generation,
            "labels": labels or {},
        },
        "spec": spec,
    }


def parse(spec: dict[str, Any]) -> TrainingJobSpec:
    return TrainingJobSpec.model_validate(spec)


BASE = {"image": "trainer:1", "model": {"name": "churn"}}


def env_of(job: dict[str, Any]) -> dict[str, Any]:
    return {
        e["name"]: e.get("value", e.get("valueFrom"))
        for e in job["spec"]["template"]["spec"]["containers"][0]["env"]
    }


# --- builders ----------------------------------------------------------------------


def test_single_replica_job_shape() -> None:
    spec = parse(
        {
            **BASE,
            "hyperparameters": {"lr": 0.1, "depth": 6, "fast": True},
            "dataset": {"uri": "s3://d", "version": "v1"},
        }
    )
    job = build_job(tj(BASE), spec, RUN)
    assert job["metadata"]["name"] == f"churn-{training_key(spec)}"
    assert job["metadata"]["ownerReferences"][0] | {} == {
        "apiVersion": "modelworks.dev/v1alpha1",
        "kind": "TrainingJob",
        "name": "churn",
        "uid": "u-1",
        "controller": True,
        "blockOwnerDeletion": True,
    }
    js = job["spec"]
    assert (js["completions"], js["parallelism"], js["completionMode"], js["backoffLimit"]) == (
        1,
        1,
        "Indexed",
        0,
    )
    pod = js["template"]["spec"]
    assert pod["restartPolicy"] == "Never"
    assert pod["securityContext"] == {
        "runAsNonRoot": True,
        "seccompProfile": {"type": "RuntimeDefault"},
    }
    c = pod["containers"][0]
    assert c["securityContext"]["allowPrivilegeEscalation"] is False
    assert c["securityContext"]["capabilities"] == {"drop": ["ALL"]}
    assert pod["automountServiceAccountToken"] is False
    env = env_of(job)
    assert env["MLFLOW_RUN_ID"] == "abc123" and env["MLFLOW_EXPERIMENT_ID"] == "7"
    assert env["MLFLOW_TRACKING_URI"] == "http://mlflow:5000"
    assert json.loads(env["MODELWORKS_HYPERPARAMETERS"]) == {"lr": 0.1, "depth": 6, "fast": True}
    assert (env["HP_LR"], env["HP_DEPTH"], env["HP_FAST"]) == ("0.1", "6", "true")
    assert env["MODELWORKS_DATASET_URI"] == "s3://d" and env["MODELWORKS_DATASET_VERSION"] == "v1"
    assert env["WORLD_SIZE"] == "1" and env["MASTER_ADDR"] == "localhost"
    assert env["RANK"] == {
        "fieldRef": {
            "fieldPath": "metadata.annotations['batch.kubernetes.io/job-completion-index']"
        }
    }
    assert "subdomain" not in pod
    assert build_service(tj(BASE), spec) is None


def test_distributed_job_and_headless_service() -> None:
    spec = parse({**BASE, "replicas": 4, "distributed": {"masterPort": 29500}})
    job = build_job(tj(BASE), spec, RUN)
    name = job_name(tj(BASE), spec)
    env = env_of(job)
    assert (env["WORLD_SIZE"], env["MASTER_PORT"], env["MASTER_ADDR"]) == (
        "4",
        "29500",
        f"{name}-0.{name}",
    )
    assert job["spec"]["completions"] == job["spec"]["parallelism"] == 4
    assert job["spec"]["template"]["spec"]["subdomain"] == name
    svc = build_service(tj(BASE), spec)
    assert svc is not None
    assert svc["metadata"]["name"] == name
    assert svc["spec"]["clusterIP"] == "None" and svc["spec"]["publishNotReadyAddresses"] is True
    assert svc["spec"]["selector"] == {"batch.kubernetes.io/job-name": name}


@pytest.mark.parametrize(
    ("change", "same_run"),
    [
        ({"suspend": True}, True),  # pausing is the same run
        ({"replicas": 1}, True),  # explicitly the default: same run
        ({"replicas": 2}, False),
        ({"hyperparameters": {"lr": 0.2}}, False),
        ({"image": "trainer:2"}, False),
    ],
)
def test_training_key_changes_with_the_spec_but_not_suspend(
    change: dict[str, Any], same_run: bool
) -> None:
    assert (training_key(parse(BASE)) == training_key(parse({**BASE, **change}))) is same_run


def test_overrides_gpus_and_queue_label() -> None:
    spec = parse(
        {
            **BASE,
            "resources": {"limits": {"nvidia.com/gpu": 2, "memory": "4Gi"}},
            "podTemplate": {
                "nodeSelector": {"pool": "gpu"},
                "tolerations": [
                    {"key": "team", "operator": "Equal", "value": "ml", "effect": "NoSchedule"}
                ],
                "serviceAccountName": "trainer",
                "priorityClassName": "high",
                "schedulerName": "volcano",
                "imagePullSecrets": [{"name": "regcred"}],
                "volumes": [{"name": "data", "persistentVolumeClaim": {"claimName": "d"}}],
                "volumeMounts": [{"name": "data", "mountPath": "/data"}],
                "labels": {"team": "ml", "app.kubernetes.io/name": "hijack"},
            },
        }
    )
    job = build_job(tj(BASE, labels={"kueue.x-k8s.io/queue-name": "gpu-queue"}), spec, RUN)
    pod = job["spec"]["template"]
    assert job["metadata"]["labels"]["kueue.x-k8s.io/queue-name"] == "gpu-queue"
    assert "kueue.x-k8s.io/queue-name" not in pod["metadata"]["labels"]  # templates are immutable
    assert pod["metadata"]["labels"]["team"] == "ml"
    assert pod["metadata"]["labels"]["app.kubernetes.io/name"] == "trainingjob"  # ours win
    ps = pod["spec"]
    assert ps["nodeSelector"] == {"pool": "gpu"}
    assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in ps[
        "tolerations"
    ]
    assert {"key": "team", "operator": "Equal", "value": "ml", "effect": "NoSchedule"} in ps[
        "tolerations"
    ]
    assert ps["serviceAccountName"] == "trainer" and "automountServiceAccountToken" not in ps
    assert (ps["priorityClassName"], ps["schedulerName"]) == ("high", "volcano")
    assert ps["imagePullSecrets"] == [{"name": "regcred"}]
    assert ps["containers"][0]["volumeMounts"] == [{"name": "data", "mountPath": "/data"}]
    assert ps["containers"][0]["resources"] == {"limits": {"nvidia.com/gpu": 2, "memory": "4Gi"}}


def test_builder_is_deterministic() -> None:
    spec = parse({**BASE, "hyperparameters": {"b": 1, "a": 2}})
    assert build_job(tj(BASE), spec, RUN) == build_job(tj(BASE), spec, RUN)


# --- quality gate ------------------------------------------------------------------


def rule(**kw: Any) -> GateRule:
    return GateRule.model_validate(kw)


@pytest.mark.parametrize(
    ("rules", "metrics", "baselines", "passed", "summary"),
    [
        ([rule(metric="auc", op=">=", value=0.8)], {"auc": 0.9}, {}, True, "auc=0.9 >= 0.8"),
        ([rule(metric="auc", op=">=", value=0.95)], {"auc": 0.9}, {}, False, "auc=0.9 < 0.95"),
        ([rule(metric="loss", op="<", value=0.5)], {"loss": 0.4}, {}, True, "loss=0.4 < 0.5"),
        ([rule(metric="auc", value=0.5)], {}, {}, False, "auc was not logged"),
        (
            [rule(metric="auc", op=">", baseline={"alias": "champion", "minRelativeChange": 0.01})],
            {"auc": 0.9},
            {"champion": {"auc": 0.8}},
            True,
            "auc=0.9 > 0.808 (@champion 0.8)",
        ),
        (
            [rule(metric="auc", op=">", baseline={"alias": "champion", "minRelativeChange": 0.2})],
            {"auc": 0.9},
            {"champion": {"auc": 0.8}},
            False,
            "auc=0.9 <= 0.96 (@champion 0.8)",
        ),
        (
            [rule(metric="auc", op=">=", baseline={"alias": "champion"})],
            {"auc": 0.7},
            {"champion": None},
            True,
            "auc=0.7 (no @champion auc to beat yet)",
        ),
        (
            [
                rule(
                    metric="loss",
                    op="<=",
                    value=1.0,
                    baseline={"alias": "champion", "minRelativeChange": 0.1},
                )
            ],
            {"loss": 0.95},
            {"champion": {"loss": 1.0}},
            False,
            "loss=0.95 > 0.9 (@champion 1)",
        ),
        (
            [rule(metric="auc", value=0.5), rule(metric="f1", value=0.9)],
            {"auc": 0.6, "f1": 0.5},
            {},
            False,
            "f1=0.5 < 0.9",
        ),
    ],
)
def test_gate(
    rules: list[GateRule],
    metrics: dict[str, float],
    baselines: dict[str, Any],
    passed: bool,
    summary: str,
) -> None:
    out = gates.evaluate(rules, metrics, baselines)
    assert out.passed is passed
    assert out.summary == summary


# --- status: decide(spec, facts, old status, now) -> Decision ---------------------------


def pod(phase: str = "Running", name: str = "p", **container_state: Any) -> dict[str, Any]:
    return {
        "metadata": {"name": name},
        "status": {
            "phase": phase,
            "containerStatuses": [{"name": "trainer", "image": "trainer:1", **container_state}],
        },
    }


def job(*conds: tuple[str, str], suspend: bool = False, **status: Any) -> dict[str, Any]:
    return {
        "spec": {"suspend": suspend},
        "status": {
            "conditions": [{"type": t, "status": "True", "reason": r} for t, r in conds],
            **status,
        },
    }


def facts(**kw: Any) -> TrainingFacts:
    return TrainingFacts("j", generation=1, **kw)


RUNF = RunFacts(
    "7", "abc123", url="http://mlflow/#/experiments/7/runs/abc123", metrics={"auc": 0.9}
)
OPEN = replace(RUNF, status="RUNNING")
DONE = job(("Complete", ""), succeeded=1)
GATED = {
    **BASE,
    "model": {"name": "churn", "alias": "champion"},
    "qualityGate": [{"metric": "auc", "value": 0.8}],
}
STRICT = {**BASE, "qualityGate": [{"metric": "auc", "value": 0.95}]}
SOURCE = ModelSource("runs:/abc123/model")
REG = Registration("churn", "3", "runs:/abc123/model", ("champion",))
OOM = pod("Failed", state={"terminated": {"reason": "OOMKilled", "exitCode": 137}})
EXIT3 = pod(
    "Failed", state={"terminated": {"reason": "Error", "exitCode": 3, "message": "ValueError: bad"}}
)
PULL = pod("Pending", state={"waiting": {"reason": "ImagePullBackOff", "message": "not found"}})

# name, spec, facts -> phase, summary status, summary reason, actions
CASES: list[tuple[str, dict[str, Any], TrainingFacts, str, str, str, tuple[Any, ...]]] = [
    (
        "mlflow-down",
        BASE,
        facts(mlflow_error="connection refused"),
        "Pending",
        "Unknown",
        "MLflowUnavailable",
        (),
    ),
    ("new", BASE, facts(), "Pending", "Unknown", "CreatingRun", (StartRun(None),)),
    (
        "new-in-experiment",
        BASE,
        facts(experiment_id="7"),
        "Pending",
        "Unknown",
        "CreatingRun",
        (StartRun("7"),),
    ),
    # A pass made the run and died before the Job: the run is found by its key.
    (
        "creating-job",
        BASE,
        facts(run=RUNF, experiment_id="7"),
        "Pending",
        "Unknown",
        "Pending",
        (StartRun("7"),),
    ),
    (
        "spec-changed",
        BASE,
        facts(stale_jobs=("churn-old",)),
        "Pending",
        "Unknown",
        "CreatingRun",
        (RemoveStaleJobs(("churn-old",)), StartRun(None)),
    ),
    (
        "pending-pods",
        BASE,
        facts(job=job(active=1), pods=[pod("Pending")], run=RUNF),
        "Pending",
        "Unknown",
        "Pending",
        (),
    ),
    (
        "running",
        BASE,
        facts(job=job(active=1, ready=1), pods=[pod()], run=RUNF),
        "Running",
        "Unknown",
        "Training",
        (),
    ),
    # The pod exited 0, the Job has not counted it yet: not back to Pending.
    (
        "pods-done-job-not-yet",
        BASE,
        facts(job=job(active=1), pods=[pod("Succeeded")], run=RUNF),
        "Running",
        "Unknown",
        "Finishing",
        (),
    ),
    (
        "image-pull",
        BASE,
        facts(job=job(active=1), pods=[PULL], run=RUNF),
        "Pending",
        "Unknown",
        "ImagePullBackOff",
        (),
    ),
    (
        "oom",
        BASE,
        facts(job=job(("Failed", "BackoffLimitExceeded"), failed=1), pods=[OOM], run=RUNF),
        "Failed",
        "False",
        "OOMKilled",
        (),
    ),
    (
        "oom-cleaned",
        {**BASE, "cleanPodPolicy": "All"},
        facts(job=job(("Failed", "BackoffLimitExceeded"), failed=1), pods=[OOM], run=OPEN),
        "Failed",
        "False",
        "OOMKilled",
        (DeletePods(("p",)), EndRun("abc123", "FAILED")),
    ),
    (
        "deadline",
        BASE,
        facts(job=job(("Failed", "DeadlineExceeded")), run=RUNF),
        "Failed",
        "False",
        "DeadlineExceeded",
        (),
    ),
    (
        "backoff",
        BASE,
        facts(job=job(("Failed", "BackoffLimitExceeded"), failed=2), run=RUNF),
        "Failed",
        "False",
        "BackoffLimitExceeded",
        (),
    ),
    (
        "exit-code",
        BASE,
        facts(job=job(("Failed", "BackoffLimitExceeded")), pods=[EXIT3], run=RUNF),
        "Failed",
        "False",
        "Error",
        (),
    ),
    (
        "suspended",
        {**BASE, "suspend": True},
        facts(job=job(("Suspended", "JobSuspended"), suspend=True), run=RUNF),
        "Suspended",
        "Unknown",
        "Suspended",
        (),
    ),
    (
        "suspending",
        {**BASE, "suspend": True},
        facts(job=job(active=1, ready=1), pods=[pod()], run=RUNF),
        "Suspended",
        "Unknown",
        "Suspended",
        (ApplyJob("7", "abc123", True),),
    ),
    # Resumed: the Job still says Suspended until the Job controller starts its pods.
    (
        "resuming",
        BASE,
        facts(job=job(("Suspended", "JobSuspended"), suspend=True), run=RUNF),
        "Suspended",
        "Unknown",
        "Suspended",
        (ApplyJob("7", "abc123", False),),
    ),
    (
        "evaluating",
        BASE,
        facts(job=job(("Complete", "")), run=RUNF),
        "Running",
        "Unknown",
        "Evaluating",
        (),
    ),
    (
        "metrics-unreadable",
        BASE,
        facts(job=DONE, run=RUNF, mlflow_error="timed out"),
        "Running",
        "Unknown",
        "MLflowUnavailable",
        (),
    ),
    (
        "gate-failed",
        STRICT,
        facts(job=job(("Complete", "")), run=OPEN, baselines={}),
        "Failed",
        "False",
        "QualityGateFailed",
        (EndRun("abc123", "FINISHED"),),
    ),
    (
        "registering",
        GATED,
        facts(job=DONE, run=RUNF, baselines={}, model_source=SOURCE),
        "Running",
        "Unknown",
        "Registering",
        (Register("churn", "abc123", "runs:/abc123/model", None),),
    ),
    (
        "registry-down",
        GATED,
        facts(job=DONE, run=RUNF, baselines={}, mlflow_error="503"),
        "Running",
        "Unknown",
        "MLflowUnavailable",
        (),
    ),
    (
        "artifact-missing",
        GATED,
        facts(
            job=job(("Complete", "")),
            run=RUNF,
            baselines={},
            registration_error="no model at runs:/abc123/model",
        ),
        "Failed",
        "False",
        "ArtifactMissing",
        (),
    ),
    (
        "registered",
        GATED,
        facts(job=DONE, run=RUNF, baselines={}, registration=REG),
        "Succeeded",
        "True",
        "ModelRegistered",
        (),
    ),
    (
        "alias-to-move",
        GATED,
        facts(job=DONE, run=RUNF, baselines={}, registration=replace(REG, aliases=())),
        "Succeeded",
        "True",
        "ModelRegistered",
        (SetAlias("churn", "champion", "3"),),
    ),
    (
        "no-model",
        {"image": "t:1"},
        facts(job=job(("Complete", "")), run=RUNF, baselines={}),
        "Succeeded",
        "True",
        "Completed",
        (),
    ),
    # The Job's ttlSecondsAfterFinished deleted it before the final status was written: the
    # run that ended says how the training went, and nothing starts it again.
    (
        "ttl-deleted-finished",
        GATED,
        facts(run=replace(RUNF, status="FINISHED"), baselines={}, registration=REG),
        "Succeeded",
        "True",
        "ModelRegistered",
        (),
    ),
    (
        "ttl-deleted-to-register",
        GATED,
        facts(run=replace(RUNF, status="FINISHED"), baselines={}, model_source=SOURCE),
        "Running",
        "Unknown",
        "Registering",
        (Register("churn", "abc123", "runs:/abc123/model", None),),
    ),
    (
        "ttl-deleted-failed",
        GATED,
        facts(run=replace(RUNF, status="FAILED")),
        "Failed",
        "False",
        "RunFailed",
        (),
    ),
    # A Job missing while its run is still open (deleted by hand mid-run): started again.
    (
        "job-deleted-mid-run",
        GATED,
        facts(run=OPEN),
        "Pending",
        "Unknown",
        "Pending",
        (StartRun("7"),),
    ),
]


@pytest.mark.parametrize(
    ("name", "spec", "facts_", "phase", "summary", "reason", "actions"),
    CASES,
    ids=[case[0] for case in CASES],
)
def test_decide(
    name: str,
    spec: dict[str, Any],
    facts_: TrainingFacts,
    phase: str,
    summary: str,
    reason: str,
    actions: tuple[Any, ...],
) -> None:
    out = decide(parse(spec), facts_, {}, NOW)
    status = out.status
    assert typed(TRAINING_JOB, status) == status
    assert status["phase"] == phase
    cond = conditions.get(status["conditions"], "Succeeded")
    assert cond is not None
    assert (cond["status"], cond["reason"]) == (summary, reason), cond["message"]
    assert status["observedGeneration"] == 1
    assert out.actions == actions
    # Deciding again on its own output with the same facts changes nothing and says nothing
    # new; the actions follow from the facts alone (each finds its work done when it is).
    again = decide(parse(spec), facts_, status, "2026-01-02T00:00:00Z")
    assert again.status == status
    assert again.events == []
    assert again.actions == actions


def acted(facts_: TrainingFacts, actions: tuple[Any, ...]) -> TrainingFacts:
    """The facts the next pass reads once ``actions`` were made (the world, simulated)."""
    for action in actions:
        if isinstance(action, RemoveStaleJobs):
            facts_ = replace(facts_, stale_jobs=())
        elif isinstance(action, StartRun):
            run = facts_.run or RUNF
            facts_ = replace(facts_, job=job(active=1), run=run, experiment_id=run.experiment_id)
        elif isinstance(action, ApplyJob):
            assert facts_.job is not None
            facts_ = replace(facts_, job={**facts_.job, "spec": {"suspend": action.suspend}})
        elif isinstance(action, DeletePods):
            facts_ = replace(facts_, pods=())
        elif isinstance(action, EndRun):
            assert facts_.run is not None
            facts_ = replace(facts_, run=replace(facts_.run, status=action.state))
        elif isinstance(action, Register):
            registration = Registration("churn", "3", action.source)
            facts_ = replace(facts_, registration=registration, model_source=None)
        elif isinstance(action, SetAlias):
            assert facts_.registration is not None
            facts_ = replace(
                facts_, registration=replace(facts_.registration, aliases=(action.alias,))
            )
    return facts_


@pytest.mark.parametrize(
    ("name", "spec", "facts_"), [case[:3] for case in CASES], ids=[case[0] for case in CASES]
)
def test_actions_converge(name: str, spec: dict[str, Any], facts_: TrainingFacts) -> None:
    """Once the world holds what the actions made, nothing is left to write, and a status
    that needed the next pass (the run's id, the version) has it after a bounded number.

    A final status is settled: its pass made its last writes (pods deleted, run closed) and
    the next passes answer from the status alone (the reconciler's shortcut).
    """
    status: dict[str, Any] = {}
    for _ in range(4):
        out = decide(parse(spec), facts_, status, NOW)
        assert typed(TRAINING_JOB, out.status) == out.status
        status = out.status
        if status["phase"] in ("Succeeded", "Failed"):
            summary = conditions.get(status["conditions"], "Succeeded")
            assert summary is not None and summary["status"] in ("True", "False")
            return
        if not out.actions:
            break
        facts_ = acted(facts_, out.actions)
    else:
        raise AssertionError(f"still acting: {out.actions}")
    again = decide(parse(spec), facts_, status, "2026-01-02T00:00:00Z")
    assert (again.status, again.events, again.actions) == (status, [], ())


@pytest.mark.parametrize(
    ("facts_", "requeue", "result"),
    [
        (facts(), AT_ONCE, "ok"),  # the run's id shows a pass later
        (facts(mlflow_error="down"), RETRY, "retry"),
        (facts(job=job(active=1, ready=1), pods=[pod()], run=RUNF), ACTIVE_POLL, "ok"),
        (facts(job=DONE, run=RUNF, baselines={}, model_source=SOURCE), AT_ONCE, "ok"),
        (facts(job=DONE, run=RUNF, baselines={}, registration=REG), None, "ok"),
    ],
)
def test_requeue(facts_: TrainingFacts, requeue: float | None, result: str) -> None:
    out = decide(parse(GATED), facts_, {}, NOW)
    assert (out.requeue_after, out.result) == (requeue, result)


def test_events_follow_transitions() -> None:
    running = decide(
        parse(GATED), facts(job=job(active=1, ready=1), pods=[pod()], run=RUNF), {}, NOW
    )
    assert [(e.type, e.reason) for e in running.events] == [("Normal", "Created")]
    registering = facts(job=DONE, run=RUNF, baselines={}, model_source=SOURCE)
    step = decide(parse(GATED), registering, running.status, NOW)
    assert ("Normal", "Passed") in [(e.type, e.reason) for e in step.events]
    done = decide(parse(GATED), acted(registering, step.actions), step.status, NOW)
    assert sorted((e.type, e.reason) for e in done.events) == [
        ("Normal", "ModelRegistered"),
        ("Normal", "Registered"),
    ]
    failed = decide(
        parse(BASE),
        facts(job=job(("Failed", "BackoffLimitExceeded")), pods=[OOM], run=RUNF),
        running.status,
        NOW,
    )
    assert [(e.type, e.reason) for e in failed.events] == [
        ("Warning", "OOMKilled"),
        ("Warning", "OOMKilled"),
    ]


def test_a_new_generation_drops_stalled_and_moves_observed_generation() -> None:
    old = {
        "observedGeneration": 1,
        "phase": "Failed",
        "conditions": [
            {
                "type": "Succeeded",
                "status": "False",
                "reason": "InvalidSpec",
                "message": "m",
                "lastTransitionTime": NOW,
                "observedGeneration": 1,
            },
            {
                "type": "Stalled",
                "status": "True",
                "reason": "InvalidSpec",
                "message": "m",
                "lastTransitionTime": NOW,
                "observedGeneration": 1,
            },
        ],
    }
    out = decide(parse(BASE), replace(facts(), generation=2), old, NOW)
    assert out.status["observedGeneration"] == 2
    assert conditions.get(out.status["conditions"], "Stalled") is None
    assert all(c["observedGeneration"] == 2 for c in out.status["conditions"])


def test_registered_status_carries_lineage_and_gate() -> None:
    out = decide(
        parse(GATED),
        facts(
            job=job(("Complete", ""), succeeded=1, startTime="t0", completionTime="t1"),
            run=RUNF,
            baselines={},
            registration=REG,
        ),
        {},
        NOW,
    )
    status = out.status
    assert typed(TRAINING_JOB, status) == status
    assert status["registeredModel"] == {
        "name": "churn",
        "version": "3",
        "alias": "champion",
        "source": "runs:/abc123/model",
    }
    assert (
        status["qualityGate"]["summary"] == "auc=0.9 >= 0.8"
        and status["qualityGate"]["passed"] is True
    )
    assert status["mlflow"] == {"experimentId": "7", "runId": "abc123", "runUrl": RUNF.url}
    assert (status["startTime"], status["completionTime"], status["attempts"]) == ("t0", "t1", 1)
    assert status["metrics"] == {"auc": 0.9}
    assert conditions.is_true(status["conditions"], "ModelRegistered")
    assert conditions.is_true(status["conditions"], "QualityGatePassed")


def test_gate_compares_with_the_baseline_it_was_given() -> None:
    spec = {
        **GATED,
        "qualityGate": [
            {
                "metric": "auc",
                "op": ">",
                "baseline": {"alias": "champion", "minRelativeChange": 0.2},
            }
        ],
    }
    champion = Holder("2", "r2", {"auc": 0.8})
    out = decide(parse(spec), facts(job=DONE, run=RUNF, baselines={"champion": champion}), {}, NOW)
    assert out.status["qualityGate"]["summary"] == "auc=0.9 <= 0.96 (@champion 0.8)"
    assert out.status["qualityGate"]["baselines"] == {"champion": {"version": "2", "runId": "r2"}}
    assert out.status["qualityGate"]["runId"] == "abc123"
    assert out.status["phase"] == "Failed" and out.actions == ()


BETTER = {
    **GATED,
    "qualityGate": [{"metric": "auc", "op": ">", "baseline": {"alias": "champion"}}],
}
BEAT = {
    "passed": True,
    "summary": "auc=0.9 > 0.8 (@champion 0.8)",
    "results": [{"metric": "auc", "op": ">", "value": 0.9, "threshold": 0.8, "passed": True}],
    "runId": "abc123",
    "baselines": {"champion": {"version": "2", "runId": "r2"}},
}
CHAMPION = Holder("2", "r2", {"auc": 0.8})
MINE = replace(REG, version="4")


@pytest.mark.parametrize(
    ("case", "gate_facts", "stored", "passed", "summary"),
    [
        (
            "first-judgement",
            facts(run=RUNF, baselines={"champion": CHAMPION}),
            None,
            True,
            BEAT["summary"],
        ),
        ("not-read-yet", facts(run=RUNF), None, None, None),
        ("mlflow-down", facts(run=RUNF, baselines={}, mlflow_error="503"), None, None, None),
        # a later pass of the same run: the alias moved to this run's version, no baseline read
        ("kept", facts(run=RUNF, registration=MINE), BEAT, True, BEAT["summary"]),
        ("kept-failed", facts(run=RUNF), {**BEAT, "passed": False}, False, BEAT["summary"]),
        # judged for another run (an earlier spec): this run is judged afresh
        (
            "other-run",
            facts(run=RUNF, baselines={"champion": Holder("5", "r5", {"auc": 0.95})}),
            {**BEAT, "runId": "r-old"},
            False,
            "auc=0.9 <= 0.95 (@champion 0.95)",
        ),
        # stored before runs were recorded: judged again
        ("legacy", facts(run=RUNF, baselines={"champion": None}), {"passed": False}, True, None),
        # the status was lost after registration: a version of the run proves the gate passed
        (
            "registered-no-status",
            facts(
                run=RUNF,
                baselines={"champion": Holder("5", "r5", {"auc": 0.95})},
                registration=MINE,
            ),
            None,
            True,
            "passed: version 4 was registered (now auc=0.9 <= 0.95 (@champion 0.95))",
        ),
    ],
)
def test_gate_is_judged_once_per_run(
    case: str,
    gate_facts: TrainingFacts,
    stored: dict[str, Any] | None,
    passed: bool | None,
    summary: str | None,
) -> None:
    verdict = gate_verdict(parse(BETTER), gate_facts, stored)
    if passed is None:
        assert verdict is None
        return
    assert verdict is not None and verdict["passed"] is passed
    assert verdict["runId"] == "abc123" or case.startswith("kept")
    if summary is not None:
        assert verdict["summary"] == summary


def test_a_registered_run_keeps_its_verdict_through_a_suspend_toggle() -> None:
    old = decide(
        parse(BETTER),
        facts(job=DONE, run=RUNF, baselines={"champion": CHAMPION}, registration=MINE),
        {},
        NOW,
    ).status
    assert old["phase"] == "Succeeded" and old["qualityGate"] == BEAT
    toggled = replace(facts(job=DONE, run=RUNF, registration=MINE), generation=2)
    out = decide(parse({**BETTER, "suspend": True}), toggled, old, NOW)
    assert out.status["phase"] == "Succeeded"
    assert out.status["qualityGate"] == BEAT
    assert conditions.is_true(out.status["conditions"], "ModelRegistered")
    assert out.events == []


def test_oom_message_names_the_pod_and_the_limit() -> None:
    failure = pod_failure([OOM])
    assert failure is not None and failure.reason == "OOMKilled"
    assert "memory limit" in failure.message


@pytest.mark.parametrize(
    ("job_obj", "state"),
    [
        (None, "Missing"),
        (job(), "Active"),
        (job(("Complete", "")), "Succeeded"),
        (job(("SuccessCriteriaMet", "")), "Succeeded"),
        (job(("FailureTarget", "DeadlineExceeded")), "Failed"),
        (job(("Suspended", "JobSuspended")), "Suspended"),
        # every index succeeded, before the Job controller adds Complete
        ({"spec": {"completions": 2}, "status": {"succeeded": 2, "active": 0}}, "Succeeded"),
        ({"spec": {"completions": 2}, "status": {"succeeded": 1, "active": 1}}, "Active"),
    ],
)
def test_job_state(job_obj: dict[str, Any] | None, state: str) -> None:
    assert job_state(job_obj)[0] == state


@pytest.mark.parametrize(
    ("hyper", "metrics", "expected"),
    [
        ({"epochs": 10}, {"epoch": 4}, {"epoch": 4, "percent": 50.0}),
        ({}, {"step": 30}, {"step": 30}),
        ({"max_steps": 200}, {"step": 50}, {"step": 50, "percent": 25.0}),
        ({}, {"progress": 0.25}, {"percent": 25.0}),
        ({}, {"auc": 0.9}, None),
    ],
)
def test_progress(
    hyper: dict[str, Any], metrics: dict[str, float], expected: dict[str, Any] | None
) -> None:
    assert progress(parse({**BASE, "hyperparameters": hyper}), metrics) == expected


@pytest.mark.parametrize(
    ("before", "after", "expected"),
    [
        ([], [{"type": "Succeeded", "status": "Unknown", "reason": "Pending"}], []),
        (
            [],
            [{"type": "Succeeded", "status": "False", "reason": "OOMKilled", "message": "m"}],
            [("Warning", "OOMKilled", "m")],
        ),
        (
            [{"type": "Ready", "status": "False", "reason": "X"}],
            [{"type": "Ready", "status": "False", "reason": "X"}],
            [],
        ),
        (
            [],
            [
                {
                    "type": "ModelRegistered",
                    "status": "True",
                    "reason": "Registered",
                    "message": "v3",
                }
            ],
            [("Normal", "Registered", "v3")],
        ),
        (
            [],
            [{"type": "Degraded", "status": "True", "reason": "RolledBack", "message": "m"}],
            [("Warning", "RolledBack", "m")],
        ),
        (  # a Job that completed is no longer Running: that is no warning
            [{"type": "Running", "status": "True", "reason": "Training"}],
            [{"type": "Running", "status": "False", "reason": "Finished", "message": "m"}],
            [],
        ),
    ],
)
def test_transitions(
    before: list[dict[str, Any]], after: list[dict[str, Any]], expected: list[tuple[str, str, str]]
) -> None:
    assert conditions.transitions(before, after) == expected
