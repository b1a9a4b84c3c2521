"""Ground truth on the model server: ``POST /feedback`` with inference ids and their labels.

Labels feed retraining, so the endpoint takes ``Authorization: Bearer <token>``, compared
in constant time with ``MODELWORKS_FEEDBACK_TOKEN`` (a ``secretKeyRef`` in the pod). An
accepted batch is one Parquet file under ``<destination>/feedback/date=YYYY-MM-DD/hour=HH/``
with the columns ``inference_id`` (string), ``label`` (float64 or string) and ``time``
(timestamp[ms, UTC], when the server received it), written before the 200: an accepted
label is stored. Unknown ids are not checked here: the quality Job counts them when it
joins labels with the captured answers. docs/data-capture.md describes the protocol.

Parsing and checks are pure functions (:func:`parse`, :func:`authorize`); the
:class:`Endpoint` adds the bounded body read, the write off the event loop and the counters.
"""

from __future__ import annotations

import asyncio
import csv
import hmac
import io
import json
import logging
import math
import re
import socket
import uuid
from collections.abc import Awaitable, Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from modelworks.clients.objectstore import S3Location, parse_s3, s3_filesystem
from modelworks.names import FEEDBACK_DESTINATION_ENV, FEEDBACK_TOKEN_ENV
from modelworks.serving import metrics

log = logging.getLogger("modelworks.serve.feedback")

PATH = "/feedback"
MAX_BODY_BYTES = 2 * 1024 * 1024  # a request's body; more is 413
MAX_LABELS = 10_000  # labels in one request; more is 413
MAX_ID_CHARS = 256  # an inference id (a client's X-Request-Id, plus "/<row>")
MAX_LABEL_CHARS = 256  # a string label
MAX_IN_FLIGHT = 4  # requests past authentication at once, per worker process; more is 503
WRITE_TIMEOUT = 60.0  # the store's answer to one file, retries included; longer is 503
RETRY_AFTER_SECONDS = 10
JSON_TYPE = "application/json"
CSV_TYPE = "text/csv"
COLUMNS = ("inference_id", "label")
REALM = b'Bearer realm="modelworks-feedback"'

Label = float | str


class Refused(Exception):
    """A request answered with an error: HTTP status, the counter's reason, the message."""

    def __init__(
        self, status: int, reason: str, message: str, headers: Sequence[tuple[bytes, bytes]] = ()
    ) -> None:
        super().__init__(message)
        self.status = status
        self.reason = reason
        self.message = message
        self.headers = tuple(headers)


def malformed(message: str) -> Refused:
    return Refused(400, "malformed", message)


def too_large(message: str) -> Refused:
    return Refused(413, "too_large", message)


@dataclass(frozen=True)
class Labels:
    """One request's labels: ids in order, and labels all numbers or all strings."""

    ids: tuple[str, ...]
    labels: tuple[Label, ...]
    numeric: bool


# --- authentication ----------------------------------------------------------------------


def authorize(header: bytes | None, token: bytes) -> None:
    """Refuse a request without ``Bearer <token>`` (401) or with another token (403)."""
    scheme, _, given = (header or b"").strip().partition(b" ")
    if scheme.lower() != b"bearer" or not given.strip():
        raise Refused(
            401,
            "unauthenticated",
            "send Authorization: Bearer <token> (the token in the ModelDeployment's "
            "spec.dataCapture.feedback.token Secret)",
            [(b"www-authenticate", REALM)],
        )
    if not hmac.compare_digest(given.strip(), token):
        raise Refused(403, "forbidden", "the bearer token is not the feedback token")


# --- parsing -----------------------------------------------------------------------------


def media_type(header: bytes | None) -> str:
    """``application/json`` (also when unset) or ``text/csv``; 415 for anything else."""
    kind = (header or b"").split(b";", 1)[0].strip().decode("latin-1").lower()
    if kind in ("", JSON_TYPE):
        return JSON_TYPE
    if kind == CSV_TYPE:
        return CSV_TYPE
    raise Refused(
        415, "unsupported_media_type", f"Content-Type {kind!r}: send {JSON_TYPE} or {CSV_TYPE}"
    )


