"""The operator's own Prometheus metrics: one low-cardinality family for all kinds."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server
from prometheus_client.core import CounterMetricFamily, Metric

REGISTRY = CollectorRegistry(auto_describe=True)

RECONCILES = Counter(
    "modelworks_reconcile_total",
    "Reconcile passes by kind and result (ok, invalid, not-implemented, error).",
    ["kind", "result"],
    registry=REGISTRY,
)
RECONCILE_SECONDS = Histogram(
    "modelworks_reconcile_duration_seconds",
    "Time spent in one reconcile pass.",
    ["kind"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
    registry=REGISTRY,
)
RECONCILE_ERRORS = Counter(
    "modelworks_reconcile_errors_total",
    "Reconcile passes that raised, by kind and exception type.",
    ["kind", "error"],
    registry=REGISTRY,
)
STATUS_WRITES = Counter(
    "modelworks_status_writes_total",
    "Status writes by kind (a pass that changes nothing writes nothing).",
    ["kind"],
    registry=REGISTRY,
)
EVENTS = Counter(
    "modelworks_events_total",
    "Kubernetes Events posted, by kind, type and reason.",
    ["kind", "type", "reason"],
    registry=REGISTRY,
)
QUEUE_WAIT = Histogram(
    "modelworks_queue_wait_seconds",
    "How long an object waited in the work queue, from ready to taken by a worker.",
    buckets=(0.001, 0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
    registry=REGISTRY,
)
QUEUE_DEPTH = Gauge(
    "modelworks_queue_depth",
    "Objects ready for a pass and waiting for a worker.",
    registry=REGISTRY,
)
QUEUE_DELAYED = Gauge(
    "modelworks_queue_delayed",
    "Objects waiting for their next pass to become due (requeue, resync, backoff).",
    registry=REGISTRY,
)
PASSES_IN_FLIGHT = Gauge(
    "modelworks_passes_in_flight",
    "Reconcile passes running now.",
    registry=REGISTRY,
)
LEADING = Gauge(
    "modelworks_leader",
    "1 while this replica holds the leader lease and runs passes, 0 while it stands by.",
    registry=REGISTRY,
)
BUILD_INFO = Gauge(
    "modelworks_build_info",
    "Always 1; the version label says which operator runs.",
    ["version"],
    registry=REGISTRY,
)

CONDITION = Gauge(
    "modelworks_condition",
    "Every object's conditions: 1 True, 0 False, -1 Unknown (alerts select on type).",
    ["kind", "namespace", "name", "type"],
    registry=REGISTRY,
)
_CONDITION_VALUE = {"True": 1.0, "False": 0.0}


def observe_conditions(
    kind: str, meta: Mapping[str, Any], conditions: Iterable[Mapping[str, Any]] | None
) -> None:
    """Mirror an object's conditions into ``modelworks_condition``."""
    for cond in conditions or ():
        value = _CONDITION_VALUE.get(str(cond.get("status")), -1.0)
        CONDITION.labels(kind, meta.get("namespace", ""), meta.get("name", ""), cond["type"]).set(
            value
        )


def forget_conditions(kind: str, meta: Mapping[str, Any]) -> None:
    """Drop a deleted object's series."""
    key = (kind, meta.get("namespace", ""), meta.get("name", ""))
    for labels in [k for k in CONDITION._metrics if tuple(k[:3]) == key]:
        CONDITION.remove(*labels)


_MONITOR = ["namespace", "monitor"]
DRIFT_SCORE = Gauge(
    "modelworks_drift_score",
    "Each monitored feature's drift score in the last window (a p-value for ks and chi2).",
    [*_MONITOR, "feature", "method"],
    registry=REGISTRY,
)
DRIFT_THRESHOLD = Gauge(
    "modelworks_drift_threshold",
    "The threshold each feature's score is compared with.",
    [*_MONITOR, "feature", "method"],
    registry=REGISTRY,
)
DRIFT_FEATURE = Gauge(
    "modelworks_drift_feature_drifted",
    "1 when the feature drifted in the last window.",
    [*_MONITOR, "feature"],
    registry=REGISTRY,
)
DRIFT_SHARE = Gauge(
    "modelworks_drift_share",
    "Share of the scored features that drifted.",
    _MONITOR,
    registry=REGISTRY,
)
DRIFT_SAMPLES = Gauge(
    "modelworks_drift_window_samples",
    "Rows in the last window.",
    _MONITOR,
    registry=REGISTRY,
)
DRIFT_DETECTED = Gauge(
    "modelworks_drift_detected",
    "1 while drift is declared (after consecutiveWindows drifting windows).",
    _MONITOR,
    registry=REGISTRY,
)
PREDICTION_SCORE = Gauge(
    "modelworks_drift_prediction_score",
    "Each monitored model output's drift score in the last window (prediction drift).",
    [*_MONITOR, "output", "method"],
    registry=REGISTRY,
)
PREDICTION_THRESHOLD = Gauge(
    "modelworks_drift_prediction_threshold",
    "The threshold each output's score is compared with.",
    [*_MONITOR, "output", "method"],
    registry=REGISTRY,
)
PREDICTION_DRIFTED = Gauge(
    "modelworks_drift_prediction_drifted",
    "1 when the model output drifted in the last window.",
    [*_MONITOR, "output"],
    registry=REGISTRY,
)
QUALITY_METRIC = Gauge(
    "modelworks_quality_metric",
    "Each model-quality metric of the last performance check (spec.performance).",
    [*_MONITOR, "metric"],
    registry=REGISTRY,
)
QUALITY_DEGRADED = Gauge(
    "modelworks_quality_degraded",
    "1 when the last performance check found the model degraded (ModelQuality False).",
    _MONITOR,
    registry=REGISTRY,
)
RETRAINS = Counter(
    "modelworks_retrains",
    "TrainingJobs a DriftMonitor started.",
    _MONITOR,
    registry=REGISTRY,
)
_DRIFT_FAMILIES = (
    DRIFT_SCORE,
    DRIFT_THRESHOLD,
    DRIFT_FEATURE,
    DRIFT_SHARE,
    DRIFT_SAMPLES,
    DRIFT_DETECTED,
    PREDICTION_SCORE,
    PREDICTION_THRESHOLD,
    PREDICTION_DRIFTED,
    QUALITY_METRIC,
    QUALITY_DEGRADED,
)


