"""Pieces every builder shares: labels, owner references, restricted security, pod overrides."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from modelworks.api import API_VERSION
from modelworks.api.common import Credentials, EnvVar, ObjectStore, PodOverrides
from modelworks.names import (
    COMPONENT_LABEL,
    INSTANCE_LABEL,
    KUEUE_PRIORITY_LABEL,
    KUEUE_QUEUE_LABEL,
    MANAGED_BY,
    MANAGED_BY_LABEL,
    MLFLOW_S3_ENDPOINT_ENV,
    NAME_LABEL,
    PART_OF_LABEL,
    S3_ACCESS_KEY_ENV,
    S3_ENDPOINT_ENV,
    S3_REGION_ENV,
    S3_SECRET_KEY_ENV,
    kind_label,
)

# Labels a user puts on a Modelworks object that the operator copies to its children,
# so queueing systems see the workload (Kueue reads its queue label from the Job).
PASS_THROUGH_LABELS = (KUEUE_QUEUE_LABEL, KUEUE_PRIORITY_LABEL, PART_OF_LABEL)


def owner_reference(obj: Mapping[str, Any]) -> dict[str, Any]:
    meta = obj["metadata"]
    return {
        "apiVersion": obj.get("apiVersion", API_VERSION),
        "kind": obj["kind"],
        "name": meta["name"],
        "uid": meta["uid"],
        "controller": True,
        "blockOwnerDeletion": True,
    }


def standard_labels(obj: Mapping[str, Any], component: str) -> dict[str, str]:
    """The recommended app.kubernetes.io labels plus our owner label."""
    meta = obj["metadata"]
    labels = {
        NAME_LABEL: obj["kind"].lower(),
        INSTANCE_LABEL: meta["name"],
        COMPONENT_LABEL: component,
        MANAGED_BY_LABEL: MANAGED_BY,
        kind_label(obj["kind"]): meta["name"],
    }
    for key in PASS_THROUGH_LABELS:
        value = (meta.get("labels") or {}).get(key)
        if value:
            labels[key] = value
    return labels


def restricted_pod_security() -> dict[str, Any]:
    """Pod-level settings of the Pod Security Standard ``restricted``."""
    return {"runAsNonRoot": True, "seccompProfile": {"type": "RuntimeDefault"}}


def restricted_container_security() -> dict[str, Any]:
    return {
        "allowPrivilegeEscalation": False,
        "capabilities": {"drop": ["ALL"]},
        "runAsNonRoot": True,
        "seccompProfile": {"type": "RuntimeDefault"},
    }


def env_entries(env: list[EnvVar] | None) -> list[dict[str, Any]]:
    return [e.wire() for e in env or []]


S3_DEFAULT_KEYS = {S3_ACCESS_KEY_ENV: S3_ACCESS_KEY_ENV, S3_SECRET_KEY_ENV: S3_SECRET_KEY_ENV}


def credentials_env(credentials: Credentials, defaults: Mapping[str, str]) -> list[dict[str, Any]]:
    """Each credential as a ``secretKeyRef`` variable: the value never leaves the Secret.
    ``defaults`` maps variable to key when the spec names no keys."""
    keys = credentials.keys or defaults
    return [
        {"name": env, "valueFrom": {"secretKeyRef": {"name": credentials.secret_name, "key": key}}}
        for env, key in sorted(keys.items())
    ]


def storage_env(store: ObjectStore | None) -> list[dict[str, Any]]:
    """The variables that let boto3, pyarrow and MLflow in a pod reach ``store``."""
    if store is None:
        return []
    env: list[dict[str, Any]] = []
    if store.endpoint:
        env += [
            {"name": S3_ENDPOINT_ENV, "value": store.endpoint},
            {"name": MLFLOW_S3_ENDPOINT_ENV, "value": store.endpoint},
        ]
    if store.region:
        env.append({"name": S3_REGION_ENV, "value": store.region})
    if store.credentials:
        env += credentials_env(store.credentials, S3_DEFAULT_KEYS)
    return env


def env_name(text: str) -> str:
    """A string as an environment variable name: upper case, other characters as '_'."""
    return re.sub(r"[^A-Z0-9_]", "_", text.upper())


def apply_pod_overrides(
    pod: dict[str, Any], overrides: PodOverrides | None, container: str
) -> None:
    """Merge the user's pod-level settings into a pod template (in place)."""
    if overrides is None:
        return
    meta = pod.setdefault("metadata", {})
    if overrides.labels:
        meta["labels"] = {**overrides.labels, **meta.get("labels", {})}  # ours win
    if overrides.annotations:
        meta["annotations"] = {**meta.get("annotations", {}), **overrides.annotations}
    spec = pod["spec"]
    if overrides.node_selector:
        spec["nodeSelector"] = dict(overrides.node_selector)
    if overrides.tolerations:
        spec["tolerations"] = spec.get("tolerations", []) + [
            t.wire() for t in overrides.tolerations
        ]
    if overrides.affinity:
        spec["affinity"] = dict(overrides.affinity)
    if overrides.volumes:
        spec["volumes"] = [dict(v) for v in overrides.volumes]
    if overrides.volume_mounts:
        for c in spec["containers"]:
            if c["name"] == container:
                c["volumeMounts"] = [dict(m) for m in overrides.volume_mounts]
    if overrides.service_account_name:
        spec["serviceAccountName"] = overrides.service_account_name
        spec.pop("automountServiceAccountToken", None)  # the user asked for an identity
    if overrides.image_pull_secrets:
        spec["imagePullSecrets"] = [s.wire() for s in overrides.image_pull_secrets]
    for field, key in (
        ("priority_class_name", "priorityClassName"),
        ("scheduler_name", "schedulerName"),
        ("runtime_class_name", "runtimeClassName"),
    ):
        value = getattr(overrides, field)
        if value:
            spec[key] = value
