"""Fixtures and probes of the dependency-fault tests: the real MLflow behind a
:class:`~tests.reliability.proxy.FaultProxy`, failing canaries, and timed polls."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from modelworks.api import API_VERSION
from modelworks.clients.kube import Kube
from tests.integration.test_modeldeployment import KWOK, register
from tests.reliability.proxy import FaultProxy, fault_proxy
from tests.support import Cluster, eventually, mlflow_client

MLFLOW_ENV = "MODELWORKS_MLFLOW_TRACKING_URI"


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/health", timeout=5) as r:
            return bool(r.status == 200)
    except OSError:
        return False


@pytest.fixture
def mlflow_uri(crds: Cluster, request: pytest.FixtureRequest) -> str:
    """The cluster's real MLflow (``hack/cluster.sh env``), else the session's own server."""
    uri = os.environ.get(MLFLOW_ENV) or crds.env.get(MLFLOW_ENV, "")
    if uri and _answers(uri):
        return uri
    return str(request.getfixturevalue("mlflow").uri)


@pytest.fixture
def mlflow_proxy(mlflow_uri: str) -> Iterator[FaultProxy]:
    with fault_proxy(mlflow_uri) as proxy:
        yield proxy


def canary_mdep(name: str, model: str, deadline: int = 30) -> dict[str, Any]:
    """One stable pod; a canary step that holds for long, whose pods must be ready within
    ``deadline`` seconds."""
    rollout = {
        "strategy": "Canary",
        "steps": [{"weight": 50, "pauseSeconds": 3600}],
        "analysis": {"minRequests": 0},
        "progressDeadlineSeconds": deadline,
    }
    return {
        "apiVersion": API_VERSION,
        "kind": "ModelDeployment",
        "metadata": {"name": name},
        "spec": {
            "model": {"name": model, "alias": "champion"},
            "podTemplate": KWOK,
            "replicas": 1,
            "rollout": rollout,
        },
    }


def pod_quota(crds: Cluster, namespace: str, pods: int) -> None:
    """No more than ``pods`` pods in ``namespace``: a canary pod beyond it is never created,
    so its Deployment exceeds its progress deadline (a canary that cannot get ready)."""
    quota = {
        "apiVersion": "v1",
        "kind": "ResourceQuota",
        "metadata": {"name": "pods"},
        "spec": {"hard": {"pods": str(pods)}},
    }
    crds.apply(quota, "-n", namespace)
    eventually(
        lambda: (
            ((crds.get("resourcequota", "pods", namespace) or {}).get("status") or {})
            .get("used", {})
            .get("pods")
            == str(pods)
        ),
        timeout=30,
        what=f"the quota to count {pods} pods",
    )


def deadline_exceeded(dep: dict[str, Any] | None) -> bool:
    for c in ((dep or {}).get("status") or {}).get("conditions") or []:
        if c.get("type") == "Progressing" and c.get("reason") == "ProgressDeadlineExceeded":
            return True
    return False


def rollback_delay(kube: Kube, namespace: str, name: str, version: str) -> float:
    """Seconds from the canary Deployment of ``version`` exceeding its progress deadline to
    the ModelDeployment's status recording the rollback; an upper bound: counted from the
    last poll that saw the Deployment not exceeded yet, when no poll saw it exceeded."""
    before: float | None = None  # the last poll that saw the deadline not (yet) exceeded
    seen: float | None = None
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        polled = time.monotonic()
        dep = kube.get("apps/v1", "Deployment", namespace, f"{name}-canary")
        if seen is None and deadline_exceeded(dep):
            seen = polled
        elif seen is None and dep is not None:
            before = polled
        obj = kube.get(API_VERSION, "ModelDeployment", namespace, name) or {}
        rollback = (obj.get("status") or {}).get("rollback") or {}
        if rollback.get("fromVersion") == version:
            assert rollback["reason"] == "ProgressDeadlineExceeded", rollback
            start = seen if seen is not None else before
            assert start is not None, "rolled back before its canary Deployment was seen"
            return time.monotonic() - start
        time.sleep(0.25)
    raise AssertionError(f"{name}: version {version} was not rolled back in 180 s")


def start_canary(crds: Cluster, mlflow_uri: str, namespace: str, name: str, model: str) -> str:
    """Move the alias to a new version and wait for the operator to start its canary."""
    version = register(mlflow_uri, model, alias="champion")
    eventually(
        lambda: crds.get("deployment", f"{name}-canary", namespace),
        timeout=60,
        interval=0.25,
        what=f"the canary Deployment of {name}",
    )
    return version


def condition(obj: dict[str, Any] | None, type_: str) -> dict[str, Any]:
    for c in ((obj or {}).get("status") or {}).get("conditions") or []:
        if c.get("type") == type_:
            return dict(c)
    return {}


def runs_of(mlflow_uri: str, experiment: str, uid: str) -> int:
    """How many runs of ``experiment`` carry the source key of the object ``uid``."""
    client = mlflow_client(mlflow_uri)
    found = client.get_experiment_by_name(experiment)
    if found is None:
        return 0
    runs = client.search_runs(
        [found.experiment_id], filter_string=f"tags.`modelworks.dev/source` LIKE '{uid}/%'"
    )
    return len(runs)


def timed(probe: Callable[[], Any], *, timeout: float, what: str) -> float:
    """Seconds until ``probe`` returned something truthy."""
    started = time.monotonic()
    eventually(probe, timeout=timeout, interval=0.5, what=what)
    return time.monotonic() - started


EMPTY_VECTOR = {"status": "success", "data": {"resultType": "vector", "result": []}}
NO_VALUE = {"status": "success", "data": {"resultType": "vector", "result": [{"metric": {}}]}}
SERVING_METRICS = (
    "# TYPE modelworks_serving_requests_total counter\n"
    'modelworks_serving_requests_total{{code="200"}} {ok}\n'
    'modelworks_serving_requests_total{{code="500"}} {errors}\n'
)
BODIES: dict[str, bytes] = {
    "prometheus": json.dumps(EMPTY_VECTOR).encode(),
    "garbage": b"\x00\xff<html>this is not JSON",
    "no-value": json.dumps(NO_VALUE).encode(),
    "metrics": SERVING_METRICS.format(ok=200, errors=0).encode(),
    "metrics-malformed": b"modelworks_serving_requests_total{code=200 oops\n",
    "metrics-non-finite": SERVING_METRICS.format(ok="NaN", errors="+Inf").encode(),
}
TRICKLE_SECONDS = 25.0


class FaultyHTTP(ThreadingHTTPServer):
    """A real local HTTP server answering every GET with the body of its ``mode`` (see
    :data:`BODIES`), or ``trickle``: one byte every half second for 25 s."""

    daemon_threads = True

    def __init__(self, mode: str) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.mode = mode

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


class _Handler(BaseHTTPRequestHandler):
    server: FaultyHTTP

    def do_GET(self) -> None:
        mode = self.server.mode
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        if mode != "trickle":
            body = BODIES[mode]
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
            return
        self.end_headers()
        ends = time.monotonic() + TRICKLE_SECONDS
        with contextlib.suppress(OSError):
            while time.monotonic() < ends:
                self.wfile.write(b" ")
                self.wfile.flush()
                time.sleep(0.5)

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def faulty_http() -> Iterator[FaultyHTTP]:
    server = FaultyHTTP("prometheus")
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()


def restart_apiserver(cluster: Cluster, grace: float = 10.0) -> float:
    """Stop the local cluster's kube-apiserver (SIGTERM; SIGKILL after ``grace`` seconds,
    as its drain of open connections can take a minute) and start it again with the same
    command line, environment, log and pid file as ``hack/cluster.sh`` gave it; the seconds
    it did not answer. It is started again whatever happens in between. Nothing else of
    the cluster is touched."""
    state = Path(cluster.kubeconfig).resolve().parent
    pid_file = state / "pids" / "kube-apiserver.pid"
    pid = int(pid_file.read_text().strip())
    proc = Path(f"/proc/{pid}")
    argv = [a.decode() for a in (proc / "cmdline").read_bytes().split(b"\0") if a]
    env = dict(e.decode().split("=", 1) for e in (proc / "environ").read_bytes().split(b"\0") if e)
    assert str(state) in " ".join(argv), f"pid {pid} is not this cluster's kube-apiserver"
    started = time.monotonic()
    try:
        os.kill(pid, signal.SIGTERM)
        if not _gone(proc, grace):
            os.kill(pid, signal.SIGKILL)
            _gone(proc, 30)
    finally:
        with (state / "logs" / "kube-apiserver.log").open("ab") as log:
            new = subprocess.Popen(
                argv,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        pid_file.write_text(f"{new.pid}\n")
    eventually(cluster.reachable, timeout=120, what="the kube-apiserver to answer again")
    return time.monotonic() - started


def _gone(proc: Path, timeout: float) -> bool:
    """The process ``proc`` exited (or is a zombie) within ``timeout`` seconds."""
    ends = time.monotonic() + timeout
    while time.monotonic() < ends:
        try:
            state = (proc / "stat").read_text().split(") ", 1)[1][:1]
        except (OSError, IndexError):
            return True
        if state == "Z":
            return True
        time.sleep(0.2)
    return False
