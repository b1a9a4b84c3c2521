"""Ground truth end to end on real processes: ``modelworks serve`` (a model registered in a
real MLflow server) taking labels on ``POST /feedback`` and writing Parquet to a real S3
store (SeaweedFS).

The store is the cluster's (``MODELWORKS_S3_*`` from ``hack/cluster.sh env``) when set,
else a ``weed server -s3`` this module starts on free ports.
"""

from __future__ import annotations

import http.client
import json
import os
import re
import secrets
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from tests.support import MlflowServer, eventually, free_port, mlflow_client, server_process

pytestmark = pytest.mark.integration
MODEL = "feedback-churn"
TOKEN_ENV = "MODELWORKS_FEEDBACK_TOKEN"
DESTINATION_ENV = "MODELWORKS_FEEDBACK_DESTINATION"


@dataclass(frozen=True)
class Store:
    endpoint: str
    access_key: str
    secret_key: str
    bucket: str

    def filesystem(self) -> Any:
        from pyarrow import fs

        return fs.S3FileSystem(
            access_key=self.access_key,
            secret_key=self.secret_key,
            endpoint_override=self.endpoint.split("://", 1)[1],
            scheme="http",
            region="us-east-1",
            allow_bucket_creation=True,
        )

    def env(self, **override: str) -> dict[str, str]:
        return {
            "AWS_ENDPOINT_URL_S3": self.endpoint,
            "AWS_ACCESS_KEY_ID": self.access_key,
            "AWS_SECRET_ACCESS_KEY": self.secret_key,
            "AWS_REGION": "us-east-1",
            **override,
        }


def _weed() -> Path:
    cache = Path(os.environ.get("MODELWORKS_CACHE", Path.home() / ".cache/modelworks"))
    found = sorted((cache / "bin").glob("seaweedfs-*/weed"))
    if not found:
        raise AssertionError(f"no weed binary under {cache}/bin: run hack/cluster.sh build")
    return found[-1]


@contextmanager
def _own_weed(root: Path) -> Iterator[Store]:
    key, secret = "MWTEST" + secrets.token_hex(6).upper(), secrets.token_hex(20)
    config = root / "s3.json"
    identity = {
        "name": "test",
        "credentials": [{"accessKey": key, "secretKey": secret}],
        "actions": ["Admin", "Read", "List", "Tagging", "Write"],
    }
    config.write_text(json.dumps({"identities": [identity]}))
    ports = {n: free_port() for n in ("master", "volume", "filer", "s3")}
    grpc = {n: free_port() for n in ports}
    command = [
        str(_weed()),
        "-logtostderr=true",
        "server",
        "-s3",
        "-filer",
        "-ip=127.0.0.1",
        "-ip.bind=127.0.0.1",
        f"-dir={root / 'data'}",
        *(f"-{n}.port={p}" for n, p in ports.items()),
        *(f"-{n}.port.grpc={p}" for n, p in grpc.items()),
        f"-filer.localSocket={root / 'filer.sock'}",
        f"-s3.localSocket={root / 's3.sock'}",
        "-s3.port.iceberg=0",
        "-s3.port.lance=0",
        f"-s3.config={config}",
        "-master.volumeSizeLimitMB=64",
        "-volume.max=0",
        "-master.telemetry=false",
    ]
    (root / "data").mkdir(parents=True)
    health = f"http://127.0.0.1:{ports['master']}/cluster/healthz"
    with server_process(command, root, health, what="weed server"):
        store = Store(f"http://127.0.0.1:{ports['s3']}", key, secret, "feedback-test")
        eventually(lambda: _made_bucket(store), timeout=60, what="the test bucket")
        yield store


def _made_bucket(store: Store) -> bool:
    try:
        store.filesystem().create_dir(store.bucket)
    except OSError:
        return False
    return True


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Store]:
    names = ("ENDPOINT", "ACCESS_KEY_ID", "SECRET_ACCESS_KEY", "BUCKET")
    values = [os.environ.get(f"MODELWORKS_S3_{n}", "") for n in names]
    if all(values):
        yield Store(*values)
        return
    with _own_weed(tmp_path_factory.mktemp("weed")) as own:
        yield own


@pytest.fixture(scope="module")
def model_uri(mlflow: MlflowServer) -> str:
    """A logistic regression on two numeric features, registered in the test's MLflow."""
    import mlflow as mlflow_lib
    import numpy as np
    import pandas as pd
    from sklearn.linear_model import LogisticRegression

    rng = np.random.default_rng(0)
    frame = pd.DataFrame({f: rng.normal(size=100) for f in ("tenure", "charges")})
    fitted = LogisticRegression().fit(frame, (frame["tenure"] > 0).astype(int))
    mlflow_lib.set_tracking_uri(mlflow.uri)
    mlflow_lib.set_registry_uri(mlflow.uri)
    client = mlflow_client(mlflow.uri)
    experiment = client.get_experiment_by_name("feedback")
    exp_id = experiment.experiment_id if experiment else client.create_experiment("feedback")
    # No set_experiment: the active experiment is process-wide and would outlive this test.
    with mlflow_lib.start_run(experiment_id=exp_id):
        info = mlflow_lib.sklearn.log_model(
            fitted, name="model", input_example=frame.head(3), registered_model_name=MODEL
        )
    version = mlflow_client(mlflow.uri).get_model_version(MODEL, info.registered_model_version)
    return f"models:/{MODEL}/{version.version}"


