"""DriftMonitor spec.performance -> the performance-check Job. Pure."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from modelworks.api.common import parse_duration
from modelworks.api.driftmonitor import DriftMonitorSpec
from modelworks.builders.common import (
    owner_reference,
    restricted_container_security,
    restricted_pod_security,
    standard_labels,
    storage_env,
)
from modelworks.names import CHECK_KEY_LABEL

PERFORMANCE_CONTAINER = "performance"


@dataclass(frozen=True)
class Window:
    """The captured predictions one check scores: where, whose, and when."""

    destination: str
    model: str
    version: str | None
    start: str
    end: str


def performance_key(uid: str, generation: int | None, due_at: str | None) -> str:
    """One Job per object, generation and due check (``status.performance.nextCheckTime``
    when it started): a pass that dies before it stores the status finds the same Job."""
    basis = json.dumps(["performance", uid, generation, due_at])
    return hashlib.sha256(basis.encode()).hexdigest()[:8]


def performance_job_name(monitor: Mapping[str, Any], key: str) -> str:
    return f"{monitor['metadata']['name']}-perf-{key}"


def performance_config(spec: DriftMonitorSpec, window: Window) -> dict[str, Any]:
    """The ``modelworks performance --config`` JSON: window, metrics, task, classes."""
    perf = spec.performance
    assert perf is not None
    config: dict[str, Any] = {
        "destination": window.destination,
        "model": window.model,
        "start": window.start,
        "end": window.end,
        "labelDelaySeconds": parse_duration(perf.label_delay),
        "metrics": list(perf.metrics),
        "task": perf.task,
        "positiveClass": perf.positive_class,
    }
    if window.version is not None:
        config["version"] = window.version
    return config


def build_performance_job(
    monitor: Mapping[str, Any],
    spec: DriftMonitorSpec,
    window: Window,
    *,
    key: str,
    image: str,
    pull_policy: str,
) -> dict[str, Any]:
    """A Job from the project image that joins the window's captured rows with their
    labels, scores them and reports through its termination message."""
    config = json.dumps(performance_config(spec, window), sort_keys=True, separators=(",", ":"))
    container = {
        "name": PERFORMANCE_CONTAINER,
        "image": image,
        "imagePullPolicy": pull_policy,
        "args": ["performance", "--config", config],
        "env": storage_env(spec.storage),
        "resources": {"requests": {"cpu": "250m", "memory": "512Mi"}, "limits": {"memory": "2Gi"}},
        "securityContext": {**restricted_container_security(), "readOnlyRootFilesystem": True},
        "terminationMessagePolicy": "File",
        "volumeMounts": [{"name": "tmp", "mountPath": "/tmp"}],
    }
    labels = {**standard_labels(monitor, "performance-check"), CHECK_KEY_LABEL: key}
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {
            "name": performance_job_name(monitor, key),
            "namespace": monitor["metadata"]["namespace"],
            "labels": labels,
            "ownerReferences": [owner_reference(monitor)],
        },
        "spec": {
            "backoffLimit": 1,
            "ttlSecondsAfterFinished": 3600,
            "activeDeadlineSeconds": 1800,
            "template": {
                "metadata": {"labels": labels},
                "spec": {
                    "restartPolicy": "Never",
                    "containers": [container],
                    "securityContext": restricted_pod_security(),
                    "automountServiceAccountToken": False,
                    "enableServiceLinks": False,
                    "volumes": [{"name": "tmp", "emptyDir": {}}],
                },
            },
        },
    }
