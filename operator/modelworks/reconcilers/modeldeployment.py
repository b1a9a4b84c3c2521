"""Reconcile a ModelDeployment: resolve the model, observe, decide the rollout, apply, report.

The registry is asked which version the spec means (a version, or whatever holds the
alias now). The stable and canary Deployments and their pods are observed; during a
canary step the pods' /metrics are read for analysis. :func:`status.modeldeployment.decide`
says what each Deployment must run; children are written by server-side apply only
when their desired form changed (a digest annotation), so a settled object costs reads
and no writes.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, cast

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
    selector,
    url,
)
from modelworks.clients.kube import Kube
from modelworks.clients.mlflow import Registry, TrackingUnavailable
from modelworks.clients.scrape import scrape_pods
from modelworks.names import (
    SERVER_PORT,
    SERVING_LATENCY_BUCKET,
    SERVING_REQUESTS_METRIC,
    TRACK_LABEL,
)
from modelworks.reconcilers.base import validate
from modelworks.status.common import pod_ready
from modelworks.status.decision import Decision
from modelworks.status.modeldeployment import (
    AnalysisFacts,
    DeploymentState,
    Facts,
    Target,
    analysis_facts,
    decide,
)

__all__ = ["ServerConfig", "reconcile"]
APPS = "apps/v1"
SERVING_PREFIXES = (SERVING_REQUESTS_METRIC, SERVING_LATENCY_BUCKET)


def reconcile(
    obj: Mapping[str, Any],
    *,
    kube: Kube,
    registry: Registry,
    now: str,
    server: ServerConfig,
    **_: Any,
) -> Decision[Any]:
    parsed, refused = validate(MODEL_DEPLOYMENT, obj, now)
    if refused is not None:
        return refused
    spec = cast(ModelDeploymentSpec, parsed)
    ns, name = obj["metadata"]["namespace"], obj["metadata"]["name"]
    old = obj.get("status") or {}

    target, reason, message = _resolve(spec, registry)
    stable = kube.get(APPS, "Deployment", ns, deployment_name(obj, "stable"))
    canary = kube.get(APPS, "Deployment", ns, deployment_name(obj, "canary"))
    stable_state = DeploymentState.of(stable)
    canary_state = DeploymentState.of(canary)
    settled = (
        canary is None
        and not old.get("canary")
        and target is not None
        and old.get("stableVersion") == target.version
        and stable_state is not None
        and stable_state.complete(target.version)
    )
    pods = [] if settled else kube.list("v1", "Pod", ns, labels=selector(obj))
    analysis = _analyse(pods) if canary_state is not None and canary_state.ready else None
    facts = Facts(
        target=target,
        resolve_reason=reason,
        resolve_message=message,
        stable=stable_state,
        canary=canary_state,
        pods=pods,
        analysis=analysis,
    )
    link = url(obj, spec)
    decision = decide(obj, spec, facts, now, link)

    # ---- act: only what differs from what is there -----------------------------
    generation_changed = old.get("observedGeneration") != obj["metadata"].get("generation")
    if decision.stable_version is not None:
        desired = build_deployment(
            obj,
            spec,
            server,
            version=decision.stable_version,
            track="stable",
            replicas=fixed_replicas(spec),
        )
        if desired_hash(stable) != desired_hash(desired):
            kube.apply(desired)
        _ensure(kube, build_service(obj, spec), ns, name, "v1", "Service", generation_changed)
        _ensure_optional(
            kube,
            build_hpa(obj, spec),
            ns,
            name,
            "autoscaling/v2",
            "HorizontalPodAutoscaler",
            generation_changed or stable is None,
        )
        _ensure_optional(
            kube,
            build_pdb(obj, spec),
            ns,
            name,
            "policy/v1",
            "PodDisruptionBudget",
            generation_changed or stable is None,
        )
    if decision.canary_version is not None:
        desired = build_deployment(
            obj,
            spec,
            server,
            version=decision.canary_version,
            track="canary",
            replicas=decision.canary_replicas,
        )
        if desired_hash(canary) != desired_hash(desired):
            kube.apply(desired)
    elif canary is not None and not canary["metadata"].get("deletionTimestamp"):
        kube.delete(APPS, "Deployment", ns, deployment_name(obj, "canary"))

    return Decision(
        status=decision.status,
        events=decision.events,
        requeue_after=decision.requeue_after,
        result="ok" if reason != "MLflowUnavailable" else "retry",
    )


def _resolve(spec: ModelDeploymentSpec, registry: Registry) -> tuple[Target | None, str, str]:
    """The version the spec means now, or (None, reason, message)."""
    model = spec.model
    try:
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
    return Target(found.version, found.run_id, found.source, model.alias), "", ""


def _ensure(
    kube: Kube,
    desired: dict[str, Any],
    ns: str,
    name: str,
    api_version: str,
    kind: str,
    force: bool,
) -> None:
    """Apply ``desired`` when it is missing or differs (read first unless ``force``)."""
    if force:
        kube.apply(desired)
        return
    current = kube.get(api_version, kind, ns, name)
    if desired_hash(current) != desired_hash(desired):
        kube.apply(desired)


def _ensure_optional(
    kube: Kube,
    desired: dict[str, Any] | None,
    ns: str,
    name: str,
    api_version: str,
    kind: str,
    check: bool,
) -> None:
    """Like :func:`_ensure`; when not desired, delete a leftover (only looked for on ``check``)."""
    if desired is not None:
        _ensure(kube, desired, ns, name, api_version, kind, force=check)
    elif check:
        kube.delete(api_version, kind, ns, name)


def _analyse(pods: list[dict[str, Any]]) -> AnalysisFacts:
    """Read the serving pods' request counters and latency histograms, per track."""
    ready = [p for p in pods if pod_ready(p)]
    tracks = {
        p["metadata"]["name"]: (p["metadata"].get("labels") or {}).get(TRACK_LABEL) for p in ready
    }
    scrapes = scrape_pods(ready, SERVER_PORT, SERVING_PREFIXES)
    canary, stable, unreachable = [], [], 0
    for scrape in scrapes:
        samples = [(s.name, s.labels, s.value) for s in scrape.samples]
        if tracks.get(scrape.pod) == "canary":
            canary.append(samples)
            unreachable += scrape.error is not None
        else:
            stable.append(samples)
    return analysis_facts(canary, stable, unreachable)
