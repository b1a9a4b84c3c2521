"""Captured predictions joined with their ground truth by inference id, over a window.

The layout is the one ``docs/data-capture.md`` documents, under a destination ``D``:

- ``D/capture/model=<m>/version=<v>/date=YYYY-MM-DD/hour=HH/*.parquet``: one row per
  scored input row (``inference_id``, ``time``, features, ``prediction``, ``scores``);
- ``D/feedback/date=YYYY-MM-DD/hour=HH/*.parquet`` or ``*.csv``: ``inference_id``,
  ``label``, ``time`` (when the label was received).

Partitions outside the window (and of other models or versions) are never read; only the
columns asked for are. The join is one Arrow hash lookup: no pandas on this path. Runs in
pods and Jobs (it reads the store), never in the operator.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds
from pyarrow import csv, fs

from modelworks.clients.objectstore import S3_SCHEME, parse_s3

CAPTURE_DIR = "capture"
FEEDBACK_DIR = "feedback"
ID = "inference_id"
TIME = "time"
LABEL = "label"
TIMESTAMP = pa.timestamp("ms", tz="UTC")
UNMATCHED_METADATA = b"modelworks.unmatched_labels"

CAPTURE_PARTITIONING = ds.partitioning(
    pa.schema(
        [
            ("model", pa.string()),
            ("version", pa.string()),
            ("date", pa.string()),
            ("hour", pa.string()),
        ]
    ),
    flavor="hive",
)
FEEDBACK_PARTITIONING = ds.partitioning(
    pa.schema([("date", pa.string()), ("hour", pa.string())]), flavor="hive"
)


@dataclass(frozen=True)
class LabelledWindow:
    """The labelled rows of a window, and what could not be joined."""

    table: pa.Table
    captured: int
    labels: int
    unmatched: int


def root_path(destination: str) -> str:
    """The filesystem path of ``s3://bucket/prefix`` (or a local directory, as is)."""
    if destination.startswith(S3_SCHEME):
        return parse_s3(destination).path
    return destination.rstrip("/")


def hour_key(moment: datetime) -> tuple[str, str]:
    """The ``date`` and ``hour`` partition values of a moment (UTC)."""
    at = moment.astimezone(UTC)
    return at.strftime("%Y-%m-%d"), at.strftime("%H")


def partitions_from(moment: datetime) -> ds.Expression:
    """Hour partitions at or after the one holding ``moment``."""
    date, hour = hour_key(moment)
    field_date, field_hour = ds.field("date"), ds.field("hour")
    return (field_date > date) | ((field_date == date) & (field_hour >= hour))


def partitions_until(moment: datetime) -> ds.Expression:
    """Hour partitions at or before the one holding ``moment``."""
    date, hour = hour_key(moment)
    field_date, field_hour = ds.field("date"), ds.field("hour")
    return (field_date < date) | ((field_date == date) & (field_hour <= hour))


def capture_filter(
    start: datetime, end: datetime, model: str | None, version: str | None
) -> ds.Expression:
    """Rows with ``time`` in [start, end): pruned to their hours, model and version."""
    expr = partitions_from(start) & partitions_until(end)
    if model is not None:
        expr = expr & (ds.field("model") == model)
    if version is not None:
        expr = expr & (ds.field("version") == version)
    times = ds.field(TIME)
    return expr & (times >= pa.scalar(start, TIMESTAMP)) & (times < pa.scalar(end, TIMESTAMP))


def read_capture(
    filesystem: fs.FileSystem, root: str, expr: ds.Expression, columns: Sequence[str] | None
) -> pa.Table:
    """The captured rows matching ``expr``, with ``columns`` (all when None) + id and time."""
    path = f"{root}/{CAPTURE_DIR}"
    if filesystem.get_file_info(path).type == fs.FileType.NotFound:
        return pa.table({ID: pa.array([], pa.string()), TIME: pa.array([], TIMESTAMP)})
    dataset = ds.dataset(
        path,
        filesystem=filesystem,
        format="parquet",
        partitioning=CAPTURE_PARTITIONING,
        exclude_invalid_files=False,
    )
    wanted = list(dataset.schema.names) if columns is None else list(columns)
    for name in (ID, TIME):
        if name not in wanted:
            wanted.append(name)
    return dataset.to_table(columns=wanted, filter=expr)


def feedback_files(filesystem: fs.FileSystem, root: str, suffix: str) -> list[str]:
    """Every feedback file with this suffix (``.parquet`` or ``.csv``)."""
    selector = fs.FileSelector(f"{root}/{FEEDBACK_DIR}", recursive=True, allow_not_found=True)
    infos = filesystem.get_file_info(selector)
    return sorted(i.path for i in infos if i.type == fs.FileType.File and i.path.endswith(suffix))


def read_feedback_format(
    filesystem: fs.FileSystem, root: str, since: datetime, suffix: str, fmt: ds.FileFormat
) -> pa.Table | None:
    """The labels in files of one format received in the hours from ``since`` on."""
    files = feedback_files(filesystem, root, suffix)
    if not files:
        return None
    dataset = ds.dataset(
        files,
        filesystem=filesystem,
        format=fmt,
        partitioning=FEEDBACK_PARTITIONING,
        partition_base_dir=f"{root}/{FEEDBACK_DIR}",
    )
    table = dataset.to_table(columns=[ID, LABEL, TIME], filter=partitions_from(since))
    return normalise_labels(table)


