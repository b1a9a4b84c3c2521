"""Fixtures shared by the tiers. Unit tests use none of them and need no cluster."""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator
from pathlib import Path

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


@pytest.fixture(scope="session")
def cluster() -> Iterator[Cluster]:
    """A real kube-apiserver: $KUBECONFIG's, or the local one (started when needed)."""
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
