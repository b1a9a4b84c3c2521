"""A ModelDeployment's HPA acting on real CPU: load through the Service scales it from 1
to 3 replicas, and back to 1 after the load, with no request failing on the way.

Needs the resource metrics API (hack/metrics-server.sh, started by ``hack/cluster.sh up``).
Short ``autoscaling.behavior`` windows keep the test from waiting the HPA's default 5
minutes before scaling down.
"""

from __future__ import annotations

import json
import os
import time
from typing import Any

import pytest
import yaml

from tests.e2e.test_modeldeployment import SAMPLE, Traffic, explain, rows
from tests.e2e.test_trainingjob import sample, wait
from tests.support import Cluster, Operator, eventually

pytestmark = pytest.mark.e2e
METRICS_API = "v1beta1.metrics.k8s.io"
LOAD_THREADS = 6
BEHAVIOR = {
    "scaleUp": {
        "stabilizationWindowSeconds": 0,
        "policies": [{"type": "Pods", "value": 2, "periodSeconds": 15}],
    },
    "scaleDown": {
        "stabilizationWindowSeconds": 30,
        "policies": [{"type": "Percent", "value": 100, "periodSeconds": 15}],
    },
}


def require_metrics_api(cluster: Cluster) -> None:
    svc = cluster.get("apiservice", METRICS_API)
    available = any(
        c["type"] == "Available" and c["status"] == "True"
        for c in ((svc or {}).get("status") or {}).get("conditions", [])
    )
    if available:
        return
    reason = f"no resource metrics API (APIService {METRICS_API} missing or not Available)"
    if os.environ.get("MODELWORKS_REQUIRE_NODE") == "1":
        pytest.fail(reason)
    pytest.skip(reason)


def hpa_replicas(cluster: Cluster, ns: str) -> tuple[int, int, str]:
    """(current, desired, CPU utilization) of the ModelDeployment's HPA."""
    hpa = cluster.get("hpa", "churn", ns) or {}
    status = hpa.get("status") or {}
    cpu = next(
        (
            m["resource"]["current"].get("averageUtilization")
            for m in status.get("currentMetrics") or []
            if m.get("type") == "Resource"
        ),
        None,
    )
    return status.get("currentReplicas", 0), status.get("desiredReplicas", 0), f"{cpu}%"


def ready_replicas(cluster: Cluster, ns: str) -> int:
    dep = cluster.get("deployment", "churn", ns) or {}
    return int((dep.get("status") or {}).get("readyReplicas") or 0)


def metric_failures(cluster: Cluster, ns: str, since: str) -> list[str]:
    """FailedGetResourceMetric events of the HPA last seen after ``since`` (RFC 3339): a
    pod has no metrics until metrics-server has scraped it, so only later ones count."""
    events = json.loads(
        cluster.kubectl(
            "get",
            "events",
            "-n",
            ns,
            "--field-selector",
            "involvedObject.kind=HorizontalPodAutoscaler",
            "-o",
            "json",
        ).stdout
    )["items"]
    return [
        e["message"]
        for e in events
        if e["reason"] == "FailedGetResourceMetric"
        and (e.get("lastTimestamp") or e.get("eventTime") or "") > since
    ]


def autoscaled(ns: str, model: str, image: str) -> dict[str, Any]:
    obj = yaml.safe_load(SAMPLE.read_text())
    obj["metadata"]["namespace"] = ns
    spec = obj["spec"]
    spec["model"]["name"] = model
    spec["image"] = image
    spec.pop("replicas", None)
    spec["autoscaling"] = {
        "minReplicas": 1,
        "maxReplicas": 3,
        "targetCPUUtilization": 50,
        "behavior": BEHAVIOR,
    }
    spec["resources"] = {
        "requests": {"cpu": "100m", "memory": "384Mi"},
        "limits": {"memory": "1Gi"},
    }
    return obj


def test_load_scales_a_modeldeployment_up_and_back_down_without_failed_requests(
    cluster: Cluster, ns: str, image: str, operator: Operator
) -> None:
    require_metrics_api(cluster)
    tj = sample(ns, image)
    cluster.apply(tj)
    wait(cluster, ns, "churn-train", "Succeeded", operator)
    cluster.apply(autoscaled(ns, tj["spec"]["model"]["name"], image))
    try:
        cluster.kubectl("wait", "mdep/churn", "-n", ns, "--for=condition=Ready", "--timeout=240s")
        # The HPA reads real CPU before any load: a utilization, not <unknown>.
        eventually(
            lambda: hpa_replicas(cluster, ns)[2] != "None%",
            timeout=120,
            interval=2,
            what="the HPA to read the pods' CPU",
        )
    except AssertionError as exc:
        raise AssertionError(f"{exc}\n{explain(cluster, ns, operator)}") from None
    read_cpu = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    assert hpa_replicas(cluster, ns)[0] == 1
    ip = cluster.get("service", "churn", ns)["spec"]["clusterIP"]  # type: ignore[index]
    url = f"http://{ip}/invocations"
    watch = Traffic(url, rows(5, seed=3), pause=1.0)
    with watch:
        loads = [Traffic(url, rows(20, seed=i), pause=0.0) for i in range(LOAD_THREADS)]
        for load in loads:
            load.__enter__()
        try:
            eventually(
                lambda: ready_replicas(cluster, ns) == 3 and hpa_replicas(cluster, ns),
                timeout=300,
                interval=3,
                what="3 ready replicas under load",
            )
        except AssertionError as exc:
            raise AssertionError(
                f"{exc}\nhpa: {hpa_replicas(cluster, ns)}\n{explain(cluster, ns, operator)}"
            ) from None
        finally:
            for load in loads:
                load.__exit__()
        eventually(
            lambda: hpa_replicas(cluster, ns)[1] == 1 and ready_replicas(cluster, ns) == 1,
            timeout=240,
            interval=3,
            what="the HPA to scale back to 1 after the load",
        )
    failed = [f for t in [watch, *loads] for f in t.failures]
    served = sum(t.codes[200] for t in [watch, *loads])
    assert served > 200, [t.codes for t in [watch, *loads]]
    assert all(set(t.codes) == {200} for t in [watch, *loads]), failed
    assert metric_failures(cluster, ns, read_cpu) == []
    hpa = cluster.get("hpa", "churn", ns) or {}
    active = next(c for c in hpa["status"]["conditions"] if c["type"] == "ScalingActive")
    assert active["status"] == "True", active
    reasons = cluster.kubectl(
        "get",
        "events",
        "-n",
        ns,
        "--field-selector",
        "involvedObject.name=churn",
        "-o",
        "jsonpath={.items[*].reason}",
    ).stdout.split()
    assert "SuccessfulRescale" in reasons, reasons
