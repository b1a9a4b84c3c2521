"""Helpers for the tiers that talk to a real cluster: kubectl, polls with deadlines, the operator."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.parse
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import yaml

ROOT = Path(__file__).resolve().parents[1]
CLUSTER_SH = ROOT / "hack" / "cluster.sh"
T = TypeVar("T")


def eventually(
    probe: Callable[[], T | None], *, timeout: float, interval: float = 0.5, what: str = "condition"
) -> T:
    """Poll ``probe`` until it returns something truthy; fail with ``what`` after ``timeout``."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while True:
        last = probe()
        if last:
            return last
        if time.monotonic() > deadline:
            raise AssertionError(
                f"timed out after {timeout:.0f}s waiting for {what} (last: {last!r})"
            )
        time.sleep(interval)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Cluster:
    """A reachable cluster: its kubeconfig and the kubectl to use with it."""

    kubeconfig: str
    kubectl_path: str
    started_here: bool = False
    env: dict[str, str] = field(default_factory=dict)

    def kubectl(
        self, *args: str, stdin: str | None = None, check: bool = True, timeout: float = 120
    ) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run(
            [self.kubectl_path, "--kubeconfig", self.kubeconfig, *args],
            input=stdin,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        if check and proc.returncode != 0:
            raise AssertionError(f"kubectl {' '.join(args)} failed: {proc.stderr.strip()}")
        return proc

    def apply(
        self, obj: dict[str, Any] | str, *extra: str, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        text = obj if isinstance(obj, str) else yaml.safe_dump(obj)
        return self.kubectl("apply", *extra, "-f", "-", stdin=text, check=check)

    def get(self, kind: str, name: str, namespace: str | None = None) -> dict[str, Any] | None:
        args = ["get", kind, name, "-o", "json"]
        if namespace:
            args += ["-n", namespace]
        proc = self.kubectl(*args, check=False)
        if proc.returncode != 0:
            if "NotFound" in proc.stderr:
                return None
            raise AssertionError(proc.stderr)
        return json.loads(proc.stdout)  # type: ignore[no-any-return]

    def reachable(self) -> bool:
        try:
            proc = self.kubectl("get", "--raw", "/readyz", check=False, timeout=10)
        except subprocess.TimeoutExpired:
            return False
        return proc.returncode == 0 and proc.stdout.strip() == "ok"


def create_namespace(cluster: Cluster, name: str, labels: dict[str, str] | None = None) -> str:
    """Create a namespace and wait for its default ServiceAccount (the controller-manager's)."""
    meta: dict[str, Any] = {"name": name, "labels": labels or {}}
    cluster.apply({"apiVersion": "v1", "kind": "Namespace", "metadata": meta})
    eventually(
        lambda: cluster.get("serviceaccount", "default", name),
        timeout=30,
        what=f"the default ServiceAccount in {name}",
    )
    return name


def _cluster_env() -> dict[str, str]:
    """The variables ``hack/cluster.sh env`` exports (KUBECONFIG, PATH with our kubectl).

    Read from ``env --json``: its PATH is already expanded and its values need no shell
    unquoting.
    """
    out = subprocess.run(
        [str(CLUSTER_SH), "env", "--json"], capture_output=True, text=True, check=True
    ).stdout
    env = json.loads(out)
    if not isinstance(env, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in env.items()
    ):
        raise RuntimeError(f"hack/cluster.sh env --json printed no string map: {out[:200]!r}")
    return env


def _kubectl_in(path: str) -> str:
    for directory in path.split(os.pathsep):
        candidate = Path(directory) / "kubectl"
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return str(candidate)
    raise RuntimeError("no kubectl found: run `make cluster-up` (it builds one) or install kubectl")


@contextmanager
def cluster_session() -> Iterator[Cluster]:
    """Use $KUBECONFIG when it reaches a cluster; else the local cluster, started if needed.

    A cluster this function started is stopped at the end unless MODELWORKS_KEEP_CLUSTER=1.
    """
    c = open_cluster()
    try:
        yield c
    finally:
        if c.started_here:
            stop_cluster()


def open_cluster() -> Cluster:
    """$KUBECONFIG's cluster when it answers; else the local one, started when not running
    (``started_here`` says so)."""
    given = os.environ.get("KUBECONFIG")
    if given:
        c = Cluster(kubeconfig=given, kubectl_path=_kubectl_in(os.environ.get("PATH", "")))
        if c.reachable():
            return c
        print(f"KUBECONFIG={given} is not reachable; using the local cluster", file=sys.stderr)
    running = (
        subprocess.run([str(CLUSTER_SH), "status"], capture_output=True, text=True).returncode == 0
    )
    if not running:
        subprocess.run([str(CLUSTER_SH), "up"], check=True, timeout=3600)
    env = _cluster_env()
    c = Cluster(
        kubeconfig=env["KUBECONFIG"],
        kubectl_path=_kubectl_in(env.get("PATH", "")),
        started_here=not running,
        env=env,
    )
    eventually(c.reachable, timeout=60, what="the local kube-apiserver to be ready")
    return c


def stop_cluster() -> None:
    """Stop the local cluster, unless MODELWORKS_KEEP_CLUSTER=1."""
    if os.environ.get("MODELWORKS_KEEP_CLUSTER") != "1":
        subprocess.run([str(CLUSTER_SH), "down"], check=False, timeout=300)


@dataclass
class Operator:
    """The operator running as a subprocess of the test, as it would on a host."""

    process: subprocess.Popen[bytes]
    log_path: Path
    health_port: int
    metrics_port: int

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def metrics(self) -> str:
        with urllib.request.urlopen(
            f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=5
        ) as r:
            return r.read().decode()  # type: ignore[no-any-return]

    def metric(self, name: str, /, **labels: str) -> float:
        """Sum of the samples of ``name`` whose labels include ``labels``."""
        total = 0.0
        for line in self.metrics().splitlines():
            if not line.startswith(name + "{") and not line.startswith(name + " "):
                continue
            head, _, value = line.rpartition(" ")
            if all(f'{k}="{v}"' in head for k, v in labels.items()):
                total += float(value)
        return total

    def healthy(self) -> bool:
        try:
            with urllib.request.urlopen(
                f"http://127.0.0.1:{self.health_port}/healthz", timeout=2
            ) as r:
                return bool(r.status == 200)
        except OSError:
            return False


@contextmanager
def run_operator(cluster: Cluster, tmp: Path, **settings: str) -> Iterator[Operator]:
    """Start ``python -m modelworks run``; stop it with SIGTERM at the end."""
    health, metrics = free_port(), free_port()
    env = dict(os.environ)
    env.update(
        KUBECONFIG=cluster.kubeconfig,
        MODELWORKS_HEALTH_PORT=str(health),
        MODELWORKS_METRICS_PORT=str(metrics),
        PYTHONUNBUFFERED="1",
    )
    env.update({f"MODELWORKS_{k.upper()}": v for k, v in settings.items()})
    log_path = tmp / "operator.log"
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "modelworks", "run"],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=ROOT,
        )
    op = Operator(proc, log_path, health, metrics)
    try:
        eventually(
            lambda: op.healthy() or proc.poll() is not None,
            timeout=180,  # an operator starts in ~5 s, in a minute on a loaded shared machine
            what="the operator's /healthz",
        )
        if proc.poll() is not None:
            raise AssertionError(f"the operator exited with {proc.returncode}:\n{op.log()[-4000:]}")
        yield op
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def mlflow_client(uri: str) -> Any:
    """An ``MlflowClient`` whose registry is ``uri`` as well as its tracking server.

    Given only a tracking URI, MLflow takes the registry from the process-global one when
    set, and ``Registry`` sets it: one test's client would then look up models in another
    test's server.
    """
    from mlflow import MlflowClient

    return MlflowClient(tracking_uri=uri, registry_uri=uri)


