"""DriftMonitor: compare live (or batch) feature distributions with the training reference."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field

from modelworks.api.common import (
    AGE_COLUMN,
    CONDITIONS_FIELD,
    ApiModel,
    Condition,
    Duration,
    ObjectRef,
    ObjectStore,
    Rule,
    StatusModel,
    condition_column,
    list_map,
    parse_duration,
)
from modelworks.api.performance import Performance, PerformanceStatus
from modelworks.api.trainingjob import TrainingJobSpec
from modelworks.drift.statistics import METHODS, P_VALUE_METHODS, STATISTICS, and_list
from modelworks.drift.statistics import Method as Method

KIND = "DriftMonitor"
PLURAL = "driftmonitors"
SHORT_NAMES = ("dmon",)
MAX_NAME_LENGTH = 48

# The drift statistics (``method``) and what the API says about them come from their
# registry: distances drift above the threshold, tests that give a p-value below it.
_P_VALUES = and_list(P_VALUE_METHODS)
_DEFAULT_THRESHOLDS = ", ".join(f"{m} {STATISTICS[m].default_threshold:g}" for m in METHODS)


class Prometheus(ApiModel):
    """Read the serving pods' feature histograms from Prometheus instead of the pods."""

    url: str = Field(
        min_length=1,
        max_length=2048,
        pattern=r"^https?://[^\s]+$",
        description="The Prometheus HTTP API base URL, e.g. "
        "http://prometheus-operated.monitoring:9090. The series must carry the namespace and "
        "modeldeployment labels (manifests/monitoring/podmonitor.yaml adds them).",
    )


class Target(ApiModel):
    """Live mode: the ModelDeployment whose serving pods export feature histograms."""

    model_deployment: ObjectRef
    prometheus: Prometheus | None = Field(
        default=None,
        description="Query the histograms from Prometheus (increase over the window). "
        "Default: scrape the ready serving pods' /metrics directly.",
    )


class Batch(ApiModel):
    """Batch mode: compare a current dataset with the reference, in a Job."""

    current_uri: str = Field(
        min_length=1, max_length=2048, description="CSV or Parquet path, or runs:/ artifact URI."
    )


class Reference(ApiModel):
    """Where the reference distribution comes from. Default: the profile logged with the served version."""

    __rules__ = (
        Rule(
            cel="!(has(self.profileUri) && has(self.datasetUri))",
            message="set profileUri or datasetUri, not both",
            check=lambda r: not (r.profile_uri is not None and r.dataset_uri is not None),
        ),
    )

    profile_uri: str | None = Field(
        default=None,
        max_length=2048,
        description="A reference profile (JSON), as an MLflow artifact URI (runs:/<run id>/<path>) "
        "or a file path in the batch Job.",
    )
    dataset_uri: str | None = Field(
        default=None, max_length=2048, description="A reference dataset (CSV or Parquet)."
    )


class FeatureSpec(ApiModel):
    """Per-feature overrides; features not listed use the monitor's method and threshold."""

    name: str = Field(min_length=1, max_length=250)
    type: Literal["numeric", "categorical"] | None = None
    method: Method | None = None
    threshold: float | None = Field(default=None, ge=0.0, le=1000.0)
    enabled: bool = True


class Calibration(ApiModel):
    """Derive each feature's threshold from the reference's own variability (bootstrap)."""

    samples: int = Field(
        default=200, ge=20, le=5000, description="Bootstrap resamples of the reference."
    )
    quantile: float = Field(
        default=0.99,
        gt=0.5,
        lt=1.0,
        description="Quantile of the bootstrap scores used as threshold.",
    )


class Predictions(ApiModel):
    """Prediction drift: what the model answers (class shares, score or value bins) against
    the outputs of the reference profile. Live mode only."""

    enabled: bool = Field(
        default=True,
        description="Score the model's outputs when the reference profile has them; each "
        "output counts like a feature in the verdict (driftShare).",
    )
    method: Method | None = Field(
        default=None, description="The statistic for the outputs (default: spec.method)."
    )
    threshold: float | None = Field(
        default=None,
        ge=0.0,
        le=1000.0,
        description="The outputs' threshold (default: as for a feature with that method).",
    )


LABEL_COLUMN_PATTERN = r"^[A-Za-z_][A-Za-z0-9_.-]*$"


