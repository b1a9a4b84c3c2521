"""DriftMonitor pure layers: counter windows, cron, retrain plans, status, builders, batch check."""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from modelworks import batch, conditions
from modelworks.api import DRIFT_MONITOR
from modelworks.api.driftmonitor import DriftMonitorSpec
from modelworks.builders.driftmonitor import (
    build_batch_job,
    build_retrain,
    evidence_text,
    retrain_key,
    retrain_name,
)
from modelworks.builders.modeldeployment import ServerConfig
from modelworks.drift.profile import FeatureProfile, Profile, bucket_labels, build_profile
from modelworks.drift.window import (
    Snapshot,
    Window,
    pod_counts,
    prometheus_queries,
    prometheus_window,
    prune,
    window_counts,
)
from modelworks.names import EVIDENCE_ANNOTATION, MONITOR_LABEL
from modelworks.schedule import Cron
from modelworks.status.common import typed
from modelworks.status.driftmonitor import (
    ApplyBatchJob,
    BatchJob,
    CheckFacts,
    Facts,
    LastRetrain,
    LiveCheck,
    RetrainFacts,
    RetrainPlan,
    StartRetrain,
    batch_result,
    check_key,
    compact,
    compute,
    decide,
    due,
    plan_retrain,
    summary_of,
)

NOW = "2026-01-01T12:00:00Z"
LIVE = {"target": {"modelDeployment": {"name": "churn"}}}


def dmon(
    spec: dict[str, Any], status: dict[str, Any] | None = None, generation: int = 1
) -> dict[str, Any]:
    obj: dict[str, Any] = {
        "apiVersion": "modelworks.dev/v1alpha1",
        "kind": "DriftMonitor",
        "metadata": {
            "name": "churn-drift",
            "namespace": "ml",
            "uid": "u-9",
            "generation": generation,
            "creationTimestamp": "2026-01-01T00:00:00Z",
        },
        "spec": spec,
    }
    if status is not None:
        obj["status"] = status
    return obj


def parse(spec: dict[str, Any]) -> DriftMonitorSpec:
    return DriftMonitorSpec.model_validate(spec)


# --- windows over counters -----------------------------------------------------------

FEATURE = FeatureProfile("x", "numeric", (10, 10, 10), edges=(1.0, 2.0))
PROFILE = Profile((FEATURE,), rows=30)


def counts(*c: int, missing: int = 0) -> dict[str, tuple[tuple[int, ...], int]]:
    return {"x": (tuple(c), missing)}


@pytest.mark.parametrize(
    ("history", "current", "expected", "since", "restarted"),
    [
        # no snapshot old enough: everything since the pods started
        ([], {"a": counts(5, 5, 5)}, (5, 5, 5), None, 0),
        # the increase since the snapshot a window ago
        ([Snapshot(0, {"a": counts(1, 2, 3)})], {"a": counts(5, 5, 5)}, (4, 3, 2), 0.0, 0),
        # a pod new since then counts in full
        (
            [Snapshot(0, {"a": counts(1, 1, 1)})],
            {"a": counts(2, 2, 2), "b": counts(1, 0, 0)},
            (2, 1, 1),
            0.0,
            0,
        ),
        # a pod whose counters went down restarted: counted from its restart
        ([Snapshot(0, {"a": counts(9, 9, 9)})], {"a": counts(1, 2, 3)}, (1, 2, 3), 0.0, 1),
        # the newest snapshot at least a window old is the baseline
        (
            [
                Snapshot(0, {"a": counts(1, 1, 1)}),
                Snapshot(40, {"a": counts(2, 2, 2)}),
                Snapshot(90, {"a": counts(3, 3, 3)}),
            ],
            {"a": counts(4, 4, 4)},
            (2, 2, 2),
            40.0,
            0,
        ),
    ],
)
def test_window_counts(
    history: list[Snapshot],
    current: dict[str, Any],
    expected: tuple[int, ...],
    since: float | None,
    restarted: int,
) -> None:
    w = window_counts(Snapshot(100, current), history, window=60)
    assert w.counts["x"][0] == expected
    assert w.since == since
    assert w.restarted == restarted


