"""A real scikit-learn trainer for the churn sample.

Nothing in it is Modelworks-specific but the optional reference profile: the operator
creates the MLflow run and sets MLFLOW_TRACKING_URI / MLFLOW_RUN_ID, so the plain
``mlflow.start_run()`` below logs into the right run. Hyperparameters arrive as JSON in
MODELWORKS_HYPERPARAMETERS, the data's location in MODELWORKS_DATASET_URI.

Data: ``builtin://churn`` generates a synthetic churn table (the version ``seed-N``
picks the seed, ``shift-N`` moves two features for drift demos); a CSV or Parquet path,
``file://`` URI or ``s3://`` URI with a ``churned`` column is read as is (S3 through
pyarrow, with the standard AWS_ENDPOINT_URL_S3, AWS_REGION, AWS_ACCESS_KEY_ID and
AWS_SECRET_ACCESS_KEY variables: a DriftMonitor's snapshot of captured rows is such a
``train.parquet``). The data is logged on the run as an MLflow dataset input, with the
dataset version (a snapshot's content digest) as its digest.

With WORLD_SIZE > 1 every rank checks the distributed environment for real: ranks
connect to rank 0 at MASTER_ADDR:MASTER_PORT (the operator's headless Service) and rank
0 logs how many peers it saw; only rank 0 trains and logs the model.
"""

from __future__ import annotations

import json
import os
import socket
import sys
import time
from typing import Any
from urllib.parse import urlsplit

import mlflow
import numpy as np
import pandas as pd
from mlflow.models import infer_signature
from sklearn.compose import ColumnTransformer
from sklearn.ensemble import GradientBoostingClassifier
from sklearn.metrics import accuracy_score, roc_auc_score
from sklearn.model_selection import train_test_split
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler

NUMERIC = ["tenure_months", "monthly_charges", "support_calls", "age"]
CATEGORICAL = ["contract", "payment_method"]
TARGET = "churned"


def synthetic_churn(rows: int, seed: int, shift: float = 0.0) -> pd.DataFrame:
    """A churn table whose label depends on the features the way churn does."""
    rng = np.random.default_rng(seed)
    contract = rng.choice(["month-to-month", "one-year", "two-year"], rows, p=[0.55, 0.25, 0.20])
    payment = rng.choice(["card", "bank", "check", "wallet"], rows, p=[0.35, 0.3, 0.15, 0.2])
    tenure = rng.gamma(2.0, 12.0, rows) + shift * 12
    charges = rng.normal(65 + shift * 20, 20, rows).clip(15, 150)
    calls = rng.poisson(1.5 + shift, rows)
    age = rng.normal(45, 14, rows).clip(18, 90)
    logit = 2.0 * (
        -1.0
        - 0.05 * tenure
        + 0.025 * (charges - 65)
        + 0.45 * calls
        + np.where(contract == "month-to-month", 1.2, np.where(contract == "one-year", -0.3, -1.2))
        + np.where(payment == "check", 0.4, 0.0)
    )
    churned = rng.random(rows) < 1 / (1 + np.exp(-logit))
    return pd.DataFrame(
        {
            "tenure_months": tenure.round(1),
            "monthly_charges": charges.round(2),
            "support_calls": calls,
            "age": age.round(0),
            "contract": contract,
            "payment_method": payment,
            TARGET: churned.astype(int),
        }
    )


def changed_world(rows: int, seed: int) -> pd.DataFrame:
    """The world after the change: a different customer base (longer tenure, higher
    charges, as ``hack/traffic.py --shift`` sends) that churns for different reasons
    (price now drives churn, long contracts no longer protect, support calls matter less).
    A model of the old world ranks these customers badly; one trained on them does not."""
    df = synthetic_churn(rows, seed)
    rng = np.random.default_rng(seed + 1_000_003)
    df["tenure_months"] = (df["tenure_months"] * 3 + 40).round(1)
    df["monthly_charges"] = (df["monthly_charges"] + 60).clip(upper=200).round(2)
    contract = df["contract"].to_numpy()
    logit = 2.0 * (
        -0.5
        + 0.06 * (df["monthly_charges"].to_numpy() - 125)
        + 0.02 * (df["tenure_months"].to_numpy() - 75)
        - 0.2 * df["support_calls"].to_numpy()
        + np.where(contract == "two-year", 1.0, np.where(contract == "one-year", 0.3, -1.0))
    )
    df[TARGET] = (rng.random(rows) < 1 / (1 + np.exp(-logit))).astype(int)
    return df


