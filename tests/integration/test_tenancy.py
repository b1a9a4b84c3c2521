"""Tenancy against a real API server and a real MLflow server: two namespaces, one model name.

Namespace A trains and registers model ``m`` (alias champion). Namespace B names the same
model: its TrainingJob must not register a version of it nor move A's alias, and neither
B's ModelDeployment nor B's DriftMonitor may resolve A's model or runs. A's ModelDeployment
never resolves a version another namespace slipped into A's model.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from modelworks.clients.kube import Kube
from modelworks.clients.mlflow import ModelOwnedElsewhere, Ownership, Registry
from modelworks.reconcilers import driftmonitor, modeldeployment
from modelworks.reconcilers.modeldeployment import ServerConfig
from modelworks.reconcilers.trainingjob import reconcile
from modelworks.status.trainingjob import AT_ONCE
from tests.integration.test_driftmonitor import monitor, serving
from tests.integration.test_modeldeployment import mdep
from tests.integration.test_trainingjob import fetch, play_trainer, settle, training_job
from tests.support import (
    Cluster,
    MlflowServer,
    create_namespace,
    eventually,
    mlflow_client,
    run_operator,
)

pytestmark = pytest.mark.integration
NOW = "2026-01-01T00:00:00Z"
NS_TAG = "modelworks.dev/namespace"


@pytest.fixture
def other(crds: Cluster, namespace: str) -> Iterator[str]:
    """A second namespace beside the test's own."""
    name = create_namespace(crds, f"{namespace}-b")
    yield name
    crds.kubectl("delete", "namespace", name, "--wait=false", check=False)


def train(
    crds: Cluster, kube: Kube, registry: Registry, uri: str, ns: str, name: str, model: str
) -> tuple[dict[str, Any], list[str]]:
    """A TrainingJob in ``ns`` whose trainer logged a model that passes the gate, run to
    its end by in-process passes: (its last status, the reasons of the Events posted)."""
    crds.apply(training_job(name, ns, model=model))
    obj = fetch(crds, name, ns)
    out = settle(obj, kube=kube, registry=registry)
    play_trainer(uri, out.status["mlflow"]["runId"], auc=0.91)
    crds.kubectl("patch", "tj", name, "-n", ns, "--type=merge", "-p", '{"spec":{"suspend":false}}')
    obj = fetch(crds, name, ns)
    out = reconcile({**obj, "status": out.status}, kube=kube, registry=registry, now=NOW)
    eventually(
        lambda: any(
            c["type"] == "Complete" and c["status"] == "True"
            for c in (
                (kube.get("batch/v1", "Job", ns, out.status["jobName"]) or {}).get("status") or {}
            ).get("conditions")
            or []
        ),
        timeout=60,
        what=f"kwok to complete the Job of {ns}/{name}",
    )
    reasons = [e.reason for e in out.events]
    status = out.status
    for _ in range(6):
        out = reconcile({**obj, "status": status}, kube=kube, registry=registry, now=NOW)
        reasons += [e.reason for e in out.events]
        status = out.status
        if not out.actions and out.requeue_after != AT_ONCE:
            break
    return status, reasons


def cond(status: dict[str, Any], type_: str) -> dict[str, Any]:
    return next(c for c in status["conditions"] if c["type"] == type_)


def resolve(crds: Cluster, kube: Kube, registry: Registry, ns: str, name: str) -> Any:
    obj = crds.get("mdep", name, ns)
    assert obj is not None
    server = ServerConfig("modelworks:0.1.0", "IfNotPresent", registry.tracking_uri)
    return modeldeployment.reconcile(obj, kube=kube, registry=registry, now=NOW, server=server)


