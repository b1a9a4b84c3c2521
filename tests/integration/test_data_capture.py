"""Data capture end to end on real processes: ``modelworks serve`` (a model registered in a
real MLflow server) writing Parquet to a real S3 store (SeaweedFS).

The store is the cluster's (``MODELWORKS_S3_*`` from ``hack/cluster.sh env``) when set,
else a ``weed server -s3`` this module starts on free ports.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from modelworks.api import MODEL_DEPLOYMENT
from modelworks.clients.kube import Kube
from modelworks.clients.mlflow import Registry
from modelworks.reconcilers.base import store_status
from modelworks.reconcilers.modeldeployment import ServerConfig, reconcile
from tests.integration.test_modeldeployment import NOW, cond, get, mdep, register
from tests.support import (
    Cluster,
    MlflowServer,
    S3Store,
    eventually,
    free_port,
    mlflow_client,
    seaweedfs_server,
)

pytestmark = pytest.mark.integration
MODEL = "capture-churn"
FEATURES = ("tenure", "charges", "ssn")


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Store]:
    with seaweedfs_server(tmp_path_factory.mktemp("weed")) as found:
        yield found


@pytest.fixture(scope="module")
def model_uri(mlflow: MlflowServer) -> str:
    """A logistic regression on three numeric features, registered in the test's MLflow."""
    import mlflow as mlflow_lib
    import numpy as np
    import pandas as pd
    from sklearn.linear_model import LogisticRegression

    rng = np.random.default_rng(0)
    frame = pd.DataFrame({f: rng.normal(size=200) for f in FEATURES})
    labels = (frame["tenure"] + frame["charges"] > 0).astype(int)
    fitted = LogisticRegression().fit(frame, labels)
    mlflow_lib.set_tracking_uri(mlflow.uri)
    mlflow_lib.set_registry_uri(mlflow.uri)
    client = mlflow_client(mlflow.uri)
    found = client.get_experiment_by_name("data-capture")
    experiment = found.experiment_id if found else client.create_experiment("data-capture")
    with mlflow_lib.start_run(experiment_id=experiment):
        info = mlflow_lib.sklearn.log_model(
            fitted, name="model", input_example=frame.head(3), registered_model_name=MODEL
        )
    version = client.get_model_version(MODEL, info.registered_model_version)
    return f"models:/{MODEL}/{version.version}"


@dataclass
class Served:
    port: int
    process: subprocess.Popen[bytes]
    log: Path

    def post(
        self, rows: list[dict[str, float]], request_id: str | None = None
    ) -> tuple[int, str, Any]:
        body = json.dumps({"dataframe_records": rows}).encode()
        headers = {"Content-Type": "application/json"}
        if request_id is not None:
            headers["X-Request-Id"] = request_id
        req = urllib.request.Request(
            f"http://127.0.0.1:{self.port}/invocations", body, headers, method="POST"
        )
        with urllib.request.urlopen(req, timeout=30) as r:
            return r.status, r.headers["X-Request-Id"], json.loads(r.read())

    def metrics(self) -> str:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/metrics", timeout=10) as r:
            return str(r.read().decode())

    def metric(self, name: str, **labels: str) -> float:
        total = 0.0
        for line in self.metrics().splitlines():
            m = re.match(rf"^{name}\{{([^}}]*)\}} (\S+)$", line)
            if m and all(f'{k}="{v}"' in m.group(1) for k, v in labels.items()):
                total += float(m.group(2))
        return total

    def stop(self) -> int:
        os.killpg(self.process.pid, signal.SIGTERM)
        return self.process.wait(timeout=60)


