"""Reconcile a ModelDeployment: observe (resolve the model, read the Deployments, pods and the
canary's metrics), decide the rollout (:func:`status.modeldeployment.decide`, pure), act.

The registry is asked which version the spec means (a version, or whatever holds the
alias now). The stable and canary Deployments and their pods are observed; during a
canary step the pods' /metrics are read for analysis. ``act`` writes children by
server-side apply only when their desired form changed (a digest annotation), so a
settled object costs reads and no writes.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import Any

from modelworks.api import MODEL_DEPLOYMENT
from modelworks.api.modeldeployment import ModelDeploymentSpec
from modelworks.builders.modeldeployment import (
    ServerConfig,
    build_deployment,
    build_hpa,
    build_pdb,
    build_service,
    deployment_name,
    desired_hash,
    fixed_replicas,
    replicas_handover,
    selector,
    url,
)
from modelworks.clients.http import Limits
from modelworks.clients.kube import HANDOVER_MANAGER, Kube
from modelworks.clients.mlflow import Registry, TrackingUnavailable
from modelworks.clients.scrape import scrape_pods
from modelworks.names import (
    CAPTURE_METRIC_PREFIX,
    NAMESPACE_TAG,
    SERVER_PORT,
    SERVING_LATENCY_BUCKET,
    SERVING_REQUESTS_METRIC,
    TRACK_LABEL,
)
from modelworks.reconcilers.base import Context, KindReconciler
from modelworks.reconcilers.children import get_owned, owned
from modelworks.status import modeldeployment as status
from modelworks.status import tenancy
from modelworks.status.capture import CapturePod, capture_pods
from modelworks.status.common import pod_ready
from modelworks.status.modeldeployment import (
    Action,
    AnalysisFacts,
    ApplyCanary,
    ApplyStable,
    DeleteCanary,
    DeploymentState,
    EnsureHPA,
    EnsurePDB,
    EnsureService,
    Facts,
    Target,
    analysis_facts,
)

__all__ = ["RECONCILER", "ServerConfig", "reconcile"]
APPS = "apps/v1"
SERVING_PREFIXES = (SERVING_REQUESTS_METRIC, SERVING_LATENCY_BUCKET)
CAPTURE_PREFIXES = (CAPTURE_METRIC_PREFIX,)


def observe(obj: Mapping[str, Any], spec: ModelDeploymentSpec, ctx: Context) -> Facts:
    """Reads only: the target version, both Deployments, the pods (not when settled) and,
    while a canary has ready pods, their metrics."""
    ns = obj["metadata"]["namespace"]
    old = obj.get("status") or {}
    target, reason, message = _resolve(ns, spec, ctx.registry)
    if target is None and reason == "MLflowUnavailable":
        target = status.last_resolved(spec, old, obj["metadata"].get("generation"))
    stable = _deployment(ctx.kube, obj, deployment_name(obj, "stable"))
    canary = _deployment(ctx.kube, obj, deployment_name(obj, "canary"))
    settled = (
        canary is None
        and not old.get("canary")
        and target is not None
        and old.get("stableVersion") == target.version
        and old.get("stableModel", spec.model.name) == spec.model.name
        and stable is not None
        and stable.model in (None, spec.model.name)
        and stable.complete(target.version)
    )
    pods = [] if settled else ctx.kube.list("v1", "Pod", ns, labels=selector(obj))
    if settled and spec.data_capture is not None:
        pods_for_capture = ctx.kube.list("v1", "Pod", ns, labels=selector(obj))
    else:
        pods_for_capture = pods
    return Facts(
        target=target,
        resolve_reason=reason,
        resolve_message=message,
        stable=stable,
        canary=canary,
        pods=pods,
        analysis=_analyse(pods, ctx.bounds.metrics)
        if canary is not None and canary.ready
        else None,
        generation=obj["metadata"].get("generation"),
        url=url(obj, spec),
        capture=_capture(pods_for_capture, ctx.bounds.metrics) if spec.data_capture else (),
    )


def act(
    obj: Mapping[str, Any], spec: ModelDeploymentSpec, actions: Sequence[Action], ctx: Context
) -> None:
    """The writes, in order; each applies only what differs from what is there."""
    kube, ns = ctx.kube, obj["metadata"]["namespace"]
    for action in actions:
        match action:
            case ApplyStable(version, applied, keep):
                replicas = fixed_replicas(spec)
                desired = build_deployment(
                    obj, spec, ctx.server, version=version, track="stable", replicas=replicas
                )
                if applied != desired_hash(desired):
                    if keep is not None:
                        kube.apply(replicas_handover(obj, keep), manager=HANDOVER_MANAGER)
                    kube.apply(desired)
            case ApplyCanary(version, replicas, applied):
                desired = build_deployment(
                    obj, spec, ctx.server, version=version, track="canary", replicas=replicas
                )
                if applied != desired_hash(desired):
                    kube.apply(desired)
            case DeleteCanary():
                kube.delete(APPS, "Deployment", ns, deployment_name(obj, "canary"))
            case EnsureService(force):
                _ensure(kube, obj, build_service(obj, spec), force)
            case EnsureHPA(force):
                hpa = build_hpa(obj, spec)
                _ensure_optional(kube, obj, hpa, "autoscaling/v2", "HorizontalPodAutoscaler", force)
            case EnsurePDB(force):
                pdb = build_pdb(obj, spec)
                _ensure_optional(kube, obj, pdb, "policy/v1", "PodDisruptionBudget", force)


RECONCILER: KindReconciler[ModelDeploymentSpec, Facts, Action] = KindReconciler(
    kind=MODEL_DEPLOYMENT, observe=observe, decide=status.decide, act=act
)


reconcile = RECONCILER.run


def _deployment(kube: Kube, obj: Mapping[str, Any], name: str) -> DeploymentState | None:
    found = get_owned(kube, APPS, "Deployment", obj, name)
    state = DeploymentState.of(found)
    return None if state is None else replace(state, applied=desired_hash(found))


def _resolve(
    ns: str, spec: ModelDeploymentSpec, registry: Registry
) -> tuple[Target | None, str, str]:
    """The version the spec means now, or (None, reason, message): a model of this
    namespace's (or shared with it), and a version its owner registered."""
    model = spec.model
    try:
        owner = registry.ownership(model.name)
        if refused := tenancy.read_refusal(ns, model.name, owner.owner, owner.sharing):
            return None, tenancy.OWNED_ELSEWHERE, refused
        if model.alias is not None:
            found = registry.version_by_alias(model.name, model.alias)
            missing = (
                "AliasNotFound",
                f"no version of model {model.name!r} holds alias {model.alias!r} "
                "(or the model is not registered)",
            )
        else:
            assert model.version is not None
            found = registry.get_version(model.name, model.version)
            missing = (
                "ModelNotFound",
                f"model {model.name!r} has no version {model.version} in the registry",
            )
    except TrackingUnavailable as exc:
        return None, "MLflowUnavailable", f"the MLflow registry did not answer: {exc}"
    if found is None:
        return None, *missing
    origin = found.tags.get(NAMESPACE_TAG)
    if refused := tenancy.version_refusal(ns, model.name, owner.owner, found.version, origin):
        return None, tenancy.OWNED_ELSEWHERE, refused
    return Target(found.version, found.run_id, found.source, model.alias), "", ""


