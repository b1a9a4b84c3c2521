"""TrainingJob with pods that really run: train, gate, register; OOM; two replicas.

The operator runs on the host (as `make demo` runs it); the training pods run the
project image on the real node and log to the MLflow server the cluster started.
"""

from __future__ import annotations

from typing import Any

import pytest
import yaml

from tests.support import ROOT, Cluster, Operator, eventually, mlflow_client

pytestmark = pytest.mark.e2e
SAMPLE = ROOT / "manifests" / "samples" / "trainingjob.yaml"


def sample(ns: str, image: str, **changes: Any) -> dict[str, Any]:
    """The sample TrainingJob, with a model name of its own so tests do not share versions."""
    obj = yaml.safe_load(SAMPLE.read_text())
    obj["metadata"]["namespace"] = ns
    obj["spec"]["image"] = image
    obj["spec"]["imagePullPolicy"] = "IfNotPresent"
    obj["spec"]["model"]["name"] = f"churn-{ns}"
    obj["spec"]["hyperparameters"]["n_estimators"] = 40  # seconds, not minutes, on 2 cores
    for key, value in changes.items():
        obj["spec"][key] = value
    return obj


def condition(obj: dict[str, Any], type_: str) -> dict[str, Any]:
    return next(c for c in obj["status"]["conditions"] if c["type"] == type_)


def explain(cluster: Cluster, ns: str, name: str, op: Operator) -> str:
    pods = cluster.kubectl("get", "pods", "-n", ns, "-o", "wide", check=False).stdout
    logs = cluster.kubectl(
        "logs",
        "-n",
        ns,
        "-l",
        f"modelworks.dev/trainingjob={name}",
        "--tail=40",
        "--all-containers",
        check=False,
    ).stdout
    tj = cluster.kubectl("get", "tj", name, "-n", ns, "-o", "yaml", check=False).stdout
    return f"{pods}\n--- trainer logs ---\n{logs}\n--- tj ---\n{tj[-3000:]}\n--- operator ---\n{op.log()[-3000:]}"


def wait(
    cluster: Cluster, ns: str, name: str, cond: str, op: Operator, timeout: int = 600
) -> dict[str, Any]:
    """The TrainingJob once its phase is final; fails at once if ``cond`` does not hold then."""
    type_, _, want = cond.partition("=")
    try:
        obj = eventually(
            lambda: (
                (o := cluster.get("tj", name, ns))
                and (o.get("status") or {}).get("phase") in ("Succeeded", "Failed")
                and o
            ),
            timeout=timeout,
            interval=2,
            what=f"{name} to finish",
        )
    except AssertionError as exc:
        raise AssertionError(f"{exc}\n{explain(cluster, ns, name, op)}") from None
    got = condition(obj, type_)
    assert got["status"] == (want or "True"), f"{got}\n{explain(cluster, ns, name, op)}"
    return obj


def test_sample_trains_registers_and_sets_the_alias(
    cluster: Cluster, ns: str, image: str, mlflow_uri: str, operator: Operator
) -> None:
    obj = sample(ns, image)
    cluster.apply(obj)
    done = wait(cluster, ns, "churn-train", "Succeeded", operator)
    status = done["status"]
    model = obj["spec"]["model"]["name"]
    assert status["phase"] == "Succeeded"
    assert (
        status["registeredModel"]["name"] == model
        and status["registeredModel"]["alias"] == "champion"
    )
    assert status["metrics"]["val_auc"] >= 0.8
    assert status["qualityGate"]["passed"] is True
    assert status["progress"]["percent"] == 100.0
    client = mlflow_client(mlflow_uri)
    mv = client.get_model_version_by_alias(model, "champion")
    assert mv.version == status["registeredModel"]["version"]
    assert mv.run_id == status["mlflow"]["runId"]
    assert mv.tags["modelworks.dev/trainingjob"] == "churn-train"
    assert mv.tags["modelworks.dev/dataset-uri"] == "builtin://churn"
    run = client.get_run(mv.run_id)
    assert run.info.status == "FINISHED"
    assert run.data.params["n_estimators"] == "40"
    assert "reference_profile.json" in [a.path for a in client.list_artifacts(mv.run_id)]
    # The registered model is loadable and predicts: what a ModelDeployment will serve.
    import mlflow.pyfunc
    import pandas as pd

    mlflow.set_tracking_uri(mlflow_uri)
    mlflow.set_registry_uri(mlflow_uri)  # not the one an earlier test's Registry set
    loaded = mlflow.pyfunc.load_model(f"models:/{model}@champion")
    row = {
        "tenure_months": 2.0,
        "monthly_charges": 99.0,
        "support_calls": 5,
        "age": 30.0,
        "contract": "month-to-month",
        "payment_method": "check",
    }
    (answer,) = loaded.predict(pd.DataFrame([row])).tolist()  # [P(stay), P(churn)]
    assert len(answer) == 2 and abs(sum(answer) - 1.0) < 1e-9


def test_gate_set_too_high_registers_nothing(
    cluster: Cluster, ns: str, image: str, mlflow_uri: str, operator: Operator
) -> None:
    obj = sample(ns, image, qualityGate=[{"metric": "val_auc", "op": ">=", "value": 0.999}])
    cluster.apply(obj)
    done = wait(cluster, ns, "churn-train", "Succeeded=False", operator)
    assert condition(done, "Succeeded")["reason"] == "QualityGateFailed"
    assert "< 0.999" in condition(done, "QualityGatePassed")["message"]
    assert (
        list(
            mlflow_client(mlflow_uri).search_model_versions(
                f"name = '{obj['spec']['model']['name']}'"
            )
        )
        == []
    )


def test_trainer_over_its_memory_limit_fails_with_oomkilled(
    cluster: Cluster, ns: str, image: str, operator: Operator
) -> None:
    obj = sample(
        ns,
        image,
        command=["python", "-c", "b = bytearray(400 * 1024 * 1024); print(len(b))"],
        resources={"requests": {"cpu": "100m", "memory": "64Mi"}, "limits": {"memory": "64Mi"}},
        backoffLimit=0,
    )
    cluster.apply(obj)
    done = wait(cluster, ns, "churn-train", "Succeeded=False", operator, timeout=300)
    cond = condition(done, "Succeeded")
    assert cond["reason"] == "OOMKilled", cond
    assert "memory limit" in cond["message"]
    warnings = cluster.kubectl(
        "get",
        "events",
        "-n",
        ns,
        "--field-selector",
        "involvedObject.name=churn-train,type=Warning,reason=OOMKilled",
        "-o",
        "name",
    ).stdout
    assert warnings.strip()


def test_two_replicas_rendezvous_through_the_headless_service(
    cluster: Cluster, ns: str, image: str, mlflow_uri: str, operator: Operator
) -> None:
    obj = sample(
        ns,
        image,
        replicas=2,
        resources={"requests": {"cpu": "100m", "memory": "384Mi"}, "limits": {"memory": "1Gi"}},
    )
    cluster.apply(obj)
    done = wait(cluster, ns, "churn-train", "Succeeded", operator)
    assert done["status"]["metrics"]["world_size_seen"] == 2.0
    logs = cluster.kubectl(
        "logs", "-n", ns, "-l", "modelworks.dev/trainingjob=churn-train", "--prefix", "--tail=-1"
    ).stdout
    assert "rank 1/2: rendezvous complete" in logs
    assert "rank 0/2: rendezvous complete (2 ranks)" in logs
