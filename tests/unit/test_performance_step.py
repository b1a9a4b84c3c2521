"""The performance check from one DriftMonitor pass to the next (status.performance):
when its Job starts, what a finished Job leaves, and a drop as the retraining trigger."""

from __future__ import annotations

import json
from typing import Any

import pytest

from modelworks import metrics
from modelworks.api.driftmonitor import DriftMonitorSpec
from modelworks.status.driftmonitor import plan_retrain
from modelworks.status.performance import (
    CheckJob,
    PerformanceFacts,
    evidence,
    job_result,
    performance_due,
    step,
    was_degraded,
)

NOW = "2026-01-01T12:00:00Z"
SPEC: dict[str, Any] = {
    "target": {"modelDeployment": {"name": "churn"}},
    "performance": {
        "metrics": ["roc_auc"],
        "window": "2h",
        "interval": "30m",
        "minLabelledRows": 10,
        "thresholds": [{"metric": "roc_auc", "maxDrop": 0.1, "baselineMetric": "val_auc"}],
    },
    "retrain": {"template": {"image": "t:1"}},
}
MONITOR = {
    "apiVersion": "modelworks.dev/v1alpha1",
    "kind": "DriftMonitor",
    "metadata": {"name": "mon", "namespace": "ml", "uid": "u-1", "generation": 2},
}
SERVER = ("modelworks:1", "IfNotPresent")
RESULT = {"start": "s", "end": "e", "labelledRows": 50, "capturedRows": 60, "unmatchedLabels": 0}


def facts(**kw: Any) -> PerformanceFacts:
    base: dict[str, Any] = {
        "target": "churn",
        "model": "churn",
        "served": "3",
        "destination": "s3://b/p",
        "baselines": {"val_auc": 0.9},
    }
    return PerformanceFacts(**{**base, **kw})


def done(auc: float | None, *, finished: str = "Complete", message: str | None = None) -> CheckJob:
    text = json.dumps({**RESULT, "metrics": {"roc_auc": auc}}) if message is None else message
    return CheckJob("mon-perf-1", finished=finished, message=text)


def degraded_status(served: str = "3") -> dict[str, Any]:
    cond = {"type": "ModelQuality", "status": "False", "reason": "PerformanceDegraded"}
    return {
        "observedGeneration": 2,
        "conditions": [cond],
        "performance": {"servedVersion": served, "nextCheckTime": "2026-01-01T12:10:00Z"},
    }


WAITING = {"observedGeneration": 2, "performance": {"nextCheckTime": "2026-01-01T12:10:00Z"}}


@pytest.mark.parametrize(
    ("name", "observed", "old", "job", "condition", "degraded", "requeue"),
    [
        ("first check starts the Job", facts(), {}, True, ("Unknown", "Pending"), False, 10.0),
        ("not due: nothing", facts(), WAITING, False, None, False, 600.0),
        ("not due, was degraded: stays", facts(), degraded_status(), False, None, True, 600.0),
        (
            "new served version: not degraded",
            facts(served="4"),
            degraded_status(),
            False,
            None,
            False,
            600.0,
        ),
        (
            "running Job: poll",
            facts(job=CheckJob("mon-perf-1")),
            {"performance": {"checkJob": "mon-perf-1"}},
            False,
            None,
            False,
            10.0,
        ),
        ("drop", facts(job=done(0.7)), {}, False, ("False", "PerformanceDegraded"), True, 1800.0),
        ("within", facts(job=done(0.88)), {}, False, ("True", "WithinThresholds"), False, 1800.0),
        (
            "failed Job: retried at the interval",
            facts(job=done(None, finished="Failed", message="store down")),
            {},
            False,
            ("Unknown", "PerformanceCheckFailed"),
            False,
            1800.0,
        ),
        (
            "garbage message",
            facts(job=done(None, message="{not json")),
            {},
            False,
            ("Unknown", "PerformanceCheckFailed"),
            False,
            1800.0,
        ),
        (
            "no capture",
            facts(destination=None),
            {},
            False,
            ("Unknown", "NoDataCapture"),
            False,
            1800.0,
        ),
        (
            "MLflow down",
            facts(job=done(0.7), problem=("MLflowUnavailable", "down")),
            {},
            False,
            ("Unknown", "MLflowUnavailable"),
            False,
            30.0,
        ),
    ],
)
def test_step(
    name: str,
    observed: PerformanceFacts,
    old: dict[str, Any],
    job: bool,
    condition: tuple[str, str] | None,
    degraded: bool,
    requeue: float,
) -> None:
    out = step(DriftMonitorSpec.model_validate(SPEC), observed, old, MONITOR, SERVER, NOW)
    assert (out.job is not None) == job, name
    assert (out.condition[:2] if out.condition else None) == condition, name
    assert out.degraded == degraded, name
    assert out.requeue == requeue, name


def test_the_job_is_keyed_by_the_due_time_and_scores_the_served_version() -> None:
    spec = DriftMonitorSpec.model_validate(SPEC)
    old = {"observedGeneration": 1, "performance": {"nextCheckTime": "2026-01-01T11:00:00Z"}}
    a = step(spec, facts(), old, MONITOR, SERVER, NOW)
    b = step(spec, facts(), old, MONITOR, SERVER, "2026-01-01T12:00:30Z")
    assert a.job is not None and b.job is not None
    assert a.job["metadata"]["name"] == b.job["metadata"]["name"]  # a crash finds the same Job
    assert a.status is not None and a.status["checkJob"] == a.job["metadata"]["name"]
    config = json.loads(a.job["spec"]["template"]["spec"]["containers"][0]["args"][2])
    assert (config["version"], config["start"], config["end"]) == ("3", "2026-01-01T10:00:00Z", NOW)
    later = step(
        spec, facts(), {**old, "performance": {"nextCheckTime": NOW}}, MONITOR, SERVER, NOW
    )
    assert later.job is not None and later.job["metadata"]["name"] != a.job["metadata"]["name"]


