"""TrainingJob passes that must not change their verdict, start training again, or retry a
refused write for ever: a pass after registration, a Job its TTL deleted before the final
status was written, a child or a run the API server or MLflow rejects.

In-process passes against the real API server (kwok nodes complete the pods) and a real
MLflow server, so each crash point is exact.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from modelworks.api.trainingjob import TrainingJobSpec
from modelworks.builders.trainingjob import lineage_tags, source_key
from modelworks.clients.kube import Kube
from modelworks.clients.mlflow import Registry
from modelworks.reconcilers.trainingjob import reconcile
from tests.integration.test_trainingjob import (
    fetch,
    kwok_pods,
    play_trainer,
    registry,
    runs_of,
    training_job,
    versions_of,
)
from tests.support import Cluster, MlflowServer, eventually, mlflow_client

pytestmark = pytest.mark.integration
NOW = "2026-01-01T00:00:00Z"
__all__ = ["registry"]


def passes(
    obj: dict[str, Any], status: dict[str, Any], *, kube: Kube, registry: Registry
) -> dict[str, Any]:
    """Passes, each on the status the one before computed, until the status stops changing."""
    for _ in range(8):
        out = reconcile({**obj, "status": status}, kube=kube, registry=registry, now=NOW)
        if out.status == status:
            return status
        status = out.status
    raise AssertionError(f"the status did not settle: {status}")


def conds(status: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {c["type"]: c for c in status.get("conditions") or []}


def job_finished(kube: Kube, namespace: str, name: str) -> bool:
    """Complete, or already deleted by its ttlSecondsAfterFinished."""
    job = kube.get("batch/v1", "Job", namespace, name)
    return job is None or any(
        c["type"] == "Complete" and c["status"] == "True"
        for c in ((job or {}).get("status") or {}).get("conditions") or []
    )


def patch_spec(crds: Cluster, name: str, namespace: str, spec: dict[str, Any]) -> None:
    patch = json.dumps({"spec": spec})
    crds.kubectl("patch", "tj", name, "-n", namespace, "--type=merge", "-p", patch)


def train(
    crds: Cluster,
    kube: Kube,
    registry: Registry,
    mlflow: MlflowServer,
    obj: dict[str, Any],
    auc: float,
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Create the TrainingJob suspended, play its trainer, resume it and wait for kwok to
    complete its Job: (the object as stored, the status of the last pass)."""
    name, namespace = obj["metadata"]["name"], obj["metadata"]["namespace"]
    crds.apply(obj)
    stored = fetch(crds, name, namespace)
    status = passes(stored, {}, kube=kube, registry=registry)
    play_trainer(mlflow.uri, status["mlflow"]["runId"], auc=auc)
    patch_spec(crds, name, namespace, {"suspend": False})
    stored = fetch(crds, name, namespace)
    status = reconcile({**stored, "status": status}, kube=kube, registry=registry, now=NOW).status
    eventually(
        lambda: job_finished(kube, namespace, status["jobName"]),
        timeout=60,
        what=f"kwok to complete the Job of {name}",
    )
    return stored, status


def test_gate_verdict_survives_passes_after_the_alias_moved(
    crds: Cluster, kube: Kube, registry: Registry, mlflow: MlflowServer, namespace: str
) -> None:
    model = f"m-{namespace}"
    first = training_job("first", namespace, model=model)
    stored, status = train(crds, kube, registry, mlflow, first, auc=0.90)
    status = passes(stored, status, kube=kube, registry=registry)
    assert status["registeredModel"]["version"] == "1", status["conditions"]

    better = {"metric": "val_auc", "op": ">", "baseline": {"alias": "champion"}}
    second = training_job("second", namespace, model=model, qualityGate=[better])
    stored, status = train(crds, kube, registry, mlflow, second, auc=0.95)
    status = passes(stored, status, kube=kube, registry=registry)
    assert status["phase"] == "Succeeded", status["conditions"]
    assert status["registeredModel"]["version"] == "2"
    assert mlflow_client(mlflow.uri).get_model_version_by_alias(model, "champion").version == "2"
    judged = status["qualityGate"]
    assert "@champion 0.9" in judged["summary"], judged

    # suspend toggled on the finished run: a new generation, the same run and verdict
    patch_spec(crds, "second", namespace, {"suspend": True})
    stored = fetch(crds, "second", namespace)
    toggled = passes(stored, status, kube=kube, registry=registry)
    assert toggled["phase"] == "Succeeded", toggled["conditions"]
    assert conds(toggled)["ModelRegistered"]["status"] == "True"
    assert toggled["qualityGate"] == judged

    # the status write after set_alias was lost: nothing stored, the alias already moved
    lost = passes(stored, {}, kube=kube, registry=registry)
    assert lost["phase"] == "Succeeded", lost["conditions"]
    assert conds(lost)["ModelRegistered"]["status"] == "True"
    assert conds(lost)["QualityGatePassed"]["status"] == "True"
    assert lost["qualityGate"]["passed"] is True
    assert sorted(v.version for v in versions_of(mlflow.uri, model)) == ["1", "2"]
    assert mlflow_client(mlflow.uri).get_model_version_by_alias(model, "champion").version == "2"