@dataclass
class Answer:
    status: int
    headers: dict[str, str]
    body: dict[str, Any]


@dataclass
class Served:
    port: int
    log: Path

    def feedback(
        self, body: bytes, token: str | None, content_type: str = "application/json"
    ) -> Answer:
        headers = {"Content-Type": content_type}
        if token is not None:
            headers["Authorization"] = f"Bearer {token}"
        req = urllib.request.Request(
            f"http://127.0.0.1:{self.port}/feedback", body, headers, method="POST"
        )
        try:
            with urllib.request.urlopen(req, timeout=120) as r:
                return Answer(r.status, _lower(r.headers), json.loads(r.read()))
        except urllib.error.HTTPError as err:
            return Answer(err.code, _lower(err.headers), json.loads(err.read()))

    def expect_continue(self, length: int, token: str) -> int:
        """The answer to headers announcing a ``length``-byte body, sent as curl sends
        a big body: with ``Expect: 100-continue``, the body only once told to go on."""
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        try:
            conn.putrequest("POST", "/feedback")
            for name, value in (
                ("Authorization", f"Bearer {token}"),
                ("Content-Type", "application/json"),
                ("Content-Length", str(length)),
                ("Expect", "100-continue"),
            ):
                conn.putheader(name, value)
            conn.endheaders()
            return conn.getresponse().status
        finally:
            conn.close()

    def metric(self, name: str, **labels: str) -> float:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/metrics", timeout=10) as r:
            text = r.read().decode()
        total = 0.0
        for line in text.splitlines():
            m = re.match(rf"^{name}(?:\{{([^}}]*)\}})? (\S+)$", line)
            if m and all(f'{k}="{v}"' in (m.group(1) or "") for k, v in labels.items()):
                total += float(m.group(2))
        return total


def _lower(headers: Any) -> dict[str, str]:
    return {k.lower(): v for k, v in headers.items()}


