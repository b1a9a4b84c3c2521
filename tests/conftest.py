"""Fixtures shared by the tiers. Unit tests use none of them and need no cluster."""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support import ROOT, Cluster, cluster_session, eventually

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
    crds.kubectl("create", "namespace", name)
    eventually(
        lambda: crds.get("serviceaccount", "default", name),
        timeout=30,
        what=f"the default ServiceAccount in {name}",
    )
    yield name
    crds.kubectl("delete", "namespace", name, "--wait=false", check=False)


@pytest.fixture
def tmp(tmp_path: Path) -> Path:
    return tmp_path
