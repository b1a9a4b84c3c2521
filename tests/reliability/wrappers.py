"""Fault injection around the operator's real clients, and the operator run in-process.

``Faults`` counts every mutating call the operator makes, to the API server (every
non-GET request of :class:`modelworks.clients.kube.Kube`) and to MLflow (every
``create_*``, ``log_*``, ``set_*``, ``delete_*``, ``restore_*``, ``update_*``, ``rename_*``
call on the ``MlflowClient`` behind :class:`modelworks.clients.mlflow.Registry`). With
``crash_at=N`` it raises :class:`Crash` right after the Nth such call completed: the write
happened, the operator never learns it did.

``InProcessOperator`` is a real :class:`modelworks.handlers.controller.Controller` (its
work queue, status store, echo suppression, requeues and backoff) fed by a relist-style
watch: each tick lists our kinds and their children in one namespace and hands over the
objects whose resourceVersion changed, as kopf's watch would. Passes run in the calling
thread, one at a time, so a crash point is reproducible.
"""

from __future__ import annotations

import re
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from kubernetes import client, config

from modelworks.api import API_VERSION, KINDS
from modelworks.clients.kube import Kube, KubeError
from modelworks.clients.mlflow import Registry
from modelworks.handlers import RECONCILERS
from modelworks.handlers import controller as controller_module
from modelworks.handlers.controller import Controller
from modelworks.names import MANAGED_BY, MANAGED_BY_LABEL, format_time
from modelworks.settings import Settings

MLFLOW_WRITES = ("create_", "log_", "set_", "delete_", "restore_", "update_", "rename_")
CHILD_KINDS = (("batch/v1", "Job"), ("apps/v1", "Deployment"))


class Crash(BaseException):
    """The operator process dies here: nothing in memory survives."""


@dataclass
class Faults:
    """Counts the operator's writes; raises :class:`Crash` right after write ``crash_at``."""

    crash_at: int | None = None
    count: int = 0
    writes: list[str] = field(default_factory=list)
    fired: str | None = None
    started: float = field(default_factory=time.monotonic)

    def wrote(self, what: str) -> None:
        self.count += 1
        self.writes.append(f"{time.monotonic() - self.started:6.1f}s {what}")
        if self.crash_at is not None and self.count == self.crash_at and self.fired is None:
            self.fired = f"write {self.count}: {what}"
            raise Crash(self.fired)


class FaultyKube(Kube):
    """The operator's Kubernetes client; every completed non-GET request is a write."""

    def __init__(self, api: client.ApiClient, faults: Faults) -> None:
        super().__init__(api)
        self.faults = faults

    def _call(self, method: str, path: str, **kwargs: Any) -> dict[str, Any]:
        out = super()._call(method, path, **kwargs)
        if method != "GET":
            self.faults.wrote(f"{method} {path}")
        return out


class _CountingMlflow:
    def __init__(self, inner: Any, faults: Faults) -> None:
        self._inner = inner
        self._faults = faults

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._inner, name)
        if not name.startswith(MLFLOW_WRITES) or not callable(attr):
            return attr

        def write(*args: Any, **kwargs: Any) -> Any:
            out = attr(*args, **kwargs)
            self._faults.wrote(f"mlflow {name}")
            return out

        return write


class FaultyRegistry(Registry):
    """The operator's MLflow client; every completed mutating MlflowClient call is a write."""

    def __init__(self, tracking_uri: str, faults: Faults) -> None:
        super().__init__(tracking_uri)
        self.faults = faults

    @property
    def client(self) -> Any:
        return _CountingMlflow(Registry.client.fget(self), self.faults)  # type: ignore[attr-defined]


def api_client(kubeconfig: str) -> client.ApiClient:
    cfg = client.Configuration()
    config.load_kube_config(config_file=kubeconfig, client_configuration=cfg)
    return client.ApiClient(cfg)


@dataclass
class Clock:
    """The operator's wall clock, which the world may move forward (time passes)."""

    offset: float = 0.0

    def __call__(self) -> str:
        return format_time(datetime.now(UTC) + timedelta(seconds=self.offset))


