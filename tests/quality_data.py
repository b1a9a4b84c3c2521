"""Capture and feedback files in the documented layout, for the model-quality tests and bench."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
from pyarrow import fs

TIMESTAMP = pa.timestamp("ms", tz="UTC")


def at(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


def hour_dir(moment: datetime) -> str:
    return f"date={moment:%Y-%m-%d}/hour={moment:%H}"


def write_capture(
    filesystem: fs.FileSystem,
    root: str,
    rows: Sequence[dict[str, Any]],
    *,
    model: str = "churn",
    version: str = "1",
) -> None:
    """One Parquet file per hour of the rows' ``time`` (rows carry id, time, x, scores)."""
    by_hour: dict[str, list[dict[str, Any]]] = {}
    for row in rows:
        by_hour.setdefault(hour_dir(row["time"]), []).append(row)
    for hour, chunk in by_hour.items():
        table = pa.table(
            {
                "inference_id": pa.array([r["inference_id"] for r in chunk], pa.string()),
                "request_id": pa.array([r["inference_id"] for r in chunk], pa.string()),
                "time": pa.array([r["time"] for r in chunk], TIMESTAMP),
                "model": pa.array([model] * len(chunk), pa.string()),
                "version": pa.array([version] * len(chunk), pa.string()),
                "x": pa.array([float(r.get("x", 0.0)) for r in chunk], pa.float64()),
                "prediction": pa.array([float(r["prediction"]) for r in chunk], pa.float64()),
                "scores": pa.array([r.get("scores") for r in chunk], pa.list_(pa.float64())),
            }
        )
        path = f"{root}/capture/model={model}/version={version}/{hour}/p-{uuid.uuid4().hex[:8]}.parquet"
        filesystem.create_dir(path.rsplit("/", 1)[0], recursive=True)
        with filesystem.open_output_stream(path) as out:
            pq.write_table(table, out)


def write_feedback(
    filesystem: fs.FileSystem,
    root: str,
    labels: Sequence[tuple[str, Any, datetime]],
    *,
    csv: bool = False,
) -> None:
    """One file (Parquet or CSV) per hour of the labels' receive time."""
    by_hour: dict[str, list[tuple[str, Any, datetime]]] = {}
    for label in labels:
        by_hour.setdefault(hour_dir(label[2]), []).append(label)
    for hour, chunk in by_hour.items():
        table = pa.table(
            {
                "inference_id": pa.array([c[0] for c in chunk], pa.string()),
                "label": pa.array([c[1] for c in chunk]),
                "time": pa.array([c[2] for c in chunk], TIMESTAMP),
            }
        )
        suffix = "csv" if csv else "parquet"
        path = f"{root}/feedback/{hour}/f-{uuid.uuid4().hex[:8]}.{suffix}"
        filesystem.create_dir(path.rsplit("/", 1)[0], recursive=True)
        with filesystem.open_output_stream(path) as out:
            if csv:
                pacsv.write_csv(table, out)
            else:
                pq.write_table(table, out)
