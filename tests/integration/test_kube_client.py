"""clients.kube against a real API server: server-side apply is idempotent, errors are typed."""

from __future__ import annotations

import pytest

from modelworks.clients.kube import Kube, KubeError

pytestmark = pytest.mark.integration


def test_apply_twice_changes_nothing(kube: Kube, namespace: str) -> None:
    cm = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": "c", "namespace": namespace, "labels": {"app": "x"}},
        "data": {"k": "v"},
    }
    first = kube.apply(cm)
    second = kube.apply(cm)
    assert first["metadata"]["resourceVersion"] == second["metadata"]["resourceVersion"]
    managers = [m["manager"] for m in second["metadata"]["managedFields"]]
    assert managers == ["modelworks"]
    assert kube.get("v1", "ConfigMap", namespace, "c") is not None
    assert [
        o["metadata"]["name"] for o in kube.list("v1", "ConfigMap", namespace, labels={"app": "x"})
    ] == ["c"]
    assert kube.delete("v1", "ConfigMap", namespace, "c") is True
    assert kube.delete("v1", "ConfigMap", namespace, "c") is False
    assert kube.get("v1", "ConfigMap", namespace, "c") is None
    assert kube.requests["PATCH"] == 2


def test_errors_carry_status_and_reason(kube: Kube, namespace: str) -> None:
    bad = {
        "apiVersion": "modelworks.dev/v1alpha1",
        "kind": "ModelDeployment",
        "metadata": {"name": "bad", "namespace": namespace},
        "spec": {"model": {"name": "churn"}},
    }
    with pytest.raises(KubeError) as err:
        kube.apply(bad)
    assert err.value.status == 422
    assert err.value.reason == "Invalid"
    assert "exactly one of version or alias" in err.value.message
