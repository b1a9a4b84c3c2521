"""ModelDeployment rollout safety against a real API server and a real MLflow: passes run
in-process, one at a time, so what each pass wrote is seen before the next one."""

from __future__ import annotations

import contextlib
import http.server
import json
import math
import threading
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from modelworks.clients.kube import Kube
from modelworks.clients.mlflow import Registry
from modelworks.clients.scrape import scrape_pods
from modelworks.names import MODEL_URI_ENV
from modelworks.reconcilers.modeldeployment import ServerConfig, reconcile
from modelworks.status.modeldeployment import analysis_facts
from tests.integration.test_modeldeployment import NOW, cond, get, mdep, register
from tests.support import Cluster, MlflowServer, eventually

pytestmark = pytest.mark.integration
Pass = Callable[[], dict[str, Any]]


def passes(crds: Cluster, kube: Kube, mlflow: MlflowServer, ns: str, name: str) -> Pass:
    """One reconcile pass of ``name`` that stores the status it computed, as the operator does."""
    registry = Registry(mlflow.uri)
    server = ServerConfig("modelworks:0.1.0", "IfNotPresent", mlflow.uri)

    def one_pass() -> dict[str, Any]:
        current = get(crds, "mdep", name, ns)
        out = reconcile(current, kube=kube, registry=registry, now=NOW, server=server)
        if out.status != current.get("status"):
            patch = json.dumps({"status": out.status})
            crds.kubectl(
                "patch", "mdep", name, "-n", ns, "--subresource=status", "--type=merge", "-p", patch
            )
        return out.status

    return one_pass


def patch_spec(crds: Cluster, ns: str, name: str, spec: dict[str, Any]) -> None:
    crds.kubectl("patch", "mdep", name, "-n", ns, "--type=merge", "-p", json.dumps({"spec": spec}))


def available(one_pass: Pass) -> dict[str, Any]:
    return eventually(
        lambda: (s := one_pass())["phase"] == "Available" and s,
        timeout=90,
        what="the pods to be ready and the pass to see it",
    )


def replicas(kube: Kube, ns: str, name: str) -> int:
    dep = kube.get("apps/v1", "Deployment", ns, name)
    assert dep is not None
    return int(dep["spec"]["replicas"])


def test_switching_to_autoscaling_keeps_the_replicas_until_the_hpa_acts(
    crds: Cluster, kube: Kube, mlflow: MlflowServer, namespace: str
) -> None:
    model = f"m-{namespace}"
    register(mlflow.uri, model, alias="champion")
    crds.apply(mdep("scale", model, replicas=5), "-n", namespace)
    one_pass = passes(crds, kube, mlflow, namespace, "scale")
    available(one_pass)
    assert replicas(kube, namespace, "scale") == 5

    patch_spec(
        crds,
        namespace,
        "scale",
        {"replicas": None, "autoscaling": {"minReplicas": 2, "maxReplicas": 10}},
    )
    one_pass()
    assert replicas(kube, namespace, "scale") == 5, "the switch pass kept the running count"
    assert get(crds, "hpa", "scale", namespace)["spec"]["minReplicas"] == 2
    one_pass()
    assert replicas(kube, namespace, "scale") == 5, "a later pass does not reset it either"

    # The HPA owns the count now: a scale through /scale (as the HPA does) stays.
    crds.kubectl("scale", "deployment/scale", "-n", namespace, "--replicas=7")
    one_pass()
    assert replicas(kube, namespace, "scale") == 7

    # And back to a fixed count: the spec wins again.
    patch_spec(crds, namespace, "scale", {"autoscaling": None, "replicas": 3})
    one_pass()
    assert replicas(kube, namespace, "scale") == 3
    assert crds.get("hpa", "scale", namespace) is None
    assert cond(get(crds, "mdep", "scale", namespace), "Ready")["status"] in ("True", "False")


def served(kube: Kube, ns: str, name: str) -> str | None:
    """The model URI a Deployment's pods serve (None: no such Deployment)."""
    dep = kube.get("apps/v1", "Deployment", ns, name)
    if dep is None:
        return None
    env = dep["spec"]["template"]["spec"]["containers"][0]["env"]
    return str(next(e["value"] for e in env if e["name"] == MODEL_URI_ENV))


def test_renaming_the_model_goes_through_the_canary(
    crds: Cluster, kube: Kube, mlflow: MlflowServer, namespace: str
) -> None:
    first, second = f"a-{namespace}", f"b-{namespace}"
    v1 = register(mlflow.uri, first, alias="champion")
    w1 = register(mlflow.uri, second, alias="champion")
    assert v1 == w1 == "1", "the same version number under two model names"
    rollout = {
        "strategy": "Canary",
        "steps": [{"weight": 50, "pauseSeconds": 0}],
        "analysis": {"minRequests": 0},
    }
    crds.apply(mdep("rename", first, replicas=2, rollout=rollout), "-n", namespace)
    one_pass = passes(crds, kube, mlflow, namespace, "rename")
    available(one_pass)
    assert served(kube, namespace, "rename") == f"models:/{first}/1"

    patch_spec(crds, namespace, "rename", {"model": {"name": second}})
    status = one_pass()
    assert served(kube, namespace, "rename") == f"models:/{first}/1", "stable keeps the old model"
    assert served(kube, namespace, "rename-canary") == f"models:/{second}/1"
    assert status["canary"]["model"] == second and status["stableModel"] == first
    assert cond(get(crds, "mdep", "rename", namespace), "Ready")["status"] == "False"

    done = eventually(
        lambda: (s := one_pass()).get("stableModel") == second and "canary" not in s and s,
        timeout=90,
        what="the renamed model to be promoted",
    )
    assert served(kube, namespace, "rename") == f"models:/{second}/1"
    assert done["stableVersion"] == "1" and done["phase"] == "Available"