def load_dataset(uri: str, version: str) -> pd.DataFrame:
    if uri.startswith("builtin://churn"):
        seed, shift = 7, 0.0
        for part in version.split(","):
            if part.startswith("seed-"):
                seed = int(part.removeprefix("seed-"))
            elif part.startswith("shift-"):
                shift = float(part.removeprefix("shift-"))
        return synthetic_churn(int(os.environ.get("CHURN_ROWS", "5000")), seed, shift)
    if uri.startswith("s3://"):
        return read_s3(uri)
    path = uri.removeprefix("file://")
    if path.endswith(".parquet"):
        return pd.read_parquet(path)
    return pd.read_csv(path)


def s3_filesystem() -> Any:
    """pyarrow's S3 filesystem from the standard AWS_* variables (any S3-compatible store)."""
    from pyarrow import fs

    options: dict[str, object] = {"region": os.environ.get("AWS_REGION") or "us-east-1"}
    endpoint = os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
    if endpoint:
        parts = urlsplit(endpoint)
        options.update(
            endpoint_override=parts.netloc,
            scheme=parts.scheme or "https",
            force_virtual_addressing=False,
        )
    key, secret = os.environ.get("AWS_ACCESS_KEY_ID"), os.environ.get("AWS_SECRET_ACCESS_KEY")
    if key and secret:
        options.update(access_key=key, secret_key=secret)
    return fs.S3FileSystem(**options)


def read_s3(uri: str) -> pd.DataFrame:
    """An s3://bucket/key Parquet (a file or a directory of files) or CSV object."""
    import pyarrow.parquet as pq

    filesystem = s3_filesystem()
    path = uri.removeprefix("s3://")
    if path.endswith(".csv"):
        with filesystem.open_input_stream(path) as f:
            return pd.read_csv(f)
    return pq.read_table(path, filesystem=filesystem).to_pandas()


def log_dataset(data: pd.DataFrame, uri: str, version: str) -> None:
    """The training data as the run's MLflow dataset input (source, digest, target)."""
    name = version or uri.rstrip("/").rsplit("/", 1)[-1]
    digest = version if version and len(version) <= 36 else None
    try:
        dataset = mlflow.data.from_pandas(
            data, source=uri, targets=TARGET, name=name, digest=digest
        )
    except Exception:  # a source MLflow cannot resolve (builtin://): logged without it
        dataset = mlflow.data.from_pandas(data, targets=TARGET, name=name, digest=digest)
    mlflow.log_input(dataset, context="training")


def rendezvous(rank: int, world: int, addr: str, port: int, timeout: float = 120.0) -> int:
    """Rank 0 waits for every other rank to connect; returns the number of ranks seen."""
    deadline = time.monotonic() + timeout
    if rank == 0:
        seen = {0}
        with socket.create_server(("", port)) as server:
            server.settimeout(5)
            while len(seen) < world and time.monotonic() < deadline:
                try:
                    conn, _ = server.accept()
                except TimeoutError:
                    continue
                with conn:
                    seen.add(int(conn.recv(16).decode() or -1))
                    conn.sendall(b"ok")
        return len(seen)
    while True:
        try:
            with socket.create_connection((addr, port), timeout=5) as conn:
                conn.sendall(str(rank).encode())
                if conn.recv(2) == b"ok":
                    return world
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(1)


