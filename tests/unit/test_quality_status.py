"""The model-quality decision: thresholds (absolute, relative to the served run), too few
labels, no capture, a failed check (table-driven, plain data)."""

from __future__ import annotations

from typing import Any

import pytest

from modelworks.api.performance import Performance
from modelworks.status.quality import QualityFacts, decide_quality, judge


def perf(**extra: Any) -> Performance:
    return Performance.model_validate({"metrics": ["roc_auc", "log_loss"], **extra})


def result(rows: int = 500, **metrics: float | None) -> dict[str, Any]:
    return {
        "start": "2026-11-30T10:00:00Z",
        "end": "2026-11-30T12:00:00Z",
        "labelledRows": rows,
        "unmatchedLabels": 3,
        "metrics": metrics,
    }


AUC_DROP = {"metric": "roc_auc", "maxDrop": 0.05, "baselineMetric": "val_auc"}
LOSS_DROP = {"metric": "log_loss", "maxDrop": 0.1, "baselineMetric": "val_log_loss"}


@pytest.mark.parametrize(
    ("thresholds", "values", "baselines", "verdict", "reason", "degraded"),
    [
        ([], {"roc_auc": 0.6, "log_loss": 0.9}, {}, "OK", "WithinThresholds", False),
        (
            [{"metric": "roc_auc", "min": 0.7}],
            {"roc_auc": 0.69, "log_loss": 0.5},
            {},
            "Degraded",
            "PerformanceDegraded",
            True,
        ),
        (
            [{"metric": "log_loss", "max": 0.6}],
            {"roc_auc": 0.9, "log_loss": 0.61},
            {},
            "Degraded",
            "PerformanceDegraded",
            True,
        ),
        (
            [AUC_DROP],
            {"roc_auc": 0.86, "log_loss": 0.5},
            {"val_auc": 0.9},
            "OK",
            "WithinThresholds",
            False,
        ),
        (
            [AUC_DROP],
            {"roc_auc": 0.85, "log_loss": 0.5},
            {"val_auc": 0.9},
            "Degraded",
            "PerformanceDegraded",
            True,
        ),
        (
            [LOSS_DROP],
            {"roc_auc": 0.9, "log_loss": 0.54},
            {"val_log_loss": 0.5},
            "OK",
            "WithinThresholds",
            False,
        ),
        (
            [LOSS_DROP],
            {"roc_auc": 0.9, "log_loss": 0.56},
            {"val_log_loss": 0.5},
            "Degraded",
            "PerformanceDegraded",
            True,
        ),
        ([AUC_DROP], {"roc_auc": 0.5, "log_loss": 0.5}, {}, "OK", "WithinThresholds", False),
        (
            [{"metric": "roc_auc", "min": 0.7}],
            {"roc_auc": None, "log_loss": 0.5},
            {},
            "OK",
            "WithinThresholds",
            False,
        ),
    ],
)
def test_thresholds(
    thresholds: list[dict[str, Any]],
    values: dict[str, float | None],
    baselines: dict[str, float],
    verdict: str,
    reason: str,
    degraded: bool,
) -> None:
    out = decide_quality(
        perf(thresholds=thresholds), QualityFacts(result(**values), baselines, "3")
    )
    assert out.status["verdict"] == verdict
    assert out.condition[1] == reason
    assert out.condition[0] == ("False" if degraded else "True")
    assert out.degraded is degraded
    assert [e.type for e in out.events] == (["Warning"] if degraded else [])
    assert out.status["labelledRows"] == 500 and out.status["servedVersion"] == "3"
    assert [m["metric"] for m in out.status["metrics"]] == ["roc_auc", "log_loss"]


def test_drop_names_metric_baseline_and_share() -> None:
    out = decide_quality(
        perf(thresholds=[AUC_DROP]),
        QualityFacts(result(roc_auc=0.8, log_loss=0.5), {"val_auc": 0.9}),
    )
    assert out.reason == "roc_auc 0.8 worse than val_auc 0.9 by more than 5%"
    assert out.status["metrics"][0] == {
        "metric": "roc_auc",
        "value": 0.8,
        "baseline": 0.9,
        "verdict": "Degraded",
        "reason": "0.8 worse than val_auc 0.9 by more than 5%",
    }


@pytest.mark.parametrize(
    ("facts", "condition"),
    [
        (QualityFacts(result(rows=99, roc_auc=0.1)), ("Unknown", "InsufficientLabels")),
        (QualityFacts(None), ("Unknown", "Pending")),
        (QualityFacts(None, captures=False, target="churn"), ("Unknown", "NoDataCapture")),
        (QualityFacts(None, failure="OSError: no bucket"), ("Unknown", "PerformanceCheckFailed")),
    ],
)
def test_no_verdict(facts: QualityFacts, condition: tuple[str, str]) -> None:
    out = decide_quality(perf(thresholds=[{"metric": "roc_auc", "min": 0.9}]), facts)
    assert out.condition[:2] == condition
    assert out.degraded is False


def test_no_capture_names_the_field() -> None:
    out = decide_quality(perf(), QualityFacts(None, captures=False, target="churn"))
    assert "ModelDeployment churn has no spec.dataCapture" in out.condition[2]


def test_missing_baseline_is_no_verdict_for_that_metric() -> None:
    rule = Performance.model_validate({"metrics": ["roc_auc"], "thresholds": [AUC_DROP]})
    assert judge(0.5, (rule.thresholds or [])[0], {}) == (
        None,
        None,
        "baseline metric val_auc not in the served run",
    )
