"""kopf wiring only: decorators, parse the body, call reconcile, write status, post Events.

This is the one package that imports kopf. Each kind gets the same level-based
handler for create, spec update and resume, plus a cheap per-object tick that runs
a pass when one is due: after the resync period, or sooner when the last pass asked
for it (``Decision.requeue_after``: a run in progress, a canary pause, a drift window).
"""

from __future__ import annotations

import asyncio
import contextvars
import dataclasses
import functools
import logging
import random
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import kopf
from kopf._core.intents import handlers as kopf_handlers

from modelworks import __version__, metrics
from modelworks.api import GROUP, KINDS, VERSION, Kind
from modelworks.clients.kube import Kube
from modelworks.clients.mlflow import Registry
from modelworks.names import MANAGED_BY, MANAGED_BY_LABEL, now_rfc3339
from modelworks.reconcilers import driftmonitor, modeldeployment, trainingjob
from modelworks.reconcilers.base import Decision, status_changes
from modelworks.reconcilers.modeldeployment import ServerConfig
from modelworks.settings import Settings

Reconcile = Callable[..., Decision[Any]]
RECONCILERS: dict[str, Reconcile] = {
    "TrainingJob": trainingjob.reconcile,
    "ModelDeployment": modeldeployment.reconcile,
    "DriftMonitor": driftmonitor.reconcile,
}
TICK_SECONDS = 5.0
log = logging.getLogger("modelworks")


@dataclass
class Runtime:
    """What every handler shares: settings, clients, and when each object is next due."""

    settings: Settings
    kube: Kube
    registry: Registry
    due: dict[str, float] = field(default_factory=dict)
    # What a reconciler keeps between passes of one object (uid -> its own dict): the
    # DriftMonitor's counter snapshots. Lost on restart by design; status holds the rest.
    memory: dict[str, dict[str, Any]] = field(default_factory=dict)
    # Objects seen deleted. Without a finalizer kopf never sees a deletionTimestamp on our
    # objects, so it does not stop their timers: a pass that was running when the DELETED
    # event came would re-arm ``due`` and the timer would go on reconciling the stale body
    # (re-creating children a new object of the same name then fights over).
    gone: set[str] = field(default_factory=set)
    # One pass per object at a time. kopf serialises an object's change handlers but not its
    # timer: a tick and a spec-change pass could both find no MLflow run for the new spec and
    # both create one. A change pass waits for the tick; a tick skips a busy object.
    locks: dict[str, threading.Lock] = field(default_factory=dict)
    _locks_guard: threading.Lock = field(default_factory=threading.Lock)

    def lock(self, uid: str) -> threading.Lock:
        with self._locks_guard:
            return self.locks.setdefault(uid, threading.Lock())

    def arm(self, uid: str, delay: float) -> None:
        """Make ``uid`` due in ``delay`` seconds, unless it was deleted meanwhile."""
        if uid not in self.gone:
            self.due[uid] = time.monotonic() + delay

    def forget(self, uid: str) -> None:
        """The object is deleted: never run it again, drop what was kept for it."""
        self.gone.add(uid)
        self.due.pop(uid, None)
        self.memory.pop(uid, None)
        with self._locks_guard:
            self.locks.pop(uid, None)

    @property
    def server(self) -> ServerConfig:
        """What pods the operator starts need to know: the image and MLflow's address."""
        return ServerConfig(
            image=self.settings.image,
            pull_policy=self.settings.image_pull_policy,
            tracking_uri=self.settings.mlflow_tracking_uri,
        )


