"""ModelDeployment rollout safety against a real API server and a real MLflow: passes run
in-process, one at a time, so what each pass wrote is seen before the next one."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest

from modelworks.clients.kube import Kube
from modelworks.clients.mlflow import Registry
from modelworks.reconcilers.modeldeployment import ServerConfig, reconcile
from tests.integration.test_modeldeployment import NOW, cond, get, mdep, register
from tests.support import Cluster, MlflowServer, eventually

pytestmark = pytest.mark.integration
Pass = Callable[[], dict[str, Any]]


def passes(crds: Cluster, kube: Kube, mlflow: MlflowServer, ns: str, name: str) -> Pass:
    """One reconcile pass of ``name`` that stores the status it computed, as the operator does."""
    registry = Registry(mlflow.uri)
    server = ServerConfig("modelworks:0.1.0", "IfNotPresent", mlflow.uri)

    def one_pass() -> dict[str, Any]:
        current = get(crds, "mdep", name, ns)
        out = reconcile(current, kube=kube, registry=registry, now=NOW, server=server)
        if out.status != current.get("status"):
            patch = json.dumps({"status": out.status})
            crds.kubectl(
                "patch", "mdep", name, "-n", ns, "--subresource=status", "--type=merge", "-p", patch
            )
        return out.status

    return one_pass


def patch_spec(crds: Cluster, ns: str, name: str, spec: dict[str, Any]) -> None:
    crds.kubectl("patch", "mdep", name, "-n", ns, "--type=merge", "-p", json.dumps({"spec": spec}))


def available(one_pass: Pass) -> dict[str, Any]:
    return eventually(
        lambda: (s := one_pass())["phase"] == "Available" and s,
        timeout=90,
        what="the pods to be ready and the pass to see it",
    )


def replicas(kube: Kube, ns: str, name: str) -> int:
    dep = kube.get("apps/v1", "Deployment", ns, name)
    assert dep is not None
    return int(dep["spec"]["replicas"])


def test_switching_to_autoscaling_keeps_the_replicas_until_the_hpa_acts(
    crds: Cluster, kube: Kube, mlflow: MlflowServer, namespace: str
) -> None:
    model = f"m-{namespace}"
    register(mlflow.uri, model, alias="champion")
    crds.apply(mdep("scale", model, replicas=5), "-n", namespace)
    one_pass = passes(crds, kube, mlflow, namespace, "scale")
    available(one_pass)
    assert replicas(kube, namespace, "scale") == 5

    patch_spec(
        crds,
        namespace,
        "scale",
        {"replicas": None, "autoscaling": {"minReplicas": 2, "maxReplicas": 10}},
    )
    one_pass()
    assert replicas(kube, namespace, "scale") == 5, "the switch pass kept the running count"
    assert get(crds, "hpa", "scale", namespace)["spec"]["minReplicas"] == 2
    one_pass()
    assert replicas(kube, namespace, "scale") == 5, "a later pass does not reset it either"

    # The HPA owns the count now: a scale through /scale (as the HPA does) stays.
    crds.kubectl("scale", "deployment/scale", "-n", namespace, "--replicas=7")
    one_pass()
    assert replicas(kube, namespace, "scale") == 7

    # And back to a fixed count: the spec wins again.
    patch_spec(crds, namespace, "scale", {"autoscaling": None, "replicas": 3})
    one_pass()
    assert replicas(kube, namespace, "scale") == 3
    assert crds.get("hpa", "scale", namespace) is None
    assert cond(get(crds, "mdep", "scale", namespace), "Ready")["status"] in ("True", "False")
