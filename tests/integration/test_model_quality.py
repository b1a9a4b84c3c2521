"""Model quality through the DriftMonitor, on the real API server, MLflow and S3 store.

kwok runs no containers: a ResourceQuota keeps the performance Job's own pod from being
created, the test runs the Job's command line in this process with the Job's environment
and reports its termination message through a played pod of the Job (as the snapshot's
integration test does). The monitor's metrics must equal scikit-learn's over the stored
Parquet, the drop against the served run's val_auc must be ModelQuality False with a
Warning, and the next check must start a retraining whose reason is performance.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from sklearn import metrics as skm

from modelworks.api.common import API_VERSION
from modelworks.clients.kube import Kube
from modelworks.clients.objectstore import parse_s3
from modelworks.drift.profile import PROFILE_FILE, build_profile
from modelworks.names import TRIGGER_ANNOTATION, format_time
from modelworks.quality import check
from tests.integration.test_driftmonitor import one_pass, serving
from tests.integration.test_modeldeployment import register
from tests.integration.test_snapshot import play_job_pod
from tests.quality_data import write_capture, write_feedback
from tests.support import (
    S3_SECRET,
    Cluster,
    MlflowServer,
    ObjectStore,
    mlflow_client,
    object_store,
    object_store_secret,
)

pytestmark = pytest.mark.integration
ROWS = 400


@pytest.fixture
def destination(cluster: Cluster) -> Iterator[tuple[ObjectStore, str]]:
    store = object_store(cluster)
    uri = f"s3://{store.bucket}/t-quality-{uuid.uuid4().hex[:10]}"
    yield store, uri
    store.filesystem().delete_dir(parse_s3(uri).path)


def status_patch(crds: Cluster, ns: str, status: dict[str, Any]) -> None:
    """Store a pass's status as the operator does, whole (no operator runs here)."""
    patch = [{"op": "add", "path": "/status", "value": status}]
    crds.kubectl(
        "patch",
        "dmon",
        "watch",
        "-n",
        ns,
        "--subresource=status",
        "--type=json",
        "-p",
        json.dumps(patch),
    )


def job_env(container: dict[str, Any], store: ObjectStore) -> dict[str, str]:
    """The container's environment as the kubelet makes it from the test's Secret."""
    secret = {
        "AWS_ACCESS_KEY_ID": store.access_key_id,
        "AWS_SECRET_ACCESS_KEY": store.secret_access_key,
    }
    env = {}
    for e in container["env"]:
        if "value" in e:
            env[e["name"]] = e["value"]
        else:
            ref = e["valueFrom"]["secretKeyRef"]
            assert ref["name"] == S3_SECRET
            env[e["name"]] = secret[ref["key"]]
    return env


def captured_world(store: ObjectStore, uri: str, model: str, version: str, now: datetime) -> None:
    """ROWS captured answers of the last 90 minutes, poorly ranked, all labelled."""
    rng = np.random.default_rng(6)
    p = rng.random(ROWS)
    y = np.where(rng.random(ROWS) < 0.35, rng.random(ROWS) < p, rng.random(ROWS) < 0.5)
    rows = [
        {
            "inference_id": f"q{i}",
            "time": now - timedelta(minutes=90) + timedelta(seconds=10 * i),
            "prediction": float(p[i] > 0.5),
            "scores": [1 - p[i], p[i]],
        }
        for i in range(ROWS)
    ]
    root = parse_s3(uri).path
    write_capture(store.filesystem(), root, rows, model=model, version=version)
    labels = [(f"q{i}", float(y[i]), now - timedelta(minutes=5)) for i in range(ROWS)]
    write_feedback(store.filesystem(), root, labels)


def sklearn_metrics(store: ObjectStore, uri: str) -> dict[str, float]:
    """What a user computes from the stored Parquet: pandas merge + scikit-learn."""
    s3, root = store.filesystem(), parse_s3(uri).path
    captured = pd.read_parquet(f"{root}/capture", filesystem=s3, partitioning=None)
    labels = pd.read_parquet(f"{root}/feedback", filesystem=s3, partitioning=None)
    df = captured.merge(labels[["inference_id", "label"]], on="inference_id")
    assert len(df) == ROWS
    truth = df["label"].to_numpy(float)
    score = np.array(df["scores"].tolist())[:, 1]
    return {
        "roc_auc": float(skm.roc_auc_score(truth, score)),
        "accuracy": float(skm.accuracy_score(truth, df["prediction"].to_numpy())),
    }