def log_profile(pipe: Pipeline, x_train: pd.DataFrame) -> None:
    """The training features' profile and, as its outputs, what the model answers on
    them (predicted class shares and positive-class score bins): the reference of
    the DriftMonitor's feature and prediction drift. Raises ImportError without
    modelworks."""
    from dataclasses import replace

    from modelworks.drift.profile import PROFILE_FILE, build_profile, profile_outputs
    from modelworks.serving.answers import rows

    types = {**{c: "numeric" for c in NUMERIC}, **{c: "categorical" for c in CATEGORICAL}}
    profile = build_profile({c: x_train[c].to_numpy() for c in NUMERIC + CATEGORICAL}, types=types)  # type: ignore[arg-type]
    answers = rows(pipe.predict_proba(x_train))
    outputs = profile_outputs(answers.prediction, answers.scores)
    mlflow.log_dict(replace(profile, outputs=outputs).to_json(), PROFILE_FILE)


def main() -> int:
    params = json.loads(os.environ.get("MODELWORKS_HYPERPARAMETERS") or "{}")
    rank, world = int(os.environ.get("RANK", "0")), int(os.environ.get("WORLD_SIZE", "1"))
    if world > 1:
        seen = rendezvous(rank, world, os.environ["MASTER_ADDR"], int(os.environ["MASTER_PORT"]))
        print(f"rank {rank}/{world}: rendezvous complete ({seen} ranks)", flush=True)
        if rank != 0:
            return 0
    artifact_path = os.environ.get("MODELWORKS_MODEL_ARTIFACT_PATH", "model")
    uri = os.environ.get("MODELWORKS_DATASET_URI", "builtin://churn")
    version = os.environ.get("MODELWORKS_DATASET_VERSION", "seed-7")
    data = load_dataset(uri, version)
    x, y = data[NUMERIC + CATEGORICAL], data[TARGET]
    x_train, x_val, y_train, y_val = train_test_split(
        x, y, test_size=0.25, random_state=0, stratify=y
    )
    n_estimators = int(params.get("n_estimators", 100))
    clf = GradientBoostingClassifier(
        n_estimators=n_estimators,
        max_depth=int(params.get("max_depth", 3)),
        learning_rate=float(params.get("learning_rate", 0.1)),
        random_state=0,
    )
    pipe = Pipeline(
        [
            (
                "prep",
                ColumnTransformer(
                    [
                        ("num", StandardScaler(), NUMERIC),
                        ("cat", OneHotEncoder(handle_unknown="ignore"), CATEGORICAL),
                    ]
                ),
            ),
            ("clf", clf),
        ]
    )
    with mlflow.start_run():  # resumes MLFLOW_RUN_ID, set by the operator
        log_dataset(data, uri, version)
        if world > 1:
            mlflow.log_metric("world_size_seen", seen)
        pipe.fit(x_train, y_train)
        prep = pipe.named_steps["prep"].transform(x_val)
        every = max(1, n_estimators // 10)
        for step, proba in enumerate(clf.staged_predict_proba(prep), start=1):
            if step % every == 0 or step == n_estimators:
                mlflow.log_metric("val_auc_by_stage", roc_auc_score(y_val, proba[:, 1]), step=step)
                mlflow.log_metric("progress", step / n_estimators, step=step)
        proba = pipe.predict_proba(x_val)[:, 1]
        auc, acc = roc_auc_score(y_val, proba), accuracy_score(y_val, proba > 0.5)
        mlflow.log_metrics(
            {
                "val_auc": float(auc),
                "val_accuracy": float(acc),
                "train_rows": len(x_train),
                "val_rows": len(x_val),
            }
        )
        example = x_val.head(5)
        mlflow.sklearn.log_model(  # answers [P(stay), P(churn)] per row
            pipe,
            name=artifact_path,
            signature=infer_signature(example, pipe.predict_proba(example)),
            input_example=example,
            pyfunc_predict_fn="predict_proba",
            pip_requirements=["scikit-learn", "pandas", "numpy"],
            skops_trusted_types=["sklearn.tree._tree.Tree"],  # our own GradientBoosting trees
        )
        try:  # the reference profile the DriftMonitor compares live traffic with
            log_profile(pipe, x_train)
        except ImportError:
            print("modelworks is not installed: no reference profile logged", file=sys.stderr)
    print(f"val_auc={auc:.4f} val_accuracy={acc:.4f}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