def test_prune_keeps_the_baseline_and_newer() -> None:
    history = [Snapshot(t, {}) for t in (0, 30, 50, 90)]
    assert [s.at for s in prune(history, 100, 60)] == [30, 50, 90]
    assert [s.at for s in prune(history[-1:], 100, 60)] == [90]


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (
            ("ml", "churn", "churn-model", "3", 3600.0),
            (
                'sum by (feature, bucket, pod) (increase(modelworks_feature_bucket_total{namespace="ml",'
                'modeldeployment="churn",model="churn-model",version="3"}[3600s]))',
                'sum by (feature, pod) (increase(modelworks_feature_missing_total{namespace="ml",'
                'modeldeployment="churn",model="churn-model",version="3"}[3600s]))',
            ),
        ),
        # label values are PromQL strings: quotes and backslashes escaped; at least 1s
        (
            ("ml", "churn", 'we"ird\\name', "3", 0.2),
            (
                'sum by (feature, bucket, pod) (increase(modelworks_feature_bucket_total{namespace="ml",'
                'modeldeployment="churn",model="we\\"ird\\\\name",version="3"}[1s]))',
                'sum by (feature, pod) (increase(modelworks_feature_missing_total{namespace="ml",'
                'modeldeployment="churn",model="we\\"ird\\\\name",version="3"}[1s]))',
            ),
        ),
    ],
)
def test_prometheus_queries(args: tuple[Any, ...], expected: tuple[str, str]) -> None:
    assert prometheus_queries(*args) == expected


@pytest.mark.parametrize(
    ("buckets", "missing", "expected", "pods"),
    [
        # nothing in Prometheus for the window: zero counts, no pods
        ([], [], ((0, 0, 0), 0), 0),
        # extrapolated increases are rounded; two pods summed
        (
            [
                ({"feature": "x", "bucket": "0", "pod": "a"}, 3.6),
                ({"feature": "x", "bucket": "2", "pod": "a"}, 1.2),
                ({"feature": "x", "bucket": "2", "pod": "b"}, 2.0),
            ],
            [({"feature": "x", "pod": "b"}, 4.4)],
            ((4, 0, 3), 4),
            2,
        ),
        # NaN (no data) and unknown features or buckets count nothing
        (
            [
                ({"feature": "x", "bucket": "0", "pod": "a"}, float("nan")),
                ({"feature": "y", "bucket": "0", "pod": "a"}, 5.0),
                ({"feature": "x", "bucket": "nope", "pod": "a"}, 5.0),
                ({"feature": "x", "bucket": "1"}, 5.0),  # no pod label: one unnamed source
            ],
            [],
            ((0, 5, 0), 0),
            2,
        ),
    ],
)
def test_prometheus_window(
    buckets: list[tuple[dict[str, str], float]],
    missing: list[tuple[dict[str, str], float]],
    expected: tuple[tuple[int, ...], int],
    pods: int,
) -> None:
    labels = bucket_labels(FEATURE)

    def named(rows: list[tuple[dict[str, str], float]]) -> list[tuple[dict[str, str], float]]:
        # the tables above index buckets; the server labels them by upper edge or category
        return [
            ({**r, "bucket": labels[int(r["bucket"])]} if r.get("bucket", "").isdigit() else r, v)
            for r, v in rows
        ]

    w = prometheus_window(named(buckets), missing, PROFILE, "3")
    assert w.counts["x"] == expected
    assert w.pods == pods
    assert w.since is None and w.restarted == 0


def test_pod_counts_read_the_server_counters() -> None:
    labels = bucket_labels(FEATURE)
    samples = [
        (
            "modelworks_feature_bucket_total",
            {"version": "3", "feature": "x", "bucket": labels[0]},
            4.0,
        ),
        (
            "modelworks_feature_bucket_total",
            {"version": "3", "feature": "x", "bucket": labels[2]},
            6.0,
        ),
        (
            "modelworks_feature_bucket_total",
            {"version": "2", "feature": "x", "bucket": labels[2]},
            99.0,
        ),
        ("modelworks_feature_missing_total", {"version": "3", "feature": "x"}, 2.0),
        ("modelworks_feature_bucket_total", {"version": "3", "feature": "y", "bucket": "1.0"}, 5.0),
    ]
    assert pod_counts(samples, PROFILE, "3") == {"x": ((4, 0, 6), 2)}


# --- cron ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("schedule", "after", "expected"),
    [
        ("@hourly", "2026-01-01T12:00:00", "2026-01-01T13:00:00"),
        ("@daily", "2026-01-01T12:00:00", "2026-01-02T00:00:00"),
        ("*/15 * * * *", "2026-01-01T12:07:30", "2026-01-01T12:15:00"),
        ("0 3 * * mon", "2026-01-01T12:00:00", "2026-01-05T03:00:00"),  # 1 Jan 2026 is a Thursday
        ("30 2 1 * *", "2026-01-15T00:00:00", "2026-02-01T02:30:00"),
        ("0 0 1 1 *", "2026-06-01T00:00:00", "2027-01-01T00:00:00"),
        ("0 9 13 * 5", "2026-01-01T00:00:00", "2026-01-02T09:00:00"),  # the 13th OR a Friday
    ],
)
def test_cron_next(schedule: str, after: str, expected: str) -> None:
    t = datetime.fromisoformat(after).replace(tzinfo=UTC)
    assert Cron.parse(schedule).next_after(t) == datetime.fromisoformat(expected).replace(
        tzinfo=UTC
    )


