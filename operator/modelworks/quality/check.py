"""The performance check a DriftMonitor runs as a Job: join, score, report.

``modelworks performance --config JSON`` reads the monitor's capture destination
(credentials from the pod's ``AWS_*`` environment), joins the window's captured rows with
their labels (:mod:`modelworks.quality.join`), computes the metrics
(:mod:`modelworks.quality.metrics`), prints the result as JSON and writes it, compacted to
fit, to the container's termination message. An error is written there as plain text,
with exit code 1.
"""

from __future__ import annotations

import contextlib
import json
import math
import sys
from collections.abc import Mapping
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
from pyarrow import fs

from modelworks.clients.objectstore import S3_SCHEME, s3_filesystem
from modelworks.quality import metrics as mq
from modelworks.quality.join import LABEL, SCORE, read_labelled

TERMINATION_LOG = Path("/dev/termination-log")
RESULT_LIMIT = 3500
SCORE_METRICS = frozenset({"roc_auc", "log_loss"})


def parse_time(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def finite(value: float) -> float | None:
    return value if math.isfinite(value) else None


def score_column(config: Mapping[str, Any]) -> int | None:
    """The index of the positive class in the ``scores`` lists, when a metric needs it."""
    names = set(config["metrics"])
    if config.get("task", "classification") == "regression" or not SCORE_METRICS & names:
        return None
    positive = config.get("positiveClass", 1)
    if isinstance(positive, str) or float(positive) != int(positive):
        raise ValueError(f"positiveClass {positive!r} is not a class index of the scores")
    return int(positive)


def compute(table: pa.Table, config: Mapping[str, Any]) -> dict[str, float | None]:
    """The configured metrics over the labelled rows."""
    names = list(config["metrics"])
    label = table[LABEL].to_numpy(zero_copy_only=False)
    predicted = table["prediction"].to_numpy(zero_copy_only=False)
    if config.get("task", "classification") == "regression":
        values = mq.regression(names, label.astype(np.float64), predicted.astype(np.float64))
    else:
        positive = config.get("positiveClass", 1)
        score = None
        if SCORE in table.column_names and table[SCORE].null_count < table.num_rows:
            score = table[SCORE].to_numpy(zero_copy_only=False).astype(np.float64, copy=False)
        if label.dtype.kind in "fiu":
            positive = float(positive)
        values = mq.classification(names, label, predicted, score, positive)
    return {name: finite(value) for name, value in values.items()}


def check(filesystem: fs.FileSystem, config: Mapping[str, Any]) -> dict[str, Any]:
    """Join the window and score it: the result the operator reads."""
    window = read_labelled(
        filesystem,
        str(config["destination"]),
        parse_time(str(config["start"])),
        parse_time(str(config["end"])),
        label_delay_seconds=float(config.get("labelDelaySeconds", 0)),
        model=config.get("model"),
        version=config.get("version"),
        columns=["prediction"],
        score_of=score_column(config),
    )
    rows = window.table.num_rows
    return {
        "start": config["start"],
        "end": config["end"],
        "labelledRows": rows,
        "capturedRows": window.captured,
        "unmatchedLabels": window.unmatched,
        "metrics": compute(window.table, config) if rows else {},
    }


def filesystem_for(destination: str) -> fs.FileSystem:
    """S3 (from the pod's ``AWS_*`` environment) for ``s3://``, else the local disk."""
    if destination.startswith(S3_SCHEME):
        return s3_filesystem()
    return fs.LocalFileSystem()


def _report(text: str, path: Path) -> None:
    with contextlib.suppress(OSError):
        path.write_text(text)


def lean_memory() -> None:
    """Arrow's buffers from the system allocator: what the Job frees goes back to the OS at
    once (the default pool keeps it for reuse, and the pod's peak memory with it)."""
    pa.set_memory_pool(pa.system_memory_pool())


def main(
    config_json: str,
    termination_log: Path = TERMINATION_LOG,
    filesystem: fs.FileSystem | None = None,
) -> int:
    lean_memory()
    try:
        config = json.loads(config_json)
        if filesystem is None:
            filesystem = filesystem_for(str(config["destination"]))
        result = check(filesystem, config)
    except Exception as exc:  # every failure is reported, whatever its type
        message = f"{type(exc).__name__}: {exc}"
        print(message, file=sys.stderr)
        _report(message[:RESULT_LIMIT], termination_log)
        return 1
    text = json.dumps(result, separators=(",", ":"))  # at most nine metrics: it fits
    print(text)
    _report(text, termination_log)
    return 0
