"""Prediction drift: the model's outputs counted, windowed and scored beside the features."""

from __future__ import annotations

from typing import Any

import pytest

from modelworks import metrics
from modelworks.drift.profile import FeatureProfile, Profile
from modelworks.drift.window import (
    Snapshot,
    Window,
    pod_counts,
    prometheus_queries,
    prometheus_window,
    window_counts,
)
from modelworks.names import (
    FEATURE_BUCKET_METRIC,
    PREDICTION_BUCKET_METRIC,
    PREDICTION_MISSING_METRIC,
)
from modelworks.status.driftmonitor import LiveCheck, prediction_config, summary_of
from tests.unit.test_driftmonitor import LIVE, decided, facts_of, parse

FEATURES = (FeatureProfile("x", "numeric", (100, 100, 100), edges=(1.0, 2.0)),)
OUTPUTS = (
    FeatureProfile("prediction", "categorical", (200, 100, 0), categories=("0.0", "1.0")),
    FeatureProfile("score", "numeric", (100, 100, 100), edges=(0.2, 0.5)),
)
PROFILE = Profile(FEATURES, 300, {}, OUTPUTS)
SAME_X = {"x": ((100, 100, 100), 0)}
SHIFTED_X = {"x": ((0, 0, 300), 0)}
SAME_OUT = {"prediction": ((200, 100, 0), 0), "score": ((100, 100, 100), 0)}
SHIFTED_OUT = {"prediction": ((30, 270, 0), 0), "score": ((0, 10, 290), 0)}


def check(x: dict[str, Any], out: dict[str, Any] | None, profile: Profile = PROFILE) -> LiveCheck:
    outputs = Window(out, None, 1, 0) if out is not None else None
    return LiveCheck("3", profile, Window(x, None, 1, 0), outputs=outputs)


@pytest.mark.parametrize(
    ("spec", "x", "out", "verdict", "share", "drifted", "events"),
    [
        ("default", SAME_X, SAME_OUT, "NoDrift", 0.0, [], []),
        (
            "outputs only drift: 2 of 3 drift",
            SAME_X,
            SHIFTED_OUT,
            "Drift",
            0.6667,
            ["prediction", "score"],
            ["PredictionDrift", "DriftDetected"],
        ),
        ("features drift, outputs not", SHIFTED_X, SAME_OUT, "NoDrift", 0.3333, [], []),
        (
            "disabled: outputs ignored",
            SAME_X,
            SHIFTED_OUT,
            "NoDrift",
            0.0,
            None,
            [],
        ),
    ],
)
def test_outputs_count_like_features_in_the_verdict(
    spec: str,
    x: dict[str, Any],
    out: dict[str, Any],
    verdict: str,
    share: float,
    drifted: list[str] | None,
    events: list[str],
) -> None:
    body = {**LIVE, "predictions": {"enabled": False}} if spec.startswith("disabled") else LIVE
    result = decided(body, facts_of(body, live=check(x, out)))
    status = result.status
    assert (status["verdict"], status["driftedShare"]) == (verdict, share)
    if drifted is None:
        assert "predictions" not in status
    else:
        assert [p["name"] for p in status["predictions"] if p["drifted"]] == drifted
        assert {p["name"] for p in status["predictions"]} == {"prediction", "score"}
    assert [e.reason for e in result.events] == events


def test_a_profile_without_outputs_reports_no_predictions() -> None:
    old = Profile(FEATURES, 300)
    status = decided(LIVE, facts_of(LIVE, live=check(SAME_X, None, old))).status
    assert "predictions" not in status and status["verdict"] == "NoDrift"


def test_prediction_drift_is_news_once_and_in_the_summary() -> None:
    first = decided(LIVE, facts_of(LIVE, live=check(SAME_X, SHIFTED_OUT))).status
    assert "2 of 2 outputs drifted (prediction, score)" in summary_of(first)
    again = decided(LIVE, facts_of(LIVE, first, live=check(SAME_X, SHIFTED_OUT)), first)
    assert "PredictionDrift" not in [e.reason for e in again.events]


