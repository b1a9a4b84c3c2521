"""Retraining on fresh data against a real S3 store, a real API server and a real MLflow.

Captured rows and their labels are written as Parquet in the documented layout on a real
SeaweedFS (``MODELWORKS_S3_*`` when the local cluster runs one, else one started here).
The snapshot code reads them back and writes the snapshot; the operator's passes start
the snapshot Job and then the retraining TrainingJob on it.

kwok runs no containers: the test plays the snapshot Job's pod. A ResourceQuota keeps the
Job's own pod from being created (no real node involved), the test runs the Job's command
line in this process with the Job's environment, and reports its termination message
through a pod of the Job on a kwok node, which the Job controller counts.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import shutil
import socket
import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from pyarrow import fs

from modelworks import snapshot
from modelworks.api.common import API_VERSION
from modelworks.clients.kube import Kube
from modelworks.drift.profile import PROFILE_FILE, build_profile
from modelworks.names import format_time, parse_time
from modelworks.snapshot import Config
from tests.integration.test_driftmonitor import one_pass, serving
from tests.integration.test_modeldeployment import register
from tests.support import Cluster, MlflowServer, eventually, mlflow_client

pytestmark = pytest.mark.integration
WEED = Path.home() / ".cache/modelworks/bin/seaweedfs-v0.0.0-20261109003541-7506e5f91cd6/weed"
FEATURES = ["tenure_months", "monthly_charges"]
SECRET = "snapshot-s3"
DM_CRD = Path(__file__).parents[2] / "crds" / "modelworks.dev_driftmonitors.yaml"
TRAINER = Path(__file__).parents[2] / "examples" / "trainers" / "churn.py"


@dataclass(frozen=True)
class Store:
    endpoint: str
    access_key: str
    secret_key: str
    bucket: str

    def filesystem(self) -> fs.S3FileSystem:
        host = self.endpoint.split("://", 1)[1]
        return fs.S3FileSystem(
            endpoint_override=host,
            scheme="http",
            access_key=self.access_key,
            secret_key=self.secret_key,
            region="us-east-1",
            force_virtual_addressing=False,
            allow_bucket_creation=True,
        )

    def env(self) -> dict[str, str]:
        return {
            "AWS_ENDPOINT_URL_S3": self.endpoint,
            "AWS_ACCESS_KEY_ID": self.access_key,
            "AWS_SECRET_ACCESS_KEY": self.secret_key,
            "AWS_REGION": "us-east-1",
        }


def _free_base() -> int:
    """A port p with p-3 .. p and each + 100 free (weed's HTTP and gRPC ports)."""
    for _ in range(100):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            base = s.getsockname()[1]
        if base < 1030 or base + 100 > 65535:
            continue
        ports = [p + d for p in range(base - 3, base + 1) for d in (0, 100)]
        if all(_free(p) for p in ports):
            return base
    raise RuntimeError("no free ports for weed")


def _free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _weed(tmp: Path) -> tuple[subprocess.Popen[bytes], Store]:
    base, key, secret = _free_base(), "snapshot-test", uuid.uuid4().hex
    config = tmp / "s3.json"
    identity = {"name": "t", "credentials": [{"accessKey": key, "secretKey": secret}]}
    identity["actions"] = ["Admin", "Read", "List", "Tagging", "Write"]
    config.write_text(json.dumps({"identities": [identity]}))
    (tmp / "data").mkdir()
    args = [str(WEED), "-logtostderr=true", "server", "-s3", "-filer", "-ip=127.0.0.1"]
    args += ["-ip.bind=127.0.0.1", f"-dir={tmp / 'data'}", f"-s3.config={config}"]
    for name, port in (("master", base - 3), ("volume", base - 2), ("filer", base - 1)):
        args += [f"-{name}.port={port}", f"-{name}.port.grpc={port + 100}"]
    args += [f"-s3.port={base}", f"-s3.port.grpc={base + 100}", "-s3.port.iceberg=0"]
    args += ["-s3.port.lance=0", f"-filer.localSocket={tmp / 'filer.sock'}"]
    args += [f"-s3.localSocket={tmp / 's3.sock'}", "-master.volumeSizeLimitMB=64"]
    args += ["-volume.max=0", "-volume.preStopSeconds=1", "-master.telemetry=false"]
    log = (tmp / "weed.log").open("wb")
    env = {**os.environ, "WEED_MASTER_VOLUME_GROWTH_COPY_1": "1"}
    proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, env=env)
    return proc, Store(f"http://127.0.0.1:{base}", key, secret, "snapshots")


