"""The performance check as its Job runs it (``python -m modelworks performance``, keys in
the environment) on the real S3 store; its metrics equal what scikit-learn computes from
the stored Parquet, and the model-quality decision judges them."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from pyarrow import fs
from sklearn import metrics as skm

from modelworks.api.performance import Performance
from modelworks.clients.objectstore import parse_s3
from modelworks.names import S3_ACCESS_KEY_ENV, S3_ENDPOINT_ENV, S3_SECRET_KEY_ENV
from modelworks.status.quality import QualityFacts, decide_quality
from tests.quality_data import at, write_capture, write_feedback
from tests.support import ROOT, Cluster, ObjectStore, object_store

pytestmark = pytest.mark.integration
METRICS = ["roc_auc", "accuracy", "f1", "precision", "recall", "log_loss"]


@pytest.fixture
def destination(cluster: Cluster) -> Iterator[tuple[ObjectStore, str]]:
    store = object_store(cluster)
    uri = f"s3://{store.bucket}/t-perf-{uuid.uuid4().hex[:10]}"
    yield store, uri
    store.filesystem().delete_dir(parse_s3(uri).path)


def run_check(store: ObjectStore, config: dict[str, object], log: Path) -> dict[str, object]:
    env = {
        **os.environ,
        S3_ENDPOINT_ENV: store.endpoint,
        S3_ACCESS_KEY_ENV: store.access_key_id,
        S3_SECRET_KEY_ENV: store.secret_access_key,
        "PYTHONPATH": str(ROOT / "operator"),
    }
    code = (
        "import sys; from pathlib import Path; from modelworks.quality import check; "
        f"sys.exit(check.main(sys.argv[1], termination_log=Path({str(log)!r})))"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code, json.dumps(config)], env=env, capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stderr
    return json.loads(log.read_text())  # type: ignore[no-any-return]


def test_metrics_equal_sklearn_on_the_stored_parquet(
    destination: tuple[ObjectStore, str], tmp_path: Path
) -> None:
    store, uri = destination
    s3, root = store.filesystem(), parse_s3(uri).path
    rng = np.random.default_rng(14)
    p = rng.random(600)
    rows = [
        {
            "inference_id": f"i{i}",
            "time": at(f"2026-11-30T{10 + i // 200:02d}:{i % 60:02d}:00"),
            "prediction": float(p[i] > 0.5),
            "scores": [1 - p[i], p[i]],
        }
        for i in range(600)
    ]
    write_capture(s3, root, rows)
    y = (rng.random(600) < p).astype(float)
    write_feedback(s3, root, [(f"i{i}", 1 - y[i], at("2026-11-30T12:10:00")) for i in range(600)])
    write_feedback(
        s3, root, [(f"i{i}", y[i], at("2026-11-30T12:20:00")) for i in range(600)], csv=True
    )
    write_feedback(s3, root, [("stranger", 1.0, at("2026-11-30T12:20:00"))])
    config = {
        "destination": uri,
        "model": "churn",
        "version": "1",
        "start": "2026-11-30T10:00:00Z",
        "end": "2026-11-30T12:30:00Z",
        "labelDelaySeconds": 1800,
        "metrics": METRICS,
        "positiveClass": 1,
    }

    result = run_check(store, config, tmp_path / "termination")

    captured = pd.read_parquet(f"{root}/capture", filesystem=s3, partitioning=None)
    captured = captured[captured["time"] < pd.Timestamp("2026-11-30T12:00:00Z")]
    files = [
        i.path
        for i in s3.get_file_info(fs.FileSelector(f"{root}/feedback", recursive=True))
        if i.is_file
    ]
    labels = pd.concat(
        [
            pd.read_parquet(f, filesystem=s3)
            if f.endswith(".parquet")
            else pd.read_csv(
                s3.open_input_stream(f), dtype={"inference_id": str}, parse_dates=["time"]
            )
            for f in files
        ]
    )
    labels = labels.sort_values("time", kind="stable").drop_duplicates("inference_id", keep="last")
    df = captured.merge(labels[["inference_id", "label"]], on="inference_id")
    score = np.array(df["scores"].tolist())[:, 1]
    truth, pred = df["label"].to_numpy(float), df["prediction"].to_numpy()
    expected = {
        "roc_auc": skm.roc_auc_score(truth, score),
        "accuracy": skm.accuracy_score(truth, pred),
        "f1": skm.f1_score(truth, pred),
        "precision": skm.precision_score(truth, pred),
        "recall": skm.recall_score(truth, pred),
        "log_loss": skm.log_loss(truth, score),
    }
    assert result["labelledRows"] == len(df) == 400
    after_window = sum(r["time"] >= at("2026-11-30T12:30:00") for r in rows)
    assert result["unmatchedLabels"] == 1 + after_window  # "stranger" + ids captured later
    for name, value in expected.items():
        assert result["metrics"][name] == pytest.approx(value, abs=1e-12), name  # type: ignore[index]

    spec = Performance.model_validate(
        {
            "metrics": METRICS,
            "thresholds": [{"metric": "roc_auc", "maxDrop": 0.05, "baselineMetric": "val_auc"}],
        }
    )
    baseline = expected["roc_auc"] / 0.9
    out = decide_quality(spec, QualityFacts(result, {"val_auc": baseline}, "1"))
    assert out.degraded and out.condition[:2] == ("False", "PerformanceDegraded")
    assert out.status["metrics"][0]["value"] == pytest.approx(expected["roc_auc"], abs=1e-12)