def observe_drift(meta: Mapping[str, Any], old: Mapping[str, Any], new: Mapping[str, Any]) -> None:
    """Mirror a DriftMonitor's status into the drift gauges (and count new retrainings)."""
    ns, name = str(meta.get("namespace", "")), str(meta.get("name", ""))
    started = int(new.get("retrainCount") or 0) - int(old.get("retrainCount") or 0)
    if started > 0:
        RETRAINS.labels(ns, name).inc(started)
    _observe_quality(ns, name, old.get("performance") or {}, new.get("performance") or {})
    if new.get("lastCheckTime") == old.get("lastCheckTime") and old.get("lastCheckTime"):
        return  # no new window
    _forget_drift(ns, name, keep_totals=True, families=_DRIFT_FAMILIES[:-2])
    _scores(ns, name, new.get("features"), (DRIFT_SCORE, DRIFT_THRESHOLD, DRIFT_FEATURE))
    _scores(
        ns,
        name,
        new.get("predictions"),
        (PREDICTION_SCORE, PREDICTION_THRESHOLD, PREDICTION_DRIFTED),
    )
    if new.get("driftedShare") is not None:
        DRIFT_SHARE.labels(ns, name).set(float(new["driftedShare"]))
    DRIFT_SAMPLES.labels(ns, name).set(float(new.get("samples") or 0))
    drifting = any(
        c.get("type") == "DriftDetected" and c.get("status") == "True"
        for c in new.get("conditions") or []
    )
    DRIFT_DETECTED.labels(ns, name).set(1.0 if drifting else 0.0)


def _scores(ns: str, name: str, entries: Any, gauges: tuple[Gauge, Gauge, Gauge]) -> None:
    """Score, threshold and drifted gauges of each feature (or model output) of a window."""
    score, threshold, drifted = gauges
    for entry in entries or []:
        labels = (ns, name, str(entry["name"]))
        method = str(entry.get("method", ""))
        if entry.get("score") is not None:
            score.labels(*labels, method).set(float(entry["score"]))
        if entry.get("threshold") is not None:
            threshold.labels(*labels, method).set(float(entry["threshold"]))
        if entry.get("drifted") is not None:
            drifted.labels(*labels).set(1.0 if entry["drifted"] else 0.0)


def _observe_quality(ns: str, name: str, old: Mapping[str, Any], new: Mapping[str, Any]) -> None:
    """The quality gauges of the last performance check (kept until the next one)."""
    if new.get("lastCheckTime") == old.get("lastCheckTime") and old.get("lastCheckTime"):
        return
    _forget_drift(ns, name, keep_totals=True, families=(QUALITY_METRIC, QUALITY_DEGRADED))
    if not new.get("lastCheckTime"):
        return
    for entry in new.get("metrics") or []:
        if entry.get("value") is not None:
            QUALITY_METRIC.labels(ns, name, str(entry["metric"])).set(float(entry["value"]))
    QUALITY_DEGRADED.labels(ns, name).set(1.0 if new.get("verdict") == "Degraded" else 0.0)


def _forget_drift(
    ns: str, name: str, keep_totals: bool = False, families: tuple[Any, ...] = _DRIFT_FAMILIES
) -> None:
    families = families + (() if keep_totals else (RETRAINS,))
    for family in families:
        for labels in [k for k in family._metrics if tuple(k[:2]) == (ns, name)]:
            family.remove(*labels)


def forget_drift(meta: Mapping[str, Any]) -> None:
    """Drop a deleted monitor's series."""
    _forget_drift(str(meta.get("namespace", "")), str(meta.get("name", "")))


def track_queue(
    depth: Callable[[], int], delayed: Callable[[], int], in_flight: Callable[[], int]
) -> None:
    """Read the work queue's gauges from it at every scrape."""
    QUEUE_DEPTH.set_function(depth)
    QUEUE_DELAYED.set_function(delayed)
    PASSES_IN_FLIGHT.set_function(in_flight)


def serve(port: int) -> None:
    """Expose /metrics on ``port`` (0: do not)."""
    if port:
        start_http_server(port, registry=REGISTRY)


class _RequestCollector:
    """Exposes a client's request counts (a plain Counter) as a Prometheus counter."""

    def __init__(self, name: str, help_text: str, source: Callable[[], Mapping[str, int]]) -> None:
        self._name, self._help, self._source = name, help_text, source

    def collect(self) -> Iterator[Metric]:
        family = CounterMetricFamily(self._name, self._help, labels=["verb"])
        for verb, count in sorted(self._source().items()):
            family.add_metric([verb], count)
        yield family

    def describe(self) -> list[Metric]:
        return []


def expose_requests(name: str, help_text: str, source: Callable[[], Mapping[str, int]]) -> None:
    """Publish ``source()`` (verb -> count) as the counter ``name``."""
    REGISTRY.register(_RequestCollector(name, help_text, source))
