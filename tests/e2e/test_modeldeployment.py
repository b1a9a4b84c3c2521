"""ModelDeployment with real model servers: serve the trained sample, follow the alias through
a canary, and roll a broken version back while the old one keeps answering.

The operator runs on the host (as ``make demo`` runs it); the TrainingJob sample trains the
model on the real node, and the serving pods load it from the MLflow server.
"""

from __future__ import annotations

import json
import tempfile
import threading
import urllib.error
import urllib.request
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml

from modelworks.clients.mlflow import Registry
from tests.e2e.test_trainingjob import sample, wait
from tests.support import ROOT, Cluster, Operator, eventually, mlflow_client

pytestmark = pytest.mark.e2e
SAMPLE = ROOT / "manifests" / "samples" / "modeldeployment.yaml"


def rows(n: int, seed: int) -> dict[str, Any]:
    """A dataframe_split payload of churn features, as the trainer generates them."""
    from examples.trainers.churn import TARGET, synthetic_churn

    df = synthetic_churn(n, seed).drop(columns=[TARGET])
    return {"dataframe_split": json.loads(df.to_json(orient="split", index=False))}


def post(url: str, payload: dict[str, Any], timeout: float = 10.0) -> tuple[int, Any]:
    req = urllib.request.Request(
        url, data=json.dumps(payload).encode(), headers={"Content-Type": "application/json"}
    )
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode(errors="replace")
    except OSError as exc:
        return 0, str(exc)


class Traffic:
    """Requests to the Service in a loop, every answer's status counted."""

    def __init__(self, url: str, payload: dict[str, Any], pause: float = 0.05) -> None:
        self.url, self.payload, self.pause = url, payload, pause
        self.codes: Counter[int] = Counter()
        self.failures: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            code, body = post(self.url, self.payload)
            self.codes[code] += 1
            if code != 200 and len(self.failures) < 5:
                self.failures.append(f"{code}: {str(body)[:200]}")
            self._stop.wait(self.pause)

    def __enter__(self) -> Traffic:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join(timeout=15)


def broken_version(uri: str, model: str) -> str:
    """A registered version whose model cannot load (its loader module does not exist)."""
    client = mlflow_client(uri)
    exp = client.get_experiment_by_name("broken-models")
    exp_id = exp.experiment_id if exp else client.create_experiment("broken-models")
    run = client.create_run(exp_id)
    with tempfile.TemporaryDirectory() as tmp:
        model_dir = Path(tmp) / "model"
        model_dir.mkdir()
        (model_dir / "MLmodel").write_text(
            yaml.safe_dump(
                {
                    "flavors": {
                        "python_function": {
                            "loader_module": "modelworks_no_such_module",
                            "python_version": "3.11",
                        }
                    }
                }
            )
        )
        client.log_artifacts(run.info.run_id, str(model_dir), "model")
    client.set_terminated(run.info.run_id)
    registry = Registry(uri)
    return registry.register(model, registry.get_run(run.info.run_id), "model", tags={}).version


def mdep_state(cluster: Cluster, ns: str) -> dict[str, Any]:
    obj = cluster.get("mdep", "churn", ns)
    assert obj is not None
    return obj


def explain(cluster: Cluster, ns: str, op: Operator) -> str:
    pods = cluster.kubectl("get", "pods", "-n", ns, "-o", "wide", check=False).stdout
    logs = cluster.kubectl(
        "logs", "-n", ns, "-l", "app.kubernetes.io/component=server", "--tail=20", check=False
    ).stdout
    obj = cluster.kubectl("get", "mdep", "churn", "-n", ns, "-o", "yaml", check=False).stdout
    return f"{pods}\n--- server logs ---\n{logs}\n--- mdep ---\n{obj[-3500:]}\n--- operator ---\n{op.log()[-3000:]}"