@dataclass
class MlflowServer:
    uri: str
    process: subprocess.Popen[bytes]
    root: Path
    artifacts: str = ""


@contextmanager
def server_process(
    command: list[str],
    root: Path,
    health_url: str,
    *,
    what: str,
    timeout: float = 300,
    env: dict[str, str] | None = None,
) -> Iterator[subprocess.Popen[bytes]]:
    """Run ``command`` in ``root`` (output in ``root/<what>.log``, ``env`` added to the
    environment) until ``health_url`` answers 200; stopped (TERM, then KILL) when the block
    ends."""
    root.mkdir(parents=True, exist_ok=True)
    log_path = root / f"{what.replace(' ', '-')}.log"
    log = log_path.open("wb")
    full_env = {**os.environ, **(env or {})}
    proc = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, cwd=root, env=full_env)

    def up() -> bool:
        if proc.poll() is not None:
            raise AssertionError(f"{what} exited:\n{log_path.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(health_url, timeout=2) as r:
                return bool(r.status == 200)
        except OSError:
            return False

    try:
        eventually(up, timeout=timeout, what=f"{what} {health_url}")
        yield proc
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


@dataclass(frozen=True)
class ObjectStore:
    """An S3 endpoint with one access key (the local one: ``hack/seaweedfs.sh``)."""

    endpoint: str
    access_key_id: str
    secret_access_key: str
    bucket: str

    def filesystem(self, secret_access_key: str | None = None) -> Any:
        """A ``pyarrow.fs.S3FileSystem`` on it, with this key (or another secret)."""
        from pyarrow import fs

        url = urllib.parse.urlsplit(self.endpoint)
        return fs.S3FileSystem(
            access_key=self.access_key_id,
            secret_key=secret_access_key or self.secret_access_key,
            endpoint_override=url.netloc,
            scheme=url.scheme,
            region="us-east-1",
            allow_bucket_creation=True,
        )

    def env(self, **override: str) -> dict[str, str]:
        """The AWS_* variables a pod gets from spec.storage."""
        return {
            "AWS_ENDPOINT_URL_S3": self.endpoint,
            "AWS_ACCESS_KEY_ID": self.access_key_id,
            "AWS_SECRET_ACCESS_KEY": self.secret_access_key,
            "AWS_REGION": "us-east-1",
            **override,
        }


S3_SECRET = "modelworks-s3"


def object_store(cluster: Cluster | None = None) -> ObjectStore:
    """The store of ``MODELWORKS_S3_*``: this process's environment, else what
    ``hack/cluster.sh env`` printed for ``cluster`` (``hack/cluster.sh up`` starts it)."""
    names = ("ENDPOINT", "ACCESS_KEY_ID", "SECRET_ACCESS_KEY", "BUCKET")
    source = {**(cluster.env if cluster else {}), **os.environ}
    values = [source.get(f"MODELWORKS_S3_{n}", "") for n in names]
    missing = [f"MODELWORKS_S3_{n}" for n, v in zip(names, values, strict=True) if not v]
    if missing:
        raise AssertionError(
            f"no object store: {', '.join(missing)} not set; run hack/cluster.sh up (it starts "
            'SeaweedFS) and eval "$(hack/cluster.sh env)"'
        )
    return ObjectStore(*values)


def object_store_secret(
    cluster: Cluster, namespace: str, store: ObjectStore | None = None
) -> dict[str, Any]:
    """Create the Secret ``modelworks-s3`` (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY) in
    ``namespace``; return the ``spec.storage`` that names it."""
    store = store or object_store(cluster)
    cluster.apply(
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": S3_SECRET, "namespace": namespace},
            "type": "Opaque",
            "stringData": {
                "AWS_ACCESS_KEY_ID": store.access_key_id,
                "AWS_SECRET_ACCESS_KEY": store.secret_access_key,
            },
        }
    )
    return {"endpoint": store.endpoint, "credentials": {"secretName": S3_SECRET}}


