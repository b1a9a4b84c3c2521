"""Data capture: a sample of the requests and the model's answers, as Parquet on S3.

The request path only decides whether a request is sampled and keeps a reference to its
input batch and answer in a bounded buffer (no copy, no conversion, no I/O); when the
buffer is full new rows are dropped and counted. A background thread turns the buffer
into Arrow tables and writes one Parquet file per hour partition every flush interval,
or sooner when half the buffer is used. A failed write is retried at the next flush
(up to :data:`ATTEMPTS` times), then its rows are dropped and counted. :meth:`Capture.close`
flushes what is left when the server stops (uvicorn's lifespan shutdown, after the
in-flight requests have drained).

Layout (docs/data-capture.md)::

    <destination>/capture/model=<m>/version=<v>/date=YYYY-MM-DD/hour=HH/<pod>-<pid>-<ms>-<seq>.parquet

one row per scored input row: inference_id, request_id, time, model, version, the input
features (redacted ones null), prediction, scores.
"""

from __future__ import annotations

import contextvars
import itertools
import logging
import os
import random
import socket
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote

from prometheus_client import Counter, Gauge

from modelworks import names
from modelworks.api.common import parse_duration
from modelworks.api.modeldeployment import DataCapture
from modelworks.clients.objectstore import S3Location, parse_s3, s3_filesystem
from modelworks.serving.answers import rows
from modelworks.serving.metrics import LABELS

log = logging.getLogger("modelworks.capture")
ATTEMPTS = 3
"""Flushes a batch is tried in before its rows are dropped as ``write_failed``."""
STOP_SECONDS = float(names.CAPTURE_STOP_SECONDS)
"""Longest wait for the last flush when the server stops."""
FIXED_COLUMNS = ("inference_id", "request_id", "time", "model", "version", "prediction", "scores")
INPUT_PREFIX = "input_"
"""An input feature named like a fixed column is written as ``input_<name>``."""
MAX_CLIENT_ID = 128
MIN_INTERVAL = 0.1
"""Seconds: a flushInterval of 0s flushes at most ten times a second, not in a busy loop."""

ROWS = Counter(names.CAPTURE_ROWS_METRIC, "Input rows sampled into the capture buffer.", LABELS)
WRITTEN = Counter(names.CAPTURE_WRITTEN_METRIC, "Captured rows written to the store.", LABELS)
DROPPED = Counter(
    names.CAPTURE_DROPPED_METRIC,
    "Captured rows never written, by reason (buffer_full, write_failed).",
    [*LABELS, "reason"],
)
LAST_FLUSH = Gauge(
    names.CAPTURE_FLUSH_METRIC,
    "Unix time of the last successful write to the store (0: none yet).",
    LABELS,
    multiprocess_mode="max",
)
LAST_ERROR = Gauge(
    names.CAPTURE_ERROR_METRIC,
    "Unix time of the last failed write, by kind (unreachable, access_denied, no_bucket, other).",
    [*LABELS, "kind"],
    multiprocess_mode="max",
)


@dataclass(frozen=True)
class Inference:
    """The id and arrival time (Unix ms) of the request being scored."""

    id: str
    time_ms: int


CURRENT: contextvars.ContextVar[Inference | None] = contextvars.ContextVar(
    "modelworks_inference", default=None
)


def inference_id(client: str | None) -> str:
    """The client's id when it is a sane one (printable ASCII, at most 128 chars), else a
    new uuid4 hex."""
    if client and len(client) <= MAX_CLIENT_ID and client.isascii() and client.isprintable():
        return client
    return uuid.uuid4().hex


def row_count(data: Any) -> int:
    """Rows in an input batch, without converting it (records, columns, arrays, frames)."""
    if isinstance(data, dict):
        first: Any = next(iter(data.values()), None)
        return len(first) if hasattr(first, "__len__") and not isinstance(first, str) else 1
    try:
        return len(data)
    except TypeError:
        return 1


@dataclass
class _Batch:
    inference: Inference
    data: Any
    result: Any
    rows: int
    attempts: int = 0

    @property
    def hour(self) -> tuple[str, str]:
        at = datetime.fromtimestamp(self.inference.time_ms / 1000, UTC)
        return at.strftime("%Y-%m-%d"), at.strftime("%H")


