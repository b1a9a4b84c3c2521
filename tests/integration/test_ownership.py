"""Children are trusted by owner uid, never by name alone (real API server, real MLflow).

An object that holds a child's deterministic name but is not owned by the parent's uid (a
user's, or a leftover of a deleted parent of the same name) is never read as the parent's,
never applied over and never deleted: the parent says NameTaken.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from modelworks.api.trainingjob import TrainingJobSpec
from modelworks.builders.trainingjob import job_name
from modelworks.clients.kube import Kube
from modelworks.clients.mlflow import Registry
from modelworks.reconcilers.modeldeployment import ServerConfig
from modelworks.reconcilers.modeldeployment import reconcile as reconcile_mdep
from modelworks.reconcilers.trainingjob import reconcile as reconcile_tj
from tests.integration.test_modeldeployment import mdep, register
from tests.integration.test_trainingjob import kwok_pods, settle, training_job
from tests.support import Cluster, MlflowServer, eventually

pytestmark = pytest.mark.integration
NOW = "2026-01-01T00:00:00Z"


def summary(status: dict[str, Any], type_: str) -> dict[str, Any]:
    return next(c for c in status["conditions"] if c["type"] == type_)


def modelworks_fields(obj: dict[str, Any]) -> list[Any]:
    return [m for m in obj["metadata"].get("managedFields") or [] if m["manager"] == "modelworks"]


def foreign_job(name: str, namespace: str) -> dict[str, Any]:
    """A Job owned by nothing, whose kwok pod completes at once."""
    pod = kwok_pods("1s")
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": name, "namespace": namespace, "labels": {"made-by": "a-user"}},
        "spec": {
            "backoffLimit": 0,
            "template": {
                "metadata": {"annotations": pod["annotations"]},
                "spec": {
                    "restartPolicy": "Never",
                    "nodeSelector": pod["nodeSelector"],
                    "tolerations": pod["tolerations"],
                    "containers": [{"name": "main", "image": "busybox"}],
                },
            },
        },
    }


def complete(job: dict[str, Any] | None) -> bool:
    conds = (job or {}).get("status", {}).get("conditions") or []
    return any(c["type"] == "Complete" and c["status"] == "True" for c in conds)


def test_a_completed_job_of_the_same_name_not_owned_is_not_the_trainingjobs(
    crds: Cluster, kube: Kube, mlflow: MlflowServer, namespace: str
) -> None:
    crds.apply(training_job("taken", namespace, model=f"m-{namespace}", suspend=False))
    obj = crds.get("trainingjob", "taken", namespace)
    assert obj is not None
    jname = job_name(obj, TrainingJobSpec.model_validate(obj["spec"]))
    kube.create(foreign_job(jname, namespace))
    eventually(
        lambda: complete(kube.get("batch/v1", "Job", namespace, jname)),
        timeout=60,
        what="kwok to complete the foreign Job",
    )
    before = kube.get("batch/v1", "Job", namespace, jname)
    assert before is not None

    out = reconcile_tj(obj, kube=kube, registry=Registry(mlflow.uri), now=NOW)

    succeeded = summary(out.status, "Succeeded")
    assert (succeeded["status"], succeeded["reason"]) == ("False", "NameTaken"), out.status
    assert f"Job {jname} exists and is not owned by this TrainingJob" in succeeded["message"]
    assert obj["metadata"]["uid"] in succeeded["message"]
    assert [e.reason for e in out.events] == ["NameTaken"]
    after = kube.get("batch/v1", "Job", namespace, jname)
    assert after is not None and not after["metadata"].get("ownerReferences")
    assert modelworks_fields(after) == []
    assert after["metadata"]["resourceVersion"] == before["metadata"]["resourceVersion"]


def test_a_trainingjob_recreated_after_an_orphaning_delete_does_not_adopt_the_old_job(
    crds: Cluster, kube: Kube, mlflow: MlflowServer, namespace: str
) -> None:
    registry = Registry(mlflow.uri)
    crds.apply(training_job("again", namespace, model=f"m-{namespace}"))
    first = crds.get("trainingjob", "again", namespace)
    assert first is not None
    status = settle(first, kube=kube, registry=registry).status
    jname = status["jobName"]
    crds.kubectl("delete", "tj", "again", "-n", namespace, "--cascade=orphan")
    eventually(
        lambda: (
            not (kube.get("batch/v1", "Job", namespace, jname) or {})
            .get("metadata", {})
            .get("ownerReferences")
            and crds.get("trainingjob", "again", namespace) is None
        ),
        timeout=60,
        what="the TrainingJob to go and its Job to be orphaned",
    )
    crds.apply(training_job("again", namespace, model=f"m-{namespace}"))
    second = crds.get("trainingjob", "again", namespace)
    assert second is not None and second["metadata"]["uid"] != first["metadata"]["uid"]

    out = reconcile_tj(second, kube=kube, registry=registry, now=NOW)

    assert summary(out.status, "Succeeded")["reason"] == "NameTaken", out.status
    job = kube.get("batch/v1", "Job", namespace, jname)
    assert job is not None
    assert [r["uid"] for r in job["metadata"].get("ownerReferences") or []] == []


def test_a_deployment_of_the_same_name_not_owned_is_not_applied_over(
    crds: Cluster, kube: Kube, mlflow: MlflowServer, namespace: str
) -> None:
    model = f"m-{namespace}"
    version = register(mlflow.uri, model)
    theirs = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "served", "namespace": namespace},
        "spec": {
            "replicas": 0,
            "selector": {"matchLabels": {"app": "theirs"}},
            "template": {
                "metadata": {"labels": {"app": "theirs"}},
                "spec": {"containers": [{"name": "web", "image": "nginx"}]},
            },
        },
    }
    kube.create(theirs)
    obj = mdep("served", model)
    obj["spec"]["model"] = {"name": model, "version": version}
    crds.apply(obj, "-n", namespace)
    current = crds.get("mdep", "served", namespace)
    assert current is not None
    server = ServerConfig("modelworks:0.1.0", "IfNotPresent", mlflow.uri)
    before = kube.get("apps/v1", "Deployment", namespace, "served")
    assert before is not None

    out = reconcile_mdep(current, kube=kube, registry=Registry(mlflow.uri), now=NOW, server=server)

    ready = summary(out.status, "Ready")
    assert (ready["status"], ready["reason"]) == ("False", "NameTaken"), json.dumps(out.status)
    assert "Deployment served exists and is not owned by this ModelDeployment" in ready["message"]
    after = kube.get("apps/v1", "Deployment", namespace, "served")
    assert after is not None and modelworks_fields(after) == []
    assert after["metadata"]["resourceVersion"] == before["metadata"]["resourceVersion"]
    assert kube.get("v1", "Service", namespace, "served") is None