def parse(body: bytes, kind: str) -> Labels:
    """The labels of a request body; :class:`Refused` names the item and field at fault."""
    try:
        text = body.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise malformed(f"body: not UTF-8 ({exc.reason} at byte {exc.start})") from None
    items = _csv_items(text) if kind == CSV_TYPE else _json_items(text)
    if not items:
        raise malformed("labels: empty: send at least one label")
    if kind == CSV_TYPE and _all_numbers(items):
        items = [(where, inference_id, float(label)) for where, inference_id, label in items]
    return _checked(items)


Item = tuple[str, Any, Any]  # where (for messages), inference_id, label


def _json_items(text: str) -> list[Item]:
    try:
        doc = json.loads(text)
    except ValueError as exc:
        raise malformed(f"body: not JSON ({exc})") from None
    if not isinstance(doc, dict) or "labels" not in doc:
        raise malformed(
            'body: expected an object {"labels": [{"inference_id": ..., "label": ...}]}'
        )
    extra = sorted(set(doc) - {"labels"})
    if extra:
        raise malformed(f"body: unknown field {extra[0]!r}")
    items = doc["labels"]
    if not isinstance(items, list):
        raise malformed("labels: expected a list")
    if len(items) > MAX_LABELS:
        raise too_large(f"labels: {len(items)} labels, at most {MAX_LABELS} per request")
    out: list[Item] = []
    for i, item in enumerate(items):
        where = f"labels[{i}]"
        if not isinstance(item, dict):
            raise malformed(f"{where}: expected an object with inference_id and label")
        unknown = sorted(set(item) - set(COLUMNS))
        if unknown:
            raise malformed(f"{where}: unknown field {unknown[0]!r}")
        for name in COLUMNS:
            if name not in item:
                raise malformed(f"{where}.{name}: missing")
        out.append((where, item["inference_id"], item["label"]))
    return out


def _csv_items(text: str) -> list[Item]:
    rows = csv.reader(io.StringIO(text, newline=""))
    try:
        header = [h.strip() for h in next(rows)]
    except StopIteration:
        raise malformed("line 1: expected the header inference_id,label") from None
    except csv.Error as exc:
        raise malformed(f"line 1: {exc}") from None
    if sorted(header) != sorted(COLUMNS):
        raise malformed(f"line 1: expected the header inference_id,label, got {','.join(header)}")
    id_at = header.index("inference_id")
    out: list[Item] = []
    try:
        for row in rows:
            where = f"line {rows.line_num}"
            if not row:
                continue
            if len(row) != len(COLUMNS):
                raise malformed(f"{where}: expected 2 fields, got {len(row)}")
            if len(out) >= MAX_LABELS:
                raise too_large(f"body: more than {MAX_LABELS} labels per request")
            out.append((where, row[id_at], row[1 - id_at]))
    except csv.Error as exc:
        raise malformed(f"line {rows.line_num}: {exc}") from None
    return out


def _all_numbers(items: list[Item]) -> bool:
    """Whether every CSV label reads as a finite number (then the labels are float64)."""
    try:
        return all(math.isfinite(float(label)) for _, _, label in items)
    except ValueError:
        return False


def _checked(items: list[Item]) -> Labels:
    """Each id and label checked; the first label says whether all are numbers or strings."""
    first, _, first_label = items[0]
    numeric = _is_number(first_label)
    seen: dict[str, str] = {}
    labels: list[Label] = []
    for where, inference_id, label in items:
        _check_id(where, inference_id)
        if inference_id in seen:
            raise malformed(f"{where}.inference_id: {inference_id!r} repeats {seen[inference_id]}")
        seen[inference_id] = where
        labels.append(_check_label(where, label, numeric, first))
    return Labels(tuple(seen), tuple(labels), numeric)


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _check_id(where: str, value: Any) -> None:
    if not isinstance(value, str):
        raise malformed(f"{where}.inference_id: expected a string, got {_json_type(value)}")
    if not value:
        raise malformed(f"{where}.inference_id: empty")
    if len(value) > MAX_ID_CHARS:
        raise malformed(f"{where}.inference_id: longer than {MAX_ID_CHARS} characters")
    if not value.isprintable():
        raise malformed(f"{where}.inference_id: contains control characters")