def _bucket_ready(store: Store) -> bool:
    try:
        store.filesystem().create_dir(store.bucket)
        store.filesystem().get_file_info(fs.FileSelector(store.bucket))
    except OSError:
        return False
    return True


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Store]:
    """The cluster's object store (``MODELWORKS_S3_*``), else a SeaweedFS of this module's."""
    names = ("ENDPOINT", "ACCESS_KEY_ID", "SECRET_ACCESS_KEY", "BUCKET")
    given = [os.environ.get(f"MODELWORKS_S3_{n}", "") for n in names]
    if all(given):
        yield Store(*given)
        return
    if not WEED.exists():
        pytest.fail(f"{WEED} missing: hack/cluster.sh build seaweedfs")
    tmp = tmp_path_factory.mktemp("weed")
    proc, own = _weed(tmp)
    try:
        eventually(lambda: _bucket_ready(own), timeout=120, what="SeaweedFS to answer")
        yield own
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        shutil.rmtree(tmp, ignore_errors=True)


# --- the contract's layout: capture and feedback Parquet ---------------------------------


def write_capture(
    filesystem: fs.FileSystem, dest: str, rows: list[dict[str, Any]], model: str
) -> None:
    """Rows in D/capture/model=/version=/date=/hour=/ files, one file per hour."""
    by_hour: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for row in rows:
        t: datetime = row["time"]
        by_hour.setdefault((t.strftime("%Y-%m-%d"), t.strftime("%H")), []).append(row)
    base = dest.removeprefix("s3://")
    for (date, hour), part in by_hour.items():
        table = pa.table(
            {
                "inference_id": [r["id"] for r in part],
                "request_id": [r["id"] for r in part],
                "time": pa.array([r["time"] for r in part], pa.timestamp("ms", tz="UTC")),
                "model": [model] * len(part),
                "version": ["1"] * len(part),
                **{f: [r[f] for r in part] for f in part[0] if f not in ("id", "time")},
                "prediction": [1.0] * len(part),
                "scores": pa.array([[0.3, 0.7]] * len(part), pa.list_(pa.float64())),
            }
        )
        path = f"{base}/capture/model={model}/version=1/date={date}/hour={hour}/pod-1-1-0.parquet"
        with filesystem.open_output_stream(path) as out:
            pq.write_table(table, out)


def write_feedback(
    filesystem: fs.FileSystem, dest: str, labels: dict[str, float], at: datetime
) -> None:
    base = dest.removeprefix("s3://")
    table = pa.table(
        {
            "inference_id": list(labels),
            "label": pa.array(list(labels.values()), pa.float64()),
            "time": pa.array([at] * len(labels), pa.timestamp("ms", tz="UTC")),
        }
    )
    path = f"{base}/feedback/date={at:%Y-%m-%d}/hour={at:%H}/labels-1.parquet"
    with filesystem.open_output_stream(path) as out:
        pq.write_table(table, out)


@dataclass(frozen=True)
class World:
    dest: str
    expected: list[tuple[Any, ...]]  # (features..., label) of the labelled rows in the window
    ids: list[str]


def captured_world(store: Store, end: datetime, model: str = "churn") -> World:
    """300 rows in the last 90 minutes before ``end`` (250 labelled), 40 rows 5 hours
    earlier (all labelled): the labelled rows of the last two hours are the 250."""
    dest = f"s3://{store.bucket}/{uuid.uuid4().hex[:12]}"
    rng = np.random.default_rng(3)
    rows, labels = [], {}
    for i in range(340):
        inside = i < 300
        ago = timedelta(minutes=float(rng.uniform(1, 89))) if inside else timedelta(hours=5)
        row = {
            "id": uuid.uuid4().hex,
            "time": end - ago,
            "tenure_months": float(rng.gamma(2.0, 12.0)),
            "monthly_charges": float(rng.normal(65, 20)),
        }
        rows.append(row)
        if not inside or i < 250:
            labels[row["id"]] = float(i % 2)
    filesystem = store.filesystem()
    write_capture(filesystem, dest, rows, model)
    write_feedback(filesystem, dest, labels, end - timedelta(seconds=30))
    inside_labelled = [r for r in rows[:250]]
    expected = sorted((*(r[f] for f in FEATURES), labels[r["id"]]) for r in inside_labelled)
    return World(dest, expected, [r["id"] for r in inside_labelled])