@pytest.mark.parametrize(
    "bad", ["* * * *", "61 * * * *", "*/0 * * * *", "a * * * *", "5-1 * * * *"]
)
def test_cron_refuses(bad: str) -> None:
    with pytest.raises(ValueError):
        Cron.parse(bad)


# --- when to check, when to retrain --------------------------------------------------


@pytest.mark.parametrize(
    ("status", "generation", "expected"),
    [
        ({}, 1, 0.0),
        ({"observedGeneration": 1, "nextCheckTime": "2026-01-01T12:01:00Z"}, 1, 60.0),
        ({"observedGeneration": 1, "nextCheckTime": "2026-01-01T11:59:00Z"}, 1, -60.0),
        ({"observedGeneration": 1, "nextCheckTime": "2026-01-01T12:01:00Z"}, 2, 0.0),
    ],
)
def test_due(status: dict[str, Any], generation: int, expected: float) -> None:
    assert due(status, generation, NOW) == expected


RETRAIN = {**LIVE, "retrain": {"fromTrainingJob": {"name": "churn-train"}, "cooldown": "1h"}}


@pytest.mark.parametrize(
    ("spec", "old", "declared", "active", "trigger", "why"),
    [
        (RETRAIN, {}, True, 0, "drift", ""),
        (RETRAIN, {}, False, 0, None, ""),
        (RETRAIN, {"lastRetrain": {"at": "2026-01-01T11:30:00Z"}}, True, 0, None, "cooldown"),
        (RETRAIN, {"lastRetrain": {"at": "2026-01-01T10:30:00Z"}}, True, 0, "drift", ""),
        (RETRAIN, {}, True, 1, None, "maxConcurrent"),
        ({**RETRAIN, "retrain": {**RETRAIN["retrain"], "onDrift": False}}, {}, True, 0, None, ""),
        (
            {**RETRAIN, "retrain": {**RETRAIN["retrain"], "onDrift": False, "schedule": "@hourly"}},
            {"nextScheduledRetrain": "2026-01-01T12:00:00Z"},
            False,
            0,
            "schedule",
            "",
        ),
        ({**LIVE}, {}, True, 0, None, ""),
    ],
)
def test_plan_retrain(
    spec: dict[str, Any],
    old: dict[str, Any],
    declared: bool,
    active: int,
    trigger: str | None,
    why: str,
) -> None:
    plan = plan_retrain(
        parse(spec), old, declared=declared, active=active, created="2026-01-01T00:00:00Z", now=NOW
    )
    assert plan.trigger == trigger
    assert why in plan.reason


def test_schedule_advances_after_firing() -> None:
    spec = parse(
        {**LIVE, "retrain": {"template": {"image": "t:1"}, "schedule": "@hourly", "onDrift": False}}
    )
    first = plan_retrain(
        spec, {}, declared=False, active=0, created="2026-01-01T11:20:00Z", now=NOW
    )
    assert first.trigger == "schedule" and first.next_scheduled == "2026-01-01T13:00:00Z"
    later = plan_retrain(
        spec,
        {"nextScheduledRetrain": first.next_scheduled},
        declared=False,
        active=0,
        created="x",
        now=NOW,
    )
    assert later.trigger is None


# --- status --------------------------------------------------------------------------


def check(verdict: str, drifted: tuple[str, ...] = ()) -> dict[str, Any]:
    features = [
        {
            "name": n,
            "method": "psi",
            "score": 0.5 if n in drifted else 0.01,
            "threshold": 0.2,
            "drifted": n in drifted,
            "samples": 500,
        }
        for n in ("a", "b", "c", "d")
    ]
    return {
        "verdict": verdict,
        "driftedShare": len(drifted) / 4,
        "samples": 500,
        "features": features,
    }


def run(
    spec: dict[str, Any], facts: CheckFacts, status: dict[str, Any] | None = None
) -> tuple[dict[str, Any], list[str]]:
    obj = dmon(spec, status)
    out = compute(obj["metadata"], parse(spec), facts, obj.get("status") or {}, NOW)
    assert typed(DRIFT_MONITOR, out.status) == out.status
    return out.status, [e.reason for e in out.events]