def _check_label(where: str, value: Any, numeric: bool, first: str) -> Label:
    if _is_number(value):
        if not numeric:
            raise malformed(
                f"{where}.label: a number where {first}.label is a string: "
                "one request's labels are all numbers or all strings"
            )
        number = float(value)
        if not math.isfinite(number):
            raise malformed(f"{where}.label: not a finite number")
        return number
    if not isinstance(value, str):
        raise malformed(f"{where}.label: expected a number or a string, got {_json_type(value)}")
    if numeric:
        raise malformed(
            f"{where}.label: a string where {first}.label is a number: "
            "one request's labels are all numbers or all strings"
        )
    if not value or len(value) > MAX_LABEL_CHARS:
        raise malformed(f"{where}.label: a string label has 1 to {MAX_LABEL_CHARS} characters")
    return value


def _json_type(value: Any) -> str:
    names = {bool: "a boolean", type(None): "null", dict: "an object", list: "a list"}
    return names.get(type(value), type(value).__name__)


# --- the file ----------------------------------------------------------------------------


def label_table(labels: Labels, received: datetime) -> Any:
    """The Parquet table of one request: inference_id, label, time (all the same time)."""
    import pyarrow as pa

    stamp = int(received.timestamp() * 1000)
    return pa.table(
        {
            "inference_id": pa.array(labels.ids, pa.string()),
            "label": pa.array(labels.labels, pa.float64() if labels.numeric else pa.string()),
            "time": pa.array([stamp] * len(labels.ids), pa.timestamp("ms", tz="UTC")),
        }
    )


def label_path(location: S3Location, received: datetime, name: str) -> str:
    """``bucket/prefix/feedback/date=YYYY-MM-DD/hour=HH/<name>.parquet`` (pyarrow's form)."""
    at = received.astimezone(UTC)
    return f"{location.path}/feedback/date={at:%Y-%m-%d}/hour={at:%H}/{name}.parquet"


def file_name(host: str, unique: str) -> str:
    """``<pod>-<uuid>``: the pod's name (its hostname) made safe for a key."""
    return f"{re.sub(r'[^A-Za-z0-9._-]', '_', host)[:63] or 'server'}-{unique}"


@dataclass
class LabelStore:
    """Writes each accepted request as one Parquet file under the destination."""

    location: S3Location
    env: Mapping[str, str]
    host: str = field(default_factory=socket.gethostname)
    _fs: Any = None

    def write(self, labels: Labels) -> str:
        import pyarrow.parquet as pq

        if self._fs is None:
            self._fs = s3_filesystem(self.env)
        received = datetime.now(UTC)
        path = label_path(self.location, received, file_name(self.host, uuid.uuid4().hex))
        pq.write_table(label_table(labels, received), path, filesystem=self._fs)
        return path


# --- the endpoint ------------------------------------------------------------------------

Receive = Callable[[], Awaitable[dict[str, Any]]]


@dataclass(frozen=True)
class Reply:
    status: int
    body: bytes
    content_type: str = "application/json"
    headers: tuple[tuple[bytes, bytes], ...] = ()


def _header(scope: Mapping[str, Any], name: bytes) -> bytes | None:
    return next((v for k, v in scope.get("headers") or () if k.lower() == name), None)