def read_snapshot(store: Store, uri: str) -> tuple[bytes, pa.Table]:
    with store.filesystem().open_input_stream(uri.removeprefix("s3://")) as f:
        data = f.read()
    return data, pq.read_table(pa.BufferReader(data))


def rows_of(*tables: pa.Table) -> list[tuple[Any, ...]]:
    out = []
    for table in tables:
        out += [tuple(r[c] for c in [*FEATURES, "churned"]) for r in table.to_pylist()]
    return sorted(out)


# --- the snapshot code on the real store ------------------------------------------------


def test_the_snapshot_is_the_labelled_captured_rows_of_the_window(store: Store) -> None:
    end = datetime.now(UTC).replace(microsecond=0)
    world = captured_world(store, end)
    config = Config(
        destination=world.dest,
        namespace="ns",
        monitor="watch",
        start=format_time(end - timedelta(hours=2)),
        end=format_time(end),
        target="churned",
        min_rows=100,
        holdout_fraction=0.2,
        model="churn",
        columns=tuple(FEATURES),
    )
    first = snapshot.materialise(store.filesystem(), config, format_time(end))
    train_bytes, train = read_snapshot(store, first["uri"])
    holdout_bytes, holdout = read_snapshot(store, first["holdoutUri"])
    assert rows_of(train, holdout) == world.expected
    assert train.column_names == [*FEATURES, "churned"]
    assert (first["rows"], first["holdoutRows"]) == (train.num_rows, holdout.num_rows)
    assert 20 <= holdout.num_rows <= 80 and first["reused"] is False
    digest = "sha256-" + hashlib.sha256(train_bytes + holdout_bytes).hexdigest()[:16]
    assert first["digest"] == digest
    base = f"{world.dest}/datasets/ns/watch/{digest}"
    assert first["uri"] == f"{base}/train.parquet"
    with store.filesystem().open_input_stream(f"{base.removeprefix('s3://')}/manifest.json") as f:
        manifest = json.loads(f.read())
    assert manifest["idsDigest"] == snapshot.ids_digest(world.ids)
    assert manifest["window"] == {"start": config.start, "end": config.end}

    again = snapshot.materialise(store.filesystem(), config, format_time(end + timedelta(hours=1)))
    assert again == {**first, "reused": True}
    assert read_snapshot(store, first["uri"])[0] == train_bytes
    with store.filesystem().open_input_stream(f"{base.removeprefix('s3://')}/manifest.json") as f:
        assert json.loads(f.read())["created"] == manifest["created"]


def test_too_few_labelled_rows_write_nothing(store: Store, tmp_path: Path) -> None:
    end = datetime.now(UTC).replace(microsecond=0)
    world = captured_world(store, end)
    config = {
        "destination": world.dest,
        "namespace": "ns",
        "monitor": "watch",
        "start": format_time(end - timedelta(hours=2)),
        "end": format_time(end),
        "target": "churned",
        "minRows": 1000,
    }
    log = tmp_path / "termination-log"
    env = {**os.environ, **store.env()}
    with pytest.MonkeyPatch.context() as mp:
        for k, v in env.items():
            mp.setenv(k, v)
        assert snapshot.main(json.dumps(config), termination_log=log) == 1
    assert log.read_text().startswith("TooFewRows: 250 labelled rows")
    datasets = store.filesystem().get_file_info(
        fs.FileSelector(f"{world.dest.removeprefix('s3://')}/datasets", allow_not_found=True)
    )
    assert datasets == []


# --- the operator's path: snapshot Job, then the TrainingJob on the snapshot -------------


def _job_env(container: dict[str, Any], store: Store) -> dict[str, str]:
    """The container's environment as the kubelet would make it (the Secret is the test's)."""
    secret = {"AWS_ACCESS_KEY_ID": store.access_key, "AWS_SECRET_ACCESS_KEY": store.secret_key}
    env = {}
    for e in container["env"]:
        if "value" in e:
            env[e["name"]] = e["value"]
        else:
            ref = e["valueFrom"]["secretKeyRef"]
            assert ref["name"] == SECRET
            env[e["name"]] = secret[ref["key"]]
    return env


