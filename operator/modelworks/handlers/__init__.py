"""kopf wiring only: watch events feed one work queue; the controller's workers run passes.

This is the one package that imports kopf, and it uses only kopf's public API: event
handlers (no finalizers, no annotations written, no per-object timers) for our three kinds
and for their Jobs and Deployments, startup and cleanup hooks, and the login handler.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import threading
from collections.abc import Mapping
from typing import Any

import kopf

from modelworks import __version__, metrics
from modelworks.api import GROUP, KINDS, VERSION, Kind
from modelworks.clients.guard import Guard
from modelworks.clients.kube import Kube
from modelworks.clients.mlflow import Registry
from modelworks.handlers.controller import Controller, Reconcile
from modelworks.handlers.leader import LeaderElector
from modelworks.names import MANAGED_BY, MANAGED_BY_LABEL
from modelworks.reconcilers import driftmonitor, modeldeployment, trainingjob
from modelworks.settings import Settings

log = logging.getLogger("modelworks")
CHILDREN = (("batch", "v1", "jobs"), ("apps", "v1", "deployments"))


RECONCILERS: dict[str, Reconcile] = {
    r.kind.kind: r.reconcile
    for r in (trainingjob.RECONCILER, modeldeployment.RECONCILER, driftmonitor.RECONCILER)
}


def identity(settings: Settings) -> str:
    return settings.identity or f"{socket.gethostname()}:{os.getpid()}"


def register(controller: Controller, registry: kopf.OperatorRegistry) -> LeaderElector | None:
    """Wire the watches and lifecycle hooks into ``registry``; the elector, if any."""
    for kind in KINDS:
        _watch_kind(controller, registry, kind)
    for group, version, plural in CHILDREN:
        kopf.on.event(
            group,
            version,
            plural,
            id=f"wake-owner-of-{plural}",
            labels={MANAGED_BY_LABEL: MANAGED_BY},
            registry=registry,
        )(_child_handler(controller))
    elector = _elector(controller)
    _lifecycle(controller, elector, registry)
    return elector


def _watch_kind(controller: Controller, registry: kopf.OperatorRegistry, kind: Kind) -> None:
    @kopf.on.event(GROUP, VERSION, kind.plural, id="enqueue", registry=registry)
    async def enqueue(type: str | None, body: kopf.Body, **_: Any) -> None:
        controller.observed(kind, type, _plain(body))


def _child_handler(controller: Controller) -> Any:
    async def wake_owner(body: kopf.Body, **_: Any) -> None:
        controller.child(_plain(body))

    return wake_owner


def _elector(controller: Controller) -> LeaderElector | None:
    settings = controller.settings
    if not settings.leader_election:
        controller.leading.set()
        return None
    if not settings.lease_namespace:
        raise ValueError("MODELWORKS_LEADER_ELECTION needs POD_NAMESPACE (the Lease's namespace)")
    elector = LeaderElector(
        controller.kube,
        settings.lease_namespace,
        settings.leader_election,
        controller.identity,
        on_lead=controller.sweep,  # objects deleted while this replica stood by go first
    )
    elector.leading = controller.leading
    return elector


def _lifecycle(
    controller: Controller, elector: LeaderElector | None, registry: kopf.OperatorRegistry
) -> None:
    @kopf.on.login(registry=registry)
    def _login(**kwargs: Any) -> kopf.ConnectionInfo | None:
        # A private registry has no default login handler: use the kubernetes client's
        # (in-cluster service account, else $KUBECONFIG), as kopf's default would.
        return kopf.login_via_client(**kwargs)

    @kopf.on.startup(registry=registry)
    def _startup(settings: kopf.OperatorSettings, **_: Any) -> None:
        # Only our own Events reach users; kopf's chatter does not.
        settings.posting.level = logging.WARNING
        settings.watching.server_timeout = 300
        settings.networking.request_timeout = 60
        metrics.BUILD_INFO.labels(__version__).set(1)
        metrics.LEADING.set_function(lambda: 1.0 if controller.leading.is_set() else 0.0)
        metrics.expose_requests(
            "modelworks_kube_requests",
            "Kubernetes API requests the operator made outside kopf's watches, by verb.",
            lambda: dict(controller.kube.requests),
        )
        metrics.serve(controller.settings.metrics_port)
        controller.start()
        if elector is not None:
            elector.start()
        log.info(
            "modelworks %s started with %d workers; watching %s",
            __version__,
            controller.settings.workers,
            ", ".join(controller.settings.namespaces) or "all namespaces",
        )

    @kopf.on.cleanup(registry=registry)
    async def _cleanup(**_: Any) -> None:
        drained = await asyncio.to_thread(controller.stop, controller.settings.drain_seconds)
        if not drained:
            log.warning(
                "stopped with passes still running after %ss", controller.settings.drain_seconds
            )
        if elector is not None:
            await asyncio.to_thread(elector.stop)


def _plain(value: Any) -> Any:
    """A kopf body (read-only mapping views) as plain dicts and lists."""
    if isinstance(value, Mapping):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value


def mlflow_registry(settings: Settings) -> Registry:
    """The MLflow client of the operator: each call bounded in time, behind a bulkhead."""
    os.environ.update(settings.mlflow_client_env())
    guard = Guard(
        "MLflow",
        slots=settings.mlflow_concurrency,
        slot_wait=settings.mlflow_slot_wait_seconds,
        threshold=settings.mlflow_breaker_failures,
        cool_down=settings.mlflow_breaker_cool_down_seconds,
    )
    return Registry(
        settings.mlflow_tracking_uri, settings.mlflow_ui_url, settings.shared_models, guard
    )


def run(settings: Settings) -> None:
    """Run the operator until SIGTERM/SIGINT."""
    registry = kopf.OperatorRegistry()
    controller = Controller(
        settings=settings,
        kube=Kube.from_environment(),
        registry=mlflow_registry(settings),
        reconcilers=RECONCILERS,
        leading=threading.Event(),
        identity=identity(settings),
    )
    register(controller, registry)
    kopf.configure(
        verbose=settings.log_level == "DEBUG",
        log_format=kopf.LogFormat.JSON if settings.log_format == "json" else kopf.LogFormat.PLAIN,
    )
    logging.getLogger("modelworks").setLevel(settings.log_level)
    if settings.log_level != "DEBUG":
        # kopf reports every event handler run per object at INFO: that drowns everything
        # else. Failures still come through as warnings.
        logging.getLogger("kopf.objects").setLevel(logging.WARNING)
    kopf.run(
        registry=registry,
        standalone=True,
        namespaces=list(settings.namespaces),
        clusterwide=not settings.namespaces,
        liveness_endpoint=f"http://0.0.0.0:{settings.health_port}/healthz"
        if settings.health_port
        else None,
    )
