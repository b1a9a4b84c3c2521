"""Fixtures shared by the tiers. Unit tests use none of them and need no cluster."""

from __future__ import annotations

import contextlib
import re
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client, config

from modelworks.clients.kube import Kube
from tests.support import (
    ROOT,
    Cluster,
    MlflowServer,
    cluster_session,
    create_namespace,
    mlflow_server,
)

CRDS = ROOT / "crds"
# The cluster of this session, brought up once the tests are collected (see below).
_SESSION: dict[str, Any] = {}


def pytest_collection_finish(session: pytest.Session) -> None:
    """Bring the cluster up before the first test runs, outside every test's timeout.

    On a cold machine ``hack/cluster.sh up`` builds the control plane from its Go
    modules, the node and the project image: many minutes, once. Inside a session
    fixture that would count against the first test's 600 s timeout.
    """
    if session.config.option.collectonly:
        return
    if not any(
        i.get_closest_marker("integration") or i.get_closest_marker("e2e") for i in session.items
    ):
        return  # the unit tier alone: no cluster
    stack = contextlib.ExitStack()
    try:
        _SESSION["cluster"] = stack.enter_context(cluster_session())
    except Exception as exc:  # reported by every test that needs the cluster
        stack.close()
        _SESSION["error"] = f"the test cluster did not come up: {type(exc).__name__}: {exc}"
        return
    _SESSION["stack"] = stack


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    stack = _SESSION.pop("stack", None)
    if stack is not None:
        stack.close()  # stops a cluster this session started (unless MODELWORKS_KEEP_CLUSTER=1)


@pytest.fixture(scope="session")
def cluster() -> Iterator[Cluster]:
    """A real kube-apiserver: $KUBECONFIG's, or the local one (started when needed)."""
    if "error" in _SESSION:
        pytest.fail(_SESSION["error"])
    if "cluster" in _SESSION:
        yield _SESSION["cluster"]
        return
    with cluster_session() as c:
        yield c


@pytest.fixture(scope="session")
def crds(cluster: Cluster) -> Cluster:
    """The Modelworks CRDs installed and Established."""
    cluster.kubectl("apply", "--server-side", "--force-conflicts", "-f", str(CRDS))
    for path in sorted(CRDS.glob("*.yaml")):
        name = path.name.removesuffix(".yaml").split("_", 1)[1] + ".modelworks.dev"
        cluster.kubectl("wait", "--for=condition=Established", f"crd/{name}", "--timeout=60s")
    return cluster


@pytest.fixture
def namespace(crds: Cluster, request: pytest.FixtureRequest) -> Iterator[str]:
    """A fresh namespace for one test, deleted afterwards (without waiting)."""
    slug = re.sub(r"[^a-z0-9-]", "-", request.node.name.lower())[:40].strip("-")
    name = f"t-{slug}-{uuid.uuid4().hex[:5]}"
    yield create_namespace(crds, name)
    crds.kubectl("delete", "namespace", name, "--wait=false", check=False)


@pytest.fixture
def tmp(tmp_path: Path) -> Path:
    return tmp_path


@pytest.fixture(scope="session")
def mlflow(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MlflowServer]:
    """A real MLflow tracking server and registry for the whole session."""
    with mlflow_server(tmp_path_factory.mktemp("mlflow")) as server:
        yield server


@pytest.fixture
def kube(crds: Cluster) -> Kube:
    """The operator's own Kubernetes client, on the test cluster."""
    cfg = client.Configuration()
    config.load_kube_config(config_file=crds.kubeconfig, client_configuration=cfg)
    return Kube(client.ApiClient(cfg))