def test_another_namespace_can_neither_take_over_nor_resolve_a_model(
    crds: Cluster, kube: Kube, mlflow: MlflowServer, namespace: str, other: str
) -> None:
    a, b, model = namespace, other, f"m-{namespace}"
    registry = Registry(mlflow.uri)
    client = mlflow_client(mlflow.uri)
    status_a, _ = train(crds, kube, registry, mlflow.uri, a, "a-train", model)
    assert status_a["phase"] == "Succeeded", status_a["conditions"]
    assert client.get_model_version_by_alias(model, "champion").version == "1"

    status_b, reasons = train(crds, kube, registry, mlflow.uri, b, "b-train", model)
    assert client.get_model_version_by_alias(model, "champion").version == "1"
    assert [v.version for v in client.search_model_versions(f"name = '{model}'")] == ["1"]
    assert status_b["phase"] == "Failed"
    registered = cond(status_b, "ModelRegistered")
    assert registered["reason"] == "ModelOwnedElsewhere"
    assert registered["message"] == f"model {model} belongs to namespace {a}"
    assert cond(status_b, "Succeeded")["reason"] == "ModelOwnedElsewhere"
    assert "ModelOwnedElsewhere" in reasons
    assert client.get_registered_model(model).tags["modelworks.dev/namespace"] == a

    crds.apply(mdep("serve", model), "-n", b)
    refused = resolve(crds, kube, registry, b, "serve")
    resolved = cond(refused.status, "ModelResolved")
    assert resolved["reason"] == "ModelOwnedElsewhere", resolved
    assert f"belongs to namespace {a}" in resolved["message"]
    assert refused.status["phase"] == "Failed"
    assert kube.get("apps/v1", "Deployment", b, "serve") is None

    crds.apply(mdep("serve", model), "-n", a)
    mine = resolve(crds, kube, registry, a, "serve")
    assert mine.status["resolved"]["version"] == "1", mine.status

    # A trainer in B holding MLflow credentials slips a version in and moves A's alias:
    # A's ModelDeployment does not follow it.
    run_b = status_b["mlflow"]["runId"]
    version = registry.create_version(
        model, run_b, f"runs:/{run_b}/model", None, tags={"modelworks.dev/namespace": b}
    )
    client.set_registered_model_alias(model, "champion", version.version)
    moved = resolve(crds, kube, registry, a, "serve")
    resolved = cond(moved.status, "ModelResolved")
    assert resolved["reason"] == "ModelOwnedElsewhere", resolved
    assert f"registered from namespace {b}" in resolved["message"]
    assert "resolved" not in moved.status or moved.status["resolved"]["version"] == "1"


def test_no_spec_reads_a_run_of_another_namespace(
    crds: Cluster, kube: Kube, mlflow: MlflowServer, namespace: str, other: str
) -> None:
    a, b = namespace, other
    client = mlflow_client(mlflow.uri)
    exp = client.create_experiment(f"{a}-tenancy", tags={"modelworks.dev/namespace": a})
    run_a = client.create_run(exp, tags={"modelworks.dev/namespace": a}).info.run_id
    serving(crds, b, "served", f"m-{b}", "1")
    crds.apply(
        monitor("live", "served", reference={"profileUri": f"runs:/{run_a}/p.json"}), "-n", b
    )
    batch = monitor("batch", "served", reference={"datasetUri": "s3://bucket/reference.csv"})
    del batch["spec"]["target"]
    batch["spec"]["batch"] = {"currentUri": f"runs:/{run_a}/current.csv"}
    crds.apply(batch, "-n", b)
    server = ServerConfig("modelworks:0.1.0", "IfNotPresent", mlflow.uri)
    for name in ("live", "batch"):
        obj = crds.get("dmon", name, b)
        assert obj is not None
        out = driftmonitor.reconcile(
            obj, kube=kube, registry=Registry(mlflow.uri), now=NOW, server=server, memory={}
        )
        ready = cond(out.status, "Ready")
        assert ready["reason"] == "ModelOwnedElsewhere", (name, ready)
        assert ready["message"] == f"run {run_a} belongs to namespace {a}"
        assert out.actions == ()

    crds.apply(
        training_job("reads-a", b, model=f"m-{b}", dataset={"uri": f"runs:/{run_a}/data.csv"})
    )
    registry = Registry(mlflow.uri)
    out = reconcile(fetch(crds, "reads-a", b), kube=kube, registry=registry, now=NOW)
    assert out.status["phase"] == "Failed"
    summary = cond(out.status, "Succeeded")
    assert summary["reason"] == "ModelOwnedElsewhere"
    assert summary["message"] == f"spec.dataset.uri: run {run_a} belongs to namespace {a}"
    assert out.actions == ()
    assert client.get_experiment_by_name(f"{b}-reads-a") is None