def test_no_drift_window() -> None:
    status, events = run(
        LIVE,
        CheckFacts(
            check=check("NoDrift"), served_version="3", pods=2, next_check="2026-01-01T12:05:00Z"
        ),
    )
    assert status["phase"] == "Monitoring" and status["verdict"] == "NoDrift"
    assert status["servedVersion"] == "3" and status["pods"] == 2
    assert status["lastCheckTime"] == NOW and status["nextCheckTime"] == "2026-01-01T12:05:00Z"
    ready = conditions.get(status["conditions"], "Ready")
    assert ready is not None and ready["status"] == "True" and ready["reason"] == "Monitoring"
    drift = conditions.get(status["conditions"], "DriftDetected")
    assert drift is not None and drift["status"] == "False" and drift["reason"] == "NoDrift"
    assert events == []


def test_drift_is_declared_after_consecutive_windows_and_resolves() -> None:
    spec = {**LIVE, "consecutiveWindows": 2}
    first, events = run(spec, CheckFacts(check=check("Drift", ("a", "b"))))
    assert first["phase"] == "Monitoring" and first["consecutiveDriftWindows"] == 1
    assert conditions.get(first["conditions"], "DriftDetected")["reason"] == "DriftPending"  # type: ignore[index]
    assert events == []
    second, events = run(spec, CheckFacts(check=check("Drift", ("a", "b"))), status=first)
    assert second["phase"] == "Drifting"
    drift = conditions.get(second["conditions"], "DriftDetected")
    assert drift is not None and drift["status"] == "True" and "a, b" in drift["message"]
    assert events == ["DriftDetected"]
    third, events = run(spec, CheckFacts(check=check("Drift", ("a", "b"))), status=second)
    assert events == [] and third["consecutiveDriftWindows"] == 3
    calm, events = run(spec, CheckFacts(check=check("NoDrift")), status=third)
    assert calm["phase"] == "Monitoring" and calm["consecutiveDriftWindows"] == 0
    assert events == ["DriftResolved"]


def test_insufficient_data_neither_declares_nor_resets() -> None:
    spec = {**LIVE, "consecutiveWindows": 2}
    first, _ = run(spec, CheckFacts(check=check("Drift", ("a", "b"))))
    thin, _ = run(spec, CheckFacts(check={**check("InsufficientData"), "samples": 3}), status=first)
    assert thin["consecutiveDriftWindows"] == 1
    assert conditions.get(thin["conditions"], "Ready")["reason"] == "InsufficientData"  # type: ignore[index]


def test_problem_and_retrain_are_reported() -> None:
    status, events = run(LIVE, CheckFacts(problem=("TargetNotFound", "no churn")))
    assert status["phase"] == "Pending"
    assert conditions.get(status["conditions"], "Ready")["reason"] == "TargetNotFound"  # type: ignore[index]
    started, events = run(
        RETRAIN,
        CheckFacts(
            check=check("Drift", ("a", "b", "c")),
            retrain=RetrainPlan("drift"),
            retrained="churn-drift-r1",
        ),
        status={"retrainCount": 0},
    )
    assert started["retrainCount"] == 1
    assert started["lastRetrain"]["trainingJob"] == "churn-drift-r1"
    assert started["lastRetrain"]["reason"].startswith("drift")
    assert "RetrainStarted" in events and "DriftDetected" in events


def test_suspended() -> None:
    status, _ = run({**LIVE, "suspend": True}, CheckFacts(), status={"nextCheckTime": NOW})
    assert status["phase"] == "Suspended" and "nextCheckTime" not in status


def test_compact_keeps_drifted_features_first() -> None:
    many = {
        "verdict": "Drift",
        "samples": 10,
        "features": [
            {"name": f"f{i:03d}", "method": "psi", "score": 0.1, "drifted": i < 3, "note": "x" * 50}
            for i in range(200)
        ],
    }
    small = compact(many, limit=1000)
    assert len(json.dumps(small, separators=(",", ":"))) <= 1000
    assert small["truncated"] is True
    assert [f["name"] for f in small["features"][:3]] == ["f000", "f001", "f002"]
    assert compact(check("NoDrift")) == check("NoDrift")


# --- builders ------------------------------------------------------------------------


@pytest.mark.parametrize("monitor", ["churn-drift", "m" * 48])
def test_retrain_name_is_the_decisions_key(monitor: str) -> None:
    key = retrain_key("u-9", "2026-01-01T12:00:00Z")
    name = retrain_name(monitor, key)
    assert len(name) <= 48 and name.endswith(f"-r-{key}") and name.startswith(monitor[:20])
    assert retrain_name(monitor, retrain_key("u-9", "2026-01-01T12:00:00Z")) == name
    assert key != retrain_key("u-9", "2026-01-01T12:05:00Z")  # a later decision
    assert key != retrain_key("u-10", "2026-01-01T12:00:00Z")  # a same-name successor
    assert retrain_key("u-9", None) != retrain_key("u-9", "2026-01-01T12:00:00Z")


