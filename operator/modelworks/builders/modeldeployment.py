"""ModelDeployment spec -> the serving Deployments, Service, HPA and PDB. Pure.

Names are deterministic: the stable Deployment, the Service, the HPA and the PDB are
all called after the object; the canary Deployment adds ``-canary``. Both Deployments'
pods carry the same ``modelworks.dev/modeldeployment`` and ``component=server`` labels,
so the one Service sends traffic to both in proportion to their ready replicas (a
canary without a service mesh). Each Deployment selects its own pods by ``track``.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from modelworks.api.modeldeployment import MODELS_SCHEME, ModelDeploymentSpec, split_ref
from modelworks.builders.common import (
    apply_pod_overrides,
    credentials_env,
    env_entries,
    owner_reference,
    restricted_container_security,
    restricted_pod_security,
    standard_labels,
    storage_env,
)
from modelworks.names import (
    CAPTURE_CONFIG_ENV,
    CAPTURE_STOP_SECONDS,
    COMPONENT_LABEL,
    FEEDBACK_DESTINATION_ENV,
    FEEDBACK_TOKEN_ENV,
    FEEDBACK_TOKEN_KEY,
    HASH_ANNOTATION,
    MODEL_DEPLOYMENT_LABEL,
    MODEL_URI_ENV,
    RESERVED_PREFIXES,
    SCRAPE_ANNOTATION,
    SCRAPE_PATH_ANNOTATION,
    SCRAPE_PORT_ANNOTATION,
    SERVER_PORT,
    SERVICE_PORT,
    TRACK_LABEL,
    VERSION_LABEL,
)

CONTAINER = "server"
COMPONENT = "server"
PRESTOP_SECONDS = 5
"""How long a leaving serving pod keeps answering before SIGTERM (endpoint removal lag)."""
Track = Literal["stable", "canary"]
DEFAULT_RESOURCES: dict[str, Any] = {
    # A scikit-learn model plus MLflow's scoring app idles at ~250 MiB; CPU requests are
    # what the HPA's utilisation target is a percentage of.
    "requests": {"cpu": "100m", "memory": "384Mi"},
    "limits": {"memory": "1Gi"},
}


@dataclass(frozen=True)
class ServerConfig:
    """What the operator knows that the spec does not: its default image, MLflow's address."""

    image: str
    pull_policy: str
    tracking_uri: str


def owner_label(obj: Mapping[str, Any]) -> str:
    return str(obj["metadata"]["name"])


def deployment_name(obj: Mapping[str, Any], track: Track) -> str:
    name = owner_label(obj)
    return name if track == "stable" else f"{name}-canary"


def model_uri(spec: ModelDeploymentSpec, version: str) -> str:
    """Pods serve a pinned version, never the alias: a rollout is an explicit change.
    ``version`` is a :func:`version_ref`: a bare number is a version of the spec's model."""
    model, number = split_ref(version, spec.model.name)
    return f"{MODELS_SCHEME}{model}/{number}"


def version_number(spec: ModelDeploymentSpec, version: str) -> str:
    return split_ref(version, spec.model.name)[1]


def selector(obj: Mapping[str, Any], track: Track | None = None) -> dict[str, str]:
    labels = {
        MODEL_DEPLOYMENT_LABEL: owner_label(obj),
        COMPONENT_LABEL: COMPONENT,
    }
    if track is not None:
        labels[TRACK_LABEL] = track
    return labels


def url(obj: Mapping[str, Any], spec: ModelDeploymentSpec) -> str:
    """The in-cluster address of the Service."""
    port = spec.service.port if spec.service else SERVICE_PORT
    host = f"{owner_label(obj)}.{obj['metadata']['namespace']}.svc.cluster.local"
    return f"http://{host}" if port == 80 else f"http://{host}:{port}"


