"""The loop closed on real data: the world changes, the model learns it.

Version 1 is trained on the old world and served with data capture on (100 %) to the
real object store. Traffic then comes from a changed world (``changed_world`` of the
example trainer: inputs shifted *and* a different reason to churn), and a labelling
pipeline posts each answer's true label to ``/feedback`` a few seconds later. The
DriftMonitor sees prediction drift and a measured drop in ROC AUC, snapshots the
captured and labelled window, retrains on that snapshot only, version 2 registers and
the canary rolls it out. The test then checks, from the stored data itself, what each
part claimed: captured ids = answered ids, the monitor's AUC = scikit-learn's on the
stored Parquet, the snapshot's rows are captured rows with the digest the TrainingJob
trained on, version 2 beats version 1 on a fresh sample of the new world, and no
credential is anywhere it could leak.
"""

from __future__ import annotations

import base64
import hashlib
import importlib.util
import json
import secrets
import threading
import time
import urllib.parse
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import pandas as pd
import pytest
import yaml

from tests.e2e.test_driftmonitor import until
from tests.e2e.test_trainingjob import sample, wait
from tests.support import (
    ROOT,
    Cluster,
    Operator,
    eventually,
    mlflow_client,
    object_store,
    object_store_secret,
)

pytestmark = pytest.mark.e2e
SAMPLES = ROOT / "manifests" / "samples"
TOKEN_SECRET = "feedback"
LABEL_DELAY = 3.0
CAPTURE_PARTS = ("model", "version", "date", "hour")
# Rows younger than this at a check wait for the next one: by then every one of them is
# flushed by its pod and labelled, so the check and the stored data agree.
QUALITY_DELAY = 30