def error_kind(exc: BaseException) -> str:
    """What a failed write says about the store, for the operator's condition."""
    text = str(exc).upper().replace(" ", "_")
    denied = (
        "ACCESS_DENIED",
        "ACCESSDENIED",
        "INVALID_ACCESS_KEY",
        "INVALIDACCESSKEY",
        "SIGNATURE_DOES_NOT_MATCH",
        "SIGNATUREDOESNOTMATCH",
    )
    if any(k in text for k in denied):
        return "access_denied"
    if "NO_SUCH_BUCKET" in text or "NOSUCHBUCKET" in text:
        return "no_bucket"
    if any(k in text for k in ("NETWORK_CONNECTION", "CONNECT", "TIMEOUT", "RESOLVE")):
        return "unreachable"
    return "other"


class Capture:
    """The capture watcher (an :class:`~modelworks.serving.app.AnswerWatcher`) and its
    flush thread."""

    def __init__(
        self,
        config: DataCapture,
        model: str,
        version: str,
        filesystem: Callable[[], Any] = s3_filesystem,
    ) -> None:
        self.location: S3Location = parse_s3(config.destination)
        self._percent = config.sampling_percent
        self._redact = frozenset(config.redact or ())
        self._interval = max(parse_duration(config.flush_interval), MIN_INTERVAL)
        self._limit = config.buffer_rows
        self._model, self._version = model, version
        self._filesystem_factory = filesystem
        self._fs: Any = None
        self._buffer: deque[_Batch] = deque()
        self._rows = 0
        self._lock = threading.Lock()
        self._flushing = threading.Lock()
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._seq = itertools.count()
        self._file_prefix = f"{socket.gethostname()}-{os.getpid()}"
        self._captured = ROWS.labels(model, version)
        self._written = WRITTEN.labels(model, version)
        self._full = DROPPED.labels(model, version, names.CAPTURE_DROP_BUFFER_FULL)
        self._failed = DROPPED.labels(model, version, names.CAPTURE_DROP_WRITE_FAILED)
        self._last_flush = LAST_FLUSH.labels(model, version)
        self._thread = threading.Thread(target=self._run, daemon=True, name="capture-flush")

    def start(self) -> Capture:
        self._thread.start()
        return self

    def answered(self, data: Any, result: Any) -> None:
        """On the request path: sample, then keep references in the buffer (or count a drop)."""
        if self._percent < 100.0 and random.random() * 100.0 >= self._percent:
            return
        inference = CURRENT.get() or Inference(uuid.uuid4().hex, int(time.time() * 1000))
        n = row_count(data)
        with self._lock:
            kept = self._rows + n <= self._limit
            if kept:
                self._buffer.append(_Batch(inference, data, result, n))
                self._rows += n
            wake = self._rows * 2 >= self._limit
        (self._captured if kept else self._full).inc(n)
        if wake:
            self._wake.set()

    def close(self, timeout: float = STOP_SECONDS) -> None:
        """Flush what is buffered and stop the thread (waits at most ``timeout``)."""
        self._stopping.set()
        self._wake.set()
        if self._thread.is_alive():
            self._thread.join(timeout)
        else:
            self.flush()

    def _run(self) -> None:
        while not self._stopping.is_set():
            self._wake.wait(self._interval)
            self._wake.clear()
            self.flush()
        self.flush()

    def _take(self) -> list[_Batch]:
        with self._lock:
            batches = list(self._buffer)
            self._buffer.clear()
            self._rows = 0
        return batches

    def flush(self) -> None:
        """Write every buffered batch, one file per hour partition; failures are retried
        at the next flush, then dropped and counted."""
        with self._flushing:
            batches = self._take()
            groups: dict[tuple[str, str], list[_Batch]] = {}
            for batch in batches:
                groups.setdefault(batch.hour, []).append(batch)
            for hour, group in sorted(groups.items()):
                self._write(hour, group)

    def _write(self, hour: tuple[str, str], group: list[_Batch]) -> None:
        try:
            table = self._table(group)
        except Exception:  # an input or answer of a shape capture cannot turn into rows
            log.exception("captured rows could not be converted; dropped")
            self._failed.inc(sum(b.rows for b in group))
            return
        try:
            self._put(self._path(hour), table)
        except Exception as exc:
            self._retry_or_drop(group, exc)
            return
        self._written.inc(table.num_rows)
        self._last_flush.set(time.time())

    def _put(self, path: str, table: Any) -> None:
        import pyarrow.parquet as pq

        if self._fs is None:
            self._fs = self._filesystem_factory()
        with self._fs.open_output_stream(path) as out:
            pq.write_table(table, out)

    def _retry_or_drop(self, group: list[_Batch], exc: Exception) -> None:
        kind = error_kind(exc)
        LAST_ERROR.labels(self._model, self._version, kind).set(time.time())
        log.warning("capture write to s3://%s failed (%s): %s", self.location.path, kind, exc)
        again = [b for b in group if b.attempts + 1 < ATTEMPTS and not self._stopping.is_set()]
        dropped = sum(b.rows for b in group) - self._requeue(again)
        if dropped:
            self._failed.inc(dropped)

    def _requeue(self, batches: Iterable[_Batch]) -> int:
        """Put failed batches back in front while the buffer has room; rows requeued."""
        kept = 0
        with self._lock:
            for batch in reversed(list(batches)):
                if self._rows + batch.rows > self._limit:
                    continue
                batch.attempts += 1
                self._buffer.appendleft(batch)
                self._rows += batch.rows
                kept += batch.rows
        return kept

    def _path(self, hour: tuple[str, str]) -> str:
        date, hh = hour
        model, version = quote(self._model, safe=""), quote(self._version or "-", safe="")
        name = f"{self._file_prefix}-{int(time.time() * 1000)}-{next(self._seq)}.parquet"
        return (
            f"{self.location.path}/capture/model={model}/version={version}/"
            f"date={date}/hour={hh}/{name}"
        )

    def _table(self, group: list[_Batch]) -> Any:
        """One Arrow table for a group of batches. Their inputs are concatenated once and
        converted once: converting each small batch on its own costs a millisecond each."""
        import pandas as pd  # type: ignore[import-untyped]
        import pyarrow as pa

        cols = _Columns.of(group)
        n = len(cols.ids)
        inputs = (
            cols.frames[0] if len(cols.frames) == 1 else pd.concat(cols.frames, ignore_index=True)
        )
        features = pa.Table.from_pandas(inputs, preserve_index=False)
        columns: dict[str, Any] = {
            "inference_id": pa.array(cols.ids, pa.string()),
            "request_id": pa.array(cols.request_ids, pa.string()),
            "time": pa.array(cols.times, pa.timestamp("ms", tz="UTC")),
            "model": pa.array([self._model] * n, pa.string()),
            "version": pa.array([self._version] * n, pa.string()),
        }
        for name, column in zip(features.column_names, features.columns, strict=True):
            value = pa.nulls(n, column.type) if name in self._redact else column
            columns[INPUT_PREFIX + name if name in FIXED_COLUMNS else name] = value
        columns["prediction"] = pa.array(cols.predictions)
        columns["scores"] = pa.array(cols.scores, pa.list_(pa.float64()))
        return pa.table(columns)