def fixed_replicas(spec: ModelDeploymentSpec) -> int | None:
    """The replica count the operator sets, or None when an HPA owns it."""
    if spec.autoscaling is not None:
        return None
    return 1 if spec.replicas is None else spec.replicas


def _hashed(obj: dict[str, Any]) -> dict[str, Any]:
    """Record a digest of the desired object on it, so an unchanged child is not re-applied."""
    digest = hashlib.sha256(json.dumps(obj, sort_keys=True).encode()).hexdigest()[:16]
    obj["metadata"].setdefault("annotations", {})[HASH_ANNOTATION] = digest
    return obj


def desired_hash(obj: Mapping[str, Any] | None) -> str | None:
    if obj is None:
        return None
    return ((obj.get("metadata") or {}).get("annotations") or {}).get(HASH_ANNOTATION)


def _pod_labels(obj: Mapping[str, Any], track: Track, version: str) -> dict[str, str]:
    """The pod's selector labels and version, then our other standard labels."""
    labels = {**selector(obj, track), VERSION_LABEL: version}
    for key, value in standard_labels(obj, COMPONENT).items():
        if key.startswith(RESERVED_PREFIXES):
            labels.setdefault(key, value)
    return labels


def _server_env(
    spec: ModelDeploymentSpec, config: ServerConfig, version: str
) -> list[dict[str, Any]]:
    return [
        {"name": "MLFLOW_TRACKING_URI", "value": config.tracking_uri},
        {"name": "MLFLOW_DISABLE_TELEMETRY", "value": "true"},
        {"name": MODEL_URI_ENV, "value": model_uri(spec, version)},
        *storage_env(spec.storage),
        *_feedback_env(spec),
        *_capture_env(spec),
        *env_entries(spec.env),
    ]


def _feedback_env(spec: ModelDeploymentSpec) -> list[dict[str, Any]]:
    """Where /feedback writes labels, and its token, only ever as a ``secretKeyRef``."""
    capture = spec.data_capture
    if capture is None or capture.feedback is None:
        return []
    return [
        {"name": FEEDBACK_DESTINATION_ENV, "value": capture.destination},
        *credentials_env(capture.feedback.token, {FEEDBACK_TOKEN_ENV: FEEDBACK_TOKEN_KEY}),
    ]


def _capture_env(spec: ModelDeploymentSpec) -> list[dict[str, Any]]:
    """spec.dataCapture for the server as JSON (bounded by the schema; no credential: the
    store's keys come from spec.storage, the feedback token is not capture's)."""
    if spec.data_capture is None:
        return []
    config = spec.data_capture.wire()
    config.pop("feedback", None)
    return [{"name": CAPTURE_CONFIG_ENV, "value": json.dumps(config, sort_keys=True)}]


def grace_seconds(spec: ModelDeploymentSpec) -> int:
    """The preStop pause, uvicorn's drain of in-flight requests on SIGTERM (25 s, plus
    slack), and with data capture the last flush of the buffered rows."""
    capture = CAPTURE_STOP_SECONDS if spec.data_capture is not None else 0
    return PRESTOP_SECONDS + 30 + capture


def _server_args(spec: ModelDeploymentSpec, version: str) -> list[str]:
    return [
        "serve",
        "--model-uri",
        model_uri(spec, version),
        "--port",
        str(SERVER_PORT),
        "--workers",
        str(spec.workers),
    ]


def _probes() -> dict[str, Any]:
    """The server container's startup, readiness and liveness probes."""
    probe = {"httpGet": {"path": "/ping", "port": "http"}}
    return {
        # Loading downloads the model from MLflow: give it minutes before liveness counts.
        "startupProbe": {**probe, "periodSeconds": 5, "failureThreshold": 60},
        "readinessProbe": {**probe, "periodSeconds": 5, "failureThreshold": 2},
        # /version answers while the process lives, loaded or not: a model that cannot
        # load is not ready (and is rolled back), not restarted in a loop.
        "livenessProbe": {
            "httpGet": {"path": "/version", "port": "http"},
            "periodSeconds": 10,
            "failureThreshold": 6,
        },
    }