def quality_monitor(crds: Cluster, ns: str, store: ObjectStore, dest: str) -> None:
    storage = object_store_secret(crds, ns, store)
    capture = {"dataCapture": {"destination": dest, "samplingPercent": 100}}
    crds.kubectl(
        "patch", "mdep", "srv", "-n", ns, "--type=merge", "-p", json.dumps({"spec": capture})
    )
    crds.apply(
        {
            "apiVersion": "v1",
            "kind": "ResourceQuota",
            "metadata": {"name": "no-real-pods"},
            "spec": {"hard": {"pods": "0"}, "scopes": ["NotBestEffort"]},
        },
        "-n",
        ns,
    )
    performance = {
        "metrics": ["roc_auc", "accuracy"],
        "window": "2h",
        "interval": "10m",
        "minLabelledRows": 100,
        "thresholds": [{"metric": "roc_auc", "maxDrop": 0.1, "baselineMetric": "val_auc"}],
    }
    template = {
        "image": "trainer:1",
        "suspend": True,
        "dataset": {"uri": "builtin://churn", "version": "seed-7"},
    }
    spec = {
        "target": {"modelDeployment": {"name": "srv"}},
        "interval": "1m",
        "storage": storage,
        "performance": performance,
        "retrain": {"template": template, "onDrift": True},
    }
    crds.apply(
        {
            "apiVersion": API_VERSION,
            "kind": "DriftMonitor",
            "metadata": {"name": "watch"},
            "spec": spec,
        },
        "-n",
        ns,
    )


def cond(status: dict[str, Any], type_: str) -> dict[str, Any]:
    return next(c for c in status["conditions"] if c["type"] == type_)


def test_a_performance_drop_is_measured_reported_and_retrains(
    crds: Cluster,
    kube: Kube,
    mlflow: MlflowServer,
    namespace: str,
    destination: tuple[ObjectStore, str],
    tmp_path: Path,
) -> None:
    store, dest = destination
    model = f"q-{namespace}"
    version = register(mlflow.uri, model)  # its run logs val_auc 0.9
    run_id = mlflow_client(mlflow.uri).get_model_version(model, version).run_id
    profile = build_profile({"x": np.random.default_rng(0).normal(0, 1, 200)})
    mlflow_client(mlflow.uri).log_dict(run_id, profile.to_json(), PROFILE_FILE)
    serving(crds, namespace, "srv", model, version)
    now = datetime.now(UTC).replace(microsecond=0)
    captured_world(store, dest, model, version, now)
    quality_monitor(crds, namespace, store, dest)

    first = one_pass(crds, kube, mlflow, namespace, "watch", now=format_time(now))
    job_name = first.status["performance"]["checkJob"]
    assert cond(first.status, "ModelQuality")["status"] == "Unknown"
    job = kube.get("batch/v1", "Job", namespace, job_name)
    assert job is not None
    container = job["spec"]["template"]["spec"]["containers"][0]
    assert container["args"][:2] == ["performance", "--config"]
    config = json.loads(container["args"][2])
    assert (config["destination"], config["model"], config["version"]) == (dest, model, version)
    status_patch(crds, namespace, first.status)
    again = one_pass(crds, kube, mlflow, namespace, "watch", now=format_time(now))
    assert again.status["performance"]["checkJob"] == job_name  # the same Job, not a second
    assert len(kube.list("batch/v1", "Job", namespace)) == 1

    log = tmp_path / "termination-log"
    with pytest.MonkeyPatch.context() as mp:
        for k, v in job_env(container, store).items():
            mp.setenv(k, v)
        assert check.main(container["args"][2], termination_log=log) == 0
    play_job_pod(crds, kube, namespace, job, log.read_text())

    second = one_pass(crds, kube, mlflow, namespace, "watch", now=format_time(datetime.now(UTC)))
    perf = second.status["performance"]
    expected = sklearn_metrics(store, dest)
    values = {m["metric"]: m["value"] for m in perf["metrics"]}
    assert values == pytest.approx(expected, abs=1e-12)
    assert perf["labelledRows"] == ROWS and "checkJob" not in perf
    assert perf["verdict"] == "Degraded" and perf["servedVersion"] == version
    auc = next(m for m in perf["metrics"] if m["metric"] == "roc_auc")
    assert auc["baseline"] == pytest.approx(0.9) and auc["verdict"] == "Degraded"
    quality = cond(second.status, "ModelQuality")
    assert (quality["status"], quality["reason"]) == ("False", "PerformanceDegraded")
    assert any(e.reason == "PerformanceDegraded" and e.type == "Warning" for e in second.events)
    status_patch(crds, namespace, second.status)

    third = one_pass(crds, kube, mlflow, namespace, "watch", now=format_time(datetime.now(UTC)))
    (tj,) = kube.list(API_VERSION, "TrainingJob", namespace)
    assert tj["metadata"]["annotations"][TRIGGER_ANNOTATION] == "performance"
    assert third.status["lastRetrain"]["reason"].startswith("performance (roc_auc")
    assert cond(third.status, "ModelQuality")["status"] == "False"