async def read_body(scope: Mapping[str, Any], receive: Receive, limit: int) -> bytes:
    """The request body, refused (413) as soon as it is known to pass ``limit`` bytes."""
    declared = _header(scope, b"content-length")
    if declared is not None and declared.strip().isdigit() and int(declared) > limit:
        raise too_large(f"body: {int(declared)} bytes, at most {limit}")
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise too_large(f"body: more than {limit} bytes")
        chunks.append(chunk)
        if not message.get("more_body"):
            return b"".join(chunks)


def _error(refused: Refused) -> Reply:
    body = json.dumps({"error": refused.reason, "message": refused.message}).encode()
    return Reply(refused.status, body, headers=refused.headers)


class Endpoint:
    """``POST /feedback`` of one worker process: authenticated, bounded, written before 200."""

    def __init__(self, token: str, store: LabelStore) -> None:
        self._token = token.encode()
        self._store = store
        self._in_flight = 0
        self._executor = ThreadPoolExecutor(MAX_IN_FLIGHT, thread_name_prefix="feedback")

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> Endpoint | None:
        """The endpoint when the pod has a token and a destination, else None (404)."""
        token = env.get(FEEDBACK_TOKEN_ENV, "").strip()
        destination = env.get(FEEDBACK_DESTINATION_ENV, "")
        if not token or not destination:
            if token or destination:
                log.error("/feedback is off: %s and %s are both needed", *_ENVS)
            return None
        try:
            location = parse_s3(destination)
        except ValueError as exc:
            log.error("/feedback is off: %s: %s", FEEDBACK_DESTINATION_ENV, exc)
            return None
        log.info("/feedback on: labels go to s3://%s/feedback/", location.path)
        return cls(token, LabelStore(location, env))

    async def handle(self, scope: Mapping[str, Any], receive: Receive) -> Reply:
        try:
            reply = await self._accept(scope, receive)
        except Refused as refused:
            metrics.FEEDBACK_REFUSED.labels(refused.reason).inc()
            return _error(refused)
        return reply

    async def _accept(self, scope: Mapping[str, Any], receive: Receive) -> Reply:
        if scope.get("method") != "POST":
            raise Refused(405, "method", "POST labels to /feedback", [(b"allow", b"POST")])
        authorize(_header(scope, b"authorization"), self._token)
        kind = media_type(_header(scope, b"content-type"))
        if self._in_flight >= MAX_IN_FLIGHT:
            raise unavailable("busy", f"{MAX_IN_FLIGHT} feedback requests are being written")
        self._in_flight += 1
        try:
            labels = parse(await read_body(scope, receive, MAX_BODY_BYTES), kind)
            path = await self._write(labels)
        finally:
            self._in_flight -= 1
        metrics.FEEDBACK_LABELS.inc(len(labels.ids))
        body = json.dumps({"accepted": len(labels.ids), "file": f"s3://{path}"}).encode()
        return Reply(200, body)

    async def _write(self, labels: Labels) -> str:
        loop = asyncio.get_running_loop()
        try:
            return await asyncio.wait_for(
                loop.run_in_executor(self._executor, self._store.write, labels), WRITE_TIMEOUT
            )
        except Exception as exc:  # pyarrow raises OSError and others for a failing store
            log.warning(
                "could not write %d labels to s3://%s: %s: %s",
                len(labels.ids),
                self._store.location.path,
                type(exc).__name__,
                exc,
            )
            refused = unavailable("store_unavailable", "the label store did not take the labels")
            raise refused from None


_ENVS = (FEEDBACK_TOKEN_ENV, FEEDBACK_DESTINATION_ENV)


def unavailable(reason: str, message: str) -> Refused:
    retry = str(RETRY_AFTER_SECONDS).encode()
    return Refused(
        503,
        reason,
        f"{message}; nothing was stored: retry in {RETRY_AFTER_SECONDS} s",
        [(b"retry-after", retry)],
    )


def not_configured() -> Reply:
    metrics.FEEDBACK_REFUSED.labels("not_configured").inc()
    return _error(
        Refused(
            404,
            "not_configured",
            "/feedback is off on this server: set spec.dataCapture.feedback on the ModelDeployment",
        )
    )