def hack_module(name: str) -> ModuleType:
    """A script of hack/ as a module (traffic.py sends, score.py scores)."""
    spec = importlib.util.spec_from_file_location(name, ROOT / "hack" / f"{name}.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class ChangedWorld:
    """Requests from the changed world in a loop; each answer's labels posted later."""

    def __init__(self, base: str, token: str, rows: int = 20) -> None:
        self.t = hack_module("traffic")
        self.base, self.token, self.rows = base, token, rows
        self.answered: set[str] = set()
        self.codes = [0, 0]
        self.labelled = 0
        self._pending: list[tuple[float, list[dict[str, Any]]]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _label(self, due_before: float) -> None:
        """Post the labels that are due, in one request (as a labelling pipeline batches)."""
        due = [label for when, batch in self._pending if when <= due_before for label in batch]
        self._pending = [p for p in self._pending if p[0] > due_before]
        for i in range(0, len(due), 5000):
            chunk = due[i : i + 5000]
            headers = {"Content-Type": "application/json", "Authorization": f"Bearer {self.token}"}
            body = json.dumps({"labels": chunk}).encode()
            status, _ = self.t.post(f"{self.base}/feedback", body, headers)
            self.labelled += len(chunk) if status == 200 else 0

    def _run(self) -> None:
        seed, last = 50_000, time.monotonic()
        while not self._stop.is_set():
            seed += 1
            df = self.t.frame(seed, self.rows, False, "changed")
            status, rid = self.t.post(
                f"{self.base}/invocations", self.t.payload(df), {"Content-Type": "application/json"}
            )
            self.codes[0 if status == 200 else 1] += 1
            if status == 200 and rid:
                ids = self.t.row_ids(rid, len(df))
                self.answered.update(ids)
                labels = [
                    {"inference_id": i, "label": int(y)}
                    for i, y in zip(ids, df["churned"], strict=True)
                ]
                self._pending.append((time.monotonic() + LABEL_DELAY, labels))
            if time.monotonic() - last >= 2.0:
                self._label(time.monotonic())
                last = time.monotonic()
            self._stop.wait(0.1)
        self._label(float("inf"))

    def __enter__(self) -> ChangedWorld:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join(timeout=60)


def condition(obj: dict[str, Any] | None, type_: str) -> dict[str, Any]:
    for c in ((obj or {}).get("status") or {}).get("conditions") or []:
        if c["type"] == type_:
            return dict(c)
    return {}


def read_parquet(fs: Any, prefix: str, partitions: tuple[str, ...] = ()) -> Any:
    """Every Parquet file under ``prefix`` (bucket/key) as one table; the hive partition
    columns named are read as strings (docs/data-capture.md)."""
    import pyarrow as pa
    import pyarrow.dataset as ds

    parts = ds.partitioning(pa.schema([(p, pa.string()) for p in partitions]), flavor="hive")
    return ds.dataset(prefix, filesystem=fs, format="parquet", partitioning=parts).to_table()


def leaks(text: str, secret: str) -> list[str]:
    """Which encodings of ``secret`` appear in ``text``."""
    forms = {
        "plain": secret,
        "base64": base64.b64encode(secret.encode()).decode(),
        "url": urllib.parse.quote(secret, safe=""),
    }
    return [name for name, form in forms.items() if form in text]


def everything_said(cluster: Cluster, ns: str, op: Operator, mlflow_uri: str, model: str) -> str:
    """Status, Events, the operator's log, every pod's log and the runs' tags and params."""
    parts = [
        cluster.kubectl(
            "get", "modelworks,jobs,deployments,pods,events", "-n", ns, "-o", "yaml"
        ).stdout,
        op.log(),
    ]
    pods = cluster.kubectl("get", "pods", "-n", ns, "-o", "name").stdout.split()
    for pod in pods:
        parts.append(cluster.kubectl("logs", pod, "-n", ns, "--all-containers", check=False).stdout)
    client = mlflow_client(mlflow_uri)
    for mv in client.search_model_versions(f"name='{model}'"):
        run = client.get_run(mv.run_id)
        parts.append(json.dumps({"tags": run.data.tags, "params": run.data.params}))
        parts.append(json.dumps({"source": mv.source, "tags": dict(mv.tags)}))
    return "\n".join(parts)


def test_the_loop_learns_the_changed_world(
    cluster: Cluster, ns: str, image: str, mlflow_uri: str, operator: Operator, tmp: Path
) -> None:
    store = object_store(cluster)
    storage = object_store_secret(cluster, ns)
    token = secrets.token_urlsafe(24)
    cluster.kubectl(
        "create", "secret", "generic", TOKEN_SECRET, "-n", ns, f"--from-literal=token={token}"
    )
    destination = f"s3://{store.bucket}/loop-{ns}"
    tj = sample(ns, image, storage=storage)
    model = tj["spec"]["model"]["name"]
    cluster.apply(tj)
    wait(cluster, ns, "churn-train", "Succeeded", operator)

    mdep = yaml.safe_load((SAMPLES / "modeldeployment.yaml").read_text())
    mdep["metadata"]["namespace"] = ns
    mdep["spec"].pop("autoscaling")
    mdep["spec"].update(
        {
            "replicas": 1,
            "image": image,
            "storage": storage,
            "dataCapture": {
                "samplingPercent": 100,
                "destination": destination,
                "flushInterval": "5s",
                "feedback": {"token": {"secretName": TOKEN_SECRET}},
            },
            "resources": {
                "requests": {"cpu": "100m", "memory": "384Mi"},
                "limits": {"memory": "1Gi"},
            },
        }
    )
    mdep["spec"]["model"]["name"] = model
    mdep["spec"]["rollout"]["steps"] = [{"weight": 50, "pauseSeconds": 20}]
    mdep["spec"]["rollout"]["analysis"]["minRequests"] = 10
    cluster.apply(mdep)
    cluster.kubectl("wait", "mdep/churn", "-n", ns, "--for=condition=Ready", "--timeout=240s")

    dmon = yaml.safe_load((SAMPLES / "driftmonitor.yaml").read_text())
    dmon["metadata"]["namespace"] = ns
    dmon["spec"].update(
        {
            "storage": storage,
            "interval": "15s",
            "window": "2m",
            "minSamples": 200,
            "consecutiveWindows": 1,
            "driftShare": 0.3,
            "performance": {
                "metrics": ["roc_auc"],
                "window": "10m",
                "labelDelay": f"{QUALITY_DELAY}s",
                "interval": "20s",
                "minLabelledRows": 300,
                "thresholds": [{"metric": "roc_auc", "maxDrop": 0.1, "baselineMetric": "val_auc"}],
            },
        }
    )
    dmon["spec"]["retrain"]["dataset"] = {
        "source": "Captured",
        "window": "30m",
        "minRows": 1000,
        "target": "churned",
    }
    ip = cluster.get("service", "churn", ns)["spec"]["clusterIP"]  # type: ignore[index]
    watch = lambda probe, **kw: until(cluster, ns, operator, probe, **kw)  # noqa: E731
    with ChangedWorld(f"http://{ip}", token) as world:
        eventually(lambda: world.labelled >= 1500, timeout=180, what="1500 labelled answers")
        cluster.apply(dmon)
        degraded = watch(
            lambda: (
                (o := cluster.get("dmon", "churn-drift", ns))
                and condition(o, "ModelQuality").get("status") == "False"
                and o
            ),
            timeout=240,
            what="the monitor to measure the drop in ROC AUC",
        )
        retrain = watch(
            lambda: (
                (o := cluster.get("dmon", "churn-drift", ns))
                and (o["status"].get("lastRetrain") or {}).get("trainingJob")
            ),
            timeout=240,
            what="a retraining on the captured window",
        )
        wait(cluster, ns, str(retrain), "Succeeded", operator)
        watch(
            lambda: (
                (o := cluster.get("mdep", "churn", ns))
                and o["status"].get("stableVersion") == "2"
                and o["status"]["phase"] == "Available"
            ),
            timeout=300,
            what="version 2 to roll out through the canary",
        )
    assert world.codes[1] == 0, f"{world.codes[1]} failed requests"
    fs = store.filesystem()
    bucket_prefix = destination.removeprefix("s3://")

    # Prediction drift beside feature drift, and the quality drop, measured.
    st = degraded["status"]
    assert any(p.get("drifted") for p in st.get("predictions") or []), st.get("predictions")
    auc = next(m for m in st["performance"]["metrics"] if m["metric"] == "roc_auc")
    assert auc["value"] < auc["baseline"] - 0.1, auc

    # The monitor's AUC is scikit-learn's on the stored capture and labels of its window.
    from sklearn.metrics import roc_auc_score

    # At 100 % sampling, every answered id is captured (pods flush on stop and every
    # flushInterval), and nothing else is.
    eventually(
        lambda: (
            set(
                read_parquet(fs, f"{bucket_prefix}/capture", CAPTURE_PARTS)
                .column("inference_id")
                .to_pylist()
            )
            == world.answered
        ),
        timeout=60,
        what="the captured ids to equal the answered ids",
    )
    captured = read_parquet(fs, f"{bucket_prefix}/capture", CAPTURE_PARTS).to_pandas()
    labels = read_parquet(fs, f"{bucket_prefix}/feedback", ("date", "hour")).to_pandas()
    window = st["performance"]
    joined = captured.merge(
        labels.sort_values("time").drop_duplicates("inference_id", keep="last")[
            ["inference_id", "label"]
        ],
        on="inference_id",
    )
    start = np.datetime64(window["windowStart"].rstrip("Z"))
    end = np.datetime64(window["windowEnd"].rstrip("Z")) - np.timedelta64(QUALITY_DELAY, "s")
    times = joined["time"].dt.tz_localize(None).to_numpy()
    in_window = joined[(times >= start) & (times < end) & (joined["version"].astype(str) == "1")]
    assert len(in_window) == window["labelledRows"]
    scores = np.stack(in_window["scores"].to_numpy())[:, 1]
    assert auc["value"] == pytest.approx(roc_auc_score(in_window["label"], scores), abs=1e-9)
    print(
        f"monitor: roc_auc {auc['value']:.3f} on {window['labelledRows']} labelled rows "
        f"(training val_auc {auc['baseline']:.3f}); drifted outputs "
        f"{[p['name'] for p in st['predictions'] if p.get('drifted')]}"
    )

    # Version 2 trained on the snapshot, and only on it.
    dm = cluster.get("dmon", "churn-drift", ns)
    snap = dm["status"]["snapshot"]  # type: ignore[index]
    tj2 = cluster.get("tj", str(retrain), ns)
    assert tj2["spec"]["dataset"] == {"uri": snap["uri"], "version": snap["digest"]}  # type: ignore[index]
    train = read_parquet(fs, snap["uri"].removeprefix("s3://"))
    holdout = read_parquet(fs, snap["holdoutUri"].removeprefix("s3://"))
    digest = hashlib.sha256(
        fs.open_input_file(snap["uri"].removeprefix("s3://")).readall()
        + fs.open_input_file(snap["holdoutUri"].removeprefix("s3://")).readall()
    ).hexdigest()
    assert snap["digest"] == f"sha256-{digest[:16]}"
    # Its rows are captured rows with their labels: each (features, label) of the snapshot
    # is a stored capture row joined with its stored label.
    rows = pd.concat([train.to_pandas(), holdout.to_pandas()])
    assert len(rows) == snap["rows"] + snap["holdoutRows"]
    features = [c for c in rows.columns if c != "churned"]
    stored = joined.rename(columns={"label": "churned"})[[*features, "churned"]]
    stored["churned"] = stored["churned"].astype(rows["churned"].dtype)
    matched = rows.merge(
        stored.drop_duplicates(), on=[*features, "churned"], how="left", indicator=True
    )
    assert (matched["_merge"] == "both").all(), matched[matched["_merge"] != "both"].head()
    print(f"snapshot {snap['digest']}: {snap['rows']} rows, {snap['holdoutRows']} held out")

    # On a fresh sample of the new world, version 2 is clearly better than version 1.
    import mlflow

    mlflow.set_tracking_uri(mlflow_uri)
    score = hack_module("score")
    v1, v2 = (score.auc(f"models:/{model}/{v}", 3000, 424242) for v in ("1", "2"))
    print(f"new world ROC AUC: version 1 {v1:.3f}, version 2 {v2:.3f}")
    assert v2 > v1 + 0.2, (v1, v2)

    # No credential anywhere it could leak.
    said = everything_said(cluster, ns, operator, mlflow_uri, model)
    for secret in (store.secret_access_key, token):
        assert leaks(said, secret) == []
