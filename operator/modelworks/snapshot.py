"""The snapshot a retraining on fresh data trains on, materialised by a DriftMonitor's Job.

``modelworks snapshot --config JSON`` reads the target's captured rows of a window joined
with their labels (:func:`modelworks.quality.join.labelled_window`), keeps the feature
columns and the label (renamed to the trainer's label column), splits a holdout by a hash
of each row's inference id, and writes ``train.parquet``, ``holdout.parquet`` and
``manifest.json`` under ``<destination>/datasets/<namespace>/<monitor>/<digest>/``. The
digest is over the two Parquet files' bytes; a snapshot whose digest exists already is
reused, never written again. The result (URIs, digest, rows) is printed as JSON and
written to the container's termination message; an error there as plain text, exit 1.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import sys
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from pyarrow import fs

from modelworks.clients.objectstore import parse_s3, s3_filesystem
from modelworks.names import format_time, parse_time

TERMINATION_LOG = Path("/dev/termination-log")
ID_COLUMN = "inference_id"
LABEL_COLUMN = "label"
# Capture and join columns that are not features (docs/data-capture.md).
NOT_FEATURES = frozenset(
    {
        ID_COLUMN,
        "request_id",
        "time",
        "model",
        "version",
        "prediction",
        "scores",
        "date",
        "hour",
        LABEL_COLUMN,
        "label_time",
    }
)
TRAIN_FILE, HOLDOUT_FILE, MANIFEST_FILE = "train.parquet", "holdout.parquet", "manifest.json"
DATASETS_PREFIX = "datasets"


class TooFewRows(Exception):
    """The window holds fewer labelled rows than ``minRows``."""


@dataclass(frozen=True)
class Config:
    """What the snapshot Job is told (``--config``, written by the operator)."""

    destination: str  # the target's dataCapture.destination, s3://bucket/prefix
    namespace: str
    monitor: str
    start: str  # the window, RFC 3339
    end: str
    target: str  # the trainer's label column
    min_rows: int = 100
    holdout_fraction: float = 0.2
    model: str | None = None
    columns: tuple[str, ...] = ()  # the feature columns; empty: every capture feature

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Config:
        return cls(
            destination=str(data["destination"]),
            namespace=str(data["namespace"]),
            monitor=str(data["monitor"]),
            start=str(data["start"]),
            end=str(data["end"]),
            target=str(data["target"]),
            min_rows=int(data.get("minRows", 100)),
            holdout_fraction=float(data.get("holdoutFraction", 0.2)),
            model=data.get("model"),
            columns=tuple(data.get("columns") or ()),
        )


@dataclass(frozen=True)
class Snapshot:
    """The files of a snapshot, in memory, and their content digest."""

    train: bytes
    holdout: bytes
    digest: str
    rows: int
    holdout_rows: int
    ids_digest: str


def in_holdout(inference_id: str, fraction: float) -> bool:
    """Whether a row belongs to the holdout: the first 8 bytes of sha256(id) as a fraction
    of 2**64, below ``fraction``. The same id is on the same side in every snapshot."""
    if fraction <= 0.0:
        return False
    h = int.from_bytes(hashlib.sha256(inference_id.encode()).digest()[:8], "big")
    return h / 2**64 < fraction


def content_digest(train: bytes, holdout: bytes) -> str:
    """``sha256-`` + the first 16 hex digits of sha256 over train then holdout bytes."""
    return "sha256-" + hashlib.sha256(train + holdout).hexdigest()[:16]


def ids_digest(ids: Iterable[str]) -> str:
    """sha256 over the sorted inference ids, one a line: which captured rows it holds."""
    h = hashlib.sha256()
    for i in sorted(ids):
        h.update(i.encode() + b"\n")
    return "sha256-" + h.hexdigest()


def feature_columns(schema: pa.Schema, wanted: Sequence[str]) -> list[str]:
    """The features kept: ``wanted`` (each must be there), else every non-capture column."""
    if wanted:
        missing = [c for c in wanted if c not in schema.names]
        if missing:
            raise KeyError(f"feature column(s) not in the captured rows: {', '.join(missing)}")
        return list(wanted)
    return [n for n in schema.names if n not in NOT_FEATURES]


def parquet_bytes(table: pa.Table) -> bytes:
    """The table as Parquet: the same table gives the same bytes (same pyarrow)."""
    buf = io.BytesIO()
    pq.write_table(table, buf, compression="zstd")
    return buf.getvalue()


def build(labelled: pa.Table, config: Config) -> Snapshot:
    """Train and holdout from the labelled rows: unlabelled rows dropped, rows sorted by
    inference id (one content, one digest), features + the label as ``config.target``."""
    rows = labelled.filter(pc.is_valid(labelled[LABEL_COLUMN]))
    if rows.num_rows < config.min_rows:
        raise TooFewRows(
            f"{rows.num_rows} labelled rows in the window {config.start} .. {config.end} "
            f"(spec.retrain.dataset.minRows {config.min_rows})"
        )
    rows = rows.sort_by(ID_COLUMN)
    ids = [str(i) for i in rows[ID_COLUMN].to_pylist()]
    mask = pa.array([in_holdout(i, config.holdout_fraction) for i in ids], pa.bool_())
    features = feature_columns(rows.schema, config.columns)
    kept = rows.select([*features, LABEL_COLUMN]).rename_columns([*features, config.target])
    kept = kept.replace_schema_metadata(None)  # the content only: no reader's notes
    train, holdout = kept.filter(pc.invert(mask)), kept.filter(mask)
    train_bytes, holdout_bytes = parquet_bytes(train), parquet_bytes(holdout)
    return Snapshot(
        train=train_bytes,
        holdout=holdout_bytes,
        digest=content_digest(train_bytes, holdout_bytes),
        rows=train.num_rows,
        holdout_rows=holdout.num_rows,
        ids_digest=ids_digest(ids),
    )


def base_uri(config: Config, digest: str) -> str:
    """``<destination>/datasets/<namespace>/<monitor>/<digest>``."""
    return "/".join(
        (config.destination.rstrip("/"), DATASETS_PREFIX, config.namespace, config.monitor, digest)
    )


def manifest(config: Config, snap: Snapshot, created: str) -> dict[str, Any]:
    return {
        "digest": snap.digest,
        "window": {"start": config.start, "end": config.end},
        "rows": snap.rows,
        "holdoutRows": snap.holdout_rows,
        "holdoutFraction": config.holdout_fraction,
        "idsDigest": snap.ids_digest,
        "target": config.target,
        "model": config.model,
        "monitor": f"{config.namespace}/{config.monitor}",
        "files": {TRAIN_FILE: snap.rows, HOLDOUT_FILE: snap.holdout_rows},
        "created": created,
    }


def result(config: Config, snap: Snapshot, reused: bool) -> dict[str, Any]:
    """What the Job reports to the operator."""
    base = base_uri(config, snap.digest)
    return {
        "uri": f"{base}/{TRAIN_FILE}",
        "holdoutUri": f"{base}/{HOLDOUT_FILE}",
        "digest": snap.digest,
        "rows": snap.rows,
        "holdoutRows": snap.holdout_rows,
        "windowStart": config.start,
        "windowEnd": config.end,
        "reused": reused,
    }


def write(filesystem: fs.FileSystem, config: Config, snap: Snapshot, now: str) -> bool:
    """Write the snapshot's files, the manifest last; False when its manifest is there
    already (the snapshot exists: nothing is written over). Returns whether it wrote."""
    base = parse_s3(base_uri(config, snap.digest)).path
    if filesystem.get_file_info(f"{base}/{MANIFEST_FILE}").type != fs.FileType.NotFound:
        return False
    text = json.dumps(manifest(config, snap, now), indent=2, sort_keys=True).encode()
    for name, data in ((TRAIN_FILE, snap.train), (HOLDOUT_FILE, snap.holdout)):
        with filesystem.open_output_stream(f"{base}/{name}") as out:
            out.write(data)
    with filesystem.open_output_stream(f"{base}/{MANIFEST_FILE}") as out:
        out.write(text)
    return True


def materialise(filesystem: fs.FileSystem, config: Config, now: str) -> dict[str, Any]:
    """Read the labelled window, build the snapshot, write it (or reuse it): the result."""
    from modelworks.quality.join import labelled_window

    labelled = labelled_window(
        filesystem,
        config.destination,
        parse_time(config.start),
        parse_time(config.end),
        model=config.model,
    )
    snap = build(labelled, config)
    wrote = write(filesystem, config, snap, now)
    return result(config, snap, reused=not wrote)


def _report(text: str, path: Path) -> None:
    with contextlib.suppress(OSError):  # not in a pod: stdout is the report
        path.write_text(text)


def main(config_json: str, termination_log: Path = TERMINATION_LOG) -> int:
    try:
        config = Config.from_json(json.loads(config_json))
        now = format_time(datetime.now(UTC))
        out = materialise(s3_filesystem(), config, now)
    except Exception as exc:  # every failure is reported, whatever its type
        message = f"{type(exc).__name__}: {exc}"
        print(message, file=sys.stderr)
        _report(message[:3500], termination_log)
        return 1
    print(json.dumps(out, indent=2))
    _report(json.dumps(out, separators=(",", ":")), termination_log)
    return 0
