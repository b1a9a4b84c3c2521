"""clients.kube against a real API server: server-side apply is idempotent, errors are typed."""

from __future__ import annotations

import socket
import threading
import time

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


def test_an_api_server_that_never_answers_costs_a_bounded_wait() -> None:
    """A half-open connection (accepted, never answered) ends in a KubeError with no HTTP
    status, within the client's timeout, instead of holding the caller for ever."""
    from kubernetes import client as k8s

    listener = socket.create_server(("127.0.0.1", 0))
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        listener.settimeout(0.2)
        while not stop.is_set():
            try:
                held.append(listener.accept()[0])  # and never a byte back
            except TimeoutError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        cfg = k8s.Configuration()
        cfg.host = f"http://127.0.0.1:{listener.getsockname()[1]}"
        kube = Kube(k8s.ApiClient(cfg)).bounded(1.0)
        started = time.monotonic()
        with pytest.raises(KubeError) as failed:
            kube.get("v1", "ConfigMap", "default", "c")
        assert failed.value.status == 0
        assert time.monotonic() - started < 10  # one second a try, a few retries at most
    finally:
        stop.set()
        thread.join(timeout=5)
        for conn in held:
            conn.close()
        listener.close()
