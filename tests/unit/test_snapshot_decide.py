"""Retraining on fresh data: the monitor's snapshot decisions (pure, plain data)."""

from __future__ import annotations

import json
from dataclasses import replace
from typing import Any

import pytest

from modelworks import conditions
from modelworks.api.trainingjob import TrainingJobSpec
from modelworks.builders.driftmonitor import retrain_key, retrain_name, snapshot_job_name
from modelworks.builders.trainingjob import lineage_tags
from modelworks.names import HOLDOUT_ANNOTATION, SNAPSHOT_ANNOTATION, TRIGGER_ANNOTATION
from modelworks.status import snapshot as snap
from modelworks.status.driftmonitor import JOB_POLL, RetrainFacts, StartRetrain
from tests.unit.test_driftmonitor import NOW, SERVER, decided, facts_of, live

STORAGE = {"endpoint": "http://s3.local:8333", "credentials": {"secretName": "s3"}}
CAPTURED = {
    "target": {"modelDeployment": {"name": "churn"}},
    "window": "30m",
    "storage": STORAGE,
    "retrain": {
        "template": {"image": "t:1", "dataset": {"uri": "builtin://churn", "version": "seed-7"}},
        "dataset": {"source": "Captured", "target": "churned", "window": "2h", "minRows": 50},
    },
}
CAPTURE = snap.Capture("churn", "churn-model", "s3://capture/churn")
KEY = retrain_key("u-9", None)
JOB = snapshot_job_name("churn-drift", KEY)
RESULT = {
    "uri": "s3://capture/churn/datasets/ml/churn-drift/sha256-0123456789abcdef/train.parquet",
    "holdoutUri": "s3://capture/churn/datasets/ml/churn-drift/sha256-0123456789abcdef/holdout.parquet",
    "digest": "sha256-0123456789abcdef",
    "rows": 400,
    "holdoutRows": 100,
    "windowStart": "2026-01-01T10:00:00Z",
    "windowEnd": NOW,
    "reused": False,
}
PENDING = {
    "nextCheckTime": "2026-01-01T12:04:00Z",
    "observedGeneration": 1,
    "retrainCount": 1,
    "snapshot": {"job": JOB, "key": KEY, "phase": "Running"},
}


def cond(status: dict[str, Any], type_: str = snap.CONDITION) -> dict[str, Any]:
    found = conditions.get(status.get("conditions"), type_)
    assert found is not None, f"no {type_} condition"
    return found


def test_a_decided_retraining_first_takes_a_snapshot() -> None:
    facts = facts_of(CAPTURED, server=SERVER, live=replace(live(1), capture=CAPTURE))
    out = decided(CAPTURED, facts)
    (action,) = out.actions
    assert isinstance(action, snap.ApplySnapshotJob)
    body = action.body
    assert body["metadata"]["name"] == JOB == f"churn-drift-snap-{KEY}"
    assert body["metadata"]["annotations"][TRIGGER_ANNOTATION] == "drift"
    container = body["spec"]["template"]["spec"]["containers"][0]
    assert container["args"][:2] == ["snapshot", "--config"]
    config = json.loads(container["args"][2])
    assert config == {
        "destination": "s3://capture/churn",
        "namespace": "ml",
        "monitor": "churn-drift",
        "model": "churn-model",
        "start": "2026-01-01T10:00:00Z",
        "end": NOW,
        "target": "churned",
        "minRows": 50,
        "holdoutFraction": 0.2,
        "columns": ["x"],
    }
    env = {e["name"]: e for e in container["env"]}
    assert env["AWS_ENDPOINT_URL_S3"]["value"] == "http://s3.local:8333"
    assert env["AWS_SECRET_ACCESS_KEY"]["valueFrom"]["secretKeyRef"]["name"] == "s3"
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert out.status["snapshot"]["phase"] == "Running" and out.status["snapshot"]["key"] == KEY
    assert cond(out.status)["reason"] == "Materialising"
    assert "retrainCount" not in out.status and out.requeue_after == JOB_POLL
    assert [e.reason for e in out.events] == ["DriftDetected", "SnapshotStarted"]


