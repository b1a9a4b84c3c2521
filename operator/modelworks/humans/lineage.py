"""All Modelworks objects grouped by model name, then by version. Pure.

TrainingJob -> model version -> ModelDeployment -> DriftMonitor: what ``modelworks
status`` prints (as a table, :mod:`modelworks.humans.tables`) or dumps as JSON.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from modelworks.api import DRIFT_MONITOR, MODEL_DEPLOYMENT, TRAINING_JOB
from modelworks.humans.common import (
    meta_of,
    spec_of,
    stale,
    status_of,
    summary_condition,
    version_key,
)
from modelworks.names import MONITOR_LABEL, RETRAIN_OF_LABEL

Facts = Mapping[tuple[str, str], Mapping[str, Any]]


def _sort_key(obj: Mapping[str, Any]) -> tuple[str, str]:
    meta = meta_of(obj)
    return str(meta.get("namespace") or ""), str(meta.get("name") or "")


# --- one object, summarised ------------------------------------------------------------


def _base(obj: Mapping[str, Any], kind: str) -> dict[str, Any]:
    meta = meta_of(obj)
    st = status_of(obj)
    return {
        "kind": kind,
        "name": meta.get("name"),
        "namespace": meta.get("namespace"),
        "phase": st.get("phase"),
        "condition": summary_condition(obj, kind),
        "stale": stale(obj),
    }


def training_job(obj: Mapping[str, Any]) -> dict[str, Any]:
    """What the lineage needs to know about one TrainingJob."""
    st = status_of(obj)
    labels = meta_of(obj).get("labels") or {}
    registered = st.get("registeredModel") or None
    gate = st.get("qualityGate") or None
    spec_model = spec_of(obj).get("model") or {}
    return {
        **_base(obj, TRAINING_JOB.kind),
        "model": (registered or {}).get("name") or spec_model.get("name"),
        "registeredModel": (
            {k: registered.get(k) for k in ("name", "version", "alias")} if registered else None
        ),
        "progress": (st.get("progress") or {}).get("percent"),
        "qualityGate": (
            {"passed": gate.get("passed"), "summary": gate.get("summary")} if gate else None
        ),
        "runId": (st.get("mlflow") or {}).get("runId"),
        "driftMonitor": labels.get(MONITOR_LABEL),
        "retrainOf": labels.get(RETRAIN_OF_LABEL),
    }


def model_deployment(obj: Mapping[str, Any]) -> dict[str, Any]:
    """What the lineage needs to know about one ModelDeployment."""
    st = status_of(obj)
    model = spec_of(obj).get("model") or {}
    canary = st.get("canary") or {}
    rollback = st.get("rollback") or None
    return {
        **_base(obj, MODEL_DEPLOYMENT.kind),
        "modelRef": {k: model.get(k) for k in ("name", "version", "alias")},
        "resolvedVersion": (st.get("resolved") or {}).get("version"),
        "resolvedAlias": (st.get("resolved") or {}).get("alias"),
        "stableVersion": st.get("stableVersion"),
        "canary": (
            {k: canary.get(k) for k in ("version", "weight", "replicas", "readyReplicas")}
            if canary.get("version")
            else None
        ),
        "replicas": st.get("replicas"),
        "readyReplicas": st.get("readyReplicas"),
        "rollback": (
            {k: rollback.get(k) for k in ("fromVersion", "toVersion", "reason", "at")}
            if rollback
            else None
        ),
    }


def drift_monitor(obj: Mapping[str, Any]) -> dict[str, Any]:
    """What the lineage needs to know about one DriftMonitor (fields may be missing)."""
    st = status_of(obj)
    spec = spec_of(obj)
    target = ((spec.get("target") or {}).get("modelDeployment") or {}).get("name")
    last = st.get("lastRetrain") or None
    return {
        **_base(obj, DRIFT_MONITOR.kind),
        "target": target,
        "batch": bool(spec.get("batch")),
        "verdict": st.get("verdict"),
        "driftedShare": st.get("driftedShare"),
        "lastCheckTime": st.get("lastCheckTime"),
        "servedVersion": st.get("servedVersion"),
        "lastRetrain": (
            {k: last.get(k) for k in ("trainingJob", "at", "reason")} if last else None
        ),
    }


def placements(dep: Mapping[str, Any]) -> list[tuple[str | None, str]]:
    """(version, role) for each version a deployment has to do with.

    ``stable`` serves, ``canary`` takes a share of the traffic, ``rolling out`` is where a
    rolling update is heading, ``target`` is what the spec resolves to but nothing serves
    (after a rollback, say); ``unresolved`` (version None) when nothing is known yet.
    """
    out: list[tuple[str | None, str]] = []
    stable = dep.get("stableVersion")
    canary = (dep.get("canary") or {}).get("version")
    resolved = dep.get("resolvedVersion")
    if stable:
        out.append((str(stable), "stable"))
    if canary and canary != stable:
        out.append((str(canary), "canary"))
    if resolved and resolved not in (stable, canary):
        role = "rolling out" if dep.get("phase") == "Progressing" else "target"
        out.append((str(resolved), role))
    return out or [(None, "unresolved")]


# --- the lineage -------------------------------------------------------------------------


Slot = dict[str, Any]  # one version of a model: its aliases, MLflow facts and objects
Targets = dict[tuple[Any, Any], list[tuple[str | None, dict[str, Any]]]]


@dataclass
class _Grouping:
    """The lineage being built: model -> version -> slot, and who says which alias is where."""

    models: dict[str, dict[str | None, Slot]] = field(default_factory=dict)
    # model -> alias -> (strength, version) claims
    alias_claims: dict[str, dict[str, list[tuple[int, str]]]] = field(default_factory=dict)

    def slot(self, model: str, version: str | None) -> Slot:
        versions = self.models.setdefault(model, {})
        if version not in versions:
            versions[version] = {
                "version": version,
                "aliases": [],
                "mlflow": None,
                "trainingJobs": [],
                "deployments": [],
            }
        return versions[version]

    def claim(self, model: str, alias: Any, version: Any, strength: int) -> None:
        if alias and version:
            self.alias_claims.setdefault(model, {}).setdefault(str(alias), []).append(
                (strength, str(version))
            )


def build(
    training_jobs: Iterable[Mapping[str, Any]],
    deployments: Iterable[Mapping[str, Any]],
    monitors: Iterable[Mapping[str, Any]],
    *,
    registry: Facts | None = None,
) -> dict[str, Any]:
    """All objects, grouped by model name, then by version: TJ -> version -> MDEP -> DMON.

    ``registry`` maps (model, version) to MLflow facts (``runId``, ``aliases``,
    ``metrics``). Without it the aliases are what the objects last saw. Version ``None``
    collects what has no version yet: a TrainingJob still running, a deployment that
    resolved nothing. TrainingJobs without a model and monitors without a deployment
    to attach to are under ``unattached``.
    """
    grouping = _Grouping()
    loose_jobs = _add_training_jobs(grouping, training_jobs)
    by_target = _add_deployments(grouping, deployments)
    loose_monitors = _attach_monitors(monitors, by_target)
    return {
        "models": [_model_entry(grouping, m, registry or {}) for m in sorted(grouping.models)],
        "unattached": {"trainingJobs": loose_jobs, "driftMonitors": loose_monitors},
    }


def _add_training_jobs(
    grouping: _Grouping, objs: Iterable[Mapping[str, Any]]
) -> list[dict[str, Any]]:
    """Each TrainingJob under its model and registered version; those without a model apart."""
    loose: list[dict[str, Any]] = []
    for obj in sorted(objs, key=_sort_key):
        tj = training_job(obj)
        if not tj["model"]:
            loose.append(tj)
            continue
        reg = tj["registeredModel"] or {}
        version = str(reg["version"]) if reg.get("version") else None
        grouping.slot(tj["model"], version)["trainingJobs"].append(tj)
        grouping.claim(tj["model"], reg.get("alias"), version, 0)
    return loose


def _add_deployments(grouping: _Grouping, objs: Iterable[Mapping[str, Any]]) -> Targets:
    """Each ModelDeployment under every version it places; by (namespace, name) for monitors."""
    by_target: Targets = {}
    for obj in sorted(objs, key=_sort_key):
        dep = model_deployment(obj)
        model = dep["modelRef"].get("name") or "-"
        grouping.claim(model, dep["resolvedAlias"], dep["resolvedVersion"], 1)
        for version, role in placements(dep):
            entry = {**dep, "role": role, "driftMonitors": []}
            grouping.slot(model, version)["deployments"].append(entry)
            by_target.setdefault((dep["namespace"], dep["name"]), []).append((version, entry))
    return by_target


def _attach_monitors(objs: Iterable[Mapping[str, Any]], by_target: Targets) -> list[dict[str, Any]]:
    """Each DriftMonitor under the placement of its target that it watches; the rest apart."""
    loose: list[dict[str, Any]] = []
    for obj in sorted(objs, key=_sort_key):
        mon = drift_monitor(obj)
        entries = by_target.get((mon["namespace"], mon["target"])) if mon["target"] else None
        if not entries:
            loose.append(mon)
            continue
        served = mon["servedVersion"]
        chosen = (
            next((e for v, e in entries if served and v == str(served)), None)
            or next((e for _, e in entries if e["role"] == "stable"), None)
            or entries[0][1]
        )
        chosen["driftMonitors"].append(mon)
    return loose


def _model_entry(grouping: _Grouping, model: str, registry: Facts) -> dict[str, Any]:
    """One model's versions in order, each with its aliases and MLflow facts (when known)."""
    versions = grouping.models[model]
    holders = _alias_holders(grouping.alias_claims.get(model, {}))
    facts_by_version = {v: registry.get((model, v)) for v in versions if v is not None}
    # Aliases the registry places: authoritative over what the objects last saw.
    registry_aliases = {a for f in facts_by_version.values() if f for a in (f.get("aliases") or ())}
    for version, entry in versions.items():
        facts = facts_by_version.get(version) if version is not None else None
        if facts:
            entry["aliases"] = sorted(str(a) for a in facts.get("aliases") or ())
            entry["mlflow"] = {
                "runId": facts.get("runId"),
                "metrics": dict(facts.get("metrics") or {}),
            }
        elif version is not None:
            entry["aliases"] = sorted(
                a for a, v in holders.items() if v == version and a not in registry_aliases
            )
    return {"name": model, "versions": [versions[v] for v in sorted(versions, key=version_key)]}


def _alias_holders(claims: Mapping[str, list[tuple[int, str]]]) -> dict[str, str]:
    """alias -> version: what a deployment resolved wins over what a TrainingJob set; newest wins."""
    return {
        alias: max(found, key=lambda c: (c[0], version_key(c[1])))[1]
        for alias, found in claims.items()
    }


def model_versions(tree: Mapping[str, Any]) -> list[tuple[str, str]]:
    """Every (model, version) in a lineage: what to ask the registry about."""
    return [
        (m["name"], v["version"])
        for m in tree.get("models") or ()
        for v in m.get("versions") or ()
        if v.get("version") is not None and m["name"] != "-"
    ]