def test_job_deleted_by_its_ttl_before_the_final_status_trains_nothing_again(
    crds: Cluster, kube: Kube, registry: Registry, mlflow: MlflowServer, namespace: str
) -> None:
    model = f"m-{namespace}"
    obj = training_job("ttl", namespace, model=model, ttlSecondsAfterFinished=0)
    stored, status = train(crds, kube, registry, mlflow, obj, auc=0.93)
    eventually(
        lambda: kube.get("batch/v1", "Job", namespace, status["jobName"]) is None,
        timeout=60,
        what="the TTL controller to delete the finished Job",
    )
    done = passes(stored, status, kube=kube, registry=registry)
    assert done["phase"] == "Succeeded", done["conditions"]
    assert done["registeredModel"]["version"] == "1"
    assert kube.get("batch/v1", "Job", namespace, status["jobName"]) is None
    assert len(runs_of(mlflow.uri, stored)) == 1
    assert mlflow_client(mlflow.uri).get_run(status["mlflow"]["runId"]).info.status == "FINISHED"

    # and when even the earlier statuses were lost: the run decides, no Job comes back
    again = passes(stored, {}, kube=kube, registry=registry)
    assert again["phase"] == "Succeeded", again["conditions"]
    assert kube.get("batch/v1", "Job", namespace, status["jobName"]) is None
    assert len(runs_of(mlflow.uri, stored)) == 1
    assert [v.version for v in versions_of(mlflow.uri, model)] == ["1"]


def rejected_once_and_again(
    obj: dict[str, Any], *, kube: Kube, registry: Registry
) -> tuple[dict[str, Any], list[Any]]:
    """Passes on a TrainingJob whose writes are refused: (the status, the Events posted).
    The second pass reads the run the first one made; the third, refused alike, must store
    nothing new and say nothing new."""
    first = reconcile({**obj, "status": {}}, kube=kube, registry=registry, now=NOW)
    assert first.requeue_after is None, "a refused write is retried at the resync, not sooner"
    later = "2026-01-01T00:05:00Z"
    second = reconcile({**obj, "status": first.status}, kube=kube, registry=registry, now=later)
    assert second.requeue_after is None
    third = reconcile({**obj, "status": second.status}, kube=kube, registry=registry, now=later)
    assert third.status == second.status
    assert third.events == []
    return second.status, [*first.events, *second.events]


def test_a_job_the_api_server_rejects_is_a_condition(
    crds: Cluster, kube: Kube, registry: Registry, namespace: str
) -> None:
    # valid for the CRD (a VolumeMount is passed through), refused by the Job's validation
    pods = {**kwok_pods(), "volumeMounts": [{"name": "nowhere", "mountPath": "/data"}]}
    crds.apply(training_job("refused", namespace, model=f"m-{namespace}", podTemplate=pods))
    obj = fetch(crds, "refused", namespace)
    status, events = rejected_once_and_again(obj, kube=kube, registry=registry)
    summary = conds(status)["Succeeded"]
    assert status["phase"] == "Failed"
    assert (summary["status"], summary["reason"]) == ("False", "ChildRejected"), summary
    assert "spec.template.spec.containers[0].volumeMounts[0].name" in summary["message"], summary
    assert [(e.reason, e.type) for e in events] == [("ChildRejected", "Warning")]
    assert kube.get("batch/v1", "Job", namespace, status["jobName"]) is None


def test_a_run_mlflow_refuses_is_a_condition(
    crds: Cluster, kube: Kube, registry: Registry, mlflow: MlflowServer, namespace: str
) -> None:
    crds.apply(training_job("clash", namespace, model=f"m-{namespace}"))
    obj = fetch(crds, "clash", namespace)
    spec = TrainingJobSpec.model_validate(obj["spec"])
    # The run of this spec exists (an earlier pass made it) and a trainer logged C its own
    # way: MLflow refuses to change a param, however often it is asked.
    exp = registry.ensure_experiment(f"{namespace}-clash")
    run = registry.ensure_run(
        exp, source_key(obj, spec), run_name="clash", tags=lineage_tags(obj, spec), params={}
    )
    mlflow_client(mlflow.uri).log_param(run.run_id, "C", "one")
    status, events = rejected_once_and_again(obj, kube=kube, registry=registry)
    summary = conds(status)["Succeeded"]
    assert status["phase"] == "Failed"
    assert (summary["status"], summary["reason"]) == ("False", "MLflowRejected"), summary
    assert "INVALID_PARAMETER_VALUE" in summary["message"], summary
    assert [(e.reason, e.type) for e in events] == [("MLflowRejected", "Warning")]
    assert kube.get("batch/v1", "Job", namespace, status["jobName"]) is None
    assert len(runs_of(mlflow.uri, obj)) == 1

    # a new generation is tried at once: a new run, and its Job
    patch_spec(crds, "clash", namespace, {"hyperparameters": {"C": 0.5}})
    fixed = fetch(crds, "clash", namespace)
    out = reconcile({**fixed, "status": status}, kube=kube, registry=registry, now=NOW)
    assert conds(out.status)["Succeeded"]["reason"] == "CreatingRun", out.status["conditions"]
    assert kube.get("batch/v1", "Job", namespace, out.status["jobName"]) is not None