def _ping(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/ping", timeout=2) as r:
            return bool(r.status == 200)
    except OSError:
        return False


@contextmanager
def serve(mlflow: MlflowServer, uri: str, env: dict[str, str], tmp: Path) -> Iterator[Served]:
    """``modelworks serve`` in its own process group, ready (the model loaded)."""
    port = free_port()
    log = tmp / f"serve-{port}.log"
    command = [
        str(Path(sys.executable).parent / "modelworks"),
        *("serve", "--model-uri", uri, "--host", "127.0.0.1", "--port", str(port)),
    ]
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "MODELWORKS_FEED"))}
    with log.open("wb") as out:
        proc = subprocess.Popen(
            command,
            env={**clean, "MLFLOW_TRACKING_URI": mlflow.uri, **env},
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        eventually(
            lambda: _ping(port) or proc.poll() is not None, timeout=180, what="modelworks serve"
        )
        assert proc.poll() is None, log.read_text()[-3000:]
        yield Served(port, log)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()


def labels_body(labels: dict[str, Any]) -> bytes:
    return json.dumps(
        {"labels": [{"inference_id": i, "label": v} for i, v in labels.items()]}
    ).encode()


def read_feedback(store: Store, prefix: str) -> Any:
    import pyarrow as pa
    import pyarrow.dataset as ds

    partitioning = ds.partitioning(
        pa.schema([("date", pa.string()), ("hour", pa.string())]), flavor="hive"
    )
    return ds.dataset(
        f"{store.bucket}/{prefix}/feedback",
        filesystem=store.filesystem(),
        format="parquet",
        partitioning=partitioning,
    ).to_table()


MALFORMED = [
    (b"{not json", "body: not JSON"),
    (b'{"labels": []}', "labels: empty"),
    (b'{"labels": {}}', "labels: expected a list"),
    (b'{"labels": [{"inference_id": "a"}]}', "labels[0].label: missing"),
    (b'{"labels": [{"inference_id": 3, "label": 1}]}', "labels[0].inference_id: expected a string"),
    (b'{"labels": [{"inference_id": "a", "label": true}]}', "labels[0].label: expected a number"),
    (
        b'{"labels": [{"inference_id": "a", "label": 1}, {"inference_id": "b", "label": "x"}]}',
        "labels[1].label: a string where labels[0].label is a number",
    ),
    (
        b'{"labels": [{"inference_id": "a", "label": 1}, {"inference_id": "a", "label": 0}]}',
        "labels[1].inference_id: 'a' repeats labels[0]",
    ),
]


def test_feedback_is_authenticated_bounded_checked_and_written_as_parquet(
    mlflow: MlflowServer, model_uri: str, store: Store, tmp_path: Path
) -> None:
    from pyarrow import fs

    token = secrets.token_urlsafe(32)
    prefix = f"t-{uuid.uuid4().hex[:8]}"
    env = store.env(**{TOKEN_ENV: token, DESTINATION_ENV: f"s3://{store.bucket}/{prefix}"})
    good = {f"req-{i}": i % 2 for i in range(40)} | {f"multi/{j}": 1 for j in range(3)}
    with serve(mlflow, model_uri, env, tmp_path) as server:
        missing = server.feedback(labels_body(good), None)
        assert missing.status == 401, missing
        assert missing.headers["www-authenticate"].startswith("Bearer")
        assert server.feedback(labels_body(good), token[:-1] + "x").status == 403
        assert server.feedback(labels_body(good), "").status == 401
        for body, reason in MALFORMED:
            answer = server.feedback(body, token)
            assert answer.status == 400, (body, answer)
            assert answer.body["message"].startswith(reason), (body, answer.body)
        assert server.expect_continue(2 * 1024 * 1024 + 1, token) == 413
        assert server.expect_continue(50 * 1024 * 1024, "not-the-token") == 403
        many = labels_body({f"i{i}": 1 for i in range(10_001)})
        assert len(many) < 2 * 1024 * 1024
        too_many = server.feedback(many, token)
        assert too_many.status == 413 and "at most 10000" in too_many.body["message"]
        assert server.feedback(b"a=1", token, "application/x-www-form-urlencoded").status == 415
        before = datetime.now(UTC)
        accepted = server.feedback(labels_body(good), token)
        assert accepted.status == 200, accepted
        assert accepted.body["accepted"] == len(good)
        csv = b"inference_id,label\r\ncsv-1,1\r\ncsv-2,0\r\n"
        assert server.feedback(csv, token, "text/csv").body["accepted"] == 2
        full = {f"full-{i:05d}": i % 3 for i in range(10_000)}
        started = time.monotonic()
        assert server.feedback(labels_body(full), token).body["accepted"] == len(full)
        print(f"10000 labels accepted and stored in {time.monotonic() - started:.2f} s")
        after = datetime.now(UTC)
        assert server.metric("modelworks_feedback_labels_total") == len(good) + 2 + len(full)
        refused = {"unauthenticated": 2, "forbidden": 1, "malformed": len(MALFORMED)}
        refused |= {"too_large": 2, "unsupported_media_type": 1}
        refused["forbidden"] += 1
        for reason, count in refused.items():
            assert server.metric("modelworks_feedback_refused_requests_total", reason=reason) == (
                count
            ), reason
    rows = read_feedback(store, prefix).to_pydict()
    want = {k: float(v) for k, v in (good | full).items()} | {"csv-1": 1.0, "csv-2": 0.0}
    assert sorted(zip(rows["inference_id"], rows["label"], strict=True)) == sorted(want.items())
    for at, date, hour in zip(rows["time"], rows["date"], rows["hour"], strict=True):
        assert before - timedelta(seconds=1) <= at <= after + timedelta(seconds=1)
        assert (date, hour) == (at.strftime("%Y-%m-%d"), at.strftime("%H"))
    selector = fs.FileSelector(f"{store.bucket}/{prefix}/feedback", recursive=True)
    files = store.filesystem().get_file_info(selector)
    assert len([f for f in files if f.path.endswith(".parquet")]) == 3
    assert token not in server.log.read_text()


def test_a_store_that_is_down_is_503_with_a_retry_hint_and_nothing_is_accepted(
    mlflow: MlflowServer, model_uri: str, store: Store, tmp_path: Path
) -> None:
    token = secrets.token_urlsafe(32)
    closed = f"http://127.0.0.1:{free_port()}"
    env = store.env(
        AWS_ENDPOINT_URL_S3=closed,
        **{TOKEN_ENV: token, DESTINATION_ENV: f"s3://{store.bucket}/down"},
    )
    with serve(mlflow, model_uri, env, tmp_path) as server:
        started = time.monotonic()
        answer = server.feedback(labels_body({"a": 1, "b": 0}), token)
        took = time.monotonic() - started
        assert answer.status == 503, answer
        assert answer.headers["retry-after"] == "10"
        assert "retry" in answer.body["message"]
        assert (
            server.metric("modelworks_feedback_refused_requests_total", reason="store_unavailable")
            == 1
        )
        assert server.metric("modelworks_feedback_labels_total") == 0
        print(f"503 after {took:.1f} s")
    text = server.log.read_text()
    assert "could not write 2 labels" in text
    assert token not in text and store.secret_key not in text


def test_without_a_token_feedback_is_404(
    mlflow: MlflowServer, model_uri: str, store: Store, tmp_path: Path
) -> None:
    env = store.env(**{DESTINATION_ENV: f"s3://{store.bucket}/off"})
    with serve(mlflow, model_uri, env, tmp_path) as server:
        answer = server.feedback(labels_body({"a": 1}), "anything")
        assert answer.status == 404
        assert "spec.dataCapture.feedback" in answer.body["message"]
        assert (
            server.metric("modelworks_feedback_refused_requests_total", reason="not_configured")
            == 1
        )
