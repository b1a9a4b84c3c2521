"""TrainingJob spec -> the batch/v1 Job (and headless Service) that runs it. Pure."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from modelworks.api.trainingjob import TrainingJobSpec
from modelworks.builders.common import (
    apply_pod_overrides,
    env_entries,
    env_name,
    owner_reference,
    restricted_container_security,
    restricted_pod_security,
    standard_labels,
    storage_env,
)
from modelworks.builders.modeldeployment import ServerConfig
from modelworks.names import (
    ANNOTATION_TAG_PREFIX,
    DATASET_URI_TAG,
    DATASET_VERSION_TAG,
    GENERATION_TAG,
    HYPERPARAMETERS_TAG,
    IMAGE_TAG,
    LINEAGE_ANNOTATIONS,
    NAMESPACE_TAG,
    RENDEZVOUS_PORT,
    RESERVED_PREFIXES,
    RUN_ANNOTATION,
    RUN_ID_TAG,
    SOURCE_TAG,
    TRAINING_JOB_TAG,
    TRAINING_KEY_LABEL,
    TRAINING_KEY_TAG,
    UID_TAG,
)

CONTAINER = "trainer"
INDEX_ANNOTATION = "batch.kubernetes.io/job-completion-index"
GPU_RESOURCES = ("nvidia.com/gpu", "amd.com/gpu")


@dataclass(frozen=True)
class RunRef:
    """The MLflow run the pods log into, created before they start."""

    tracking_uri: str
    experiment_id: str
    run_id: str


def training_key(spec: TrainingJobSpec) -> str:
    """Identifies one training run: 8 hex digits of the spec without ``suspend``.

    Toggling suspend pauses the same run; any other change is a new run. Fields at their
    default are left out, so an operator upgrade that adds a defaulted field retrains nothing.
    """
    data = spec.model_dump(by_alias=True, exclude_defaults=True, exclude={"suspend"}, mode="json")
    digest = hashlib.sha256(json.dumps(data, sort_keys=True, separators=(",", ":")).encode())
    return digest.hexdigest()[:8]


def job_name(obj: Mapping[str, Any], spec: TrainingJobSpec) -> str:
    """Deterministic per run: a spec change gets a new Job, never a mutated one."""
    return f"{obj['metadata']['name']}-{training_key(spec)}"


def pod_labels(obj: Mapping[str, Any], spec: TrainingJobSpec) -> dict[str, str]:
    """Labels of the pod template, which is immutable: only what never changes for a run."""
    labels = {
        k: v for k, v in standard_labels(obj, "training").items() if k.startswith(RESERVED_PREFIXES)
    }
    labels[TRAINING_KEY_LABEL] = training_key(spec)
    return labels


def child_labels(obj: Mapping[str, Any], spec: TrainingJobSpec) -> dict[str, str]:
    """Labels of the Job and Service: the pod's plus pass-through ones (Kueue's queue)."""
    return {**standard_labels(obj, "training"), **pod_labels(obj, spec)}


def training_env(
    obj: Mapping[str, Any], spec: TrainingJobSpec, run: RunRef
) -> list[dict[str, Any]]:
    """What every training pod is told: the run, the hyperparameters, the data, its rank."""
    env: list[dict[str, Any]] = [
        {"name": "MLFLOW_TRACKING_URI", "value": run.tracking_uri},
        {"name": "MLFLOW_EXPERIMENT_ID", "value": run.experiment_id},
        {"name": "MLFLOW_RUN_ID", "value": run.run_id},
    ]
    params = spec.hyperparameters or {}
    env.append({"name": "MODELWORKS_HYPERPARAMETERS", "value": json.dumps(params, sort_keys=True)})
    for key in sorted(params):
        value = params[key]
        text = json.dumps(value) if isinstance(value, bool) else str(value)
        env.append({"name": f"HP_{env_name(key)}", "value": text})
    if spec.dataset is not None:
        env.append({"name": "MODELWORKS_DATASET_URI", "value": spec.dataset.uri})
        if spec.dataset.version:
            env.append({"name": "MODELWORKS_DATASET_VERSION", "value": spec.dataset.version})
    if spec.model is not None:
        env.append({"name": "MODELWORKS_MODEL_NAME", "value": spec.model.name})
        env.append({"name": "MODELWORKS_MODEL_ARTIFACT_PATH", "value": spec.model.artifact_path})
    rank = {"fieldRef": {"fieldPath": f"metadata.annotations['{INDEX_ANNOTATION}']"}}
    port = str(spec.distributed.master_port if spec.distributed else RENDEZVOUS_PORT)
    job = job_name(obj, spec)
    master = f"{job}-0.{job}" if spec.replicas > 1 else "localhost"
    env += [
        {"name": "MASTER_ADDR", "value": master},
        {"name": "MASTER_PORT", "value": port},
        {"name": "WORLD_SIZE", "value": str(spec.replicas)},
        {"name": "RANK", "valueFrom": rank},
        {"name": "LOCAL_RANK", "value": "0"},
    ]
    # The user's own variables come last; the CRD refuses those that clash with ours.
    return env + storage_env(spec.storage) + env_entries(spec.env)


def _resources(spec: TrainingJobSpec) -> dict[str, Any]:
    return spec.resources.wire() if spec.resources else {}


def wants_gpu(spec: TrainingJobSpec) -> bool:
    res = spec.resources
    return res is not None and any(
        k in (res.limits or {}) or k in (res.requests or {}) for k in GPU_RESOURCES
    )


def build_job(obj: Mapping[str, Any], spec: TrainingJobSpec, run: RunRef) -> dict[str, Any]:
    """The Job for this generation of the TrainingJob."""
    name, ns = job_name(obj, spec), obj["metadata"]["namespace"]
    container: dict[str, Any] = {
        "name": CONTAINER,
        "image": spec.image,
        "env": training_env(obj, spec, run),
        "resources": _resources(spec),
        "securityContext": restricted_container_security(),
        "terminationMessagePolicy": "FallbackToLogsOnError",
    }
    if spec.image_pull_policy:
        container["imagePullPolicy"] = spec.image_pull_policy
    if spec.command:
        container["command"] = list(spec.command)
    if spec.args:
        container["args"] = list(spec.args)
    if spec.replicas > 1:
        port = spec.distributed.master_port if spec.distributed else RENDEZVOUS_PORT
        container["ports"] = [{"name": "rendezvous", "containerPort": port}]
    pod: dict[str, Any] = {
        "metadata": {"labels": pod_labels(obj, spec)},
        "spec": {
            "restartPolicy": "Never",
            "automountServiceAccountToken": False,
            "securityContext": restricted_pod_security(),
            "containers": [container],
        },
    }
    if spec.replicas > 1:
        pod["spec"]["subdomain"] = name  # pods resolve as <job>-<index>.<job>
    if wants_gpu(spec):
        pod["spec"]["tolerations"] = [
            {"key": k, "operator": "Exists", "effect": "NoSchedule"} for k in GPU_RESOURCES
        ]
    apply_pod_overrides(pod, spec.pod_template, CONTAINER)
    job_spec: dict[str, Any] = {
        "completions": spec.replicas,
        "parallelism": spec.replicas,
        "completionMode": "Indexed",
        "backoffLimit": spec.backoff_limit,
        "suspend": spec.suspend,
        "template": pod,
    }
    if spec.active_deadline_seconds is not None:
        job_spec["activeDeadlineSeconds"] = spec.active_deadline_seconds
    if spec.ttl_seconds_after_finished is not None:
        job_spec["ttlSecondsAfterFinished"] = spec.ttl_seconds_after_finished
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {
            "name": name,
            "namespace": ns,
            "labels": child_labels(obj, spec),
            "annotations": {RUN_ANNOTATION: run.run_id},
            "ownerReferences": [owner_reference(obj)],
        },
        "spec": job_spec,
    }


def build_service(obj: Mapping[str, Any], spec: TrainingJobSpec) -> dict[str, Any] | None:
    """The headless Service that gives distributed pods stable names; None for one replica."""
    if spec.replicas <= 1:
        return None
    name = job_name(obj, spec)
    port = spec.distributed.master_port if spec.distributed else RENDEZVOUS_PORT
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {
            "name": name,
            "namespace": obj["metadata"]["namespace"],
            "labels": child_labels(obj, spec),
            "ownerReferences": [owner_reference(obj)],
        },
        "spec": {
            "clusterIP": "None",
            "publishNotReadyAddresses": True,
            "selector": {"batch.kubernetes.io/job-name": name},
            "ports": [{"name": "rendezvous", "port": port, "targetPort": port}],
        },
    }


REVISION_SUFFIXES = ("/git-revision", "/git-repository", "/revision", "/commit")
LINEAGE_TAG_LIMIT = 5000  # characters: what every MLflow server keeps of a tag value


def experiment_name(obj: Mapping[str, Any], spec: TrainingJobSpec) -> str:
    return spec.experiment or f"{obj['metadata']['namespace']}-{obj['metadata']['name']}"


def source_key(obj: Mapping[str, Any], spec: TrainingJobSpec) -> str:
    """The key that finds this run again in MLflow: <uid>/<training key>."""
    return f"{obj['metadata']['uid']}/{training_key(spec)}"


def lineage_tags(obj: Mapping[str, Any], spec: TrainingJobSpec) -> dict[str, str]:
    """Tags for the MLflow run and the model version: where it came from, exactly."""
    meta = obj["metadata"]
    tags = {
        NAMESPACE_TAG: meta["namespace"],
        TRAINING_JOB_TAG: meta["name"],
        UID_TAG: meta["uid"],
        GENERATION_TAG: str(meta.get("generation", "")),
        TRAINING_KEY_TAG: training_key(spec),
        IMAGE_TAG: spec.image,
        "mlflow.source.type": "JOB",
        "mlflow.source.name": f"k8s://{meta['namespace']}/trainingjobs/{meta['name']}",
    }
    if spec.dataset is not None:
        tags[DATASET_URI_TAG] = spec.dataset.uri
        if spec.dataset.version:
            tags[DATASET_VERSION_TAG] = spec.dataset.version
    for key, value in sorted((meta.get("annotations") or {}).items()):
        if key.endswith(REVISION_SUFFIXES):
            tags[ANNOTATION_TAG_PREFIX + key.replace("/", ".")] = str(value)[:500]
        elif key in LINEAGE_ANNOTATIONS:
            tags[ANNOTATION_TAG_PREFIX + key.replace("/", ".")] = str(value)[:LINEAGE_TAG_LIMIT]
    return tags


def version_tags(obj: Mapping[str, Any], spec: TrainingJobSpec, run_id: str) -> dict[str, str]:
    tags = lineage_tags(obj, spec)
    for drop in ("mlflow.source.type", "mlflow.source.name"):
        tags.pop(drop)
    tags[SOURCE_TAG] = source_key(obj, spec)
    tags[RUN_ID_TAG] = run_id
    tags[HYPERPARAMETERS_TAG] = json.dumps(spec.hyperparameters or {}, sort_keys=True)
    if spec.model is not None:
        tags.update(spec.model.tags or {})
    return tags


VALIDATE_CONTAINER = "validate"
VALIDATION_SUFFIX = "-dv"
VALIDATION_BACKOFF = 3  # retries of a check that could not run (the store down, say)
DATA_INVALID_EXIT = 2  # what `modelworks validate-data` exits with when the data fails


def validation_job_name(obj: Mapping[str, Any], spec: TrainingJobSpec) -> str:
    """Keyed like the training Job: one check per run, never a second one after a crash."""
    return job_name(obj, spec) + VALIDATION_SUFFIX


def validation_args(spec: TrainingJobSpec, profile_uri: str | None, note: str | None) -> list[str]:
    assert spec.dataset is not None and spec.data_validation is not None
    config = spec.data_validation.model_dump(by_alias=True, mode="json", exclude_none=True)
    args = ["validate-data", "--dataset", spec.dataset.uri]
    args += ["--config", json.dumps(config, sort_keys=True, separators=(",", ":"))]
    if profile_uri:
        args += ["--profile", profile_uri]
    if note:
        args += ["--note", note]
    return args


def _validation_pod(
    obj: Mapping[str, Any], spec: TrainingJobSpec, server: ServerConfig, args: list[str]
) -> dict[str, Any]:
    """Scheduled like the training pods (spec.podTemplate), restricted, a writable /tmp."""
    container: dict[str, Any] = {
        "name": VALIDATE_CONTAINER,
        "image": server.image,
        "imagePullPolicy": server.pull_policy,
        "args": args,
        "env": [
            {"name": "MLFLOW_TRACKING_URI", "value": server.tracking_uri},
            {"name": "MLFLOW_DISABLE_TELEMETRY", "value": "true"},
            *storage_env(spec.storage),
        ],
        "resources": {"requests": {"cpu": "250m", "memory": "512Mi"}, "limits": {"memory": "2Gi"}},
        "securityContext": {**restricted_container_security(), "readOnlyRootFilesystem": True},
        "terminationMessagePolicy": "File",
    }
    pod: dict[str, Any] = {
        "metadata": {"labels": pod_labels(obj, spec)},
        "spec": {
            "restartPolicy": "Never",
            "automountServiceAccountToken": False,
            "enableServiceLinks": False,
            "securityContext": restricted_pod_security(),
            "containers": [container],
        },
    }
    apply_pod_overrides(pod, spec.pod_template, VALIDATE_CONTAINER)
    pod["spec"]["volumes"] = [*pod["spec"].get("volumes", []), {"name": "tmp", "emptyDir": {}}]
    container["volumeMounts"] = [
        *container.get("volumeMounts", []),
        {"name": "tmp", "mountPath": "/tmp"},
    ]
    return pod


def build_validation_job(
    obj: Mapping[str, Any],
    spec: TrainingJobSpec,
    server: ServerConfig,
    *,
    profile_uri: str | None = None,
    note: str | None = None,
) -> dict[str, Any]:
    """The Job that checks spec.dataset before training (``server``: the operator's image,
    pull policy and MLflow address). A data verdict (exit 2) fails it at once; a check that
    could not run is retried by the Job controller with its backoff."""
    pod = _validation_pod(obj, spec, server, validation_args(spec, profile_uri, note))
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {
            "name": validation_job_name(obj, spec),
            "namespace": obj["metadata"]["namespace"],
            "labels": child_labels(obj, spec),
            "ownerReferences": [owner_reference(obj)],
        },
        "spec": {
            "backoffLimit": VALIDATION_BACKOFF,
            "activeDeadlineSeconds": 1800,
            "podFailurePolicy": {
                "rules": [
                    {
                        "action": "FailJob",
                        "onExitCodes": {
                            "containerName": VALIDATE_CONTAINER,
                            "operator": "In",
                            "values": [DATA_INVALID_EXIT],
                        },
                    },
                    {"action": "Ignore", "onPodConditions": [{"type": "DisruptionTarget"}]},
                ]
            },
            "template": pod,
        },
    }
