"""The performance-check Job: keyed name, config, storage credentials as secretKeyRef,
restricted security (plain data)."""

from __future__ import annotations

import json
from typing import Any

from modelworks.api.driftmonitor import DriftMonitorSpec
from modelworks.builders.quality import (
    Window,
    build_performance_job,
    performance_config,
    performance_key,
)

MONITOR: dict[str, Any] = {
    "apiVersion": "modelworks.dev/v1alpha1",
    "kind": "DriftMonitor",
    "metadata": {"name": "watch", "namespace": "ns", "uid": "u-1", "generation": 2},
}
SPEC = DriftMonitorSpec.model_validate(
    {
        "target": {"modelDeployment": {"name": "churn"}},
        "storage": {"endpoint": "http://s3:8333", "credentials": {"secretName": "s3"}},
        "performance": {"metrics": ["roc_auc", "f1"], "labelDelay": "10m"},
    }
)
WINDOW = Window("s3://b/capture-root", "churn", "3", "2026-11-30T10:00:00Z", "2026-11-30T12:00:00Z")


def test_the_key_names_one_job_per_due_check() -> None:
    a = performance_key("u-1", 2, "2026-11-30T12:00:00Z")
    assert a == performance_key("u-1", 2, "2026-11-30T12:00:00Z")
    assert (
        len(
            {
                a,
                performance_key("u-1", 3, "2026-11-30T12:00:00Z"),
                performance_key("u-1", 2, "2026-11-30T13:00:00Z"),
            }
        )
        == 3
    )


def test_config() -> None:
    assert performance_config(SPEC, WINDOW) == {
        "destination": "s3://b/capture-root",
        "model": "churn",
        "version": "3",
        "start": "2026-11-30T10:00:00Z",
        "end": "2026-11-30T12:00:00Z",
        "labelDelaySeconds": 600.0,
        "metrics": ["roc_auc", "f1"],
        "task": "classification",
        "positiveClass": 1,
    }


def test_job() -> None:
    job = build_performance_job(
        MONITOR, SPEC, WINDOW, key="abcd1234", image="mw:1", pull_policy="Never"
    )
    assert job["metadata"]["name"] == "watch-perf-abcd1234"
    assert job["metadata"]["ownerReferences"][0]["uid"] == "u-1"
    pod = job["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert container["args"][:2] == ["performance", "--config"]
    assert json.loads(container["args"][2]) == performance_config(SPEC, WINDOW)
    env = {e["name"]: e for e in container["env"]}
    assert env["AWS_ENDPOINT_URL_S3"]["value"] == "http://s3:8333"
    assert env["AWS_SECRET_ACCESS_KEY"]["valueFrom"]["secretKeyRef"]["name"] == "s3"
    assert all("value" not in e for n, e in env.items() if n.startswith("AWS_") and "KEY" in n)
    assert container["securityContext"]["allowPrivilegeEscalation"] is False
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["automountServiceAccountToken"] is False
    assert container["terminationMessagePolicy"] == "File"