@dataclass
class _Columns:
    """The per-row columns of a group of batches, built in plain lists."""

    frames: list[Any]
    ids: list[str]
    request_ids: list[str]
    times: list[int]
    predictions: list[float | str]
    scores: list[list[float] | None]

    @classmethod
    def of(cls, group: Iterable[_Batch]) -> _Columns:
        out = cls([], [], [], [], [], [])
        for batch in group:
            frame, answers = _frame(batch.data), rows(batch.result)
            n, rid = len(frame), batch.inference.id
            if len(answers.prediction) != n:
                raise ValueError(f"{len(answers.prediction)} answers for {n} input rows")
            out.frames.append(frame)
            out.ids += [rid] if n == 1 else [f"{rid}/{i}" for i in range(n)]
            out.request_ids += [rid] * n
            out.times += [batch.inference.time_ms] * n
            out.predictions += answers.prediction
            out.scores += answers.scores if answers.scores is not None else [None] * n
        return out


def _frame(data: Any) -> Any:
    """The input batch as a DataFrame with string column names."""
    import numpy as np
    import pandas as pd

    if isinstance(data, pd.DataFrame):
        frame = data
    elif isinstance(data, np.ndarray) and data.ndim == 2:
        frame = pd.DataFrame(data, columns=[str(i) for i in range(data.shape[1])])
    elif isinstance(data, np.ndarray):
        frame = pd.DataFrame({"input": data})
    else:
        frame = pd.DataFrame(data)
    if not all(isinstance(c, str) for c in frame.columns):
        frame = frame.rename(columns=str)
    return frame


def from_env(model: str, version: str, value: str | None) -> Capture | None:
    """The capture the server's environment asks for (``MODELWORKS_DATA_CAPTURE``, the
    spec's JSON), started; None when unset. A config that does not parse is logged and
    capture stays off: serving matters more."""
    if not value:
        return None
    try:
        config = DataCapture.model_validate_json(value)
        capture = Capture(config, model, version)
    except ValueError as exc:
        log.error(
            "data capture is off: %s is not a valid dataCapture: %s", names.CAPTURE_CONFIG_ENV, exc
        )
        return None
    log.info(
        "data capture: %.4g%% of requests to s3://%s (flush every %s, %d rows buffered at most)",
        config.sampling_percent,
        capture.location.path,
        config.flush_interval,
        config.buffer_rows,
    )
    return capture.start()
