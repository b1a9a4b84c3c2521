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