def _server_container(
    spec: ModelDeploymentSpec, config: ServerConfig, version: str
) -> dict[str, Any]:
    return {
        "name": CONTAINER,
        "image": spec.image or config.image,
        "imagePullPolicy": spec.image_pull_policy or config.pull_policy,
        "args": _server_args(spec, version),
        "env": _server_env(spec, config, version),
        "ports": [{"name": "http", "containerPort": SERVER_PORT, "protocol": "TCP"}],
        "resources": spec.resources.wire() if spec.resources else DEFAULT_RESOURCES,
        **_probes(),
        "securityContext": {**restricted_container_security(), "readOnlyRootFilesystem": True},
        "volumeMounts": [{"name": "tmp", "mountPath": "/tmp"}],
        # A pod leaving (scale-in, a rollout, a canary removed) keeps accepting connections
        # until kube-proxy and the Service's other clients have dropped its endpoint; only
        # then does SIGTERM stop the listener and drain. Without it CI saw requests refused
        # during a rollout. The kubelet's own sleep: no binary needed in the image.
        "lifecycle": {"preStop": {"sleep": {"seconds": PRESTOP_SECONDS}}},
    }


def _server_pod(
    obj: Mapping[str, Any],
    spec: ModelDeploymentSpec,
    container: dict[str, Any],
    *,
    track: Track,
    version: str,
) -> dict[str, Any]:
    """The pod template around ``container``, the user's podTemplate merged in."""
    pod: dict[str, Any] = {
        "metadata": {
            "labels": _pod_labels(obj, track, version),
            "annotations": {
                SCRAPE_ANNOTATION: "true",
                SCRAPE_PORT_ANNOTATION: str(SERVER_PORT),
                SCRAPE_PATH_ANNOTATION: "/metrics",
            },
        },
        "spec": {
            "containers": [container],
            "securityContext": restricted_pod_security(),
            "automountServiceAccountToken": False,
            "enableServiceLinks": False,
            "terminationGracePeriodSeconds": grace_seconds(spec),
            "volumes": [{"name": "tmp", "emptyDir": {}}],
        },
    }
    apply_pod_overrides(pod, spec.pod_template, CONTAINER)
    _keep_tmp_volume(pod, container, spec)
    return pod


def _keep_tmp_volume(
    pod: dict[str, Any], container: dict[str, Any], spec: ModelDeploymentSpec
) -> None:
    """The user's volumes and mounts come after /tmp's, which the read-only root needs."""
    if spec.pod_template is not None and spec.pod_template.volumes:
        pod["spec"]["volumes"] = [{"name": "tmp", "emptyDir": {}}, *spec.pod_template.volumes]
    if spec.pod_template is not None and spec.pod_template.volume_mounts:
        container["volumeMounts"] = [
            {"name": "tmp", "mountPath": "/tmp"},
            *(dict(m) for m in spec.pod_template.volume_mounts),
        ]


def build_deployment(
    obj: Mapping[str, Any],
    spec: ModelDeploymentSpec,
    config: ServerConfig,
    *,
    version: str,
    track: Track,
    replicas: int | None,
) -> dict[str, Any]:
    """A Deployment of model servers for ``version``; ``replicas`` None leaves it to the HPA."""
    container = _server_container(spec, config, version)
    number = version_number(spec, version)
    pod = _server_pod(obj, spec, container, track=track, version=number)
    rollout = spec.rollout
    deployment_spec: dict[str, Any] = {
        "selector": {"matchLabels": selector(obj, track)},
        "template": pod,
        "revisionHistoryLimit": 3,
        "progressDeadlineSeconds": rollout.progress_deadline_seconds if rollout else 600,
        # The old version keeps answering until the new one is ready.
        "strategy": {
            "type": "RollingUpdate",
            "rollingUpdate": {"maxUnavailable": 0, "maxSurge": "25%"},
        },
    }
    if replicas is not None:
        deployment_spec["replicas"] = replicas
    labels = {**standard_labels(obj, COMPONENT), TRACK_LABEL: track, VERSION_LABEL: number}
    return _hashed(
        {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {
                "name": deployment_name(obj, track),
                "namespace": obj["metadata"]["namespace"],
                "labels": labels,
                "ownerReferences": [owner_reference(obj)],
            },
            "spec": deployment_spec,
        }
    )


