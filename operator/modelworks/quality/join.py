"""Captured predictions joined with their ground truth by inference id, over a window.

The layout is the one ``docs/data-capture.md`` documents, under a destination ``D``:

- ``D/capture/model=<m>/version=<v>/date=YYYY-MM-DD/hour=HH/*.parquet``: one row per
  scored input row (``inference_id``, ``time``, features, ``prediction``, ``scores``);
- ``D/feedback/date=YYYY-MM-DD/hour=HH/*.parquet`` or ``*.csv``: ``inference_id``,
  ``label``, ``time`` (when the label was received).

Partitions outside the window (and of other models or versions) are never read; only the
columns asked for are. The join is one Arrow hash pass over the captured and the labelled
ids together (one dictionary; on large windows two disjoint halves hashed on two threads),
then integer work in numpy: no pandas on this path, and Arrow's join (which refuses list
columns such as ``scores``) is not needed. Runs in pods
and Jobs (it reads the store), never in the operator.
"""

from __future__ import annotations

from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import numpy.typing as npt
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
SCORES = "scores"
SCORE = "score"
TIMESTAMP = pa.timestamp("ms", tz="UTC")
UNMATCHED_METADATA = b"modelworks.unmatched_labels"
SPLIT_FROM = 200_000
Ints = npt.NDArray[np.signedinteger[Any]]

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
    filesystem: fs.FileSystem,
    root: str,
    expr: ds.Expression,
    columns: Sequence[str] | None,
    score_of: int | None = None,
) -> pa.Table:
    """The captured rows matching ``expr``, with ``columns`` (all when None) + id and time.
    With ``score_of`` = k, the ``scores`` lists are read as one float column ``score``, their
    k-th element (the lists are never materialised)."""
    path = f"{root}/{CAPTURE_DIR}"
    if filesystem.get_file_info(path).type == fs.FileType.NotFound:
        return pa.table({ID: pa.array([], pa.string()), TIME: pa.array([], TIMESTAMP)})
    dataset = ds.dataset(
        path,
        filesystem=filesystem,
        format=parquet_format(filesystem),
        partitioning=CAPTURE_PARTITIONING,
        exclude_invalid_files=False,
    )
    wanted = list(dataset.schema.names) if columns is None else list(columns)
    for name in (ID, TIME):
        if name not in wanted:
            wanted.append(name)
    projection = {n: ds.field(n) for n in wanted if n != SCORES or score_of is None}
    if score_of is not None and SCORES in dataset.schema.names:
        projection[SCORE] = pc.list_element(ds.field(SCORES), score_of)
    return scan(dataset, projection, expr, threads=True)


def parquet_format(filesystem: fs.FileSystem) -> ds.ParquetFileFormat:
    """Parquet reading: column chunks fetched in coalesced reads ahead of decoding over the
    network (S3: fewer, larger requests), read as decoded from a local disk (less memory)."""
    remote = isinstance(filesystem, fs.S3FileSystem)
    options = ds.ParquetFragmentScanOptions(pre_buffer=remote)
    return ds.ParquetFileFormat(default_fragment_scan_options=options)


def scan(
    dataset: ds.Dataset,
    columns: Sequence[str] | dict[str, ds.Expression],
    expr: ds.Expression,
    *,
    threads: bool = False,
) -> pa.Table:
    """The rows and columns of ``dataset`` asked for, one file and one batch at a time
    ahead: a check Job is bounded work, its memory the data kept, not the read-ahead. With
    ``threads``, the columns of a row group are decoded on Arrow's CPU pool."""
    scanner = ds.Scanner.from_dataset(
        dataset,
        columns=columns,
        filter=expr,
        batch_readahead=1,
        fragment_readahead=1,
        use_threads=threads,
    )
    return scanner.to_table()


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
    table = scan(dataset, [ID, LABEL, TIME], partitions_from(since))
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
            read_feedback_format(filesystem, root, since, ".parquet", parquet_format(filesystem)),
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


def encode_ids(
    captured: pa.ChunkedArray, labelled: pa.ChunkedArray, *, split_from: int = SPLIT_FROM
) -> tuple[Ints, Ints, int]:
    """Both id columns as codes of one dictionary (one hash pass over the strings, no copy
    of them): ``(captured codes, label codes, distinct ids)``. From ``split_from`` ids on,
    the ids are split in two by their last byte and each half is hashed on its own thread
    (equal ids share a last byte, so the halves' dictionaries are disjoint)."""
    chunks = [c for c in captured.chunks + labelled.chunks if len(c)]
    if not chunks:
        return np.empty(0, np.int32), np.empty(0, np.int32), 0
    ids = pa.chunked_array(chunks, pa.string())
    codes, distinct = dictionary_codes(ids) if len(ids) < split_from else split_codes(ids)
    return codes[: len(captured)], codes[len(captured) :], distinct