def normalise_labels(table: pa.Table) -> pa.Table:
    """``inference_id`` string, ``label`` float64 (string when not numeric), ``time`` ms UTC."""
    label = table[LABEL]
    if pa.types.is_integer(label.type) or pa.types.is_floating(label.type):
        label = label.cast(pa.float64())
    elif pa.types.is_boolean(label.type):
        label = label.cast(pa.int8()).cast(pa.float64())
    elif not pa.types.is_string(label.type):
        label = label.cast(pa.string())
    times = table[TIME]
    if pa.types.is_timestamp(times.type) and times.type.tz is None:
        times = pc.assume_timezone(times, "UTC")
    return pa.table({ID: table[ID].cast(pa.string()), LABEL: label, TIME: times.cast(TIMESTAMP)})


def read_feedback(filesystem: fs.FileSystem, root: str, since: datetime) -> pa.Table:
    """All labels received from ``since``'s hour on, Parquet and CSV files together."""
    csv_format = ds.CsvFileFormat(
        convert_options=csv.ConvertOptions(column_types={ID: pa.string()})
    )
    parts = [
        t
        for t in (
            read_feedback_format(filesystem, root, since, ".parquet", ds.ParquetFileFormat()),
            read_feedback_format(filesystem, root, since, ".csv", csv_format),
        )
        if t is not None and t.num_rows
    ]
    if not parts:
        return pa.table(
            {
                ID: pa.array([], pa.string()),
                LABEL: pa.array([], pa.float64()),
                TIME: pa.array([], TIMESTAMP),
            }
        )
    if len({p.schema.field(LABEL).type for p in parts}) > 1:
        parts = [p.set_column(1, LABEL, p[LABEL].cast(pa.string())) for p in parts]
    return pa.concat_tables(parts)


def latest_labels(feedback: pa.Table) -> pa.Table:
    """One label per inference id: the one received last (ties: the later file)."""
    if feedback.num_rows == 0:
        return feedback.select([ID, LABEL])
    ordered = feedback.append_column("_row", pa.array(range(feedback.num_rows), pa.int64()))
    ordered = ordered.sort_by([(TIME, "ascending"), ("_row", "ascending")])
    grouped = ordered.group_by(ID, use_threads=False).aggregate([(LABEL, "last")])
    return pa.table({ID: grouped[ID], LABEL: grouped[f"{LABEL}_last"]})


def attach_labels(rows: pa.Table, ids: pa.ChunkedArray, labels: pa.Table) -> pa.Table:
    """The inner join of ``rows`` with ``labels`` (ids unique) by id, as one hash lookup:
    Arrow's join refuses list columns such as ``scores``; ``index_in`` + ``take`` does not."""
    where = pc.index_in(ids, value_set=labels[ID])
    found = pc.is_valid(where)
    return rows.filter(found).append_column(LABEL, labels[LABEL].take(where.filter(found)))


def read_labelled(
    filesystem: fs.FileSystem,
    destination: str,
    start: datetime,
    end: datetime,
    *,
    label_delay_seconds: float = 0,
    model: str | None = None,
    version: str | None = None,
    columns: Sequence[str] | None = None,
) -> LabelledWindow:
    """Captured rows with ``time`` in [start, end - label delay) inner-joined with their
    latest label; ``unmatched`` counts label ids that match no row captured in [start, end)."""
    root = root_path(destination)
    captured = read_capture(filesystem, root, capture_filter(start, end, model, version), columns)
    labels = latest_labels(read_feedback(filesystem, root, start))
    unmatched = pc.sum(pc.invert(pc.is_in(labels[ID], value_set=captured[ID]))).as_py() or 0
    cutoff = end - timedelta(seconds=label_delay_seconds)
    ripe = captured.filter(pc.less(captured[TIME], pa.scalar(cutoff, TIMESTAMP)))
    if LABEL in ripe.column_names:
        ripe = ripe.drop_columns([LABEL])
    keep = [n for n in ripe.column_names if columns is None or n in columns]
    table = attach_labels(ripe.select(keep), ripe[ID], labels).replace_schema_metadata(
        {UNMATCHED_METADATA: str(unmatched).encode()}
    )
    return LabelledWindow(table, captured.num_rows, labels.num_rows, int(unmatched))


def labelled_window(
    filesystem: fs.FileSystem,
    destination: str,
    start: datetime,
    end: datetime,
    *,
    label_delay_seconds: float = 0,
    model: str | None = None,
    version: str | None = None,
    columns: Sequence[str] | None = None,
) -> pa.Table:
    """The labelled rows of :func:`read_labelled` as a table (the unmatched label count is
    in its schema metadata, key ``modelworks.unmatched_labels``)."""
    return read_labelled(
        filesystem,
        destination,
        start,
        end,
        label_delay_seconds=label_delay_seconds,
        model=model,
        version=version,
        columns=columns,
    ).table
