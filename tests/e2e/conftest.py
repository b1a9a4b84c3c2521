"""Fixtures of the e2e tier: pods that really run on a node (the local cluster's real
node, or any node of $KUBECONFIG's cluster that is not a kwok node)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.support import (
    ROOT,
    Cluster,
    Operator,
    create_namespace,
    eventually,
    free_port,
    run_operator,
    server_process,
)

KWOK_TAINT = "kwok.x-k8s.io/node"
MLFLOW_URI_FILE = ROOT / ".cluster" / "mlflow-uri"
# The image's user (Dockerfile: USER 65532:65532).
IMAGE_UID = 65532

# Nothing in a pod or in this process phones home (MLflow 3's usage telemetry): pods
# reach nothing off the node anyway, and an unanswered upload only costs time.
NO_TELEMETRY = {"MLFLOW_DISABLE_TELEMETRY": "true", "DO_NOT_TRACK": "true"}
os.environ.update(NO_TELEMETRY)


@dataclass
class Node:
    name: str
    labels: dict[str, str]


@pytest.fixture(scope="session")
def real_node(cluster: Cluster) -> Node:
    """A Ready node that runs pods: not a kwok node. Skips the tier when there is none."""
    nodes = json.loads(cluster.kubectl("get", "nodes", "-o", "json").stdout)["items"]

    def runs_pods(n: dict[str, Any]) -> bool:
        taints = n["spec"].get("taints") or []
        ready = any(
            c["type"] == "Ready" and c["status"] == "True"
            for c in n["status"].get("conditions", [])
        )
        return ready and not any(t["key"] == KWOK_TAINT for t in taints)

    real = [n for n in nodes if runs_pods(n)]
    if not real:
        reason = "no Ready node that runs real pods (MODELWORKS_NODE=0 or a kwok-only cluster)"
        if os.environ.get("MODELWORKS_REQUIRE_NODE") == "1":  # `make test` and CI: a real failure
            pytest.fail(reason)
        pytest.skip(reason)
    # The local cluster's node is labelled; elsewhere any schedulable node will do.
    real.sort(key=lambda n: n["metadata"]["labels"].get("modelworks.dev/node-kind") != "real")
    n = real[0]
    return Node(n["metadata"]["name"], n["metadata"].get("labels", {}))


@pytest.fixture(scope="session")
def image() -> str:
    """The project image, as pods name it (loaded into the node by hack/image.sh)."""
    ref = os.environ.get("MODELWORKS_IMAGE")
    if ref:
        return ref
    out = subprocess.run(
        [str(ROOT / "hack" / "image.sh"), "name"], capture_output=True, text=True, check=True
    )
    return out.stdout.strip()


@pytest.fixture(scope="session")
def mlflow_uri(cluster: Cluster, real_node: Node) -> str:
    """The tracking URI of the MLflow server pods reach (hack/cluster.sh starts it)."""
    uri = (
        os.environ.get("MODELWORKS_MLFLOW_TRACKING_URI")
        or cluster.env.get("MODELWORKS_MLFLOW_TRACKING_URI")
        or (MLFLOW_URI_FILE.read_text().strip() if MLFLOW_URI_FILE.exists() else "")
    )
    if not uri:
        if os.environ.get("MODELWORKS_REQUIRE_NODE") == "1":
            pytest.fail(
                "no MLflow server for pods (MODELWORKS_MLFLOW_TRACKING_URI, .cluster/mlflow-uri)"
            )
        pytest.skip(
            "no MLflow server for pods (MODELWORKS_MLFLOW_TRACKING_URI, .cluster/mlflow-uri)"
        )
    return uri


@pytest.fixture(scope="session")
def containerd_address(cluster: Cluster) -> str | None:
    """The local node's containerd socket, when the tests run next to it."""
    address = cluster.env.get("CONTAINERD_ADDRESS") or os.environ.get("CONTAINERD_ADDRESS")
    if address and Path(address).is_socket() and os.access(address, os.R_OK | os.W_OK):
        return address
    return None


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9-]", "-", text.lower())[:36].strip("-")