def _ensure(kube: Kube, obj: Mapping[str, Any], desired: dict[str, Any], force: bool) -> None:
    """Apply ``desired`` when it is missing or differs (``force``: the spec changed, apply
    even when it looks the same). An object of that name this one does not own is never
    applied over (NameTaken)."""
    meta = desired["metadata"]
    current = get_owned(kube, desired["apiVersion"], desired["kind"], obj, meta["name"])
    if force or desired_hash(current) != desired_hash(desired):
        kube.apply(desired)


def _ensure_optional(
    kube: Kube,
    obj: Mapping[str, Any],
    desired: dict[str, Any] | None,
    api_version: str,
    kind: str,
    check: bool,
) -> None:
    """Like :func:`_ensure`; when not desired, delete a leftover of this object's own (only
    looked for on ``check``)."""
    if desired is not None:
        _ensure(kube, obj, desired, force=check)
    elif check:
        name = obj["metadata"]["name"]
        found = kube.get(api_version, kind, obj["metadata"]["namespace"], name)
        if found is not None and owned(found, obj["metadata"]["uid"]):
            kube.delete(api_version, kind, obj["metadata"]["namespace"], name)


def _capture(pods: list[dict[str, Any]], limits: Limits) -> tuple[CapturePod, ...]:
    """The serving pods with their capture counters (the ready ones' /metrics)."""
    scrapes = scrape_pods([p for p in pods if pod_ready(p)], SERVER_PORT, CAPTURE_PREFIXES, limits)
    found = {
        s.pod: (tuple((x.name, x.labels, x.value) for x in s.samples), s.error) for s in scrapes
    }
    return capture_pods(pods, found)


def _analyse(pods: list[dict[str, Any]], limits: Limits) -> AnalysisFacts:
    """Read the serving pods' request counters and latency histograms, per track."""
    ready = [p for p in pods if pod_ready(p)]
    tracks = {
        p["metadata"]["name"]: (p["metadata"].get("labels") or {}).get(TRACK_LABEL) for p in ready
    }
    scrapes = scrape_pods(ready, SERVER_PORT, SERVING_PREFIXES, limits)
    canary, stable, unreachable = [], [], 0
    for scrape in scrapes:
        samples = [(s.name, s.labels, s.value) for s in scrape.samples]
        if tracks.get(scrape.pod) == "canary":
            canary.append(samples)
            unreachable += scrape.error is not None
        else:
            stable.append(samples)
    return analysis_facts(canary, stable, unreachable)