def plain(value: Any) -> Any:
    """A kopf body (read-only mapping views) as plain dicts and lists."""
    if isinstance(value, Mapping):
        return {k: plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [plain(v) for v in value]
    return value


def _pass(
    rt: Runtime, kind: Kind, body: kopf.Body, patch: kopf.Patch, *, wait: bool = True
) -> bool:
    """One reconcile pass of one object, in kopf's thread pool; False if it did not run.

    ``wait`` is False for the tick: when another pass of the object is running, the tick
    does nothing (that pass arms the next one) instead of queueing behind it.
    """
    uid = body["metadata"]["uid"]
    lock = rt.lock(uid)
    if not lock.acquire(blocking=wait):
        return False
    try:
        if uid in rt.gone:
            return False
        # Read once the lock is held: a change pass that waited for a tick reconciles the
        # new spec against what the tick left (level-based: the next pass mends any status
        # key the two both wrote).
        _reconcile_once(rt, kind, body, patch)
        return True
    finally:
        lock.release()


def _reconcile_once(rt: Runtime, kind: Kind, body: kopf.Body, patch: kopf.Patch) -> None:
    obj = plain(body)
    uid = obj["metadata"]["uid"]
    started = time.monotonic()
    try:
        outcome = RECONCILERS[kind.kind](
            obj,
            kube=rt.kube,
            registry=rt.registry,
            now=now_rfc3339(),
            server=rt.server,
            memory=rt.memory.setdefault(uid, {}),
        )
    except Exception as exc:
        metrics.RECONCILES.labels(kind.kind, "error").inc()
        metrics.RECONCILE_ERRORS.labels(kind.kind, type(exc).__name__).inc()
        rt.arm(uid, 30.0)
        raise kopf.TemporaryError(f"reconcile failed: {exc}", delay=30) from exc
    finally:
        metrics.RECONCILE_SECONDS.labels(kind.kind).observe(time.monotonic() - started)
    metrics.RECONCILES.labels(kind.kind, outcome.result).inc()
    metrics.observe_conditions(kind.kind, obj["metadata"], outcome.status.get("conditions"))
    if kind.kind == "DriftMonitor":
        metrics.observe_drift(obj["metadata"], obj.get("status") or {}, outcome.status)
    changes = status_changes(kind, obj.get("status") or {}, outcome.status)
    if changes:
        patch.status.update(changes)
        metrics.STATUS_WRITES.labels(kind.kind).inc()
    for event in outcome.events:
        kopf.event(body, type=event.type, reason=event.reason, message=event.message)
        metrics.EVENTS.labels(kind.kind, event.type, event.reason).inc()
    # The resync period is the longest gap between two passes: a pass that asks to come back
    # later (an alias poll, a drift interval) comes back at the resync tick at the latest, and
    # the reconcilers, level-based, find nothing due then.
    delay = rt.settings.resync_seconds
    if outcome.requeue_after is not None:
        delay = min(outcome.requeue_after, delay)
    rt.arm(uid, max(delay, TICK_SECONDS))  # not when deleted while this pass ran


def register(rt: Runtime, registry: kopf.OperatorRegistry) -> None:
    """Wire every kind's handlers into ``registry``."""
    for kind in KINDS:
        _register_kind(rt, registry, kind)
    _no_finalizers_for_timers(registry)

    def _child_changed(body: kopf.Body, **_: Any) -> None:
        """A child changed: its owner is due now (the next tick runs it; no API call here)."""
        for ref in body.get("metadata", {}).get("ownerReferences") or []:
            if ref.get("controller"):
                rt.arm(ref["uid"], 0.0)

    for group, version, plural in (("batch", "v1", "jobs"), ("apps", "v1", "deployments")):
        kopf.on.event(
            group,
            version,
            plural,
            id=f"wake-owner-of-{plural}",
            labels={MANAGED_BY_LABEL: MANAGED_BY},
            registry=registry,
        )(_child_changed)

    @kopf.on.login(registry=registry)
    def _login(**kwargs: Any) -> kopf.ConnectionInfo | None:
        # A private registry has no default login handler: use the kubernetes client's
        # (in-cluster service account, else $KUBECONFIG), as kopf's default would.
        return kopf.login_via_client(**kwargs)

    @kopf.on.startup(registry=registry)
    def _startup(settings: kopf.OperatorSettings, **_: Any) -> None:
        # kopf's own bookkeeping goes into annotations under our prefix: the status
        # schema is strict and would silently drop it.
        settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=GROUP)
        settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
            prefix=GROUP, key="last-handled-configuration"
        )
        settings.persistence.finalizer = f"{GROUP}/finalizer"
        # Only our own Events reach users; kopf's "handler succeeded" chatter does not.
        settings.posting.level = logging.WARNING
        settings.watching.server_timeout = 300
        settings.networking.request_timeout = 60
        settings.execution.max_workers = 8
        if not rt.settings.peering:
            settings.peering.standalone = True
        else:
            # kopf pauses every replica when two share the highest priority: a distinct
            # (random unless set) priority per replica lets one work and the others stand by.
            settings.peering.priority = rt.settings.peering_priority or random.randint(1, 2**30)
        metrics.BUILD_INFO.labels(__version__).set(1)
        metrics.expose_requests(
            "modelworks_kube_requests",
            "Kubernetes API requests the reconcilers made, by verb (kopf's watches and "
            "status patches are counted by modelworks_status_writes_total and kopf).",
            lambda: dict(rt.kube.requests),
        )
        metrics.serve(rt.settings.metrics_port)
        log.info(
            "modelworks %s started; watching %s",
            __version__,
            ", ".join(rt.settings.namespaces) or "all namespaces",
        )