def test_build_retrain_copies_the_spec_with_lineage() -> None:
    source = {
        "image": "t:1",
        "suspend": True,
        "env": [{"name": "A", "value": "1"}],
        "model": {"name": "churn"},
    }
    tj = build_retrain(
        dmon(RETRAIN),
        source,
        key="k",
        trigger="drift",
        evidence={"features": [{"name": "a", "score": 0.5}]},
        source="churn-train",
    )
    assert tj["kind"] == "TrainingJob" and tj["metadata"]["name"] == "churn-drift-r-k"
    assert tj["spec"]["suspend"] is False and tj["spec"]["model"] == {"name": "churn"}
    env = {e["name"]: e["value"] for e in tj["spec"]["env"]}
    assert env == {
        "A": "1",
        "MODELWORKS_RETRAIN_TRIGGER": "drift",
        "MODELWORKS_DRIFT_MONITOR": "ml/churn-drift",
    }
    assert tj["metadata"]["labels"][MONITOR_LABEL] == "churn-drift"
    assert tj["metadata"]["labels"]["modelworks.dev/drift-monitor-uid"] == "u-9"
    assert tj["metadata"]["annotations"]["modelworks.dev/drift-monitor-generation"] == "1"
    assert tj["metadata"]["labels"]["modelworks.dev/retrain-of"] == "churn-train"
    assert (
        json.loads(tj["metadata"]["annotations"][EVIDENCE_ANNOTATION])["features"][0]["name"] == "a"
    )
    assert "ownerReferences" not in tj["metadata"], "a retrained model outlives its monitor"
    assert source["suspend"] is True, "the source spec is not modified"


def test_evidence_fits_an_annotation() -> None:
    text = evidence_text(
        {"features": [{"name": f"feature-{i}", "score": 0.123456} for i in range(1000)]}
    )
    assert len(text) <= 4000 and json.loads(text)["featuresTruncated"] is True


def test_batch_job() -> None:
    spec = parse(
        {
            "batch": {"currentUri": "runs:/r/cur.csv"},
            "reference": {"datasetUri": "runs:/r/ref.csv"},
            "method": "ks",
        }
    )
    job = build_batch_job(
        dmon({}),
        spec,
        key="abc",
        image="modelworks:0.1.0",
        pull_policy="IfNotPresent",
        tracking_uri="http://mlflow:5000",
    )
    assert job["metadata"]["name"] == "churn-drift-check-abc"
    container = job["spec"]["template"]["spec"]["containers"][0]
    args = container["args"]
    assert args[:7] == [
        "drift",
        "--reference",
        "runs:/r/ref.csv",
        "--reference-kind",
        "dataset",
        "--current",
        "runs:/r/cur.csv",
    ]
    assert json.loads(args[8])["method"] == "ks"
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert job["metadata"]["ownerReferences"][0]["uid"] == "u-9"


# --- the batch check, on files ---------------------------------------------------------


