"""Fixtures shared by the tiers. Unit tests use none of them and need no cluster."""

from __future__ import annotations

import contextlib
import fcntl
import json
import re
import tempfile
import threading
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
    open_cluster,
    stop_cluster,
)

CRDS = ROOT / "crds"
# The cluster of this session, brought up once the tests are collected (see below).
_SESSION: dict[str, Any] = {}
_RUN = uuid.uuid4().hex  # this run's id when there are no xdist workers


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Under ``-n 2 --dist loadgroup`` one worker runs every e2e test, one after the other,
    while the other works through the integration and unit tiers. The e2e tests share the
    one real node (two of them at once would time each other's pods out on two cores); the
    integration tests use kwok's fake nodes and a namespace each, so they run beside them.
    """
    group = pytest.mark.xdist_group("node")
    for item in items:
        if item.get_closest_marker("e2e"):
            item.add_marker(group)


@contextlib.contextmanager
def _shared_state(config: pytest.Config) -> Iterator[dict[str, Any]]:
    """This run's cluster bookkeeping, under a lock every xdist worker of the run shares."""
    workerinput = getattr(config, "workerinput", None)
    run = workerinput["testrunuid"] if workerinput else _RUN
    path = Path(tempfile.gettempdir()) / f"modelworks-pytest-{run}.json"
    with path.with_suffix(".lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        state: dict[str, Any] = json.loads(path.read_text()) if path.exists() else {}
        yield state
        if state.get("users", 0) > 0 or "error" in state:
            path.write_text(json.dumps(state))
        else:
            path.unlink(missing_ok=True)
            path.with_suffix(".lock").unlink(missing_ok=True)


def pytest_collection_finish(session: pytest.Session) -> None:
    """Bring the cluster up before the first test runs, outside every test's timeout.

    On a cold machine ``hack/cluster.sh up`` builds the control plane from its Go
    modules, the node and the project image: many minutes, once. Inside a session
    fixture that would count against the first test's 600 s timeout. Under xdist the
    first worker brings it up while the others wait on the lock; the last one to finish
    stops it (when this run started it).
    """
    if session.config.option.collectonly:
        return
    if not any(
        i.get_closest_marker("integration") or i.get_closest_marker("e2e") for i in session.items
    ):
        return  # the unit tier alone: no cluster
    with _shared_state(session.config) as state:
        if "error" in state:
            _SESSION["error"] = state["error"]
            return
        try:
            _SESSION["cluster"] = open_cluster()
        except Exception as exc:  # reported by every test that needs the cluster
            state["error"] = f"the test cluster did not come up: {type(exc).__name__}: {exc}"
            _SESSION["error"] = state["error"]
            return
        state["users"] = state.get("users", 0) + 1
        state["started"] = state.get("started", False) or _SESSION["cluster"].started_here
    # After the cluster, not during its bring-up: an MLflow server's start is CPU-bound and
    # would compete for the same cores with the image build. It boots while the first tests run.
    _start_mlflow_early(session)


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    early: _EarlyMlflow | None = _SESSION.pop("mlflow", None)
    if early is not None:  # started, but no test of this worker asked for it
        early.stop()
    if _SESSION.pop("cluster", None) is None:
        return
    with _shared_state(session.config) as state:
        state["users"] -= 1
        if state["users"] == 0 and state.get("started"):
            stop_cluster()  # unless MODELWORKS_KEEP_CLUSTER=1


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


class _EarlyMlflow(threading.Thread):
    """The session's MLflow server, started in the background once the cluster is up.

    ``mlflow server`` takes 10-15 s of CPU to start, several times that while the other
    worker's e2e tests load the machine. Started from ``pytest_collection_finish`` it boots
    while the first tests (which do not need it) run; the fixture waits for the rest.
    """

    def __init__(self, root: Path) -> None:
        super().__init__(name="mlflow-server", daemon=True)
        self.root = root
        self.stack = contextlib.ExitStack()
        self.server: MlflowServer | None = None
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            self.server = self.stack.enter_context(mlflow_server(self.root))
        except BaseException as exc:  # re-raised by the fixture
            self.error = exc

    def stop(self) -> None:
        self.join(300)
        self.stack.close()

    def result(self, timeout: float) -> MlflowServer:
        self.join(timeout)
        if self.is_alive():
            raise AssertionError(f"the MLflow server did not start in {timeout:.0f} s")
        if self.error is not None:
            raise self.error
        assert self.server is not None
        return self.server


def _start_mlflow_early(session: pytest.Session) -> None:
    if any("mlflow" in getattr(i, "fixturenames", ()) for i in session.items):
        factory: pytest.TempPathFactory = session.config._tmp_path_factory
        early = _EarlyMlflow(factory.mktemp("mlflow"))
        early.start()
        _SESSION["mlflow"] = early


@pytest.fixture(scope="session")
def mlflow(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MlflowServer]:
    """A real MLflow tracking server and registry for the whole session."""
    early: _EarlyMlflow | None = _SESSION.pop("mlflow", None)
    if early is None:
        with mlflow_server(tmp_path_factory.mktemp("mlflow")) as server:
            yield server
        return
    try:
        yield early.result(timeout=300)
    finally:
        early.stop()


@pytest.fixture
def kube(crds: Cluster) -> Kube:
    """The operator's own Kubernetes client, on the test cluster."""
    cfg = client.Configuration()
    config.load_kube_config(config_file=crds.kubeconfig, client_configuration=cfg)
    return Kube(client.ApiClient(cfg))
