"""DriftMonitor on live traffic, and the loop closed: drift -> retraining -> rollout.

The TrainingJob sample trains the model on the real node, the ModelDeployment serves it,
and the test sends traffic through the Service: first rows drawn like the training
data (no drift), then rows with two features shifted (drift on those two only). The
monitor declares drift, starts a retraining TrainingJob copied from the sample, the new
version takes the alias, and the ModelDeployment rolls it out.
"""

from __future__ import annotations

import functools
import json
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import pytest
import yaml

from modelworks.clients.prometheus import query
from tests.e2e.conftest import Prometheus
from tests.e2e.test_modeldeployment import post
from tests.e2e.test_trainingjob import sample, wait
from tests.support import ROOT, Cluster, Operator, eventually, mlflow_client

pytestmark = pytest.mark.e2e
SAMPLES = ROOT / "manifests" / "samples"
SHIFTED = ("tenure_months", "monthly_charges")
T = TypeVar("T")


def payload(seed: int, shifted: bool, rows: int = 50) -> dict[str, Any]:
    """Churn features as the trainer draws them; ``shifted`` moves two features only."""
    from examples.trainers.churn import TARGET, synthetic_churn

    df = synthetic_churn(rows, seed).drop(columns=[TARGET])
    if shifted:
        df["tenure_months"] = df["tenure_months"] * 3 + 40
        df["monthly_charges"] = (df["monthly_charges"] + 60).clip(upper=200)
    return {"dataframe_split": json.loads(df.to_json(orient="split", index=False))}


class Load:
    """Requests in a loop; the payload can be switched while it runs."""

    def __init__(self, url: str) -> None:
        self.url, self.shifted, self.codes = url, False, [0, 0]
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        seed = 1000
        while not self._stop.is_set():
            seed += 1
            code, _ = post(self.url, payload(seed, self.shifted))
            self.codes[0 if code == 200 else 1] += 1
            self._stop.wait(0.1)

    def __enter__(self) -> Load:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join(timeout=15)


def explain(cluster: Cluster, ns: str, op: Operator) -> str:
    out = cluster.kubectl("get", "modelworks,pods", "-n", ns, "-o", "wide", check=False).stdout
    dmon = cluster.kubectl("get", "dmon", "-n", ns, "-o", "yaml", check=False).stdout
    return f"{out}\n--- dmon ---\n{dmon[-4000:]}\n--- operator ---\n{op.log()[-3000:]}"


def until(cluster: Cluster, ns: str, op: Operator, probe: Callable[[], T | None], **poll: Any) -> T:
    """``eventually(probe, interval=2, **poll)``; on a timeout the objects, the monitor and
    the operator's log are in the message."""
    try:
        return eventually(probe, interval=2, **poll)
    except AssertionError as exc:
        raise AssertionError(f"{exc}\n{explain(cluster, ns, op)}") from None


def verdict_of(cluster: Cluster, ns: str, name: str, samples: int) -> str | None:
    """The monitor's verdict once it has scored ``samples`` rows, with drift declared."""
    o = cluster.get("dmon", name, ns)
    st = (o or {}).get("status") or {}
    if (st.get("samples") or 0) < samples:
        return None
    declared = any(
        c["type"] == "DriftDetected" and c["status"] == "True" for c in st.get("conditions") or []
    )
    return "Declared" if declared else st.get("verdict")