def test_serves_the_trained_model_follows_the_alias_and_rolls_back_a_broken_version(
    cluster: Cluster, ns: str, image: str, mlflow_uri: str, operator: Operator
) -> None:
    # 1. The TrainingJob sample trains and registers version 1 as champion.
    tj = sample(ns, image)
    model = tj["spec"]["model"]["name"]
    cluster.apply(tj)
    wait(cluster, ns, "churn-train", "Succeeded", operator)

    # 2. The ModelDeployment sample, pointed at this test's model, serves it.
    obj = yaml.safe_load(SAMPLE.read_text())
    obj["metadata"]["namespace"] = ns
    spec = obj["spec"]
    spec["model"]["name"] = model
    spec["image"] = image
    spec["rollout"]["steps"] = [{"weight": 50, "pauseSeconds": 10}]
    # On two shared cores the first requests to a fresh process are the slow ones.
    spec["rollout"]["analysis"] = {"maxErrorRate": 0.02, "maxLatencyRatio": 5, "minRequests": 20}
    spec["rollout"]["progressDeadlineSeconds"] = 60
    spec["resources"] = {
        "requests": {"cpu": "100m", "memory": "384Mi"},
        "limits": {"memory": "1Gi"},
    }
    cluster.apply(obj)
    try:
        cluster.kubectl("wait", "mdep/churn", "-n", ns, "--for=condition=Ready", "--timeout=240s")
    except Exception as exc:
        raise AssertionError(f"{exc}\n{explain(cluster, ns, operator)}") from None
    status = mdep_state(cluster, ns)["status"]
    assert status["stableVersion"] == "1" and status["resolved"]["alias"] == "champion"
    assert status["url"] == f"http://churn.{ns}.svc.cluster.local"

    # An HTTP request through the Service answers as the model loaded locally does.
    import mlflow.pyfunc
    import pandas as pd

    ip = cluster.get("service", "churn", ns)["spec"]["clusterIP"]  # type: ignore[index]
    url = f"http://{ip}/invocations"
    payload = rows(50, seed=7)
    code, body = post(url, payload)
    assert code == 200, body
    mlflow.set_tracking_uri(mlflow_uri)
    mlflow.set_registry_uri(mlflow_uri)  # not the one an earlier test's Registry set
    local = mlflow.pyfunc.load_model(f"models:/{model}/1")
    frame = pd.DataFrame(**payload["dataframe_split"])
    assert np.allclose(body["predictions"], local.predict(frame))  # [P(0), P(1)] per row

    client = mlflow_client(mlflow_uri)
    v1 = client.get_model_version(model, "1")
    with Traffic(url, rows(20, seed=11)) as traffic:
        # 3. Moving the alias (no change in Git) rolls version 2 out through the canary.
        v2 = client.create_model_version(
            model,
            v1.source,
            run_id=v1.run_id,
            # an MLflow 3 LoggedModel: source models:/<model id>
            model_id=v1.source.removeprefix("models:/")
            if v1.source.startswith("models:/m-")
            else None,
        ).version
        client.set_registered_model_alias(model, "champion", v2)
        try:
            canary = eventually(
                lambda: cluster.get("deployment", "churn-canary", ns),
                timeout=60,
                interval=1,
                what="the canary Deployment",
            )
            promoted = eventually(
                lambda: (
                    (o := mdep_state(cluster, ns))["status"].get("stableVersion") == v2
                    and o["status"]["phase"] == "Available"
                    and o
                ),
                timeout=300,
                interval=2,
                what=f"version {v2} to be promoted",
            )
        except AssertionError as exc:
            raise AssertionError(f"{exc}\n{explain(cluster, ns, operator)}") from None
        assert (
            canary["spec"]["template"]["metadata"]["labels"]["modelworks.dev/model-version"] == v2
        )
        assert [h["version"] for h in promoted["status"]["history"]] == ["1", v2]
        eventually(
            lambda: cluster.get("deployment", "churn-canary", ns) is None,
            timeout=60,
            what="the canary Deployment to be removed",
        )

        # 4. A version that cannot load never gets ready: rolled back, the old one pinned.
        v3 = broken_version(mlflow_uri, model)
        client.set_registered_model_alias(model, "champion", v3)
        try:
            rolled = eventually(
                lambda: (
                    (o := mdep_state(cluster, ns))["status"].get("rollback", {}).get("fromVersion")
                    == v3
                    and o
                ),
                timeout=240,
                interval=2,
                what=f"version {v3} to be rolled back",
            )
        except AssertionError as exc:
            raise AssertionError(f"{exc}\n{explain(cluster, ns, operator)}") from None
        eventually(
            lambda: cluster.get("deployment", "churn-canary", ns) is None,
            timeout=60,
            what="the broken canary to be removed",
        )
        settled = mdep_state(cluster, ns)["status"]
    assert traffic.codes[200] > 100, traffic.codes
    assert set(traffic.codes) == {200}, f"{traffic.codes} {traffic.failures}"

    rb = rolled["status"]["rollback"]
    assert (rb["toVersion"], rb["reason"]) == (v2, "ProgressDeadlineExceeded"), rb
    assert settled["stableVersion"] == v2 and settled["phase"] == "Degraded"
    degraded = next(c for c in settled["conditions"] if c["type"] == "Degraded")
    assert degraded["status"] == "True" and v3 in degraded["message"]
    dep = cluster.get("deployment", "churn", ns)
    assert dep["spec"]["template"]["metadata"]["labels"]["modelworks.dev/model-version"] == v2  # type: ignore[index]
    code, body = post(url, payload)
    assert code == 200 and np.allclose(body["predictions"], local.predict(frame))
    reasons = cluster.kubectl(
        "get",
        "events",
        "-n",
        ns,
        "--field-selector",
        "involvedObject.name=churn",
        "-o",
        "jsonpath={.items[*].reason}",
    ).stdout.split()
    assert {"Serving", "RolloutStarted", "Promoted", "RolledBack"} <= set(reasons), reasons