def test_a_bad_image_change_makes_the_deployment_not_ready(
    crds: Cluster, kube: Kube, mlflow: MlflowServer, namespace: str
) -> None:
    """New pods that cannot pull their image: the old pods still answer, but the spec's
    serving is not what runs, and Ready and Degraded say why."""
    model = f"m-{namespace}"
    register(mlflow.uri, model, alias="champion")
    crds.apply(mdep("image", model, replicas=1), "-n", namespace)
    one_pass = passes(crds, kube, mlflow, namespace, "image")
    available(one_pass)
    # The new pods go to the real kubelet (kwok pods run any image): the pull fails there.
    patch_spec(
        crds,
        namespace,
        "image",
        {
            "image": "registry.invalid/modelworks/absent:0",
            "podTemplate": {"nodeSelector": {"type": "real"}, "tolerations": None},
        },
    )
    status = eventually(
        lambda: (s := one_pass())["phase"] == "Degraded" and s,
        timeout=90,
        interval=2,
        what="the failed image pull to be reported",
    )
    obj = get(crds, "mdep", "image", namespace)
    ready, degraded = cond(obj, "Ready"), cond(obj, "Degraded")
    assert ready["status"] == "False" and degraded["status"] == "True", status
    assert degraded["reason"] in ("ErrImagePull", "ImagePullBackOff"), degraded
    assert "pod image-" in degraded["message"]
    assert cond(obj, "Available")["status"] == "True", "the old pod still serves"


GOOD_METRICS = """\
# TYPE modelworks_serving_requests_total counter
modelworks_serving_requests_total{code="200"} 120
# TYPE modelworks_serving_request_duration_seconds histogram
modelworks_serving_request_duration_seconds_bucket{le="0.1"} 120
modelworks_serving_request_duration_seconds_bucket{le="+Inf"} 120
modelworks_serving_request_duration_seconds_count 120
modelworks_serving_request_duration_seconds_sum 3
"""
BAD_METRICS = GOOD_METRICS.replace('{code="200"} 120', '{code="200"} NaN').replace(
    '{le="+Inf"} 120', '{le="+Inf"} +Inf'
)


@contextlib.contextmanager
def metrics_server(host: str, body: str, port: int = 0) -> Iterator[int]:
    """A real HTTP server answering ``body`` as a pod's /metrics; yields its port."""

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("Content-Type", "text/plain; version=0.0.4")
            self.end_headers()
            self.wfile.write(body.encode())

        def log_message(self, *args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer((host, port), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()


def test_non_finite_metrics_from_a_real_server_are_missing_data_not_a_crash() -> None:
    """Two canary pods (two loopback addresses, one port): one exports NaN and +Inf."""
    with (
        metrics_server("127.0.0.1", GOOD_METRICS) as port,
        metrics_server("127.0.0.2", BAD_METRICS, port),
    ):
        pods = [
            {"metadata": {"name": name}, "status": {"podIP": ip}}
            for name, ip in (("good", "127.0.0.1"), ("bad", "127.0.0.2"))
        ]
        scrapes = {s.pod: s for s in scrape_pods(pods, port)}
    assert all(s.error is None for s in scrapes.values()), scrapes
    samples = {pod: [(x.name, x.labels, x.value) for x in s.samples] for pod, s in scrapes.items()}
    assert any(math.isnan(v) for _, _, v in samples["bad"]), "the parser passes NaN through"
    facts = analysis_facts([samples["good"], samples["bad"]], [samples["good"]])
    assert (facts.canary_requests, facts.canary_errors, facts.unreachable) == (120, 0, 1)
    assert facts.canary_p99 is not None and math.isfinite(facts.canary_p99)


def test_autoscaling_behavior_reaches_the_hpa_and_follows_the_spec(
    mlflow: MlflowServer, crds: Cluster, kube: Kube, namespace: str
) -> None:
    model = f"m-{namespace}"
    register(mlflow.uri, model, alias="champion")
    fast = {
        "scaleUp": {"stabilizationWindowSeconds": 0},
        "scaleDown": {
            "stabilizationWindowSeconds": 30,
            "policies": [{"type": "Pods", "value": 2, "periodSeconds": 15}],
        },
    }
    crds.apply(
        mdep("tuned", model, autoscaling={"maxReplicas": 3, "behavior": fast}), "-n", namespace
    )
    one_pass = passes(crds, kube, mlflow, namespace, "tuned")
    one_pass()

    def behavior() -> dict[str, Any]:
        hpa = get(crds, "hpa", "tuned", namespace)
        stored = get(crds, "mdep", "tuned", namespace)["spec"]["autoscaling"]
        assert "behavior" in hpa["spec"], f"HPA {hpa['spec']} of {stored}"
        return dict(hpa["spec"]["behavior"])

    down = behavior()["scaleDown"]
    assert down["stabilizationWindowSeconds"] == 30
    assert down["policies"] == [{"type": "Pods", "value": 2, "periodSeconds": 15}]
    assert behavior()["scaleUp"]["stabilizationWindowSeconds"] == 0

    patch_spec(
        crds,
        namespace,
        "tuned",
        {"autoscaling": {"behavior": {"scaleDown": {"stabilizationWindowSeconds": 60}}}},
    )
    one_pass()
    assert behavior()["scaleDown"]["stabilizationWindowSeconds"] == 60

    # Without behavior the HPA has none: the controller's defaults (5 minutes down) apply.
    patch_spec(crds, namespace, "tuned", {"autoscaling": {"behavior": None}})
    one_pass()
    assert "behavior" not in get(crds, "hpa", "tuned", namespace)["spec"]