def test_drift_on_two_features_retrains_and_rolls_out(
    cluster: Cluster,
    ns: str,
    image: str,
    mlflow_uri: str,
    operator: Operator,
    prometheus: Prometheus,
) -> None:
    tj = sample(ns, image)
    model = tj["spec"]["model"]["name"]
    cluster.apply(tj)
    wait(cluster, ns, "churn-train", "Succeeded", operator)

    mdep = yaml.safe_load((SAMPLES / "modeldeployment.yaml").read_text())
    mdep["metadata"]["namespace"] = ns
    mdep["spec"]["model"]["name"] = model
    mdep["spec"]["image"] = image
    mdep["spec"]["rollout"] = {"strategy": "RollingUpdate", "progressDeadlineSeconds": 120}
    # One pod, so the pod counts below are exact: the sample autoscales, and with the
    # cluster's metrics-server its HPA now acts on the test's load.
    mdep["spec"].pop("autoscaling", None)
    mdep["spec"]["replicas"] = 1
    mdep["spec"]["resources"] = {
        "requests": {"cpu": "100m", "memory": "384Mi"},
        "limits": {"memory": "1Gi"},
    }
    cluster.apply(mdep)
    cluster.kubectl("wait", "mdep/churn", "-n", ns, "--for=condition=Ready", "--timeout=240s")

    dmon = yaml.safe_load((SAMPLES / "driftmonitor.yaml").read_text())
    dmon["metadata"]["namespace"] = ns
    dmon["spec"].update(
        {
            "interval": "10s",
            "window": "20s",
            "minSamples": 200,
            "consecutiveWindows": 2,
            "driftShare": 0.3,  # two of six features and the score: 3 of 8
        }
    )
    # The same check from a real Prometheus that scrapes the pods (no retraining: one
    # monitor closes the loop), to show both sources agree.
    prom = json.loads(json.dumps(dmon))
    prom["metadata"]["name"] = "churn-drift-prom"
    prom["spec"].pop("retrain")
    prom["spec"]["target"]["prometheus"] = {"url": prometheus.url}
    ip = cluster.get("service", "churn", ns)["spec"]["clusterIP"]  # type: ignore[index]
    watch = functools.partial(until, cluster, ns, operator)
    with Load(f"http://{ip}/invocations") as load:
        cluster.apply(dmon)
        cluster.apply(prom)
        calm = watch(
            lambda: (
                (o := cluster.get("dmon", "churn-drift", ns))
                and (o.get("status") or {}).get("verdict") == "NoDrift"
                and o["status"]["samples"] >= 200
                and o
            ),
            timeout=120,
            what="a window without drift",
        )
        st = calm["status"]
        assert st["servedVersion"] == "1" and st["pods"] == 1
        assert not [f["name"] for f in st["features"] if f.get("drifted")]
        assert not [p["name"] for p in st["predictions"] if p.get("drifted")]
        assert {f["name"] for f in st["features"]} == {
            "tenure_months",
            "monthly_charges",
            "support_calls",
            "age",
            "contract",
            "payment_method",
        }
        watch(
            lambda: verdict_of(cluster, ns, "churn-drift-prom", 200) == "NoDrift",
            timeout=60,
            what="the Prometheus-fed monitor to see no drift",
        )
        served = query(prometheus.url, 'modelworks_feature_bucket_total{feature="age"}')
        assert served and {labels["modeldeployment"] for labels, _ in served} == {"churn"}

        load.shifted = True
        drifting = watch(
            lambda: (
                (o := cluster.get("dmon", "churn-drift", ns))
                and any(
                    c["type"] == "DriftDetected" and c["status"] == "True"
                    for c in o["status"].get("conditions") or []
                )
                and o
            ),
            timeout=150,
            what="drift to be declared",
        )
        drifted = {f["name"] for f in drifting["status"]["features"] if f.get("drifted")}
        assert drifted == set(SHIFTED), drifting["status"]["features"]
        # Prediction drift: older, richer customers churn less; the score's bins move.
        outputs = drifting["status"]["predictions"]
        assert {p["name"] for p in outputs} == {"prediction", "score"}
        assert "score" in {p["name"] for p in outputs if p.get("drifted")}, outputs
        from_prometheus = watch(
            lambda: (
                verdict_of(cluster, ns, "churn-drift-prom", 200) == "Declared"
                and cluster.get("dmon", "churn-drift-prom", ns)
            ),
            timeout=90,
            what="the Prometheus-fed monitor to declare drift",
        )
        st = from_prometheus["status"]
        assert {f["name"] for f in st["features"] if f.get("drifted")} == set(SHIFTED)
        assert st["pods"] == 1 and st["windowStart"]
        assert "lastRetrain" not in st
        assert operator.metric("modelworks_drift_detected", monitor="churn-drift") == 1
        assert (
            operator.metric(
                "modelworks_drift_feature_drifted", monitor="churn-drift", feature="tenure_months"
            )
            == 1
        )
        assert (
            operator.metric(
                "modelworks_drift_feature_drifted", monitor="churn-drift", feature="age"
            )
            == 0
        )

        # The loop closes: a retraining TrainingJob, a new version, the alias, a rollout.
        retrain = eventually(
            lambda: (
                (o := cluster.get("dmon", "churn-drift", ns))
                and (o["status"].get("lastRetrain") or {}).get("trainingJob")
            ),
            timeout=60,
            what="a retraining to start",
        )
        tj2 = cluster.get("tj", str(retrain), ns)
        assert tj2 is not None
        assert tj2["metadata"]["labels"]["modelworks.dev/drift-monitor"] == "churn-drift"
        assert tj2["metadata"]["labels"]["modelworks.dev/retrain-of"] == "churn-train"
        evidence = json.loads(tj2["metadata"]["annotations"]["modelworks.dev/drift-evidence"])
        assert {f["name"] for f in evidence["features"]} == set(SHIFTED)
        wait(cluster, ns, str(retrain), "Succeeded", operator)
        watch(
            lambda: (
                (o := cluster.get("mdep", "churn", ns))
                and o["status"].get("stableVersion") == "2"
                and o["status"]["phase"] == "Available"
            ),
            timeout=240,
            what="the retrained version to roll out",
        )
    assert load.codes[1] == 0, f"{load.codes[1]} failed requests"
    # Cooldown (1h in the sample): one retraining, however long the drift lasts.
    tjs = cluster.kubectl(
        "get", "tj", "-n", ns, "-l", "modelworks.dev/drift-monitor=churn-drift", "-o", "name"
    ).stdout.split()
    assert tjs == [f"trainingjob.modelworks.dev/{retrain}"]
    reasons = cluster.kubectl(
        "get",
        "events",
        "-n",
        ns,
        "--field-selector",
        "involvedObject.name=churn-drift",
        "-o",
        "jsonpath={.items[*].reason}",
    ).stdout.split()
    assert {"DriftDetected", "RetrainStarted"} <= set(reasons), reasons


