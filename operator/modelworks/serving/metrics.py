"""The model server's Prometheus metrics, correct with one worker or many.

With several uvicorn workers every process counts for itself; prometheus_client's
multiprocess mode (PROMETHEUS_MULTIPROC_DIR, set by ``modelworks serve``) sums them
at scrape time, so any worker's /metrics answers for the whole pod.
"""

from __future__ import annotations

import os
import threading
from typing import Any

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
    generate_latest,
    multiprocess,
)

from modelworks import names
from modelworks.drift.profile import (
    FeatureProfile,
    Profile,
    bucket_counts,
    bucket_labels,
    output_columns,
)
from modelworks.serving.answers import rows

disable_created_metrics()  # no *_created series: they double the scrape for no use here
LABELS = ("model", "version")
REQUESTS = Counter(
    names.SERVING_REQUESTS_METRIC, "Scoring requests by HTTP status code.", [*LABELS, "code"]
)
LATENCY = Histogram(
    names.SERVING_LATENCY_METRIC,
    "Time to answer a scoring request.",
    LABELS,
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
)
ROWS = Counter(
    "modelworks_serving_rows_total", "Rows scored (the sample count drift windows use).", LABELS
)
FEATURE_BUCKETS = Counter(
    names.FEATURE_BUCKET_METRIC,
    "Input values per feature and reference-profile bucket (not cumulative; bucket is the "
    "upper edge, +Inf, a category or __other__).",
    [*LABELS, "feature", "bucket"],
)
FEATURE_MISSING = Counter(
    names.FEATURE_MISSING_METRIC,
    "Input values that were missing (null/NaN) per feature.",
    [*LABELS, "feature"],
)
PREDICTION_BUCKETS = Counter(
    names.PREDICTION_BUCKET_METRIC,
    "What the model answered per output (prediction: class or value; score: positive-class "
    "score) and reference-profile bucket (not cumulative; the same buckets as features).",
    [*LABELS, "output", "bucket"],
)
PREDICTION_MISSING = Counter(
    names.PREDICTION_MISSING_METRIC,
    "Answered rows without a value for the output (null/NaN, or not in the answer).",
    [*LABELS, "output"],
)
FEEDBACK_LABELS = Counter(
    names.FEEDBACK_LABELS_METRIC, "Labels accepted on /feedback and written to the store."
)
FEEDBACK_REFUSED = Counter(
    names.FEEDBACK_REFUSED_METRIC,
    "Requests to /feedback refused, by reason (unauthenticated, forbidden, malformed, "
    "too_large, unsupported_media_type, method, busy, store_unavailable, not_configured).",
    ["reason"],
)
LOADED = Gauge(
    "modelworks_serving_model_loaded",
    "1 once the model is loaded and the server is ready.",
    LABELS,
    multiprocess_mode="max",
)


class FeatureObserver:
    """Counts each scored batch into the reference profile's buckets, one Counter child per bucket."""

    def __init__(self, profile: Profile, model: str, version: str) -> None:
        self._features = []
        for feature in profile.features:
            children = [
                FEATURE_BUCKETS.labels(model, version, feature.name, b)
                for b in bucket_labels(feature)
            ]
            missing = FEATURE_MISSING.labels(model, version, feature.name)
            self._features.append((feature, children, missing))
        self._rows = ROWS.labels(model, version)
        self._lock = threading.Lock()

    @property
    def feature_names(self) -> list[str]:
        return [f.name for f, _, _ in self._features]

    def observe(self, frame: Any) -> None:
        """Count a pandas DataFrame (or a mapping of columns); unknown shapes are skipped."""
        columns = getattr(frame, "columns", None)
        if columns is None:  # instances/inputs arrive as records or columns, not a DataFrame
            import pandas as pd  # type: ignore[import-untyped]

            if (isinstance(frame, list) and frame and all(isinstance(r, dict) for r in frame)) or (
                isinstance(frame, dict)
                and all(
                    isinstance(v, list | tuple) or getattr(v, "ndim", 0) == 1
                    for v in frame.values()
                )
            ):
                frame = pd.DataFrame(frame)
            else:
                return
            columns = frame.columns
        rows = len(frame)
        present = set(columns)
        for feature, children, missing in self._features:
            if feature.name not in present:
                missing.inc(rows)
                continue
            counts, nmissing = bucket_counts(feature, frame[feature.name].to_numpy())
            for child, count in zip(children, counts, strict=True):
                if count:
                    child.inc(count)
            if nmissing:
                missing.inc(nmissing)
        self._rows.inc(rows)


class PredictionObserver:
    """An AnswerWatcher: counts each answer into the buckets of the profile's outputs."""

    def __init__(self, outputs: tuple[FeatureProfile, ...], model: str, version: str) -> None:
        self._outputs = [
            (
                output,
                [
                    PREDICTION_BUCKETS.labels(model, version, output.name, b)
                    for b in bucket_labels(output)
                ],
                PREDICTION_MISSING.labels(model, version, output.name),
            )
            for output in outputs
        ]

    @property
    def output_names(self) -> list[str]:
        return [o.name for o, _, _ in self._outputs]

    def answered(self, data: Any, result: Any) -> None:
        answers = rows(result)
        columns = output_columns(answers.prediction, answers.scores)
        for output, children, missing in self._outputs:
            values = columns.get(output.name)
            if values is None:
                missing.inc(len(answers))
                continue
            counts, nmissing = bucket_counts(output, values)
            for child, count in zip(children, counts, strict=True):
                if count:
                    child.inc(count)
            if nmissing:
                missing.inc(nmissing)


def render() -> tuple[bytes, str]:
    """The exposition text for /metrics, summed over workers in multiprocess mode."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
        return generate_latest(registry), CONTENT_TYPE_LATEST
    return generate_latest(REGISTRY), CONTENT_TYPE_LATEST