def test_batch_check_on_csv_files(tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    import pandas as pd

    n = 4000
    ref = pd.DataFrame(
        {"x": rng.normal(0, 1, n), "y": rng.normal(0, 1, n), "c": rng.choice(["a", "b"], n)}
    )
    cur = pd.DataFrame(
        {"x": rng.normal(1.0, 1, n), "y": rng.normal(0, 1, n), "c": rng.choice(["a", "b"], n)}
    )
    ref.to_csv(tmp_path / "ref.csv", index=False)
    cur.to_parquet(tmp_path / "cur.parquet")
    log = tmp_path / "termination-log"
    code = batch.main(
        str(tmp_path / "ref.csv"), "dataset", str(tmp_path / "cur.parquet"), '{"method": "ks"}', log
    )
    assert code == 0
    result = json.loads(log.read_text())
    drifted = {f["name"] for f in result["features"] if f["drifted"]}
    assert drifted == {"x"}
    assert result["verdict"] == "NoDrift"  # 1 of 3 < driftShare 0.5

    profile = build_profile({"x": ref["x"].to_numpy(), "c": ref["c"].to_numpy()})
    (tmp_path / "profile.json").write_text(json.dumps(profile.to_json()))
    assert (
        batch.main(
            str(tmp_path / "profile.json"), "profile", str(tmp_path / "cur.parquet"), "{}", log
        )
        == 0
    )
    by_name = {f["name"]: f for f in json.loads(log.read_text())["features"]}
    assert by_name["x"]["drifted"] is True and by_name["c"]["drifted"] is False

    assert (
        batch.main(
            str(tmp_path / "missing.csv"), "dataset", str(tmp_path / "cur.parquet"), "{}", log
        )
        == 1
    )
    assert "missing.csv" in log.read_text()


# --- decide: facts in, status, Events and actions out --------------------------------

SERVER = ServerConfig("modelworks:0.1.0", "IfNotPresent", "http://mlflow:5000")


def facts_of(spec: dict[str, Any], status: dict[str, Any] | None = None, **kw: Any) -> Facts:
    obj = dmon(spec, status)
    return Facts(monitor={k: obj[k] for k in ("apiVersion", "kind", "metadata")}, **kw)


def decided(spec: dict[str, Any], facts: Facts, status: dict[str, Any] | None = None) -> Any:
    out = decide(parse(spec), facts, status or {}, NOW)
    assert typed(DRIFT_MONITOR, out.status) == out.status
    return out


def live(shift: int) -> LiveCheck:
    """A window of 300 rows of x: as the reference (shift 0) or all in its last bucket."""
    counted = (100, 100, 100) if shift == 0 else (0, 0, 300)
    return LiveCheck("3", PROFILE, Window({"x": (counted, 0)}, since=None, pods=2, restarted=0))


@pytest.mark.parametrize(
    ("shift", "verdict", "phase", "events"),
    [(0, "NoDrift", "Monitoring", []), (1, "Drift", "Drifting", ["DriftDetected"])],
)
def test_decide_scores_the_counts_it_is_given(
    shift: int, verdict: str, phase: str, events: list[str]
) -> None:
    out = decided(LIVE, facts_of(LIVE, live=live(shift)))
    assert out.status["verdict"] == verdict and out.status["phase"] == phase
    assert out.status["servedVersion"] == "3" and out.status["pods"] == 2
    assert out.status["nextCheckTime"] == "2026-01-01T12:05:00Z" and out.requeue_after == 300.0
    assert [e.reason for e in out.events] == events and out.actions == ()


def test_decide_prometheus_window_starts_a_window_ago() -> None:
    spec = {**LIVE, "window": "30m"}
    check = replace(live(0), prometheus=True)
    assert decided(spec, facts_of(spec, live=check)).status["windowStart"] == "2026-01-01T11:30:00Z"


def test_a_new_served_version_starts_over() -> None:
    spec = {**LIVE, "consecutiveWindows": 2}
    first = decided(spec, facts_of(spec, live=live(1))).status
    assert first["consecutiveDriftWindows"] == 1
    moved = replace(live(1), served="4")
    again = decided(spec, facts_of(spec, first, live=moved), status=first).status
    assert again["consecutiveDriftWindows"] == 1 and again["servedVersion"] == "4"


@pytest.mark.parametrize(
    ("before", "events"),
    [(None, ["TargetNotFound"]), ("TargetNotFound", []), ("TargetNotServing", ["TargetNotFound"])],
)
def test_a_live_problem_is_news_once(before: str | None, events: list[str]) -> None:
    old: dict[str, Any] = {"nextCheckTime": NOW}
    if before:
        old["conditions"] = [
            {
                "type": "Ready",
                "status": "False",
                "reason": before,
                "message": "m",
                "lastTransitionTime": NOW,
            }
        ]
    out = decided(LIVE, facts_of(LIVE, old, problem=("TargetNotFound", "gone")), status=old)
    assert [e.reason for e in out.events] == events
    assert "nextCheckTime" not in out.status and out.requeue_after == 30.0


RETRAIN_FROM_TEMPLATE = {**LIVE, "retrain": {"template": {"image": "t:1"}}}
FIRST_RETRAIN = retrain_name("churn-drift", retrain_key("u-9", None))


@pytest.mark.parametrize(
    ("spec", "retrain", "action", "events"),
    [
        (
            RETRAIN_FROM_TEMPLATE,
            RetrainFacts(),
            FIRST_RETRAIN,
            ["DriftDetected", "RetrainStarted"],
        ),
        (
            RETRAIN,
            RetrainFacts(source_spec={"image": "s:1"}),
            FIRST_RETRAIN,
            ["DriftDetected", "RetrainStarted"],
        ),
        # the source TrainingJob is gone: no action; skipped and failed, as before
        (RETRAIN, RetrainFacts(), None, ["DriftDetected", "RetrainSkipped", "RetrainFailed"]),
        (RETRAIN_FROM_TEMPLATE, RetrainFacts(active=1), None, ["DriftDetected", "RetrainSkipped"]),
        # the one running is this very decision's (started before a lost status write): it
        # is started again (act finds it, its own) and recorded, not counted as blocking
        (
            RETRAIN_FROM_TEMPLATE,
            RetrainFacts(active=1, running=frozenset({FIRST_RETRAIN})),
            FIRST_RETRAIN,
            ["DriftDetected", "RetrainStarted"],
        ),
        (
            RETRAIN_FROM_TEMPLATE,
            RetrainFacts(active=1, running=frozenset({"churn-drift-r-other"})),
            None,
            ["DriftDetected", "RetrainSkipped"],
        ),
    ],
)
def test_decide_starts_a_retraining(
    spec: dict[str, Any], retrain: RetrainFacts, action: str | None, events: list[str]
) -> None:
    old = {"retrainCount": 2}
    out = decided(spec, facts_of(spec, old, live=live(1), retrain=retrain), status=old)
    assert [e.reason for e in out.events] == events
    if action is None:
        assert out.actions == () and out.status["retrainCount"] == 2
        return
    (start,) = out.actions
    assert isinstance(start, StartRetrain) and start.body["metadata"]["name"] == action
    assert out.status["retrainCount"] == 3 and out.status["lastRetrain"]["trainingJob"] == action
    evidence = json.loads(start.body["metadata"]["annotations"][EVIDENCE_ANNOTATION])
    assert evidence["servedVersion"] == "3" and evidence["features"][0]["name"] == "x"


def retraining(status: str, reason: str, generation: int) -> dict[str, Any]:
    return {
        "type": "Retraining",
        "status": status,
        "reason": reason,
        "message": "m",
        "lastTransitionTime": NOW,
        "observedGeneration": generation,
    }


@pytest.mark.parametrize(
    ("last", "generation", "trigger"),
    [
        (retraining("False", "RetrainRefused", 1), 2, "drift"),  # fixed spec: at once
        (retraining("False", "RetrainFailed", 1), 2, "drift"),
        (retraining("False", "NameTaken", 1), 2, "drift"),
        (retraining("False", "RetrainRefused", 2), 2, None),  # same spec: the cooldown
        (retraining("False", "Succeeded", 1), 2, None),
        (retraining("True", "Running", 1), 2, None),
    ],
)
def test_a_failed_retraining_lets_a_new_spec_retrain_within_the_cooldown(
    last: dict[str, Any], generation: int, trigger: str | None
) -> None:
    old = {"lastRetrain": {"at": "2026-01-01T11:30:00Z"}, "conditions": [last]}
    plan = plan_retrain(
        parse(RETRAIN),
        old,
        declared=True,
        active=0,
        created="2026-01-01T00:00:00Z",
        now=NOW,
        generation=generation,
    )
    assert plan.trigger == trigger


def test_a_refused_retraining_is_recorded_as_a_failed_one() -> None:
    old = {"retrainCount": 2}
    refusal = ("RetrainRefused", "the API server refused TrainingJob x: too many env")
    facts = facts_of(
        RETRAIN_FROM_TEMPLATE, old, live=live(1), retrain=RetrainFacts(refused=refusal)
    )
    out = decided(RETRAIN_FROM_TEMPLATE, facts, status=old)
    assert out.actions == ()
    assert out.status["retrainCount"] == 2
    assert out.status["lastRetrain"] == {
        "trainingJob": FIRST_RETRAIN,
        "at": NOW,
        "reason": "drift (RetrainRefused)",
    }
    cond = conditions.get(out.status["conditions"], "Retraining")
    assert cond is not None and (cond["status"], cond["reason"]) == ("False", "RetrainRefused")
    assert cond["message"] == refusal[1]
    assert [e.reason for e in out.events] == ["DriftDetected", "RetrainFailed"]


@pytest.mark.parametrize(
    ("last", "before", "expected", "events"),
    [
        (LastRetrain("r", "Running"), None, ("True", "Running"), []),
        (LastRetrain("r", "Succeeded"), "Running", ("False", "Succeeded"), []),
        (
            LastRetrain("r", "Failed", "gate"),
            "Running",
            ("False", "RetrainFailed"),
            ["RetrainFailed"],
        ),
        (LastRetrain("r", "Failed", "gate"), "RetrainFailed", ("False", "RetrainFailed"), []),
        (None, None, None, []),
    ],
)
def test_the_last_retraining_is_reported(
    last: LastRetrain | None,
    before: str | None,
    expected: tuple[str, str] | None,
    events: list[str],
) -> None:
    old: dict[str, Any] = {"lastRetrain": {"trainingJob": "r", "at": NOW, "reason": "drift"}}
    if before is not None:
        old["conditions"] = [retraining("True" if before == "Running" else "False", before, 1)]
    facts = facts_of(RETRAIN_FROM_TEMPLATE, old, live=live(0), retrain=RetrainFacts(last=last))
    out = decided(RETRAIN_FROM_TEMPLATE, facts, status=old)
    cond = conditions.get(out.status["conditions"], "Retraining")
    assert (None if cond is None else (cond["status"], cond["reason"])) == expected
    assert [e.reason for e in out.events] == events


BATCH = {"batch": {"currentUri": "runs:/r/cur.csv"}, "reference": {"datasetUri": "runs:/r/ref.csv"}}
RESULT = json.dumps({**check("NoDrift"), "truncated": True})


@pytest.mark.parametrize(
    ("job", "phase", "ready", "action", "requeue", "events"),
    [
        (None, "Pending", "Waiting", True, 10.0, []),
        (BatchJob("j"), "Pending", "Waiting", False, 10.0, []),
        (BatchJob("j", "Complete", RESULT), "Monitoring", "Monitoring", False, 300.0, []),
        (
            BatchJob("j", "Complete", "not json"),
            "Failed",
            "CheckFailed",
            False,
            300.0,
            ["CheckFailed"],
        ),
        (
            BatchJob("j", "Failed", "", "BackoffLimitExceeded"),
            "Failed",
            "CheckFailed",
            False,
            300.0,
            ["CheckFailed"],
        ),
    ],
)
def test_decide_batch(
    job: BatchJob | None,
    phase: str,
    ready: str,
    action: bool,
    requeue: float,
    events: list[str],
) -> None:
    out = decided(BATCH, facts_of(BATCH, server=SERVER, job=job))
    assert out.status["phase"] == phase and out.requeue_after == requeue
    assert conditions.get(out.status["conditions"], "Ready")["reason"] == ready  # type: ignore[index]
    assert [e.reason for e in out.events] == events
    if action:
        (apply,) = out.actions
        assert isinstance(apply, ApplyBatchJob)
        assert out.status["checkJob"] == apply.body["metadata"]["name"]
        assert apply.body["metadata"]["name"].startswith("churn-drift-check-")
    else:
        assert out.actions == ()
    assert ("checkJob" in out.status) == (job is None or job.finished is None)


@pytest.mark.parametrize(
    ("job", "expected"),
    [
        (BatchJob("j"), None),
        (BatchJob("j", "Failed", RESULT), None),
        (BatchJob("j", "Complete", ""), None),
        (BatchJob("j", "Complete", "[1]"), None),
        (BatchJob("j", "Complete", '{"verdict": "Drift"}'), None),
        (BatchJob("j", "Complete", RESULT), check("NoDrift")),
    ],
)
def test_batch_result(job: BatchJob, expected: dict[str, Any] | None) -> None:
    assert batch_result(job) == expected


def test_a_batch_check_started_again_keeps_its_name_whatever_the_time() -> None:
    """A pass that started the check Job and died before storing ``checkJob`` starts the
    same Job again, even an interval later: the key is the check it is for, not the clock."""
    old = {"observedGeneration": 1, "nextCheckTime": "2026-01-01T11:59:00Z"}

    def job_at(now: str, status: dict[str, Any]) -> str:
        out = decide(parse(BATCH), facts_of(BATCH, server=SERVER), status, now)
        (apply,) = out.actions
        return str(apply.body["metadata"]["name"])

    first = job_at(NOW, old)
    assert job_at("2026-01-01T12:09:59Z", old) == first
    assert job_at("2026-01-01T13:00:00Z", old) == first
    assert job_at(NOW, {**old, "nextCheckTime": "2026-01-01T12:04:00Z"}) != first
    assert check_key("u-9", 1, None) != check_key("u-9", 2, None)


@pytest.mark.parametrize(
    ("drifted", "expected"),
    [
        ((), "0 of 4 features drifted in 500 rows"),
        (("a", "c"), "2 of 4 features drifted (a, c) in 500 rows"),
    ],
)
def test_summary_of(drifted: tuple[str, ...], expected: str) -> None:
    assert summary_of(check("Drift", drifted)) == expected


def test_suspended_decision() -> None:
    spec = {**LIVE, "suspend": True}
    out = decided(spec, facts_of(spec), status={"nextCheckTime": NOW})
    assert out.result == "suspended" and out.status["phase"] == "Suspended"