def test_a_pass_whose_status_write_was_lost_starts_the_same_snapshot_job() -> None:
    facts = facts_of(CAPTURED, server=SERVER, live=replace(live(1), capture=CAPTURE))
    first, again = decided(CAPTURED, facts), decided(CAPTURED, facts)
    assert first.actions == again.actions


@pytest.mark.parametrize("drift", [0, 1])
def test_captured_rows_of_a_target_that_captures_nothing_is_a_condition(drift: int) -> None:
    nothing = replace(CAPTURE, destination=None)
    out = decided(
        CAPTURED, facts_of(CAPTURED, server=SERVER, live=replace(live(drift), capture=nothing))
    )
    assert out.actions == ()
    found = cond(out.status)
    assert (found["status"], found["reason"]) == ("False", "NoDataCapture")
    assert "spec.retrain.dataset.source" in found["message"]
    assert "spec.dataCapture" in found["message"]
    assert ("SnapshotFailed" in [e.reason for e in out.events]) == bool(drift)


def test_a_running_snapshot_is_polled_without_a_check() -> None:
    facts = facts_of(
        CAPTURED, PENDING, server=SERVER, snapshot=snap.SnapshotJob(JOB), snapshot_only=True
    )
    out = decided(CAPTURED, facts, PENDING)
    assert out.actions == () and out.requeue_after == JOB_POLL
    assert out.status["snapshot"] == PENDING["snapshot"]
    assert out.status["nextCheckTime"] == PENDING["nextCheckTime"] and "verdict" not in out.status


def ready_job(**kw: Any) -> snap.SnapshotJob:
    evidence = {"monitor": "churn-drift", "trigger": "drift", "verdict": "Drift"}
    fields: dict[str, Any] = {
        "finished": "Complete",
        "message": json.dumps(RESULT),
        "evidence": evidence,
        **kw,
    }
    return snap.SnapshotJob(JOB, **fields)


def test_a_ready_snapshot_starts_the_training_job_on_it() -> None:
    facts = facts_of(CAPTURED, PENDING, server=SERVER, snapshot=ready_job(), snapshot_only=True)
    out = decided(CAPTURED, facts, PENDING)
    (start,) = out.actions
    assert isinstance(start, StartRetrain)
    body = start.body
    assert body["metadata"]["name"] == retrain_name("churn-drift", KEY)
    assert body["spec"]["dataset"] == {"uri": RESULT["uri"], "version": RESULT["digest"]}
    env = {e["name"]: e.get("value") for e in body["spec"]["env"]}
    assert env["MODELWORKS_HOLDOUT_URI"] == RESULT["holdoutUri"]
    assert body["spec"]["storage"] == STORAGE
    notes = body["metadata"]["annotations"]
    assert notes[HOLDOUT_ANNOTATION] == RESULT["holdoutUri"]
    lineage = json.loads(notes[SNAPSHOT_ANNOTATION])
    assert lineage["digest"] == RESULT["digest"] and lineage["monitor"] == "ml/churn-drift"
    assert lineage["windowStart"] == RESULT["windowStart"]
    status = out.status
    assert status["snapshot"]["phase"] == "Ready"
    assert status["snapshot"]["trainingJob"] == body["metadata"]["name"]
    assert status["snapshot"]["digest"] == RESULT["digest"]
    assert (cond(status)["status"], cond(status)["reason"]) == ("True", "Materialised")
    assert status["retrainCount"] == 2
    assert status["lastRetrain"]["trainingJob"] == body["metadata"]["name"]
    assert [e.reason for e in out.events] == ["SnapshotReady", "RetrainStarted"]
    assert out.requeue_after == 240.0  # until the next check is due