def play_job_pod(crds: Cluster, kube: Kube, ns: str, job: dict[str, Any], message: str) -> None:
    """A pod of ``job`` on a kwok node that succeeds; then its termination message."""
    name, uid = job["metadata"]["name"], job["metadata"]["uid"]
    labels = {
        "batch.kubernetes.io/job-name": name,
        "job-name": name,
        "batch.kubernetes.io/controller-uid": uid,
        "controller-uid": uid,
    }
    owner = {"apiVersion": "batch/v1", "kind": "Job", "name": name, "uid": uid}
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": f"{name}-played",
            "namespace": ns,
            "labels": labels,
            "finalizers": ["batch.kubernetes.io/job-tracking"],
            "ownerReferences": [{**owner, "controller": True, "blockOwnerDeletion": True}],
        },
        "spec": {
            "nodeName": "kwok-node-0",
            "restartPolicy": "Never",
            "tolerations": [{"key": "kwok.x-k8s.io/node", "operator": "Exists"}],
            "containers": [{"name": "check", "image": "modelworks:0.1.0"}],
        },
    }
    kube.create(pod)

    def complete() -> bool:
        found = kube.get("batch/v1", "Job", ns, name) or {}
        conds = (found.get("status") or {}).get("conditions") or []
        return any(c["type"] == "Complete" and c["status"] == "True" for c in conds)

    eventually(complete, timeout=60, what="the Job controller to count the played pod")
    patch = [
        {
            "op": "add",
            "path": "/status/containerStatuses/0/state/terminated/message",
            "value": message,
        }
    ]
    crds.kubectl(
        "patch",
        "pod",
        f"{name}-played",
        "-n",
        ns,
        "--subresource=status",
        "--type=json",
        "-p",
        json.dumps(patch),
    )