def mlflow_server_venv() -> Path:
    """The MLflow server's own environment (mlflow + boto3), made when missing."""
    out = subprocess.run(
        [str(ROOT / "hack" / "mlflow-server-venv.sh")],
        capture_output=True,
        text=True,
        check=True,
        timeout=900,
    )
    return Path(out.stdout.strip())


@contextmanager
def mlflow_server(
    root: Path,
    *,
    host: str = "127.0.0.1",
    port: int | None = None,
    store: ObjectStore | None = None,
) -> Iterator[MlflowServer]:
    """A real ``mlflow server`` (SQLite backend, proxied artifacts), on a free port by default.

    With ``store`` its artifacts go to a prefix of its own in the store's bucket ``mlflow``
    (the local cluster's configuration), from the MLflow server's own environment.
    """
    port = port or free_port()
    mlflow = Path(sys.executable).parent / "mlflow"
    # No GenAI job runner: it starts about eight huey processes (~350 MB) per server.
    destination, env = str(root / "artifacts"), {"MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
    if store is not None:
        mlflow = mlflow_server_venv() / "bin" / "mlflow"
        destination = f"s3://mlflow/{root.name}-{uuid.uuid4().hex[:8]}/"
        env |= {
            "MLFLOW_S3_ENDPOINT_URL": store.endpoint,
            "AWS_ACCESS_KEY_ID": store.access_key_id,
            "AWS_SECRET_ACCESS_KEY": store.secret_access_key,
            "AWS_DEFAULT_REGION": "us-east-1",
        }
    uri = f"http://{host}:{port}"
    command = [
        str(mlflow),
        "server",
        "--host",
        host,
        "--port",
        str(port),
        "--workers",
        "1",
        "--backend-store-uri",
        f"sqlite:///{root}/mlflow.db",
        "--serve-artifacts",
        "--artifacts-destination",
        destination,
    ]
    with server_process(command, root, f"{uri}/health", what="mlflow server", env=env) as proc:
        yield MlflowServer(uri, proc, root, destination)


S3Store = ObjectStore  # the cluster's store, or a test's own weed


def _weed_identities(path: Path, key: str, secret: str) -> None:
    actions = ["Admin", "Read", "List", "Tagging", "Write"]
    credentials = [{"accessKey": key, "secretKey": secret}]
    identity = {"name": "test", "credentials": credentials, "actions": actions}
    path.write_text(json.dumps({"identities": [identity]}))


@contextmanager
def seaweedfs_server(root: Path, bucket: str = "capture-test") -> Iterator[S3Store]:
    """The cluster's store when ``MODELWORKS_S3_*`` is set, else a ``weed server -s3`` of its
    own on free ports (the binary ``hack/cluster.sh build seaweedfs`` caches), with one key
    and ``bucket``."""
    names = ("ENDPOINT", "ACCESS_KEY_ID", "SECRET_ACCESS_KEY", "BUCKET")
    values = [os.environ.get(f"MODELWORKS_S3_{n}", "") for n in names]
    if all(values):
        yield S3Store(*values)
        return
    cache = Path(os.environ.get("MODELWORKS_CACHE", Path.home() / ".cache" / "modelworks"))
    weed = sorted((cache / "bin").glob("seaweedfs-*/weed"))
    assert weed, f"no weed under {cache}/bin: run hack/cluster.sh build seaweedfs"
    key, secret = "MWTEST" + os.urandom(6).hex().upper(), os.urandom(20).hex()
    (root / "data").mkdir(parents=True, exist_ok=True)
    _weed_identities(root / "s3.json", key, secret)
    ports = {n: free_port() for n in ("master", "volume", "filer", "s3")}
    command = [
        str(weed[-1]), "-logtostderr=true", "server", "-s3", "-filer",
        "-ip=127.0.0.1", "-ip.bind=127.0.0.1", f"-dir={root / 'data'}",
        *(f"-{n}.port={p}" for n, p in ports.items()),
        *(f"-{n}.port.grpc={free_port()}" for n in ports),
        f"-filer.localSocket={root / 'filer.sock'}", f"-s3.localSocket={root / 's3.sock'}",
        "-s3.port.iceberg=0", "-s3.port.lance=0", f"-s3.config={root / 's3.json'}",
        "-master.volumeSizeLimitMB=64", "-volume.max=0", "-master.telemetry=false",
    ]  # fmt: skip
    health = f"http://127.0.0.1:{ports['master']}/cluster/healthz"
    with server_process(command, root, health, what="weed server"):
        store = S3Store(f"http://127.0.0.1:{ports['s3']}", key, secret, bucket)

        def bucket_made() -> bool:
            try:
                store.filesystem().create_dir(bucket)
            except OSError:
                return False
            return True

        eventually(bucket_made, timeout=60, what=f"bucket {bucket}")
        yield store