def dictionary_codes(ids: pa.ChunkedArray) -> tuple[Ints, int]:
    """The ids' codes in their dictionary (first seen, first code), and its size."""
    encoded = pc.dictionary_encode(ids)
    if not encoded.num_chunks:
        return np.empty(0, np.int32), 0
    codes = np.concatenate([c.indices.to_numpy() for c in encoded.chunks])
    return codes, len(encoded.chunks[0].dictionary)


def last_byte_odd(chunk: pa.StringArray) -> npt.NDArray[np.bool_]:
    """Per id, whether its last byte is odd (False for the empty id): read off the buffers."""
    _, offsets_buffer, data_buffer = chunk.buffers()
    offsets = np.frombuffer(offsets_buffer, np.int32)[chunk.offset : chunk.offset + len(chunk) + 1]
    data = np.frombuffer(data_buffer, np.uint8) if data_buffer is not None else np.empty(0)
    ends = offsets[1:]
    if not data.size:
        return np.zeros(len(chunk), np.bool_)
    last = data[np.maximum(ends - 1, 0)]
    odd: npt.NDArray[np.bool_] = (ends > offsets[:-1]) & (last % 2 == 1)
    return odd


def split_codes(ids: pa.ChunkedArray) -> tuple[Ints, int]:
    """:func:`dictionary_codes` of the two halves at once, the odd half's codes after the
    even half's."""
    odd = np.concatenate([last_byte_odd(c) for c in ids.chunks])
    mask = pa.array(odd)
    with ThreadPoolExecutor(max_workers=1) as pool:
        odd_done = pool.submit(dictionary_codes, ids.filter(mask))
        even_codes, even_distinct = dictionary_codes(ids.filter(pc.invert(mask)))
        odd_codes, odd_distinct = odd_done.result()
    codes = np.empty(len(ids), np.int64)
    codes[~odd] = even_codes
    codes[odd] = odd_codes.astype(np.int64) + even_distinct
    return codes, even_distinct + odd_distinct


def latest_rows(codes: Ints, times: pa.ChunkedArray, distinct: int) -> Ints:
    """Per id code, the feedback row of its latest label (received last; ties: the later
    file), -1 for ids with no label: the highest rank of each code, in one pass."""
    at = times.cast(pa.int64()).to_numpy() if len(times) else np.empty(0, np.int64)
    latest = np.full(distinct, -1, np.int64)
    if bool(np.all(at[1:] >= at[:-1])):
        np.maximum.at(latest, codes, np.arange(at.size))
        return latest
    order = np.argsort(at, kind="stable")
    rank = np.empty(at.size, np.int64)
    rank[order] = np.arange(at.size)
    np.maximum.at(latest, codes, rank)
    return np.where(latest >= 0, order[latest], -1)


def join_labels(
    captured: pa.Table, feedback: pa.Table, cutoff: datetime
) -> tuple[pa.Table, int, int]:
    """Rows captured before ``cutoff`` with their latest label (inner join by id), how
    many ids have a label, and how many of those match no captured row."""
    captured_codes, label_codes, distinct = encode_ids(captured[ID].cast(pa.string()), feedback[ID])
    latest = latest_rows(label_codes, feedback[TIME], distinct)
    seen = np.zeros(distinct, np.bool_)
    seen[captured_codes] = True
    unmatched = int(np.count_nonzero((latest >= 0) & ~seen))
    rows = latest[captured_codes]
    early = pc.less(captured[TIME], pa.scalar(cutoff, TIMESTAMP)).to_numpy(zero_copy_only=False)
    keep = (rows >= 0) & early
    table = captured.filter(pa.array(keep))
    labelled = int(np.count_nonzero(latest >= 0))
    joined = table.append_column(LABEL, feedback[LABEL].take(pa.array(rows[keep])))
    return joined, labelled, unmatched


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
    score_of: int | None = None,
) -> LabelledWindow:
    """Captured rows with ``time`` in [start, end - label delay) inner-joined with their
    latest label; ``unmatched`` counts label ids that match no row captured in [start, end)."""
    root = root_path(destination)
    expr = capture_filter(start, end, model, version)
    with ThreadPoolExecutor(max_workers=1) as pool:
        labels_read = pool.submit(read_feedback, filesystem, root, start)
        captured = read_capture(filesystem, root, expr, columns, score_of)
        feedback = labels_read.result()
    if LABEL in captured.column_names:
        captured = captured.drop_columns([LABEL])
    cutoff = end - timedelta(seconds=label_delay_seconds)
    joined, labels, unmatched = join_labels(captured, feedback, cutoff)
    keep = [
        n for n in joined.column_names if columns is None or n in columns or n in (SCORE, LABEL)
    ]
    table = joined.select(keep).replace_schema_metadata(
        {UNMATCHED_METADATA: str(unmatched).encode()}
    )
    return LabelledWindow(table, captured.num_rows, labels, unmatched)


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