def captured_monitor(crds: Cluster, mlflow: MlflowServer, ns: str, store: Store, dest: str) -> None:
    model = f"m-{ns}"
    version = register(mlflow.uri, model)
    run_id = mlflow_client(mlflow.uri).get_model_version(model, version).run_id
    rng = np.random.default_rng(0)
    profile = build_profile({f: rng.normal(50, 10, 200) for f in FEATURES})
    mlflow_client(mlflow.uri).log_dict(run_id, profile.to_json(), PROFILE_FILE)
    serving(crds, ns, "srv", model, version)
    capture = {"dataCapture": {"destination": dest, "samplingPercent": 100}}
    crds.kubectl(
        "patch", "mdep", "srv", "-n", ns, "--type=merge", "-p", json.dumps({"spec": capture})
    )
    crds.apply(
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": SECRET},
            "stringData": {"AWS_ACCESS_KEY_ID": "key-id", "AWS_SECRET_ACCESS_KEY": "not-used"},
        },
        "-n",
        ns,
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
    # The cluster is shared: another worktree's tests may have applied older CRDs since.
    crds.kubectl("apply", "--server-side", "--force-conflicts", "-f", str(DM_CRD))
    crds.kubectl("wait", "--for=condition=Established", "crd/driftmonitors.modelworks.dev")
    template = {
        "image": "trainer:1",
        "suspend": True,
        "dataset": {"uri": "builtin://churn", "version": "seed-7"},
    }
    retrain = {
        "template": template,
        "schedule": "@hourly",
        "onDrift": False,
        "dataset": {"source": "Captured", "target": "churned", "window": "2h", "minRows": 100},
    }
    spec = {
        "target": {"modelDeployment": {"name": "srv"}},
        "interval": "1m",
        "storage": {"endpoint": store.endpoint, "credentials": {"secretName": SECRET}},
        "retrain": retrain,
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


def test_the_retraining_trains_on_the_snapshot_of_captured_rows(
    crds: Cluster, kube: Kube, mlflow: MlflowServer, namespace: str, store: Store, tmp_path: Path
) -> None:
    created = datetime.now(UTC)
    due = created.replace(minute=0, second=0, microsecond=0) + timedelta(hours=1, minutes=1)
    world = captured_world(store, due, model=f"m-{namespace}")
    captured_monitor(crds, mlflow, namespace, store, world.dest)
    first = one_pass(crds, kube, mlflow, namespace, "watch", now=format_time(due))
    snap = first.status["snapshot"]
    assert snap["phase"] == "Running", first.status
    ready = next(c for c in first.status["conditions"] if c["type"] == "SnapshotReady")
    assert ready["reason"] == "Materialising"
    assert kube.list(API_VERSION, "TrainingJob", namespace) == []
    job = kube.get("batch/v1", "Job", namespace, snap["job"])
    assert job is not None
    container = job["spec"]["template"]["spec"]["containers"][0]
    assert container["args"][0] == "snapshot"
    config = json.loads(container["args"][2])
    assert config["destination"] == world.dest and config["columns"] == FEATURES
    assert parse_time(config["start"]) == due - timedelta(hours=2)

    # The Job's pod: its command line with its environment, here.
    log = tmp_path / "termination-log"
    with pytest.MonkeyPatch.context() as mp:
        for k, v in _job_env(container, store).items():
            mp.setenv(k, v)
        assert snapshot.main(container["args"][2], termination_log=log) == 0
    result = json.loads(log.read_text())
    play_job_pod(crds, kube, namespace, job, log.read_text())

    kube_status = {"status": first.status}
    crds.kubectl(
        "patch",
        "dmon",
        "watch",
        "-n",
        namespace,
        "--subresource=status",
        "--type=merge",
        "-p",
        json.dumps(kube_status),
    )
    second = one_pass(
        crds, kube, mlflow, namespace, "watch", now=format_time(due + timedelta(seconds=20))
    )
    assert second.status["snapshot"]["phase"] == "Ready", second.status
    assert second.status["snapshot"]["digest"] == result["digest"]
    (tj,) = kube.list(API_VERSION, "TrainingJob", namespace)
    assert tj["metadata"]["name"] == second.status["snapshot"]["trainingJob"]
    assert tj["spec"]["dataset"] == {"uri": result["uri"], "version": result["digest"]}
    env = {e["name"]: e.get("value") for e in tj["spec"]["env"]}
    assert env["MODELWORKS_HOLDOUT_URI"] == result["holdoutUri"]
    assert tj["spec"]["storage"]["credentials"]["secretName"] == SECRET
    _, train = read_snapshot(store, result["uri"])
    _, holdout = read_snapshot(store, result["holdoutUri"])
    assert rows_of(train, holdout) == world.expected

    # A second run of the same Job reuses the snapshot.
    with pytest.MonkeyPatch.context() as mp:
        for k, v in _job_env(container, store).items():
            mp.setenv(k, v)
        assert snapshot.main(container["args"][2], termination_log=log) == 0
    assert json.loads(log.read_text()) == {**result, "reused": True}


def _churn_module() -> Any:
    spec = importlib.util.spec_from_file_location("churn_trainer", TRAINER)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_example_trainer_reads_the_snapshot_and_logs_it(
    store: Store, mlflow: MlflowServer, tmp_path: Path
) -> None:
    churn = _churn_module()
    end = datetime.now(UTC).replace(microsecond=0)
    table = churn.synthetic_churn(400, 11)
    dest = f"s3://{store.bucket}/{uuid.uuid4().hex[:12]}"
    rows = [
        {"id": uuid.uuid4().hex, "time": end - timedelta(minutes=1 + i % 50), **r}
        for i, r in enumerate(table.drop(columns=[churn.TARGET]).to_dict("records"))
    ]
    write_capture(store.filesystem(), dest, rows, "churn")
    labels = {r["id"]: float(y) for r, y in zip(rows, table[churn.TARGET], strict=True)}
    write_feedback(store.filesystem(), dest, labels, end - timedelta(seconds=10))
    config = Config(
        destination=dest,
        namespace="ns",
        monitor="watch",
        start=format_time(end - timedelta(hours=1)),
        end=format_time(end),
        target=churn.TARGET,
        columns=(*churn.NUMERIC, *churn.CATEGORICAL),
        model="churn",
    )
    made = snapshot.materialise(store.filesystem(), config, format_time(end))
    client = mlflow_client(mlflow.uri)
    experiment = client.get_experiment_by_name("snapshot-trainer")
    exp_id = (
        experiment.experiment_id if experiment else client.create_experiment("snapshot-trainer")
    )
    run_id = client.create_run(exp_id).info.run_id
    env = {
        **os.environ,
        **store.env(),
        "MLFLOW_TRACKING_URI": mlflow.uri,
        "MLFLOW_RUN_ID": run_id,
        "MODELWORKS_DATASET_URI": made["uri"],
        "MODELWORKS_DATASET_VERSION": made["digest"],
        "MODELWORKS_HYPERPARAMETERS": json.dumps({"n_estimators": 20}),
    }
    proc = subprocess.run(
        [sys.executable, str(TRAINER)], env=env, capture_output=True, text=True, timeout=600
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    run = client.get_run(run_id)
    (given,) = run.inputs.dataset_inputs
    assert given.dataset.digest == made["digest"]
    assert made["uri"].removeprefix("s3://") in given.dataset.source
    assert run.data.metrics["train_rows"] + run.data.metrics["val_rows"] == made["rows"]