def test_the_run_of_a_retraining_on_a_snapshot_carries_its_lineage() -> None:
    facts = facts_of(CAPTURED, PENDING, server=SERVER, snapshot=ready_job(), snapshot_only=True)
    (start,) = decided(CAPTURED, facts, PENDING).actions
    body = {**start.body, "metadata": {**start.body["metadata"], "uid": "u-1", "generation": 1}}
    tags = lineage_tags(body, TrainingJobSpec.model_validate(body["spec"]))
    assert tags["modelworks.dev/dataset-version"] == RESULT["digest"]
    assert tags["modelworks.dev/dataset-uri"] == RESULT["uri"]
    assert json.loads(tags["modelworks.dev/annotation.modelworks.dev.snapshot"])["digest"]
    assert tags["modelworks.dev/annotation.modelworks.dev.retrain-trigger"] == "drift"
    assert "modelworks.dev/annotation.modelworks.dev.drift-evidence" in tags


@pytest.mark.parametrize(
    ("job", "reason", "text"),
    [
        (
            snap.SnapshotJob(JOB, "Failed", "TooFewRows: 12 labelled rows in the window"),
            "TooFewRows",
            "12 labelled rows",
        ),
        (
            snap.SnapshotJob(JOB, "Failed", "", "BackoffLimitExceeded"),
            "SnapshotFailed",
            "BackoffLimitExceeded",
        ),
        (snap.SnapshotJob(JOB, "Complete", "not json"), "SnapshotFailed", "not json"),
        (None, "SnapshotFailed", "no longer exists"),
    ],
)
def test_a_failed_snapshot_says_why_and_trains_nothing(
    job: snap.SnapshotJob | None, reason: str, text: str
) -> None:
    facts = facts_of(CAPTURED, PENDING, server=SERVER, snapshot=job, snapshot_only=True)
    out = decided(CAPTURED, facts, PENDING)
    assert out.actions == ()
    assert out.status["snapshot"]["phase"] == "Failed" and text in out.status["snapshot"]["message"]
    found = cond(out.status)
    assert (found["status"], found["reason"]) == ("False", reason) and text in found["message"]
    assert [(e.reason, e.type) for e in out.events] == [(reason, "Warning")]
    assert out.status["retrainCount"] == 1 and out.requeue_after == 240.0


def test_after_a_failed_snapshot_the_next_check_decides_a_new_one() -> None:
    failed = {
        **PENDING,
        "lastCheckTime": "2026-01-01T11:55:00Z",
        "snapshot": {**PENDING["snapshot"], "phase": "Failed"},
    }
    facts = facts_of(CAPTURED, failed, server=SERVER, live=replace(live(1), capture=CAPTURE))
    out = decided(CAPTURED, facts, failed)
    (action,) = out.actions
    assert isinstance(action, snap.ApplySnapshotJob)
    assert action.body["metadata"]["name"] != JOB
    assert out.status["snapshot"]["phase"] == "Running"


def test_a_due_check_while_a_snapshot_runs_decides_no_second_one() -> None:
    due = {**PENDING, "nextCheckTime": NOW}
    facts = facts_of(
        CAPTURED,
        due,
        server=SERVER,
        live=replace(live(1), capture=CAPTURE),
        snapshot=snap.SnapshotJob(JOB),
    )
    out = decided(CAPTURED, facts, due)
    assert out.actions == () and out.status["verdict"] == "Drift"
    assert out.status["snapshot"] == PENDING["snapshot"] and out.requeue_after == JOB_POLL


def test_a_refused_training_job_on_a_snapshot_is_a_failed_retraining() -> None:
    refused = RetrainFacts(refused=("RetrainRefused", "the API server refused it"))
    facts = facts_of(
        CAPTURED, PENDING, server=SERVER, snapshot=ready_job(), snapshot_only=True, retrain=refused
    )
    out = decided(CAPTURED, facts, PENDING)
    assert out.actions == ()
    assert out.status["snapshot"]["phase"] == "Failed"
    assert cond(out.status, "Retraining")["reason"] == "RetrainRefused"
