"""The operator as real processes for the long fault classes: paused, cut off, killed.

``Operator`` runs ``python -m modelworks run`` restricted to one namespace, optionally
through a :class:`Cutter` (a TCP proxy in front of the API server whose open connections
the test can sever, as a network blip or a dropped watch would) and with leader election
on a Lease in the test's own namespace. ``pause``/``resume`` are SIGSTOP/SIGCONT, ``kill``
is SIGKILL: no cleanup hook runs, no lease is given up.

``WatchLog`` records every watch event on a resource in the namespace (the objects' uids,
owner uids and resourceVersions), so a test can say what was written after a point in time.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from tests import support
from tests.support import ROOT, Cluster, eventually, free_port


class Cutter:
    """A TCP proxy to ``target``; :meth:`cut` closes every connection open through it."""

    def __init__(self, target: tuple[str, int], host: str) -> None:
        self.target = target
        self.server = socket.create_server((host, 0))
        self.address = (host, int(self.server.getsockname()[1]))
        self.lock = threading.Lock()
        self.open: set[socket.socket] = set()
        self.cuts = 0
        threading.Thread(target=self._accept, daemon=True, name="cutter").start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.server.accept()
            except OSError:
                return
            try:
                upstream = socket.create_connection(self.target, timeout=5)
            except OSError:
                conn.close()
                continue
            upstream.settimeout(None)
            with self.lock:
                self.open |= {conn, upstream}
            for a, b in ((conn, upstream), (upstream, conn)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket) -> None:
        with contextlib.suppress(OSError):
            while data := src.recv(65536):
                dst.sendall(data)
        for s in (src, dst):
            self._close(s)

    def _close(self, s: socket.socket) -> None:
        with self.lock:
            self.open.discard(s)
        with contextlib.suppress(OSError):
            # RST, not FIN: what a peer whose connection vanished sees; unread data is dropped.
            s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
            s.close()

    def cut(self) -> int:
        """Reset every open connection; how many there were."""
        with self.lock:
            victims = list(self.open)
        for s in victims:
            self._close(s)
        self.cuts += 1
        return len(victims)

    def close(self) -> None:
        self.server.close()
        self.cut()


def kubeconfig_through(cluster: Cluster, cutter: Cutter, path: Path) -> Path:
    """A copy of the cluster's kubeconfig whose server is the cutter (same host, so TLS holds)."""
    config = yaml.safe_load(Path(cluster.kubeconfig).read_text())
    for entry in config["clusters"]:
        url = urllib.parse.urlsplit(entry["cluster"]["server"])
        entry["cluster"]["server"] = f"{url.scheme}://{cutter.address[0]}:{cutter.address[1]}"
    path.write_text(yaml.safe_dump(config))
    return path


def api_address(cluster: Cluster) -> tuple[str, int]:
    config = yaml.safe_load(Path(cluster.kubeconfig).read_text())
    url = urllib.parse.urlsplit(config["clusters"][0]["cluster"]["server"])
    assert url.hostname and url.port, url
    return url.hostname, url.port


@dataclass
class Operator(support.Operator):
    """One ``python -m modelworks run`` process that a test can pause, kill and stop."""

    identity: str

    def alive(self) -> bool:
        return self.process.poll() is None

    def pause(self) -> None:
        self.process.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        self.process.send_signal(signal.SIGCONT)

    def kill(self) -> None:
        """SIGKILL: no drain, no lease release."""
        if self.alive():
            self.process.kill()
        self.process.wait(timeout=30)

    def stop(self) -> None:
        if not self.alive():
            return
        self.process.send_signal(signal.SIGCONT)
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.kill()

    def healthy(self) -> bool:
        try:
            with urllib.request.urlopen(
                f"http://127.0.0.1:{self.health_port}/healthz", timeout=2
            ) as r:
                return bool(r.status == 200)
        except OSError:
            return False


def start_operator(
    kubeconfig: str | Path,
    log_dir: Path,
    namespace: str,
    mlflow_uri: str,
    *,
    identity: str = "op-0",
    lease: str = "",
    **settings: str,
) -> Operator:
    """Start the operator on ``namespace`` only; returns once its /healthz answers."""
    health, metrics = free_port(), free_port()
    env = dict(os.environ)
    env.update(
        KUBECONFIG=str(kubeconfig),
        PYTHONUNBUFFERED="1",
        POD_NAME=identity,
        POD_NAMESPACE=namespace,
        MODELWORKS_NAMESPACES=namespace,
        MODELWORKS_MLFLOW_TRACKING_URI=mlflow_uri,
        MODELWORKS_HEALTH_PORT=str(health),
        MODELWORKS_METRICS_PORT=str(metrics),
        MODELWORKS_LEADER_ELECTION=lease,
    )
    env.update({f"MODELWORKS_{k.upper()}": v for k, v in settings.items()})
    log_path = log_dir / f"operator-{identity}-{time.monotonic_ns()}.log"
    with log_path.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "modelworks", "run"],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=ROOT,
        )
    op = Operator(proc, log_path, health, metrics, identity)
    try:
        eventually(lambda: op.healthy() or not op.alive(), timeout=90, what="/healthz")
    except AssertionError:
        op.kill()
        raise
    if not op.alive():
        raise AssertionError(f"the operator exited:\n{op.log()[-4000:]}")
    return op


@contextlib.contextmanager
def operators(*ops: Operator) -> Iterator[None]:
    try:
        yield
    finally:
        for op in ops:
            with contextlib.suppress(Exception):
                op.stop()


@dataclass
class Seen:
    """One watch event: when, type, the object's uid and name, its owners' uids."""

    at: float
    type: str
    kind: str
    name: str
    uid: str
    owners: tuple[str, ...]
    resource_version: str


@dataclass
class WatchLog:
    """Every watch event on ``resource`` in ``namespace``, from a kubectl watch."""

    cluster: Cluster
    resource: str
    namespace: str
    seen: list[Seen] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.proc = subprocess.Popen(
            [
                self.cluster.kubectl_path,
                "--kubeconfig",
                self.cluster.kubeconfig,
                "get",
                self.resource,
                "-n",
                self.namespace,
                "-w",
                "--output-watch-events",
                "-o",
                "json",
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        buffer = ""
        for line in self.proc.stdout:
            buffer += line
            if line.rstrip() != "}":
                continue
            try:
                event: dict[str, Any] = json.loads(buffer)
            except ValueError:
                continue
            buffer = ""
            meta = event["object"]["metadata"]
            self.seen.append(
                Seen(
                    time.monotonic(),
                    event["type"],
                    event["object"]["kind"],
                    meta["name"],
                    meta["uid"],
                    tuple(o["uid"] for o in meta.get("ownerReferences") or []),
                    meta.get("resourceVersion", ""),
                )
            )

    def since(self, t: float) -> list[Seen]:
        return [s for s in self.seen if s.at >= t]

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=10)