@pytest.fixture
def ns(
    cluster: Cluster, crds: Cluster, real_node: Node, request: pytest.FixtureRequest
) -> Iterator[str]:
    """A fresh namespace that enforces Pod Security "restricted", deleted afterwards.

    The Modelworks CRDs are installed first (``crds``): the e2e tier may run alone.
    """
    name = f"e2e-{_slug(request.node.name)}-{uuid.uuid4().hex[:5]}"
    restricted = {
        "pod-security.kubernetes.io/enforce": "restricted",
        "pod-security.kubernetes.io/enforce-version": "latest",
    }
    create_namespace(cluster, name, restricted)
    yield name
    cluster.kubectl("delete", "namespace", name, "--wait=false", check=False)


@pytest.fixture
def operator(
    cluster: Cluster, real_node: Node, mlflow_uri: str, ns: str, image: str, tmp: Path
) -> Iterator[Operator]:
    """The operator as a host process, scoped to the test's namespace.

    A short resync: alias moves are seen within seconds, not at the 30 s registry poll.
    """
    with run_operator(
        cluster,
        tmp,
        namespaces=ns,
        mlflow_tracking_uri=mlflow_uri,
        image=image,
        resync_seconds="3",
    ) as op:
        yield op


@dataclass
class Prometheus:
    url: str
    log: Path


@pytest.fixture
def prometheus(cluster: Cluster, real_node: Node, ns: str, tmp: Path) -> Iterator[Prometheus]:
    """A real Prometheus (Debian's, hack/prometheus.sh) scraping the test namespace's model
    servers every 2 s, with the labels manifests/monitoring/podmonitor.yaml gives them.

    Debian builds Prometheus without Kubernetes service discovery, so this fixture is the
    discovery: every 2 s it writes the model-server pods of the namespace, labelled as the
    PodMonitor labels them (namespace, pod, modeldeployment), to a file_sd file.
    """
    found = subprocess.run(
        [str(ROOT / "hack" / "prometheus.sh"), "path"], capture_output=True, text=True
    )
    if found.returncode != 0:
        reason = f"no Prometheus binary: {found.stderr.strip()[-500:]}"
        if os.environ.get("MODELWORKS_REQUIRE_NODE") == "1":
            pytest.fail(reason)
        pytest.skip(reason)
    root = tmp / "prometheus"
    root.mkdir()
    targets = root / "targets.json"

    def discover() -> None:
        pods = json.loads(
            cluster.kubectl(
                "get",
                "pods",
                "-n",
                ns,
                "-l",
                "app.kubernetes.io/name=modeldeployment,app.kubernetes.io/component=server,"
                "app.kubernetes.io/managed-by=modelworks",
                "-o",
                "json",
                check=False,
            ).stdout
            or '{"items": []}'
        )["items"]
        groups = [
            {
                "targets": [f"{p['status']['podIP']}:{port['containerPort']}"],
                "labels": {
                    "namespace": ns,
                    "pod": p["metadata"]["name"],
                    "modeldeployment": p["metadata"]["labels"]["app.kubernetes.io/instance"],
                },
            }
            for p in pods
            if (p.get("status") or {}).get("podIP")
            for c in p["spec"]["containers"]
            for port in c.get("ports") or []
            if port.get("name") == "http"
        ]
        partial = targets.with_suffix(".tmp")
        partial.write_text(json.dumps(groups))
        partial.replace(targets)  # Prometheus never reads a half-written file

    stop = threading.Event()

    def keep_discovering() -> None:
        while not stop.wait(2.0):
            discover()

    discover()
    config = {
        "global": {"scrape_interval": "2s", "scrape_timeout": "2s"},
        "scrape_configs": [
            {
                "job_name": "modelworks-model-servers",
                "file_sd_configs": [{"files": [str(targets)], "refresh_interval": "2s"}],
            }
        ],
    }
    (root / "prometheus.yml").write_text(json.dumps(config))
    url = f"http://127.0.0.1:{free_port()}"
    command = [
        found.stdout.strip(),
        f"--config.file={root / 'prometheus.yml'}",
        f"--storage.tsdb.path={root / 'data'}",
        f"--web.listen-address={url.removeprefix('http://')}",
    ]
    discovery = threading.Thread(target=keep_discovering, daemon=True)
    discovery.start()
    try:
        with server_process(command, root, f"{url}/-/ready", what="prometheus", timeout=60):
            yield Prometheus(url, root / "prometheus.log")
    finally:
        stop.set()
        discovery.join(timeout=10)


