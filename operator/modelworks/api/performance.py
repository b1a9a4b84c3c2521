"""DriftMonitor.spec.performance: model quality on captured predictions and their labels."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from modelworks.api.common import ApiModel, Duration, Rule, StatusModel, list_map

CLASSIFICATION_METRICS = ("roc_auc", "accuracy", "f1", "precision", "recall", "log_loss")
REGRESSION_METRICS = ("rmse", "mae", "r2")
LOWER_IS_BETTER = ("log_loss", "rmse", "mae")
Metric = Literal[
    "roc_auc", "accuracy", "f1", "precision", "recall", "log_loss", "rmse", "mae", "r2"
]
Task = Literal["classification", "regression"]
QualityVerdict = Literal["OK", "Degraded", "InsufficientLabels"]

_REGRESSION_CEL = "[" + ", ".join(repr(m) for m in REGRESSION_METRICS) + "]"


class MetricThreshold(ApiModel):
    """Bounds on one metric: absolute (``min``/``max``), or relative to the served
    version's run in MLflow (``maxDrop`` of ``baselineMetric``)."""

    __rules__ = (
        Rule(
            cel="has(self.maxDrop) == has(self.baselineMetric)",
            message="maxDrop and baselineMetric go together",
            check=lambda t: (t.max_drop is None) == (t.baseline_metric is None),
            field=".baselineMetric",
            reason="FieldValueRequired",
        ),
        Rule(
            cel="has(self.min) || has(self.max) || has(self.maxDrop)",
            message="a threshold needs min, max or maxDrop",
            check=lambda t: t.min is not None or t.max is not None or t.max_drop is not None,
        ),
    )

    metric: Metric
    min: float | None = Field(default=None, description="Degraded below this value.")
    max: float | None = Field(default=None, description="Degraded above this value.")
    max_drop: float | None = Field(
        default=None,
        ge=0.0,
        le=1.0,
        description="Degraded when the value is worse than the baseline by more than this "
        "share of it (0.05: 5 %); worse is lower, or higher for log_loss, rmse and mae.",
    )
    baseline_metric: str | None = Field(
        default=None,
        min_length=1,
        max_length=250,
        pattern=r"^[A-Za-z0-9_./ -]+$",
        description="The metric of the served version's MLflow run to compare with (val_auc, say).",
    )


class Performance(ApiModel):
    """Join captured predictions with their ground truth by inference id over a window and
    score them; retrain (``retrain.onDrift``) when a threshold is crossed."""

    __rules__ = (
        Rule(
            cel=f"self.task != 'regression' || self.metrics.all(m, m in {_REGRESSION_CEL})",
            message="regression metrics are rmse, mae and r2",
            check=lambda p: (
                p.task != "regression" or all(m in REGRESSION_METRICS for m in p.metrics)
            ),
            field=".metrics",
        ),
        Rule(
            cel=f"self.task != 'classification' || self.metrics.all(m, !(m in {_REGRESSION_CEL}))",
            message="classification metrics are " + ", ".join(CLASSIFICATION_METRICS),
            check=lambda p: (
                p.task != "classification" or all(m not in REGRESSION_METRICS for m in p.metrics)
            ),
            field=".metrics",
        ),
        Rule(
            cel="!has(self.thresholds) || self.thresholds.all(t, t.metric in self.metrics)",
            message="every threshold's metric must be one of metrics",
            check=lambda p: all(t.metric in p.metrics for t in p.thresholds or []),
            field=".thresholds",
        ),
    )

    task: Task = "classification"
    metrics: list[Metric] = Field(min_length=1, max_length=9)
    positive_class: int = Field(
        default=1,
        ge=0,
        le=1000,
        description="Classification: the class whose score roc_auc and log_loss use and "
        "that precision, recall and f1 count (the column index of the model's scores).",
    )
    window: Duration = Field(default="24h", description="How far back captured rows count.")
    label_delay: Duration = Field(
        default="0s",
        description="Only predictions at least this old are joined: their labels have had "
        "time to arrive.",
    )
    interval: Duration = Field(default="1h", description="Time between two checks.")
    min_labelled_rows: int = Field(
        default=100, ge=1, le=100_000_000, description="Fewer labelled rows: no verdict."
    )
    thresholds: list[MetricThreshold] | None = Field(
        default=None, max_length=9, json_schema_extra=list_map("metric")
    )


class MetricResult(StatusModel):
    metric: str
    value: float | None = None
    baseline: float | None = None
    verdict: QualityVerdict | None = None
    reason: str | None = None


class PerformanceStatus(StatusModel):
    verdict: QualityVerdict | None = None
    window_start: str | None = None
    window_end: str | None = None
    labelled_rows: int | None = None
    unmatched_labels: int | None = None
    metrics: list[MetricResult] | None = None
    served_version: str | None = None
    last_check_time: str | None = None
    next_check_time: str | None = None
    check_job: str | None = None