class RetrainDataset(ApiModel):
    """What a retraining trains on: the original dataset, or a snapshot of the captured and
    labelled rows of a window (docs/data-capture.md, "Retraining on fresh data")."""

    __rules__ = (
        Rule(
            cel="self.source != 'Captured' || has(self.target)",
            message="source Captured needs target: the label column the trainer reads",
            check=lambda d: d.source != "Captured" or d.target is not None,
            field=".target",
            reason="FieldValueRequired",
        ),
    )

    source: Literal["Original", "Captured"] = Field(
        default="Original",
        description="Original: the copied spec's dataset (uri and version unchanged). "
        "Captured: an immutable snapshot of the target's captured rows joined with their "
        "labels over the window, with a holdout written beside it.",
    )
    window: Duration | None = Field(
        default=None,
        description="How far back the captured rows go (at least the monitor's window). "
        "Default: the monitor's window.",
    )
    min_rows: int = Field(
        default=100,
        ge=1,
        le=100_000_000,
        description="Fewer labelled rows in the window: no snapshot and no retraining "
        "(SnapshotReady=False, TooFewRows), tried again at the next decision.",
    )
    holdout_fraction: float = Field(
        default=0.2,
        ge=0.0,
        le=0.5,
        description="Share of the rows kept out of training (chosen by a hash of the "
        "inference id), written as holdout.parquet for the evaluation of the new model.",
    )
    target: str | None = Field(
        default=None,
        min_length=1,
        max_length=250,
        pattern=LABEL_COLUMN_PATTERN,
        description="The label column the trainer expects (e.g. churned): the ground truth "
        "is written under this name.",
    )


class Retrain(ApiModel):
    """Start a TrainingJob when drift persists (or on a schedule)."""

    __rules__ = (
        Rule(
            cel="has(self.fromTrainingJob) != has(self.template)",
            message="exactly one of fromTrainingJob or template must be set",
            check=lambda r: (r.from_training_job is None) != (r.template is None),
        ),
    )

    from_training_job: ObjectRef | None = Field(
        default=None, description="Copy this TrainingJob's spec."
    )
    template: TrainingJobSpec | None = Field(
        default=None, description="Or use this TrainingJob spec."
    )
    on_drift: bool = Field(default=True, description="Retrain when drift is declared.")
    schedule: str | None = Field(
        default=None,
        max_length=128,
        pattern=r"^(@(hourly|daily|weekly|monthly)|(\S+\s+){4}\S+)$",
        description="Also retrain on this cron schedule.",
    )
    cooldown: Duration = Field(default="24h", description="Minimum time between two retrainings.")
    max_concurrent: int = Field(default=1, ge=1, le=10)
    dataset: RetrainDataset | None = Field(
        default=None,
        description="What the retraining trains on. Default: the original dataset.",
    )


class DriftMonitorSpec(ApiModel):
    """What to watch, against what, with which statistics and what to do about drift."""

    __rules__ = (
        Rule(
            cel="has(self.target) != has(self.batch)",
            message="exactly one of target (live) or batch must be set",
            check=lambda s: (s.target is None) != (s.batch is None),
        ),
        Rule(
            cel="!has(self.batch) || has(self.reference)",
            message="batch mode needs a reference (profileUri or datasetUri)",
            check=lambda s: s.batch is None or s.reference is not None,
            field=".reference",
            reason="FieldValueRequired",
        ),
        Rule(
            cel="!has(self.target) || !has(self.reference) || !has(self.reference.datasetUri)",
            message="live mode compares with a reference profile (profileUri, or the one logged "
            "with the served version); datasetUri is for batch mode",
            check=lambda s: (
                s.target is None or s.reference is None or s.reference.dataset_uri is None
            ),
            field=".reference.datasetUri",
            reason="FieldValueForbidden",
        ),
        Rule(
            cel=f"!(self.method in [{', '.join(repr(m) for m in P_VALUE_METHODS)}]) "
            "|| !has(self.threshold) || self.threshold <= 1.0",
            message=f"for {_P_VALUES} the threshold is a p-value and must be at most 1",
            check=lambda s: (
                s.method not in P_VALUE_METHODS or s.threshold is None or s.threshold <= 1.0
            ),
            field=".threshold",
        ),
        Rule(
            cel="!has(self.predictions) || !has(self.predictions.threshold) "
            "|| self.predictions.threshold <= 1.0 || !((has(self.predictions.method) "
            f"? self.predictions.method : self.method) in [{', '.join(repr(m) for m in P_VALUE_METHODS)}])",
            message=f"for {_P_VALUES} the threshold is a p-value and must be at most 1",
            check=lambda s: (
                s.predictions is None
                or s.predictions.threshold is None
                or s.predictions.threshold <= 1.0
                or (s.predictions.method or s.method) not in P_VALUE_METHODS
            ),
            field=".predictions.threshold",
        ),
        Rule(
            cel="!has(self.performance) || has(self.target)",
            message="performance is measured on a live target's captured predictions",
            check=lambda s: s.performance is None or s.target is not None,
            field=".performance",
            reason="FieldValueForbidden",
        ),
        Rule(
            cel="!has(self.retrain) || !has(self.retrain.dataset) "
            "|| self.retrain.dataset.source != 'Captured' || has(self.target)",
            message="source Captured reads the target ModelDeployment's captured rows: "
            "it needs target (live mode)",
            check=lambda s: s.target is not None or captured(s) is None,
            field=".retrain.dataset.source",
            reason="FieldValueForbidden",
        ),
        Rule(
            cel="!has(self.retrain) || !has(self.retrain.dataset) "
            "|| !has(self.retrain.dataset.window) "
            "|| duration(self.retrain.dataset.window) >= duration(self.window)",
            message="the snapshot window may not be shorter than the monitor's window",
            check=lambda s: (
                s.retrain is None
                or s.retrain.dataset is None
                or s.retrain.dataset.window is None
                or parse_duration(s.retrain.dataset.window) >= parse_duration(s.window)
            ),
            field=".retrain.dataset.window",
        ),
    )

    target: Target | None = None
    batch: Batch | None = None
    reference: Reference | None = None
    features: list[FeatureSpec] | None = Field(
        default=None, max_length=500, json_schema_extra=list_map("name")
    )
    method: Method = "psi"
    threshold: float | None = Field(
        default=None,
        ge=0.0,
        le=1000.0,
        description=f"Drift when the score is above it (a p-value below it for {_P_VALUES}). "
        f"Default per method: {_DEFAULT_THRESHOLDS}.",
    )
    calibration: Calibration | None = None
    correction: Literal["none", "bonferroni", "fdr"] = Field(
        default="none", description="Multiple-testing correction for p-value methods."
    )
    drift_share: float = Field(
        default=0.5,
        gt=0.0,
        le=1.0,
        description="Dataset drift when at least this share of features drift.",
    )
    consecutive_windows: int = Field(
        default=1, ge=1, le=100, description="Windows in a row before drift is declared."
    )
    interval: Duration = "5m"
    window: Duration = "1h"
    min_samples: int = Field(
        default=100, ge=1, description="Fewer samples in a window: no verdict."
    )
    predictions: Predictions | None = None
    retrain: Retrain | None = None
    suspend: bool = False
    storage: ObjectStore | None = Field(
        default=None,
        description="Object storage the monitor's Jobs read (batch data, captured rows, "
        "labels) and write (snapshots).",
    )
    performance: Performance | None = Field(
        default=None,
        description="Model quality: the target's captured predictions joined with their "
        "labels (live mode; the ModelDeployment must capture).",
    )