def replicas_handover(obj: Mapping[str, Any], replicas: int) -> dict[str, Any]:
    """Only the stable Deployment's replica count: applied under its own field manager before
    a Deployment that leaves the count to an HPA, so the count is kept, not reset to 1."""
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {
            "name": deployment_name(obj, "stable"),
            "namespace": obj["metadata"]["namespace"],
        },
        "spec": {"replicas": replicas},
    }


def _child_metadata(obj: Mapping[str, Any]) -> dict[str, Any]:
    """Metadata of the Service, HPA and PDB: named after the object, owned by it."""
    return {
        "name": owner_label(obj),
        "namespace": obj["metadata"]["namespace"],
        "labels": standard_labels(obj, COMPONENT),
        "ownerReferences": [owner_reference(obj)],
    }


def build_service(obj: Mapping[str, Any], spec: ModelDeploymentSpec) -> dict[str, Any]:
    """One Service for both tracks: traffic splits by ready pods."""
    service = spec.service
    return _hashed(
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": _child_metadata(obj),
            "spec": {
                "type": service.type if service else "ClusterIP",
                "selector": selector(obj),
                "ports": [
                    {
                        "name": "http",
                        "port": service.port if service else SERVICE_PORT,
                        "targetPort": "http",
                        "protocol": "TCP",
                    }
                ],
            },
        }
    )


def build_hpa(obj: Mapping[str, Any], spec: ModelDeploymentSpec) -> dict[str, Any] | None:
    """An autoscaling/v2 HPA on the stable Deployment (None with fixed replicas)."""
    scaling = spec.autoscaling
    if scaling is None:
        return None
    metrics: list[dict[str, Any]] = []
    for resource, target in (
        ("cpu", scaling.target_cpu_utilization),
        ("memory", scaling.target_memory_utilization),
    ):
        if target is not None:
            metrics.append(
                {
                    "type": "Resource",
                    "resource": {
                        "name": resource,
                        "target": {"type": "Utilization", "averageUtilization": target},
                    },
                }
            )
    body: dict[str, Any] = {
        "scaleTargetRef": {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "name": deployment_name(obj, "stable"),
        },
        "minReplicas": scaling.min_replicas,
        "maxReplicas": scaling.max_replicas,
    }
    if metrics:
        body["metrics"] = metrics
    if scaling.behavior is not None:
        body["behavior"] = scaling.behavior.model_dump(
            by_alias=True, exclude_none=True, mode="json"
        )
    return _hashed(
        {
            "apiVersion": "autoscaling/v2",
            "kind": "HorizontalPodAutoscaler",
            "metadata": _child_metadata(obj),
            "spec": body,
        }
    )


def build_pdb(obj: Mapping[str, Any], spec: ModelDeploymentSpec) -> dict[str, Any] | None:
    """A PodDisruptionBudget (one pod at a time) when at least two replicas always run."""
    floor = spec.autoscaling.min_replicas if spec.autoscaling else (fixed_replicas(spec) or 0)
    if floor < 2:
        return None
    return _hashed(
        {
            "apiVersion": "policy/v1",
            "kind": "PodDisruptionBudget",
            "metadata": _child_metadata(obj),
            "spec": {"maxUnavailable": 1, "selector": {"matchLabels": selector(obj, "stable")}},
        }
    )
