"""TrainingJob builders, quality gate and status: table-driven, plain data."""

from __future__ import annotations

import json
from typing import Any

import pytest

from modelworks import conditions
from modelworks import gate as gates
from modelworks.api import TRAINING_JOB
from modelworks.api.trainingjob import GateRule, TrainingJobSpec
from modelworks.builders.trainingjob import RunRef, build_job, build_service, job_name, training_key
from modelworks.status.common import typed
from modelworks.status.trainingjob import (
    Registration,
    RunFacts,
    TrainingFacts,
    compute,
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


# --- status ------------------------------------------------------------------------


def pod(phase: str = "Running", **container_state: Any) -> dict[str, Any]:
    return {
        "metadata": {"name": "p"},
        "status": {
            "phase": phase,
            "containerStatuses": [{"name": "trainer", "image": "trainer:1", **container_state}],
        },
    }


def job(*conds: tuple[str, str], **status: Any) -> dict[str, Any]:
    return {
        "status": {
            "conditions": [{"type": t, "status": "True", "reason": r} for t, r in conds],
            **status,
        }
    }


RUNF = RunFacts(
    "7", "abc123", url="http://mlflow/#/experiments/7/runs/abc123", metrics={"auc": 0.9}
)
PASS = gates.evaluate([rule(metric="auc", value=0.8)], {"auc": 0.9}, {})
FAIL = gates.evaluate([rule(metric="auc", value=0.95)], {"auc": 0.9}, {})
REG = Registration("churn", "3", "runs:/abc123/model", "champion")
OOM = pod("Failed", state={"terminated": {"reason": "OOMKilled", "exitCode": 137}})


@pytest.mark.parametrize(
    ("name", "spec", "facts", "phase", "summary", "reason"),
    [
        (
            "mlflow-down",
            BASE,
            TrainingFacts("j", mlflow_error="connection refused"),
            "Pending",
            "Unknown",
            "MLflowUnavailable",
        ),
        ("creating-job", BASE, TrainingFacts("j", run=RUNF), "Pending", "Unknown", "Pending"),
        (
            "pending-pods",
            BASE,
            TrainingFacts("j", job=job(active=1), pods=[pod("Pending")], run=RUNF),
            "Pending",
            "Unknown",
            "Pending",
        ),
        (
            "running",
            BASE,
            TrainingFacts("j", job=job(active=1, ready=1), pods=[pod()], run=RUNF),
            "Running",
            "Unknown",
            "Training",
        ),
        (
            # The pod exited 0, the Job has not counted it yet: not back to Pending.
            "pods-done-job-not-yet",
            BASE,
            TrainingFacts("j", job=job(active=1), pods=[pod("Succeeded")], run=RUNF),
            "Running",
            "Unknown",
            "Finishing",
        ),
        (
            "image-pull",
            BASE,
            TrainingFacts(
                "j",
                job=job(active=1),
                pods=[
                    pod(
                        "Pending",
                        state={"waiting": {"reason": "ImagePullBackOff", "message": "not found"}},
                    )
                ],
                run=RUNF,
            ),
            "Pending",
            "Unknown",
            "ImagePullBackOff",
        ),
        (
            "oom",
            BASE,
            TrainingFacts(
                "j", job=job(("Failed", "BackoffLimitExceeded"), failed=1), pods=[OOM], run=RUNF
            ),
            "Failed",
            "False",
            "OOMKilled",
        ),
        (
            "deadline",
            BASE,
            TrainingFacts("j", job=job(("Failed", "DeadlineExceeded")), run=RUNF),
            "Failed",
            "False",
            "DeadlineExceeded",
        ),
        (
            "backoff",
            BASE,
            TrainingFacts("j", job=job(("Failed", "BackoffLimitExceeded"), failed=2), run=RUNF),
            "Failed",
            "False",
            "BackoffLimitExceeded",
        ),
        (
            "exit-code",
            BASE,
            TrainingFacts(
                "j",
                job=job(("Failed", "BackoffLimitExceeded")),
                pods=[
                    pod(
                        "Failed",
                        state={
                            "terminated": {
                                "reason": "Error",
                                "exitCode": 3,
                                "message": "ValueError: bad",
                            }
                        },
                    )
                ],
                run=RUNF,
            ),
            "Failed",
            "False",
            "Error",
        ),
        (
            "suspended",
            {**BASE, "suspend": True},
            TrainingFacts("j", job=job(("Suspended", "JobSuspended")), run=RUNF),
            "Suspended",
            "Unknown",
            "Suspended",
        ),
        (
            "evaluating",
            BASE,
            TrainingFacts("j", job=job(("Complete", "")), run=RUNF),
            "Running",
            "Unknown",
            "Evaluating",
        ),
        (
            "gate-failed",
            BASE,
            TrainingFacts("j", job=job(("Complete", "")), run=RUNF, gate=FAIL),
            "Failed",
            "False",
            "QualityGateFailed",
        ),
        (
            "registering",
            BASE,
            TrainingFacts("j", job=job(("Complete", "")), run=RUNF, gate=PASS),
            "Running",
            "Unknown",
            "Registering",
        ),
        (
            "artifact-missing",
            BASE,
            TrainingFacts(
                "j",
                job=job(("Complete", "")),
                run=RUNF,
                gate=PASS,
                registration_error="no model at runs:/abc123/model",
            ),
            "Failed",
            "False",
            "ArtifactMissing",
        ),
        (
            "registered",
            BASE,
            TrainingFacts(
                "j", job=job(("Complete", ""), succeeded=1), run=RUNF, gate=PASS, registration=REG
            ),
            "Succeeded",
            "True",
            "ModelRegistered",
        ),
        (
            "no-model",
            {"image": "t:1"},
            TrainingFacts("j", job=job(("Complete", "")), run=RUNF, gate=PASS),
            "Succeeded",
            "True",
            "Completed",
        ),
    ],
)
def test_status(
    name: str, spec: dict[str, Any], facts: TrainingFacts, phase: str, summary: str, reason: str
) -> None:
    status = compute(tj(spec), parse(spec), facts, NOW)
    assert typed(TRAINING_JOB, status) == status
    assert status["phase"] == phase
    cond = conditions.get(status["conditions"], "Succeeded")
    assert cond is not None
    assert (cond["status"], cond["reason"]) == (summary, reason), cond["message"]
    assert status["observedGeneration"] == 1
    # Recomputing from its own output changes nothing (no write on the next pass).
    again = compute({**tj(spec), "status": status}, parse(spec), facts, "2026-01-02T00:00:00Z")
    assert again == status


def test_registered_status_carries_lineage_and_gate() -> None:
    status = compute(
        tj(BASE),
        parse(BASE),
        TrainingFacts(
            "j",
            job=job(("Complete", ""), succeeded=1, startTime="t0", completionTime="t1"),
            run=RUNF,
            gate=PASS,
            registration=REG,
        ),
        NOW,
    )
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
    ],
)
def test_transitions(
    before: list[dict[str, Any]], after: list[dict[str, Any]], expected: list[tuple[str, str, str]]
) -> None:
    assert conditions.transitions(before, after) == expected