def container(
    image: str,
    command: list[str],
    *,
    name: str = "main",
    env: dict[str, str] | None = None,
    memory: str = "256Mi",
    **extra: Any,
) -> dict[str, Any]:
    """A container that meets Pod Security "restricted" (the image runs as 65532)."""
    spec: dict[str, Any] = {
        "name": name,
        "image": image,
        "imagePullPolicy": "IfNotPresent",
        "command": command,
        "env": [{"name": k, "value": v} for k, v in {**NO_TELEMETRY, **(env or {})}.items()],
        "resources": {
            "requests": {"cpu": "50m", "memory": memory},
            "limits": {"memory": memory},
        },
        "securityContext": {
            "allowPrivilegeEscalation": False,
            "capabilities": {"drop": ["ALL"]},
            "runAsNonRoot": True,
            "runAsUser": IMAGE_UID,
            "runAsGroup": IMAGE_UID,
            "seccompProfile": {"type": "RuntimeDefault"},
        },
    }
    spec.update(extra)
    return spec


def pod_spec(*containers: dict[str, Any], restart: str = "Never", **extra: Any) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "restartPolicy": restart,
        "terminationGracePeriodSeconds": 2,
        "enableServiceLinks": False,
        "securityContext": {
            "runAsNonRoot": True,
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        "containers": list(containers),
    }
    spec.update(extra)
    return spec


def pod(name: str, namespace: str, *containers: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": namespace, "labels": {"app": name}},
        "spec": pod_spec(*containers, **extra),
    }


def wait_pod_done(
    cluster: Cluster, name: str, namespace: str, timeout: float = 180
) -> dict[str, Any]:
    """The pod once it has Succeeded or Failed; its log is in the message on failure."""

    def done() -> dict[str, Any] | None:
        p = cluster.get("pod", name, namespace)
        if p and p["status"].get("phase") in ("Succeeded", "Failed"):
            return p
        return None

    try:
        return eventually(
            done, timeout=timeout, interval=1, what=f"pod {namespace}/{name} to finish"
        )
    except AssertionError as e:
        raise AssertionError(f"{e}\n{describe(cluster, name, namespace)}") from None


def logs(cluster: Cluster, name: str, namespace: str) -> str:
    return cluster.kubectl("logs", "-n", namespace, name, "--all-containers", check=False).stdout


def describe(cluster: Cluster, name: str, namespace: str) -> str:
    out = cluster.kubectl("describe", "pod", "-n", namespace, name, check=False)
    return (
        (out.stdout + out.stderr)[-3000:]
        + "\n--- logs ---\n"
        + logs(cluster, name, namespace)[-3000:]
    )


def ctr(address: str, *args: str) -> str:
    """`ctr` against the node's containerd, namespace k8s.io (where the CRI keeps pods)."""
    proc = subprocess.run(
        ["ctr", "--address", address, "--namespace", "k8s.io", *args],
        capture_output=True,
        text=True,
        timeout=60,
    )
    if proc.returncode != 0:
        raise AssertionError(f"ctr {' '.join(args)} failed: {proc.stderr.strip()}")
    return proc.stdout