def test_a_finished_check_is_forgotten_and_the_next_one_set() -> None:
    spec = DriftMonitorSpec.model_validate(SPEC)
    old = {"performance": {"checkJob": "mon-perf-1", "nextCheckTime": "2026-01-01T11:59:00Z"}}
    out = step(spec, facts(job=done(0.7)), old, MONITOR, SERVER, NOW)
    assert out.status is not None and "checkJob" not in out.status
    assert out.status["nextCheckTime"] == "2026-01-01T12:30:00Z"
    assert out.status["lastCheckTime"] == NOW and out.status["verdict"] == "Degraded"
    assert [e.reason for e in out.events] == ["PerformanceDegraded"]
    assert evidence(out)["metrics"] == [
        {"metric": "roc_auc", "value": 0.7, "baseline": 0.9, "verdict": "Degraded"}
    ]
    failed = step(
        spec,
        facts(job=done(None, finished="Failed", message="x" * 5000)),
        old,
        MONITOR,
        SERVER,
        NOW,
    )
    assert failed.status is not None and "checkJob" not in failed.status
    assert failed.condition is not None and len(failed.condition[2]) < 700


@pytest.mark.parametrize(
    ("message", "parsed"),
    [
        (json.dumps({**RESULT, "metrics": {}}), True),
        (json.dumps({"metrics": {}}), False),
        ("[1]", False),
        ("", False),
    ],
)
def test_job_result(message: str, parsed: bool) -> None:
    assert (job_result(CheckJob("j", "Complete", message)) is not None) == parsed


@pytest.mark.parametrize(
    ("old", "seconds"),
    [
        ({}, 0.0),
        ({"observedGeneration": 1, "performance": {"nextCheckTime": "2026-01-01T12:10:00Z"}}, 0.0),
        (WAITING, 600.0),
        ({**WAITING, "performance": {**WAITING["performance"], "checkJob": "j"}}, 0.0),
    ],
)
def test_performance_due(old: dict[str, Any], seconds: float) -> None:
    assert performance_due(old, 2, NOW) == seconds


def test_was_degraded_only_for_the_version_served_now() -> None:
    assert was_degraded(degraded_status("3"), "3")
    assert not was_degraded(degraded_status("3"), "4")
    assert not was_degraded({}, "3")


@pytest.mark.parametrize(
    ("retrain", "declared", "degraded", "old", "trigger", "why"),
    [
        ({}, False, True, {}, "performance", ""),
        ({}, True, True, {}, "drift", ""),
        ({"onDrift": False}, False, True, {}, None, ""),
        ({}, False, False, {}, None, ""),
        (
            {},
            False,
            True,
            {"lastRetrain": {"at": "2026-01-01T11:00:00Z"}},
            None,
            "performance, but",
        ),
        ({"maxConcurrent": 1}, False, True, {}, None, "maxConcurrent"),
    ],
)
def test_a_drop_triggers_a_retraining_as_drift_does(
    retrain: dict[str, Any],
    declared: bool,
    degraded: bool,
    old: dict[str, Any],
    trigger: str | None,
    why: str,
) -> None:
    spec = DriftMonitorSpec.model_validate({**SPEC, "retrain": {**SPEC["retrain"], **retrain}})
    active = 1 if "maxConcurrent" in retrain else 0
    plan = plan_retrain(
        spec,
        old,
        declared=declared,
        active=active,
        created="2026-01-01T00:00:00Z",
        now=NOW,
        degraded=degraded,
    )
    assert plan.trigger == trigger
    assert why in plan.reason


def test_quality_gauges_mirror_the_last_check_and_go_with_the_monitor() -> None:
    meta = {"namespace": "ml", "name": "q-gauged"}
    checked = {
        "performance": {
            "lastCheckTime": "t1",
            "verdict": "Degraded",
            "metrics": [{"metric": "roc_auc", "value": 0.6}, {"metric": "f1"}],
        }
    }
    metrics.observe_drift(meta, {}, checked)
    value = metrics.REGISTRY.get_sample_value
    labels = {"namespace": "ml", "monitor": "q-gauged"}
    assert value("modelworks_quality_metric", {**labels, "metric": "roc_auc"}) == 0.6
    assert value("modelworks_quality_metric", {**labels, "metric": "f1"}) is None
    assert value("modelworks_quality_degraded", labels) == 1.0
    metrics.observe_drift(meta, checked, {**checked, "lastCheckTime": "t2"})  # a drift check
    assert value("modelworks_quality_degraded", labels) == 1.0
    ok = {"performance": {"lastCheckTime": "t3", "verdict": "OK", "metrics": []}}
    metrics.observe_drift(meta, checked, ok)
    assert value("modelworks_quality_metric", {**labels, "metric": "roc_auc"}) is None
    assert value("modelworks_quality_degraded", labels) == 0.0
    metrics.forget_drift(meta)
    assert value("modelworks_quality_degraded", labels) is None


def test_no_job_while_the_target_serves_nothing() -> None:
    spec = DriftMonitorSpec.model_validate(SPEC)
    out = step(spec, facts(served=None), {}, MONITOR, SERVER, NOW)
    assert out.job is None
    assert out.condition is not None and out.condition[:2] == ("Unknown", "TargetNotServing")