def test_batch_check_runs_as_a_job_with_exact_tests(
    cluster: Cluster, ns: str, image: str, mlflow_uri: str, operator: Operator, tmp: Path
) -> None:
    """Reference and current datasets as MLflow artifacts; the Job scores them (exact KS on
    raw values) and the monitor's status carries the result."""
    from examples.trainers.churn import TARGET, synthetic_churn

    ref = synthetic_churn(5000, seed=1).drop(columns=[TARGET])
    cur = synthetic_churn(5000, seed=2).drop(columns=[TARGET])
    cur["age"] = cur["age"] + 15  # one feature shifted
    ref.to_csv(tmp / "reference.csv", index=False)
    cur.to_parquet(tmp / "current.parquet")
    client = mlflow_client(mlflow_uri)
    exp = client.get_experiment_by_name("batch-drift") or None
    exp_id = exp.experiment_id if exp else client.create_experiment("batch-drift")
    run = client.create_run(exp_id)
    client.log_artifact(run.info.run_id, str(tmp / "reference.csv"), "data")
    client.log_artifact(run.info.run_id, str(tmp / "current.parquet"), "data")
    client.set_terminated(run.info.run_id)
    base = f"runs:/{run.info.run_id}/data"
    cluster.apply(
        {
            "apiVersion": "modelworks.dev/v1alpha1",
            "kind": "DriftMonitor",
            "metadata": {"name": "nightly", "namespace": ns},
            "spec": {
                "batch": {"currentUri": f"{base}/current.parquet"},
                "reference": {"datasetUri": f"{base}/reference.csv"},
                "method": "ks",
                "correction": "bonferroni",
                "driftShare": 0.1,
                "interval": "1h",
            },
        }
    )
    done = until(
        cluster,
        ns,
        operator,
        lambda: (
            (o := cluster.get("dmon", "nightly", ns))
            and (o.get("status") or {}).get("lastCheckTime")
            and o
        ),
        timeout=240,
        what="the batch check to report",
    )
    st = done["status"]
    assert st["verdict"] == "Drift" and st["phase"] == "Drifting" and "checkJob" not in st
    by_name = {f["name"]: f for f in st["features"]}
    assert {n for n, f in by_name.items() if f.get("drifted")} == {"age"}
    assert by_name["age"]["method"] == "ks" and not by_name["age"].get("approximate")
    assert by_name["contract"]["method"] == "chi2"  # KS needs order: categorical falls back
    assert st["samples"] == 5000
    jobs = cluster.kubectl(
        "get", "jobs", "-n", ns, "-l", "modelworks.dev/driftmonitor=nightly", "-o", "name"
    ).stdout.split()
    assert len(jobs) == 1, jobs