def test_outputs_missing_from_the_window_are_not_scored() -> None:
    status = decided(LIVE, facts_of(LIVE, live=check(SAME_X, {}))).status
    assert all(p.get("score") is None for p in status["predictions"])
    assert status["verdict"] == "NoDrift" and status["driftedShare"] == 0.0


@pytest.mark.parametrize(
    ("spec", "method", "threshold"),
    [
        ({}, "psi", None),
        ({"threshold": 0.3}, "psi", 0.3),
        ({"threshold": 0.3, "predictions": {"method": "chi2"}}, "chi2", None),
        ({"threshold": 0.3, "predictions": {"method": "jensen-shannon"}}, "jensen-shannon", 0.3),
        ({"predictions": {"threshold": 0.5}}, "psi", 0.5),
        ({"method": "ks", "predictions": {"method": "psi", "threshold": 2}}, "psi", 2.0),
    ],
)
def test_prediction_config(spec: dict[str, Any], method: str, threshold: float | None) -> None:
    from modelworks.status.driftmonitor import config_of

    parsed = parse({**LIVE, **spec, "features": [{"name": "score", "enabled": False}]})
    config = prediction_config(parsed, config_of(parsed))
    assert (config.method, config.threshold, dict(config.features)) == (method, threshold, {})


def test_pod_counts_reads_the_output_counters_apart() -> None:
    samples = [
        (PREDICTION_BUCKET_METRIC, {"version": "3", "output": "prediction", "bucket": "1.0"}, 7.0),
        (PREDICTION_BUCKET_METRIC, {"version": "3", "output": "score", "bucket": "+Inf"}, 4.0),
        (PREDICTION_BUCKET_METRIC, {"version": "2", "output": "score", "bucket": "+Inf"}, 9.0),
        (PREDICTION_MISSING_METRIC, {"version": "3", "output": "score"}, 3.0),
        (FEATURE_BUCKET_METRIC, {"version": "3", "feature": "x", "bucket": "+Inf"}, 5.0),
    ]
    assert pod_counts(samples, PROFILE, "3", outputs=True) == {
        "prediction": ((0, 7, 0), 0),
        "score": ((0, 0, 4), 3),
    }
    assert pod_counts(samples, PROFILE, "3") == {"x": ((0, 0, 5), 0)}
    before = Snapshot(0, {"p": pod_counts(samples[:1], PROFILE, "3", outputs=True)})
    now = Snapshot(100, {"p": pod_counts(samples, PROFILE, "3", outputs=True)})
    assert window_counts(now, [before], 60).counts["prediction"] == ((0, 0, 0), 0)


def test_prometheus_reads_the_output_counters() -> None:
    buckets, missing = prometheus_queries("ml", "churn", "m", "3", 600, outputs=True)
    assert buckets.startswith("sum by (output, bucket, pod) (increase(" + PREDICTION_BUCKET_METRIC)
    assert PREDICTION_MISSING_METRIC in missing and "sum by (output, pod)" in missing
    window = prometheus_window(
        [({"output": "score", "bucket": "0.2", "pod": "a"}, 4.6)],
        [({"output": "score", "pod": "a"}, 1.0)],
        PROFILE,
        "3",
        outputs=True,
    )
    assert window.counts["score"] == ((5, 0, 0), 1) and window.pods == 1


def test_prediction_gauges_mirror_the_status() -> None:
    meta = {"namespace": "ml", "name": "gauged"}
    new = {
        "lastCheckTime": "t1",
        "predictions": [
            {"name": "score", "method": "psi", "score": 0.4, "threshold": 0.2, "drifted": True}
        ],
    }
    metrics.observe_drift(meta, {}, new)
    value = metrics.REGISTRY.get_sample_value
    labels = {"namespace": "ml", "monitor": "gauged", "output": "score"}
    assert value("modelworks_drift_prediction_score", {**labels, "method": "psi"}) == 0.4
    assert value("modelworks_drift_prediction_drifted", labels) == 1.0
    metrics.forget_drift(meta)
    assert value("modelworks_drift_prediction_drifted", labels) is None