def test_a_model_registered_before_ownership_belongs_to_its_first_versions_namespace(
    mlflow: MlflowServer, namespace: str
) -> None:
    """No owner tag (registered by an older operator): the namespace of version 1 owns it;
    another namespace can neither claim it nor move its alias; the owner's first write
    tags it."""
    a, b, model = namespace, f"{namespace}-b", f"legacy-{namespace}"
    registry = Registry(mlflow.uri)
    client = mlflow_client(mlflow.uri)
    exp = client.create_experiment(f"{a}-legacy")
    run = client.create_run(exp).info.run_id
    v1 = registry.create_version(model, run, f"runs:/{run}/model", None, tags={NS_TAG: a})
    assert NS_TAG not in client.get_registered_model(model).tags
    assert registry.ownership(model) == Ownership(True, a, frozenset(), tagged=False)

    with pytest.raises(ModelOwnedElsewhere, match=f"model {model} belongs to namespace {a}"):
        registry.claim(model, b)
    with pytest.raises(ModelOwnedElsewhere):
        registry.set_alias(model, "champion", v1.version, namespace=b)
    assert NS_TAG not in client.get_registered_model(model).tags
    assert not client.get_registered_model(model).aliases

    registry.set_alias(model, "champion", v1.version, namespace=a)
    assert client.get_registered_model(model).tags[NS_TAG] == a
    assert registry.ownership(model).tagged

    shared = Registry(mlflow.uri, shared_models={model: frozenset({b})})
    assert shared.ownership(model) == Ownership(True, a, frozenset({b}), tagged=True)


def test_the_operator_resolves_a_model_an_admin_shared_and_no_other(
    crds: Cluster, mlflow: MlflowServer, namespace: str, other: str, tmp: Path
) -> None:
    """The operator as a process, MODELWORKS_SHARED_MODELS sharing one of A's two models
    with B: B's ModelDeployment of the shared one resolves it, of the other is refused."""
    a, b = namespace, other
    shared, private = f"shared-{a}", f"private-{a}"
    registry = Registry(mlflow.uri)
    client = mlflow_client(mlflow.uri)
    run = client.create_run(client.create_experiment(f"{a}-share")).info.run_id
    for model in (shared, private):
        registry.create_version(
            model, run, f"runs:/{run}/model", None, tags={NS_TAG: a}, namespace=a
        )
    for name, model in (("shared", shared), ("private", private)):
        obj = mdep(name, model)
        obj["spec"]["model"] = {"name": model, "version": "1"}
        crds.apply(obj, "-n", b)
    with run_operator(
        crds, tmp, namespaces=b, mlflow_tracking_uri=mlflow.uri, shared_models=f"{shared}={b}"
    ):

        def resolved(name: str) -> dict[str, Any] | None:
            obj = crds.get("mdep", name, b) or {}
            conds = (obj.get("status") or {}).get("conditions") or []
            return next((c for c in conds if c["type"] == "ModelResolved"), None)

        ok = eventually(lambda: resolved("shared"), timeout=90, what="shared to be resolved")
        refused = eventually(lambda: resolved("private"), timeout=90, what="private to be judged")
    assert ok["status"] == "True", ok
    assert refused["status"] == "False" and refused["reason"] == "ModelOwnedElsewhere"
    assert (
        refused["message"] == f"model {private} belongs to namespace {a} and is not shared with {b}"
    )