def captured(spec: DriftMonitorSpec) -> RetrainDataset | None:
    """The retraining's dataset settings when it trains on captured rows, else None."""
    dataset = spec.retrain.dataset if spec.retrain is not None else None
    return dataset if dataset is not None and dataset.source == "Captured" else None


Verdict = Literal["NoDrift", "Drift", "InsufficientData"]


class FeatureScore(StatusModel):
    name: str
    method: str
    score: float | None = None
    threshold: float | None = None
    drifted: bool | None = None
    samples: int | None = None
    missing: int | None = None
    approximate: bool | None = None
    note: str | None = None


class RetrainRecord(StatusModel):
    training_job: str
    at: str
    reason: str


class SnapshotStatus(StatusModel):
    """The snapshot of captured, labelled rows a retraining trains on (source Captured)."""

    job: str | None = None
    key: str | None = None
    phase: Literal["Running", "Ready", "Failed"] | None = None
    uri: str | None = None
    digest: str | None = None
    holdout_uri: str | None = None
    rows: int | None = None
    holdout_rows: int | None = None
    window_start: str | None = None
    window_end: str | None = None
    reused: bool | None = None
    training_job: str | None = None
    message: str | None = None


class DriftMonitorStatus(StatusModel):
    observed_generation: int | None = None
    phase: Literal["Pending", "Monitoring", "Drifting", "Suspended", "Failed"] | None = None
    conditions: list[Condition] | None = Field(default=None, json_schema_extra=CONDITIONS_FIELD)
    verdict: Verdict | None = None
    drifted_share: float | None = None
    samples: int | None = None
    served_version: str | None = None
    consecutive_drift_windows: int | None = None
    last_check_time: str | None = None
    next_check_time: str | None = None
    features: list[FeatureScore] | None = None
    predictions: list[FeatureScore] | None = None
    last_retrain: RetrainRecord | None = None
    retrain_count: int | None = None
    snapshot: SnapshotStatus | None = None
    next_scheduled_retrain: str | None = None
    window_start: str | None = None
    check_job: str | None = None
    pods: int | None = None
    performance: PerformanceStatus | None = None


class DriftMonitor(ApiModel):
    spec: DriftMonitorSpec


PRINTER_COLUMNS: list[dict[str, Any]] = [
    {"name": "Target", "type": "string", "jsonPath": ".spec.target.modelDeployment.name"},
    {"name": "Method", "type": "string", "jsonPath": ".spec.method"},
    {"name": "Verdict", "type": "string", "jsonPath": ".status.verdict"},
    {"name": "Drifted", "type": "number", "jsonPath": ".status.driftedShare"},
    condition_column("Ready", "Ready", "status"),
    {"name": "Last-Check", "type": "date", "jsonPath": ".status.lastCheckTime"},
    condition_column("Reason", "Ready", "reason", priority=1),
    AGE_COLUMN,
]
