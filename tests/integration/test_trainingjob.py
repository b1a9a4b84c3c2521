"""TrainingJob against a real API server (pods on kwok nodes) and a real MLflow server.

kwok pods do not run code, so the test plays the trainer: while the TrainingJob is
suspended it logs metrics and a model into the run the operator created, then resumes
it; kwok completes the pod and the operator gates and registers.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from modelworks.api.common import API_VERSION
from modelworks.builders.trainingjob import lineage_tags, source_key, training_key
from modelworks.clients.kube import Kube
from modelworks.clients.mlflow import Registry
from modelworks.reconcilers.trainingjob import reconcile
from modelworks.status.decision import Decision
from modelworks.status.trainingjob import AT_ONCE
from tests.support import (
    Cluster,
    MlflowServer,
    eventually,
    free_port,
    mlflow_client,
    mlflow_server,
    run_operator,
)

pytestmark = pytest.mark.integration
NOW = "2026-01-01T00:00:00Z"


def kwok_pods(delay: str = "2s", fail: bool = False) -> dict[str, Any]:
    annotations = {"pod-complete.stage.kwok.x-k8s.io/delay": delay}
    if fail:
        annotations["modelworks.dev/kwok-fail"] = "true"
    return {
        "nodeSelector": {"type": "kwok"},
        "tolerations": [
            {"key": "kwok.x-k8s.io/node", "operator": "Exists", "effect": "NoSchedule"}
        ],
        "annotations": annotations,
    }


def training_job(
    name: str, namespace: str, *, model: str, gate: float = 0.8, suspend: bool = True, **extra: Any
) -> dict[str, Any]:
    spec = {
        "image": "modelworks:0.1.0",
        "hyperparameters": {"C": 1.0, "max_iter": 50},
        "dataset": {"uri": "builtin://iris", "version": "v1"},
        "model": {"name": model, "alias": "champion"},
        "qualityGate": [{"metric": "val_auc", "op": ">=", "value": gate}],
        "suspend": suspend,
        "podTemplate": kwok_pods(),
        **extra,
    }
    return {
        "apiVersion": API_VERSION,
        "kind": "TrainingJob",
        "metadata": {"name": name, "namespace": namespace},
        "spec": spec,
    }


def play_trainer(uri: str, run_id: str, auc: float) -> None:
    """What a trainer does in the pod: log metrics and a model into the given run."""
    import mlflow
    import numpy as np
    from sklearn.linear_model import LogisticRegression

    x = np.arange(40, dtype=float).reshape(20, 2)
    y = (x[:, 0] > 19).astype(int)
    model = LogisticRegression(max_iter=50).fit(x, y)
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)  # not the one an earlier test's Registry set
    with mlflow.start_run(run_id=run_id):
        mlflow.log_metric("val_auc", auc)
        mlflow.sklearn.log_model(model, name="model", pip_requirements=["scikit-learn"])


def runs_of(uri: str, obj: dict[str, Any]) -> list[Any]:
    client = mlflow_client(uri)
    exps = client.search_experiments(
        filter_string=f"name = '{obj['metadata']['namespace']}-{obj['metadata']['name']}'"
    )
    if not exps:
        return []
    return list(client.search_runs([e.experiment_id for e in exps]))


def versions_of(uri: str, model: str) -> list[Any]:
    return list(mlflow_client(uri).search_model_versions(f"name = '{model}'"))


@pytest.fixture
def registry(mlflow: MlflowServer) -> Registry:
    return Registry(mlflow.uri)


def fetch(crds: Cluster, name: str, namespace: str) -> dict[str, Any]:
    obj = crds.get("trainingjob", name, namespace)
    assert obj is not None
    return obj


# --- in-process passes: deterministic crash points --------------------------------------


def settle(
    obj: dict[str, Any], *, kube: Kube, registry: Registry, now: str = NOW, passes: int = 4
) -> Decision[Any]:
    """Passes, each on the status the one before computed, until none asks for the next at
    once (what an action made, a run id or a version, shows in the status a pass later)."""
    status = obj.get("status") or {}
    for _ in range(passes):
        out = reconcile({**obj, "status": status}, kube=kube, registry=registry, now=now)
        if out.requeue_after != AT_ONCE:
            return out
        status = out.status
    raise AssertionError(f"not settled after {passes} passes: {status}")


def test_reconcile_twice_writes_nothing_the_second_time(
    crds: Cluster, kube: Kube, registry: Registry, mlflow: MlflowServer, namespace: str
) -> None:
    crds.apply(training_job("twice", namespace, model=f"m-{namespace}"))
    obj = fetch(crds, "twice", namespace)
    first = settle(obj, kube=kube, registry=registry)
    assert first.status["phase"] == "Suspended"
    job = kube.get("batch/v1", "Job", namespace, first.status["jobName"])
    assert job is not None and job["spec"]["suspend"] is True
    assert job["metadata"]["ownerReferences"][0]["uid"] == obj["metadata"]["uid"]
    env = {
        e["name"]: e.get("value") for e in job["spec"]["template"]["spec"]["containers"][0]["env"]
    }
    assert env["MLFLOW_RUN_ID"] == first.status["mlflow"]["runId"]
    assert env["MLFLOW_TRACKING_URI"] == mlflow.uri

    writes = kube.requests["PATCH"] + kube.requests["POST"] + kube.requests["DELETE"]
    second = reconcile(
        {**obj, "status": first.status}, kube=kube, registry=registry, now="2026-01-02T00:00:00Z"
    )
    assert second.status == first.status
    assert second.events == []
    assert kube.requests["PATCH"] + kube.requests["POST"] + kube.requests["DELETE"] == writes
    again = kube.get("batch/v1", "Job", namespace, first.status["jobName"])
    assert again is not None

    # Not the resourceVersion: the job controller writes the Job's status on its own.
    def ours(j: dict[str, Any]) -> tuple[Any, ...]:
        mine = [m for m in j["metadata"]["managedFields"] if m["manager"] == "modelworks"]
        return j["metadata"]["generation"], mine

    assert ours(again) == ours(job)
    assert len(runs_of(mlflow.uri, obj)) == 1


def test_crash_after_the_run_was_created_reuses_it(
    crds: Cluster, kube: Kube, registry: Registry, mlflow: MlflowServer, namespace: str
) -> None:
    crds.apply(training_job("crash-run", namespace, model=f"m-{namespace}"))
    obj = fetch(crds, "crash-run", namespace)
    from modelworks.api.trainingjob import TrainingJobSpec

    spec = TrainingJobSpec.model_validate(obj["spec"])
    # A previous pass created the run and died before it created the Job.
    exp = registry.ensure_experiment(f"{namespace}-crash-run")
    orphan = registry.ensure_run(
        exp, source_key(obj, spec), run_name="x", tags=lineage_tags(obj, spec), params={}
    )
    out = settle(obj, kube=kube, registry=registry)
    assert out.status["mlflow"]["runId"] == orphan.run_id
    assert len(runs_of(mlflow.uri, obj)) == 1
    run = mlflow_client(mlflow.uri).get_run(orphan.run_id)
    # JSON has one number type: the API server stores C: 1.0 as 1, and so the param reads "1".
    assert run.data.params == {"C": str(obj["spec"]["hyperparameters"]["C"]), "max_iter": "50"}
    assert run.data.tags["modelworks.dev/training-key"] == training_key(spec)
    assert run.data.tags["modelworks.dev/dataset-uri"] == "builtin://iris"


def test_crash_after_registration_registers_once(
    crds: Cluster, kube: Kube, registry: Registry, mlflow: MlflowServer, namespace: str
) -> None:
    model = f"m-{namespace}"
    crds.apply(training_job("crash-reg", namespace, model=model))
    obj = fetch(crds, "crash-reg", namespace)
    out = settle(obj, kube=kube, registry=registry)
    run_id = out.status["mlflow"]["runId"]
    play_trainer(mlflow.uri, run_id, auc=0.91)
    crds.kubectl(
        "patch",
        "tj",
        "crash-reg",
        "-n",
        namespace,
        "--type=merge",
        "-p",
        '{"spec":{"suspend":false}}',
    )
    obj = fetch(crds, "crash-reg", namespace)
    out = reconcile({**obj, "status": out.status}, kube=kube, registry=registry, now=NOW)
    eventually(
        lambda: (
            (j := kube.get("batch/v1", "Job", namespace, out.status["jobName"]))
            and any(
                c["type"] == "Complete" and c["status"] == "True"
                for c in (j.get("status") or {}).get("conditions") or []
            )
        ),
        timeout=60,
        what="kwok to complete the Job",
    )
    # A previous pass registered the version and died before it wrote the status.
    run = registry.get_run(run_id)
    registry.register(model, run, "model", tags={"modelworks.dev/run-id": run_id})
    done = settle({**obj, "status": out.status}, kube=kube, registry=registry)
    assert done.status["phase"] == "Succeeded", done.status["conditions"]
    assert done.status["registeredModel"]["version"] == "1"
    assert [v.version for v in versions_of(mlflow.uri, model)] == ["1"]
    assert mlflow_client(mlflow.uri).get_model_version_by_alias(model, "champion").version == "1"
    assert mlflow_client(mlflow.uri).get_run(run_id).info.status == "FINISHED"


# --- the operator as a process ------------------------------------------------------------


@pytest.fixture
def operator(crds: Cluster, mlflow: MlflowServer, namespace: str, tmp: Path) -> Iterator[Any]:
    with run_operator(crds, tmp, namespaces=namespace, mlflow_tracking_uri=mlflow.uri) as op:
        yield op


def wait_for_run(crds: Cluster, name: str, namespace: str) -> str:
    obj = eventually(
        lambda: (
            (o := crds.get("tj", name, namespace))
            and (o.get("status") or {}).get("mlflow", {}).get("runId")
            and o
        ),
        timeout=120,
        what=f"the MLflow run of {name}",
    )
    return str(obj["status"]["mlflow"]["runId"])


def test_trains_gates_registers_with_lineage(
    crds: Cluster, mlflow: MlflowServer, namespace: str, operator: Any
) -> None:
    model = f"m-{namespace}"
    crds.apply(training_job("good", namespace, model=model))
    run_id = wait_for_run(crds, "good", namespace)
    play_trainer(mlflow.uri, run_id, auc=0.93)
    crds.kubectl(
        "patch", "tj", "good", "-n", namespace, "--type=merge", "-p", '{"spec":{"suspend":false}}'
    )
    crds.kubectl("wait", "tj/good", "-n", namespace, "--for=condition=Succeeded", "--timeout=120s")
    obj = fetch(crds, "good", namespace)
    st = obj["status"]
    assert st["phase"] == "Succeeded"
    assert st["registeredModel"]["version"] == "1" and st["registeredModel"]["alias"] == "champion"
    assert st["qualityGate"]["summary"] == "val_auc=0.93 >= 0.8"
    assert st["metrics"]["val_auc"] == pytest.approx(0.93)
    mv = mlflow_client(mlflow.uri).get_model_version_by_alias(model, "champion")
    assert mv.run_id == run_id
    assert mv.tags["modelworks.dev/trainingjob"] == "good"
    assert mv.tags["modelworks.dev/namespace"] == namespace
    assert mv.tags["modelworks.dev/uid"] == obj["metadata"]["uid"]
    assert mv.tags["modelworks.dev/dataset-version"] == "v1"
    assert mv.tags["modelworks.dev/image"] == "modelworks:0.1.0"
    columns = crds.kubectl("get", "tj", "good", "-n", namespace).stdout
    assert "Succeeded" in columns and "val_auc=0.93 >= 0.8" in columns
    reasons = crds.kubectl(
        "get",
        "events",
        "-n",
        namespace,
        "--field-selector",
        "involvedObject.name=good",
        "-o",
        "jsonpath={.items[*].reason}",
    ).stdout.split()
    assert "Registered" in reasons and "Created" in reasons


def test_gate_too_high_registers_nothing(
    crds: Cluster, mlflow: MlflowServer, namespace: str, operator: Any
) -> None:
    model = f"m-{namespace}"
    crds.apply(training_job("strict", namespace, model=model, gate=0.99))
    run_id = wait_for_run(crds, "strict", namespace)
    play_trainer(mlflow.uri, run_id, auc=0.93)
    crds.kubectl(
        "patch", "tj", "strict", "-n", namespace, "--type=merge", "-p", '{"spec":{"suspend":false}}'
    )
    crds.kubectl(
        "wait", "tj/strict", "-n", namespace, "--for=condition=Succeeded=False", "--timeout=120s"
    )
    obj = fetch(crds, "strict", namespace)
    cond = {c["type"]: c for c in obj["status"]["conditions"]}
    assert cond["Succeeded"]["reason"] == "QualityGateFailed"
    assert "val_auc=0.93 < 0.99" in cond["QualityGatePassed"]["message"]
    assert cond["ModelRegistered"]["status"] == "False"
    assert versions_of(mlflow.uri, model) == []


def test_failed_pod_fails_the_job_with_a_reason(
    crds: Cluster, namespace: str, operator: Any
) -> None:
    crds.apply(
        training_job(
            "broken",
            namespace,
            model=f"m-{namespace}",
            suspend=False,
            podTemplate=kwok_pods(fail=True),
        )
    )
    crds.kubectl(
        "wait", "tj/broken", "-n", namespace, "--for=condition=Succeeded=False", "--timeout=120s"
    )
    obj = fetch(crds, "broken", namespace)
    assert obj["status"]["phase"] == "Failed"
    cond = next(c for c in obj["status"]["conditions"] if c["type"] == "Succeeded")
    assert cond["reason"] in ("Error", "BackoffLimitExceeded"), cond
    warnings = crds.kubectl(
        "get",
        "events",
        "-n",
        namespace,
        "--field-selector",
        "type=Warning,involvedObject.name=broken",
        "-o",
        "name",
    ).stdout
    assert warnings.strip(), "a failure must be an Event too"


def test_spec_change_is_a_new_run_and_replaces_the_job(
    crds: Cluster, kube: Kube, mlflow: MlflowServer, namespace: str, operator: Any
) -> None:
    crds.apply(training_job("change", namespace, model=f"m-{namespace}"))
    first = wait_for_run(crds, "change", namespace)
    old_job = fetch(crds, "change", namespace)["status"]["jobName"]
    crds.kubectl(
        "patch",
        "tj",
        "change",
        "-n",
        namespace,
        "--type=merge",
        "-p",
        '{"spec":{"hyperparameters":{"C":0.5}}}',
    )
    second = eventually(
        lambda: (r := wait_for_run(crds, "change", namespace)) != first and r,
        timeout=60,
        what="a new run for the new spec",
    )
    assert second != first
    eventually(
        lambda: (
            kube.get("batch/v1", "Job", namespace, old_job) is None
            or kube.get("batch/v1", "Job", namespace, old_job)["metadata"].get("deletionTimestamp")
        ),  # type: ignore[index]
        timeout=60,
        what="the old Job to go",
    )
    assert len(runs_of(mlflow.uri, fetch(crds, "change", namespace))) == 2
    # Suspending is not a spec change that starts a run.
    crds.kubectl(
        "patch", "tj", "change", "-n", namespace, "--type=merge", "-p", '{"spec":{"suspend":false}}'
    )
    eventually(
        lambda: fetch(crds, "change", namespace)["status"]["observedGeneration"] == 3,
        timeout=30,
        what="generation 3 observed",
    )
    assert wait_for_run(crds, "change", namespace) == second


def test_distributed_job_gets_a_headless_service(
    crds: Cluster, kube: Kube, namespace: str, operator: Any
) -> None:
    crds.apply(training_job("dist", namespace, model=f"m-{namespace}", replicas=3))
    wait_for_run(crds, "dist", namespace)
    job_name = fetch(crds, "dist", namespace)["status"]["jobName"]
    job = eventually(
        lambda: kube.get("batch/v1", "Job", namespace, job_name), timeout=30, what="the Job"
    )
    assert job["spec"]["parallelism"] == job["spec"]["completions"] == 3
    svc = kube.get("v1", "Service", namespace, job_name)
    assert svc is not None and svc["spec"]["clusterIP"] == "None"


def test_mlflow_outage_is_a_condition_and_no_run_is_duplicated(
    crds: Cluster, namespace: str, tmp: Path
) -> None:
    port = free_port()
    uri = f"http://127.0.0.1:{port}"
    with run_operator(crds, tmp, namespaces=namespace, mlflow_tracking_uri=uri) as op:
        crds.apply(training_job("outage", namespace, model=f"m-{namespace}"))
        eventually(
            lambda: any(
                c["reason"] == "MLflowUnavailable"
                for c in (fetch(crds, "outage", namespace).get("status") or {}).get("conditions")
                or []
            ),
            timeout=60,
            what="the MLflowUnavailable condition",
        )
        assert op.process.poll() is None, "the operator must not crash"
        with mlflow_server(tmp / "late", port=port) as server:
            run_id = eventually(
                lambda: (
                    (fetch(crds, "outage", namespace).get("status") or {})
                    .get("mlflow", {})
                    .get("runId")
                ),
                timeout=90,
                what="the run once MLflow is back",
            )
            assert len(runs_of(server.uri, fetch(crds, "outage", namespace))) == 1
            assert run_id


def test_operator_killed_midway_creates_nothing_twice(
    crds: Cluster, mlflow: MlflowServer, namespace: str, tmp: Path
) -> None:
    model = f"m-{namespace}"
    obj = training_job(
        "killed", namespace, model=model, suspend=False, podTemplate=kwok_pods(delay="20s")
    )
    with run_operator(crds, tmp, namespaces=namespace, mlflow_tracking_uri=mlflow.uri) as op:
        crds.apply(obj)
        run_id = wait_for_run(crds, "killed", namespace)
        play_trainer(mlflow.uri, run_id, auc=0.95)
        os.kill(op.process.pid, signal.SIGKILL)  # no goodbye: mid-way through the run
        op.process.wait()
    with run_operator(crds, tmp, namespaces=namespace, mlflow_tracking_uri=mlflow.uri):
        crds.kubectl(
            "wait", "tj/killed", "-n", namespace, "--for=condition=Succeeded", "--timeout=180s"
        )
    stored = fetch(crds, "killed", namespace)
    assert len(runs_of(mlflow.uri, stored)) == 1
    jobs = crds.kubectl(
        "get", "jobs", "-n", namespace, "-l", "modelworks.dev/trainingjob=killed", "-o", "name"
    ).stdout.split()
    assert len(jobs) == 1
    assert [v.version for v in versions_of(mlflow.uri, model)] == ["1"]


@pytest.mark.parametrize(("policy", "pods_left"), [("All", 0), ("None", 1)])
def test_clean_pod_policy_after_the_run(
    crds: Cluster, namespace: str, operator: Any, policy: str, pods_left: int
) -> None:
    crds.apply(
        training_job(
            "clean",
            namespace,
            model=f"m-{namespace}",
            suspend=False,
            cleanPodPolicy=policy,
            podTemplate=kwok_pods(fail=True),
        )
    )
    crds.kubectl(
        "wait", "tj/clean", "-n", namespace, "--for=condition=Succeeded=False", "--timeout=120s"
    )
    cond = next(
        c
        for c in fetch(crds, "clean", namespace)["status"]["conditions"]
        if c["type"] == "Succeeded"
    )
    assert cond["reason"] in ("Error", "BackoffLimitExceeded")

    def pods() -> list[str]:
        out = crds.kubectl(
            "get", "pods", "-n", namespace, "-l", "modelworks.dev/trainingjob=clean", "-o", "name"
        ).stdout
        return out.split()

    eventually(
        lambda: len(pods()) == pods_left,
        timeout=30,
        what=f"{pods_left} pod(s) left with cleanPodPolicy {policy}",
    )


def test_deleting_a_running_training_job_ends_its_run(
    crds: Cluster, mlflow: MlflowServer, namespace: str, tmp: Path
) -> None:
    """The garbage collector removes the Job and pods; the MLflow run is the operator's to
    end: KILLED, not RUNNING for ever."""
    obj = training_job(
        "deleted", namespace, model=f"m-{namespace}", suspend=False, podTemplate=kwok_pods("1h")
    )
    with run_operator(crds, tmp, namespaces=namespace, mlflow_tracking_uri=mlflow.uri):
        crds.apply(obj)
        run_id = wait_for_run(crds, "deleted", namespace)
        eventually(
            lambda: (
                (fetch(crds, "deleted", namespace).get("status") or {}).get("phase") == "Running"
            ),
            timeout=60,
            what="the TrainingJob to run",
        )
        crds.kubectl("delete", "tj/deleted", "-n", namespace, "--wait=true")
        client = mlflow_client(mlflow.uri)
        eventually(
            lambda: client.get_run(run_id).info.status == "KILLED",
            timeout=30,
            what=f"run {run_id} to end KILLED (it is {client.get_run(run_id).info.status})",
        )