def _ping(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/ping", timeout=2) as r:
            return bool(r.status == 200)
    except (OSError, urllib.error.HTTPError):
        return False


@contextmanager
def serve(
    mlflow: MlflowServer, uri: str, env: dict[str, str], tmp: Path, *, workers: int = 1
) -> Iterator[Served]:
    port = free_port()
    log = tmp / f"serve-{port}.log"
    command = [
        str(Path(sys.executable).parent / "modelworks"),
        "serve",
        "--model-uri",
        uri,
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--workers",
        str(workers),
        "--drain-seconds",
        "5",
    ]
    full_env = {**os.environ, "MLFLOW_TRACKING_URI": mlflow.uri, **env}
    with log.open("wb") as out:
        proc = subprocess.Popen(
            command, env=full_env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
    served = Served(port, proc, log)
    try:
        eventually(
            lambda: _ping(port) or proc.poll() is not None, timeout=180, what="modelworks serve"
        )
        assert proc.poll() is None, log.read_text()[-3000:]
        yield served
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def capture_env(destination: str, **config: Any) -> dict[str, str]:
    return {"MODELWORKS_DATA_CAPTURE": json.dumps({"destination": destination, **config})}


def read_capture(store: S3Store, prefix: str) -> Any:
    import pyarrow as pa
    import pyarrow.dataset as ds

    partitioning = ds.partitioning(
        pa.schema([(n, pa.string()) for n in ("model", "version", "date", "hour")]),
        flavor="hive",
    )
    return ds.dataset(
        f"{store.bucket}/{prefix}/capture",
        filesystem=store.filesystem(),
        format="parquet",
        partitioning=partitioning,
    ).to_table()


def row(i: int) -> dict[str, float]:
    return {"tenure": float(i % 7) - 3.0, "charges": float(i % 5) - 2.0, "ssn": 123456789.0 + i}


def test_every_answered_request_is_captured_with_its_id_and_flushed_on_stop(
    mlflow: MlflowServer, model_uri: str, store: S3Store, tmp_path: Path
) -> None:
    prefix = f"t-{uuid.uuid4().hex[:8]}"
    env = {
        **store.env(),
        # An hour between flushes: every row reaches the store only through the flush on stop.
        **capture_env(
            f"s3://{store.bucket}/{prefix}", redact=["ssn"], flushInterval="1h", bufferRows=10000
        ),
    }
    expected: dict[str, float] = {}
    with serve(mlflow, model_uri, env, tmp_path, workers=2) as server:
        for i in range(60):
            client_id = f"client-{i}" if i % 2 == 0 else None
            batch = [row(i)] if i % 3 else [row(i), row(i + 1), row(i + 2)]
            status, rid, answer = server.post(batch, client_id)
            assert status == 200
            if client_id is not None:
                assert rid == client_id
            else:
                assert re.fullmatch(r"[0-9a-f]{32}", rid), rid
            predictions = answer["predictions"]
            ids = [rid] if len(batch) == 1 else [f"{rid}/{j}" for j in range(len(batch))]
            expected.update(zip(ids, map(float, predictions), strict=True))
        assert server.metric("modelworks_capture_rows_total") == len(expected)
        assert server.metric("modelworks_capture_written_rows_total") == 0
        assert server.stop() == 0
    table = read_capture(store, prefix)
    captured = table.to_pydict()
    assert set(captured["inference_id"]) == set(expected)
    assert len(captured["inference_id"]) == len(expected)
    assert all(v is None for v in captured["ssn"])
    assert all(v is not None for v in captured["tenure"])
    version = model_uri.rsplit("/", 1)[1]
    assert set(captured["model"]) == {MODEL} and set(captured["version"]) == {version}
    for iid, prediction, at, date, hour in zip(
        captured["inference_id"],
        captured["prediction"],
        captured["time"],
        captured["date"],
        captured["hour"],
        strict=True,
    ):
        assert prediction == expected[iid]
        assert (date, hour) == (at.strftime("%Y-%m-%d"), at.strftime("%H"))
        assert at.tzinfo is not None and abs((datetime.now(UTC) - at).total_seconds()) < 600
    assert set(captured["request_id"]) == {i.split("/")[0] for i in expected}


def test_a_store_that_fails_never_fails_a_request_and_drops_are_counted(
    mlflow: MlflowServer, model_uri: str, store: S3Store, tmp_path: Path
) -> None:
    config = capture_env(f"s3://{store.bucket}/broken", flushInterval="200ms", bufferRows=100)
    wrong_key = {**store.env(AWS_SECRET_ACCESS_KEY="not-the-secret"), **config}
    closed = f"http://127.0.0.1:{free_port()}"
    unreachable = {**store.env(AWS_ENDPOINT_URL_S3=closed), **config}
    with (
        serve(mlflow, model_uri, wrong_key, tmp_path) as denied,
        serve(mlflow, model_uri, unreachable, tmp_path) as away,
    ):
        for server, kind in ((denied, "access_denied"), (away, "unreachable")):
            for i in range(20):
                assert server.post([row(i)])[0] == 200
            assert server.post([row(i) for i in range(150)])[0] == 200
            assert (
                server.metric("modelworks_capture_dropped_rows_total", reason="buffer_full") == 150
            )

            def failed(server: Served = server) -> bool:
                dropped = server.metric(
                    "modelworks_capture_dropped_rows_total", reason="write_failed"
                )
                return dropped == 20

            eventually(failed, timeout=90, what=f"20 rows dropped as write_failed ({kind})")
            assert server.metric("modelworks_capture_last_error_timestamp_seconds", kind=kind) > 0
            assert server.metric("modelworks_capture_written_rows_total") == 0
            assert server.metric("modelworks_capture_last_flush_timestamp_seconds") == 0
            assert "not-the-secret" not in server.log.read_text()


def test_the_operator_reports_data_capture_health_through_the_api_server(
    crds: Cluster, kube: Kube, mlflow: MlflowServer, namespace: str
) -> None:
    """kwok pods serve no /metrics: the condition is Unknown and says so; the status the
    pass computed (condition, dataCapture) is what the API server stores; without
    dataCapture both are gone again."""
    model = f"m-{namespace}"
    version = register(mlflow.uri, model)
    obj = mdep("captured", model, replicas=1)
    obj["spec"]["model"] = {"name": model, "version": version}
    obj["spec"]["storage"] = {
        "endpoint": "http://s3.invalid:9000",
        "credentials": {"secretName": "s3-keys"},
    }
    obj["spec"]["dataCapture"] = {"destination": "s3://capture/churn"}
    crds.apply(obj, "-n", namespace)
    registry, server = (
        Registry(mlflow.uri),
        ServerConfig("modelworks:0.1.0", "IfNotPresent", mlflow.uri),
    )

    def one_pass() -> dict[str, Any]:
        current = get(crds, "mdep", "captured", namespace)
        out = reconcile(current, kube=kube, registry=registry, now=NOW, server=server)
        store_status(kube, MODEL_DEPLOYMENT, current, out.status)  # the operator's own write
        return dict(get(crds, "mdep", "captured", namespace)["status"])

    status = eventually(
        lambda: (s := one_pass())["phase"] == "Available" and s, timeout=90, what="kwok pod ready"
    )
    health = cond({"status": status}, "DataCaptureHealthy")
    assert (health["status"], health["reason"]) == ("Unknown", "NoCaptureMetrics"), health
    assert "1 pod(s), 1 without metrics" in health["message"]
    assert status["dataCapture"] == {"rowsDropped": 0}
    dep = kube.get("apps/v1", "Deployment", namespace, "captured")
    assert dep is not None
    env = {e["name"] for e in dep["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert "MODELWORKS_DATA_CAPTURE" in env

    del obj["spec"]["dataCapture"]
    crds.apply(obj, "-n", namespace)
    status = one_pass()
    assert all(c["type"] != "DataCaptureHealthy" for c in status["conditions"])
    assert "dataCapture" not in status
    dep = kube.get("apps/v1", "Deployment", namespace, "captured")
    assert dep is not None
    env = {e["name"] for e in dep["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert "MODELWORKS_DATA_CAPTURE" not in env
