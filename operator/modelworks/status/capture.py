"""DataCaptureHealthy: whether a ModelDeployment's serving pods get their captured rows to
the store. Pure: the pods and their /metrics samples come in as plain data.

The pods count what they capture, write and drop (``modelworks_capture_*``, see
serving/capture.py). From those: a pod whose last failed write is newer than its last
successful one is failing (False, ``WriteFailing``, with the error kind); more rows
dropped than at the last check is False (``RowsDropped``); a pod that cannot start
because its storage Secret (or a key in it) is missing is False (``SecretUnavailable``);
no pod reporting capture metrics is Unknown. Messages name the destination, the endpoint
and the Secret of ``spec.storage``, never a credential.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

from modelworks import names
from modelworks.api.modeldeployment import ModelDeploymentSpec

SampleTuple = tuple[str, Mapping[str, str], float]
CAPTURE_POLL = 60.0
"""Seconds between looks at the pods' capture counters when nothing else requeues sooner."""
CONFIG_ERROR = "CreateContainerConfigError"
MESSAGE_LIMIT = 300


class Health(NamedTuple):
    status: str  # True, False or Unknown
    reason: str
    message: str


@dataclass(frozen=True)
class CapturePod:
    """One serving pod: its capture samples, or why there are none."""

    name: str
    samples: tuple[SampleTuple, ...] = ()
    error: str | None = None  # its /metrics did not answer (or it is not ready)
    waiting: str = ""  # a container's waiting reason
    waiting_message: str = ""


@dataclass(frozen=True)
class PodCounts:
    name: str
    dropped: float
    write_failed: float
    last_flush: float
    last_error: float
    error_kind: str


def pod_counts(pod: CapturePod) -> PodCounts | None:
    """The pod's capture counters summed over models and versions; None without any."""
    if not any(s[0].startswith(names.CAPTURE_METRIC_PREFIX) for s in pod.samples):
        return None
    dropped = failed = flush = error = 0.0
    kind = ""
    for name, labels, value in pod.samples:
        if name == names.CAPTURE_DROPPED_METRIC:
            dropped += value
            if labels.get("reason") == names.CAPTURE_DROP_WRITE_FAILED:
                failed += value
        elif name == names.CAPTURE_FLUSH_METRIC:
            flush = max(flush, value)
        elif name == names.CAPTURE_ERROR_METRIC and value > error:
            error, kind = value, labels.get("kind", "")
    return PodCounts(pod.name, dropped, failed, flush, error, kind)


def where(spec: ModelDeploymentSpec) -> str:
    """The destination, its endpoint and whose keys: what a person checks, no credential."""
    assert spec.data_capture is not None
    storage = spec.storage
    endpoint = storage.endpoint if storage and storage.endpoint else "the default AWS endpoint"
    if storage is not None and storage.credentials is not None:
        keys = f"the keys of Secret {storage.credentials.secret_name} (spec.storage.credentials)"
    else:
        keys = "the pod's own identity (no spec.storage.credentials)"
    return f"{spec.data_capture.destination} at {endpoint} with {keys}"


def _stuck(pods: Iterable[CapturePod], spec: ModelDeploymentSpec) -> Health | None:
    for pod in pods:
        if pod.waiting == CONFIG_ERROR:
            said = pod.waiting_message[:MESSAGE_LIMIT]
            return Health(
                "False",
                "SecretUnavailable",
                f"pod {pod.name} cannot start ({said}); capture writes to {where(spec)}",
            )
    return None


def health(
    spec: ModelDeploymentSpec, pods: Sequence[CapturePod], dropped_before: int
) -> tuple[Health, int]:
    """The condition, and the rows dropped in all now (kept in status for the next check)."""
    stuck = _stuck(pods, spec)
    counts = [c for c in map(pod_counts, pods) if c is not None]
    dropped = int(sum(c.dropped for c in counts))
    if stuck is not None:
        return stuck, dropped if counts else dropped_before
    if not counts:
        silent = sum(p.error is not None for p in pods)
        return Health(
            "Unknown",
            "NoCaptureMetrics",
            f"no serving pod reports capture counters yet ({len(pods)} pod(s), "
            f"{silent} without metrics)",
        ), dropped_before
    failing = [c for c in counts if c.last_error > c.last_flush]
    if failing:
        first = failing[0]
        lost = int(sum(c.write_failed for c in counts))
        return Health(
            "False",
            "WriteFailing",
            f"pod {first.name} cannot write to {where(spec)} ({first.error_kind}); "
            f"{lost} row(s) dropped after retries",
        ), dropped
    if dropped > dropped_before:
        return Health(
            "False",
            "RowsDropped",
            f"{dropped - dropped_before} captured row(s) dropped since the last check "
            "(buffer full or writes failed): raise bufferRows or lower samplingPercent",
        ), dropped
    kept = _retention(spec)
    if not any(c.last_flush for c in counts):
        return Health("True", "Buffering", f"no row written yet to {where(spec)}{kept}"), dropped
    return Health("True", "Writing", f"captured rows are written to {where(spec)}{kept}"), dropped


def _retention(spec: ModelDeploymentSpec) -> str:
    retention = spec.data_capture.retention if spec.data_capture else None
    if retention is None:
        return ""
    return f"; retention {retention} is the bucket's lifecycle rule (docs/data-capture.md)"


def capture_pods(
    pods: Iterable[Mapping[str, Any]],
    scraped: Mapping[str, tuple[tuple[SampleTuple, ...], str | None]],
) -> tuple[CapturePod, ...]:
    """The pods as :class:`CapturePod` (``scraped``: name -> (samples, error))."""
    out = []
    for pod in pods:
        name = pod["metadata"]["name"]
        reason, message = _waiting(pod)
        samples, error = scraped.get(name, ((), "not scraped"))
        out.append(CapturePod(name, samples, error, reason, message))
    return tuple(out)


def _waiting(pod: Mapping[str, Any]) -> tuple[str, str]:
    for status in (pod.get("status") or {}).get("containerStatuses") or ():
        waiting = (status.get("state") or {}).get("waiting") or {}
        if waiting.get("reason"):
            return str(waiting["reason"]), str(waiting.get("message", ""))
    return "", ""
