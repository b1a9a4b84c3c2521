"""Datasets and JSON documents by URI, for batch drift checks.

:func:`profile_json` is what the operator itself downloads (a DriftMonitor's reference
profile): a tenant chooses it, so its size is checked before the download and the
download, read and parse share one deadline. The rest runs in batch check Jobs, where
the work that grows with a tenant's data belongs.

A URI is a local path (``/data/current.parquet``, ``file:///...``) or anything MLflow can
download (``runs:/<run id>/<path>``, ``models:/...``, ``mlflow-artifacts:/...``, ``s3://``
with the right credentials). CSV (optionally gzipped) and Parquet are read with pandas.
"""

from __future__ import annotations

import json
import posixpath
import tempfile
import threading
from pathlib import Path
from typing import Any

import numpy as np

from modelworks.clients.http import Limits
from modelworks.clients.mlflow import Registry, TrackingUnavailable

LOCAL_PREFIX = "file://"
PROFILE_LIMITS = Limits(deadline=60.0, max_bytes=64 * 1024 * 1024)
MISSING = ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE")


class TooLarge(Exception):
    """An artifact is bigger than the operator downloads; the message names both sizes."""


def profile_json(
    registry: Registry, run_id: str, path: str, limits: Limits = PROFILE_LIMITS
) -> Any | None:
    """Run ``run_id``'s JSON artifact ``path``, or None when the run has no such file.

    :class:`TooLarge` when MLflow lists it over ``limits.max_bytes`` (or it turns out
    bigger once downloaded); :class:`TrackingUnavailable` when listing, downloading and
    parsing it take longer than ``limits.deadline`` in all.
    """
    size = _listed_size(registry, run_id, path)
    if size is None:
        return None
    if size > limits.max_bytes:
        raise TooLarge(f"{path} is {size} bytes, over the limit of {limits.max_bytes}")
    outcome: list[Any] = []
    worker = threading.Thread(
        target=_download_json, args=(registry, run_id, path, limits.max_bytes, outcome)
    )
    worker.daemon = True
    worker.start()
    worker.join(limits.deadline)
    if not outcome:
        raise TrackingUnavailable(f"downloading {path} took over {limits.deadline:g}s")
    if isinstance(outcome[0], BaseException):
        raise outcome[0]
    return outcome[0]


def _listed_size(registry: Registry, run_id: str, path: str) -> int | None:
    """The size MLflow lists for ``path`` (0 when it lists none), or None if it has no file."""
    from mlflow.exceptions import MlflowException

    parent = posixpath.dirname(path) or None
    try:
        files = registry._call(lambda: registry.client.list_artifacts(run_id, parent))
    except MlflowException as exc:
        if str(getattr(exc, "error_code", "")) in MISSING:
            return None
        raise
    for f in files:
        if f.path == path and not f.is_dir:
            return int(f.file_size or 0)
    return None


def _download_json(
    registry: Registry, run_id: str, path: str, max_bytes: int, outcome: list[Any]
) -> None:
    """Download, check the size on disk, parse; the result (or the exception) to ``outcome``."""
    try:
        with tempfile.TemporaryDirectory(prefix="modelworks-") as tmp:
            local = Path(
                registry._call(lambda: registry.client.download_artifacts(run_id, path, tmp))
            )
            size = local.stat().st_size
            if size > max_bytes:
                raise TooLarge(f"{path} is {size} bytes, over the limit of {max_bytes}")
            try:
                outcome.append(json.loads(local.read_bytes()))
            except ValueError:
                outcome.append(None)
    except BaseException as exc:
        outcome.append(exc)


def local_path(uri: str, dest: str) -> Path:
    """A local file for ``uri``, downloaded into ``dest`` when it is not local already."""
    if uri.startswith(LOCAL_PREFIX):
        return Path(uri.removeprefix(LOCAL_PREFIX))
    if "://" not in uri and not uri.startswith(("runs:/", "models:/", "mlflow-artifacts:/")):
        return Path(uri)
    import mlflow.artifacts

    return Path(mlflow.artifacts.download_artifacts(artifact_uri=uri, dst_path=dest))


def load_columns(uri: str) -> dict[str, np.ndarray]:
    """The columns of a CSV or Parquet dataset, as numpy arrays."""
    import pandas as pd  # type: ignore[import-untyped]

    with tempfile.TemporaryDirectory(prefix="modelworks-data-") as tmp:
        path = local_path(uri, tmp)
        name = path.name.lower()
        if name.endswith((".parquet", ".pq")):
            frame = pd.read_parquet(path)
        elif name.endswith((".csv", ".csv.gz", ".tsv")):
            frame = pd.read_csv(path, sep="\t" if name.endswith(".tsv") else ",")
        else:
            raise ValueError(f"{uri}: not a .csv, .csv.gz, .tsv or .parquet file")
    return {str(c): frame[c].to_numpy() for c in frame.columns}


def load_json(uri: str) -> Any:
    with tempfile.TemporaryDirectory(prefix="modelworks-data-") as tmp:
        return json.loads(local_path(uri, tmp).read_text())
