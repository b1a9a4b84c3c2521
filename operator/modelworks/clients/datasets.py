"""Datasets and JSON documents by URI, for batch drift checks.

A URI is a local path (``/data/current.parquet``, ``file:///...``) or anything MLflow can
download (``runs:/<run id>/<path>``, ``models:/...``, ``mlflow-artifacts:/...``, ``s3://``
with the right credentials). CSV (optionally gzipped) and Parquet are read with pandas.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

LOCAL_PREFIX = "file://"


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
