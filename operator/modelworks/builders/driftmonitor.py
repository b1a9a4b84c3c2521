"""DriftMonitor spec -> the retraining TrainingJob and the batch-check Job. Pure."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from typing import Any

from modelworks.api import API_VERSION, TRAINING_JOB
from modelworks.api.driftmonitor import DriftMonitorSpec
from modelworks.api.trainingjob import MAX_NAME_LENGTH as TJ_MAX_NAME
from modelworks.builders.common import (
    owner_reference,
    restricted_container_security,
    restricted_pod_security,
    standard_labels,
    storage_env,
)
from modelworks.names import (
    CHECK_KEY_LABEL,
    EVIDENCE_ANNOTATION,
    HOLDOUT_ANNOTATION,
    HOLDOUT_URI_ENV,
    MONITOR_GENERATION_ANNOTATION,
    MONITOR_LABEL,
    MONITOR_UID_LABEL,
    NAME_LABEL,
    PREFIX,
    RETRAIN_KEY_LABEL,
    RETRAIN_OF_LABEL,
    SNAPSHOT_ANNOTATION,
    TRIGGER_ANNOTATION,
)

BATCH_CONTAINER = "check"
EVIDENCE_LIMIT = 4000  # bytes of JSON kept in the annotation


def retrain_key(uid: str, basis: str | None) -> str:
    """One retraining decision's key: the monitor's uid and the check it was decided after
    (``status.lastCheckTime`` before that check: every scored check moves it, and a pass
    whose status write was lost decides again from the same one)."""
    return hashlib.sha256(json.dumps([uid, basis]).encode()).hexdigest()[:8]


def retrain_name(monitor: str, key: str) -> str:
    """``<monitor>-r-<key>``, the monitor's name shortened when it would not fit."""
    suffix = f"-r-{key}"
    return monitor[: TJ_MAX_NAME - len(suffix)].rstrip("-") + suffix