def _register_kind(rt: Runtime, registry: kopf.OperatorRegistry, kind: Kind) -> None:
    resource = (GROUP, VERSION, kind.plural)

    @kopf.on.resume(*resource, id="reconcile", registry=registry)
    @kopf.on.create(*resource, id="reconcile", registry=registry)
    @kopf.on.update(*resource, id="reconcile", field="spec", registry=registry)
    def reconcile(body: kopf.Body, patch: kopf.Patch, **_: Any) -> None:
        _pass(rt, kind, body, patch)

    @kopf.timer(*resource, id="resync", interval=TICK_SECONDS, registry=registry)
    async def resync(body: kopf.Body, patch: kopf.Patch, uid: str, **_: Any) -> None:
        due = rt.due.get(uid)
        if due is None or time.monotonic() < due:
            return  # not due (or not yet seen by a handler): costs nothing, no API call
        # kopf.event() needs kopf's context variables: run the pass in a copy of them.
        context = contextvars.copy_context()
        await asyncio.get_running_loop().run_in_executor(
            None, functools.partial(context.run, _pass, rt, kind, body, patch, wait=False)
        )

    @kopf.on.event(*resource, id="forget", registry=registry)
    def forget(type: str | None, uid: str, meta: kopf.Meta, **_: Any) -> None:
        if type == "DELETED":
            rt.forget(uid)
            metrics.forget_conditions(kind.kind, meta)
            if kind.kind == "DriftMonitor":
                metrics.forget_drift(meta)


def _no_finalizers_for_timers(registry: kopf.OperatorRegistry) -> None:
    """kopf puts a finalizer on every object a timer watches, so that the timer stops first.

    Our tick keeps no state and every pass is idempotent, so an object deleted mid-tick
    loses nothing; a finalizer, though, would make every Modelworks object undeletable
    while the operator is down or uninstalled (and namespaces stuck in Terminating).
    Without it kopf also removes the finalizer an earlier version put on objects.
    """
    spawning = registry._spawning
    spawning._handlers = [
        dataclasses.replace(h, requires_finalizer=False)
        if isinstance(h, kopf_handlers.TimerHandler)
        else h
        for h in spawning._handlers
    ]


def run(settings: Settings) -> None:
    """Run the operator until SIGTERM/SIGINT."""
    registry = kopf.OperatorRegistry()
    runtime = Runtime(
        settings=settings,
        kube=Kube.from_environment(),
        registry=Registry(settings.mlflow_tracking_uri, settings.mlflow_ui_url),
    )
    register(runtime, registry)
    kopf.configure(
        verbose=settings.log_level == "DEBUG",
        log_format=kopf.LogFormat.JSON if settings.log_format == "json" else kopf.LogFormat.PLAIN,
    )
    logging.getLogger("modelworks").setLevel(settings.log_level)
    if settings.log_level != "DEBUG":
        # kopf reports every handler and timer run per object at INFO: at a resync tick of
        # seconds that drowns everything else. Failures still come through as warnings.
        logging.getLogger("kopf.objects").setLevel(logging.WARNING)
    kopf.run(
        registry=registry,
        standalone=not settings.peering,
        peering_name=settings.peering or None,
        namespaces=list(settings.namespaces),
        clusterwide=not settings.namespaces,
        liveness_endpoint=f"http://0.0.0.0:{settings.health_port}/healthz"
        if settings.health_port
        else None,
    )