class InProcessOperator:
    """One operator incarnation: fresh clients, a fresh Controller, empty memory."""

    def __init__(
        self,
        kubeconfig: str,
        mlflow_uri: str,
        namespace: str,
        faults: Faults,
        kinds: tuple[str, ...] = (),
        clock: Callable[[], str] | None = None,
        **settings: Any,
    ) -> None:
        self.clock = clock
        self.namespace = namespace
        self.kinds = [k for k in KINDS if not kinds or k.kind in kinds]
        self.faults = faults
        self.kube = FaultyKube(api_client(kubeconfig), faults)
        self.reader = Kube(api_client(kubeconfig))  # the watch: not the operator's client
        options: dict[str, Any] = {"resync_seconds": 5.0, "min_requeue_seconds": 0.3}
        options.update(settings)
        self.controller = Controller(
            settings=Settings(
                namespaces=(namespace,),
                mlflow_tracking_uri=mlflow_uri,
                workers=1,
                **options,
            ),
            kube=self.kube,
            registry=FaultyRegistry(mlflow_uri, faults),
            reconcilers=RECONCILERS,
            identity="chaos-harness",
        )
        self.controller.leading.set()
        self._seen: dict[str, str] = {}
        self._children: dict[str, dict[str, Any]] = {}

    def watch(self) -> None:
        """Deliver what changed since the last tick (a relist with a diff)."""
        for kind in self.kinds:
            for body in self.reader.list(API_VERSION, kind.kind, self.namespace):
                if self._changed(body):
                    self.controller.observed(kind, "MODIFIED", body)
        present: set[str] = set()
        for api_version, kind_name in CHILD_KINDS:
            children = self.reader.list(
                api_version, kind_name, self.namespace, labels={MANAGED_BY_LABEL: MANAGED_BY}
            )
            for body in children:
                present.add(body["metadata"]["uid"])
                if self._changed(body):
                    self._children[body["metadata"]["uid"]] = body
                    self.controller.child(body)
        for uid in [u for u in self._children if u not in present]:
            self.controller.child(self._children.pop(uid))  # DELETED

    def _changed(self, body: dict[str, Any]) -> bool:
        meta = body["metadata"]
        if self._seen.get(meta["uid"]) == meta["resourceVersion"]:
            return False
        self._seen[meta["uid"]] = meta["resourceVersion"]
        return True

    def tick(self, wait: float = 0.2) -> None:
        """Watch once, then run at most one due pass (as a worker would)."""
        try:
            self.watch()
        except KubeError:  # a watch reconnects; the passes meet the outage themselves
            time.sleep(wait)
        item = self.controller.queue.get(timeout=wait)
        if item is None:
            return
        uid = item[0]
        real = controller_module.now_rfc3339
        if self.clock is not None:
            controller_module.now_rfc3339 = self.clock
        try:
            self.controller.process(uid)
        except Exception:
            self.controller.queue.add_rate_limited(uid)
        finally:
            controller_module.now_rfc3339 = real
            self.controller.queue.done(uid)


@dataclass
class Life:
    """One object's whole life: ``world`` plays users, trainers and kwok between passes;
    ``done`` says when the life is over (the final state reached)."""

    world: Callable[[], None]
    done: Callable[[], bool]
    what: str
    describe: Callable[[], object] = lambda: None


def live(op: InProcessOperator, life: Life, timeout: float) -> None:
    """Run passes and the world until ``life.done``; Crash propagates."""
    deadline = time.monotonic() + timeout
    while not life.done():
        if time.monotonic() > deadline:
            raise AssertionError(
                f"timed out after {timeout:.0f}s waiting for {life.what}; "
                f"writes {op.faults.writes}; now {life.describe()}"
            )
        life.world()
        for _ in range(5):
            op.tick()


@contextmanager
def incarnation(
    kubeconfig: str,
    mlflow_uri: str,
    namespace: str,
    faults: Faults,
    kinds: tuple[str, ...] = (),
    clock: Callable[[], str] | None = None,
) -> Iterator[InProcessOperator]:
    op = InProcessOperator(kubeconfig, mlflow_uri, namespace, faults, kinds, clock)
    try:
        yield op
    finally:
        op.controller.queue.shutdown()


# --- what the servers saw ------------------------------------------------------------------

SERVER_VERBS = ("POST", "PUT", "PATCH", "APPLY", "DELETE")


def apiserver_writes(kubectl: Callable[..., Any]) -> Counter[tuple[str, str, str]]:
    """The API server's own count of write requests, by (verb, resource, subresource), from
    ``apiserver_request_total`` (cluster-wide: other clients add to it)."""
    text = kubectl("get", "--raw", "/metrics").stdout
    seen: Counter[tuple[str, str, str]] = Counter()
    for line in text.splitlines():
        if not line.startswith("apiserver_request_total{"):
            continue
        labels = dict(re.findall(r'(\w+)="([^"]*)"', line.split("}", 1)[0]))
        if labels.get("verb") in SERVER_VERBS:
            key = (labels["verb"], labels.get("resource", ""), labels.get("subresource", ""))
            seen[key] += int(float(line.rsplit(" ", 1)[1]))
    return seen


def mlflow_requests(log: Path) -> Counter[str]:
    """MLflow's access log (the server's uvicorn log): requests by ``METHOD /path``."""
    found = re.findall(r'"([A-Z]+) (/api/[^ ?"]*)', log.read_text(errors="replace"))
    return Counter(f"{method} {path}" for method, path in found)


def client_writes(faults: Faults) -> Counter[str]:
    """The wrapper's count, by ``METHOD /path`` or ``mlflow <call>`` (times dropped)."""
    return Counter(w.split("s ", 1)[1] for w in faults.writes)