def evidence_text(evidence: Mapping[str, Any]) -> str:
    """The drift evidence as compact JSON, features cut to fit an annotation."""
    data = dict(evidence)
    features = list(data.get("features") or [])
    while True:
        text = json.dumps({**data, "features": features}, sort_keys=True, separators=(",", ":"))
        if len(text) <= EVIDENCE_LIMIT or not features:
            return text
        features = features[: len(features) // 2]
        data["featuresTruncated"] = True


def build_retrain(
    monitor: Mapping[str, Any],
    training_spec: Mapping[str, Any],
    *,
    key: str,
    trigger: str,
    evidence: Mapping[str, Any],
    source: str | None,
    snapshot: Mapping[str, Any] | None = None,
    storage: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """A new TrainingJob from ``training_spec`` (a stored spec or the monitor's template).

    Not owned by the monitor: a model trained because of drift outlives the monitor; the
    monitor knows its own by the uid label. Its name is the decision's ``key``. The
    lineage is in labels (which monitor, which TrainingJob it copies) and annotations
    (why: drift or schedule, and the evidence), which the TrainingJob also puts on its
    MLflow run and model version. With a ``snapshot`` (the snapshot Job's result) it trains
    on that snapshot (see :func:`on_snapshot`).
    """
    meta = monitor["metadata"]
    spec = json.loads(json.dumps(dict(training_spec)))  # a deep, plain copy
    spec["suspend"] = False
    env = [e for e in spec.get("env") or [] if e.get("name") not in _TRIGGER_ENV]
    env += [
        {"name": "MODELWORKS_RETRAIN_TRIGGER", "value": trigger},
        {"name": "MODELWORKS_DRIFT_MONITOR", "value": f"{meta['namespace']}/{meta['name']}"},
    ]
    spec["env"] = env
    annotations = {
        TRIGGER_ANNOTATION: trigger,
        MONITOR_GENERATION_ANNOTATION: str(meta.get("generation")),
        EVIDENCE_ANNOTATION: evidence_text(evidence),
    }
    if snapshot is not None:
        annotations.update(on_snapshot(spec, snapshot, f"{meta['namespace']}/{meta['name']}"))
        if storage and not spec.get("storage"):
            spec["storage"] = dict(storage)
    labels = {
        k: v for k, v in standard_labels(monitor, "retraining").items() if not k.startswith(PREFIX)
    }
    labels[NAME_LABEL] = TRAINING_JOB.singular
    labels[MONITOR_LABEL] = meta["name"]
    labels[MONITOR_UID_LABEL] = meta["uid"]
    if source:
        labels[RETRAIN_OF_LABEL] = source
    return {
        "apiVersion": API_VERSION,
        "kind": TRAINING_JOB.kind,
        "metadata": {
            "name": retrain_name(meta["name"], key),
            "namespace": meta["namespace"],
            "labels": labels,
            "annotations": annotations,
        },
        "spec": spec,
    }


_TRIGGER_ENV = ("MODELWORKS_RETRAIN_TRIGGER", "MODELWORKS_DRIFT_MONITOR", HOLDOUT_URI_ENV)
SNAPSHOT_LINEAGE = (
    "uri",
    "digest",
    "holdoutUri",
    "rows",
    "holdoutRows",
    "windowStart",
    "windowEnd",
)


def on_snapshot(spec: dict[str, Any], snapshot: Mapping[str, Any], monitor: str) -> dict[str, str]:
    """Point ``spec`` (a plain TrainingJob spec, changed in place) at the snapshot: dataset
    uri = its train.parquet, version = its digest, MODELWORKS_HOLDOUT_URI = its holdout;
    returns the lineage annotations (the snapshot as JSON, the holdout URI)."""
    spec["dataset"] = {"uri": str(snapshot["uri"]), "version": str(snapshot["digest"])}
    holdout = str(snapshot.get("holdoutUri") or "")
    if holdout:
        spec["env"] = [*spec.get("env", []), {"name": HOLDOUT_URI_ENV, "value": holdout}]
    lineage = {k: snapshot[k] for k in SNAPSHOT_LINEAGE if snapshot.get(k) is not None}
    text = json.dumps({**lineage, "monitor": monitor}, sort_keys=True, separators=(",", ":"))
    return {SNAPSHOT_ANNOTATION: text, **({HOLDOUT_ANNOTATION: holdout} if holdout else {})}


def batch_job_name(monitor: Mapping[str, Any], key: str) -> str:
    return f"{monitor['metadata']['name']}-check-{key}"


def batch_config(spec: DriftMonitorSpec) -> dict[str, Any]:
    """What the batch check needs from the spec, as JSON for its command line."""
    return spec.model_dump(
        by_alias=True,
        mode="json",
        exclude_none=True,
        include={
            "method",
            "threshold",
            "features",
            "calibration",
            "correction",
            "drift_share",
            "min_samples",
        },
    )


def _batch_args(spec: DriftMonitorSpec) -> list[str]:
    """``drift --reference ... --current ... --config ...``: the check's command line."""
    assert spec.batch is not None and spec.reference is not None
    reference = spec.reference.dataset_uri or spec.reference.profile_uri or ""
    kind = "dataset" if spec.reference.dataset_uri else "profile"
    return [
        "drift",
        "--reference",
        reference,
        "--reference-kind",
        kind,
        "--current",
        spec.batch.current_uri,
        "--config",
        json.dumps(batch_config(spec), sort_keys=True, separators=(",", ":")),
    ]


def _job_container(
    spec: DriftMonitorSpec, args: list[str], *, image: str, pull_policy: str, tracking_uri: str
) -> dict[str, Any]:
    return {
        "name": BATCH_CONTAINER,
        "image": image,
        "imagePullPolicy": pull_policy,
        "args": args,
        "env": [
            {"name": "MLFLOW_TRACKING_URI", "value": tracking_uri},
            {"name": "MLFLOW_DISABLE_TELEMETRY", "value": "true"},
            *storage_env(spec.storage),
        ],
        "resources": {"requests": {"cpu": "250m", "memory": "512Mi"}, "limits": {"memory": "2Gi"}},
        "securityContext": {**restricted_container_security(), "readOnlyRootFilesystem": True},
        "terminationMessagePolicy": "File",
        "volumeMounts": [{"name": "tmp", "mountPath": "/tmp"}],
    }


def _job(
    monitor: Mapping[str, Any],
    name: str,
    labels: Mapping[str, str],
    container: Mapping[str, Any],
    annotations: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """A Job of the monitor's, run once (one retry), reporting through its termination
    message (read back by the operator)."""
    metadata: dict[str, Any] = {
        "name": name,
        "namespace": monitor["metadata"]["namespace"],
        "labels": dict(labels),
        "ownerReferences": [owner_reference(monitor)],
    }
    if annotations:
        metadata["annotations"] = dict(annotations)
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": metadata,
        "spec": {
            "backoffLimit": 1,
            "ttlSecondsAfterFinished": 3600,
            "activeDeadlineSeconds": 1800,
            "template": {
                "metadata": {"labels": dict(labels)},
                "spec": {
                    "restartPolicy": "Never",
                    "containers": [dict(container)],
                    "securityContext": restricted_pod_security(),
                    "automountServiceAccountToken": False,
                    "enableServiceLinks": False,
                    "volumes": [{"name": "tmp", "emptyDir": {}}],
                },
            },
        },
    }


def build_batch_job(
    monitor: Mapping[str, Any],
    spec: DriftMonitorSpec,
    *,
    key: str,
    image: str,
    pull_policy: str,
    tracking_uri: str,
) -> dict[str, Any]:
    """A Job that compares the current dataset with the reference and reports through its
    termination message (read back by the operator)."""
    container = _job_container(
        spec, _batch_args(spec), image=image, pull_policy=pull_policy, tracking_uri=tracking_uri
    )
    labels = {**standard_labels(monitor, "drift-check"), CHECK_KEY_LABEL: key}
    return _job(monitor, batch_job_name(monitor, key), labels, container)


def snapshot_job_name(monitor: str, key: str) -> str:
    """``<monitor>-snap-<key>``: the snapshot of the retraining decision ``key``."""
    return f"{monitor}-snap-{key}"


def build_snapshot_job(
    monitor: Mapping[str, Any],
    spec: DriftMonitorSpec,
    config: Mapping[str, Any],
    *,
    key: str,
    trigger: str,
    evidence: Mapping[str, Any],
    server: tuple[str, str, str],
) -> dict[str, Any]:
    """The Job that materialises the snapshot of a retraining decision (``modelworks
    snapshot --config``); the decision's trigger and evidence ride on it as annotations,
    for the TrainingJob started once it is ready. ``server``: image, pull policy, MLflow."""
    image, pull_policy, tracking_uri = server
    args = ["snapshot", "--config", json.dumps(dict(config), sort_keys=True, separators=(",", ":"))]
    container = _job_container(
        spec, args, image=image, pull_policy=pull_policy, tracking_uri=tracking_uri
    )
    labels = {**standard_labels(monitor, "snapshot"), RETRAIN_KEY_LABEL: key}
    annotations = {TRIGGER_ANNOTATION: trigger, EVIDENCE_ANNOTATION: evidence_text(evidence)}
    name = snapshot_job_name(monitor["metadata"]["name"], key)
    return _job(monitor, name, labels, container, annotations)
