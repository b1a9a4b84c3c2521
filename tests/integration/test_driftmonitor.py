"""DriftMonitor against a real API server and a real MLflow server.

kwok pods run no model server, so live windows here are empty (InsufficientData); the
scores themselves are the e2e tier's job. This tier checks what the monitor reads and
reports: its target, the reference profile logged with the served version, when it is
due, and the conditions and Events of each case.
"""

from __future__ import annotations

import http.server
import json
import threading
from typing import Any

import pytest

from modelworks.api.common import API_VERSION
from modelworks.clients.http import Limits
from modelworks.clients.kube import Kube
from modelworks.clients.mlflow import Registry
from modelworks.drift.profile import PROFILE_FILE, build_profile
from modelworks.reconcilers.base import Bounds
from modelworks.reconcilers.driftmonitor import reconcile
from modelworks.reconcilers.modeldeployment import ServerConfig
from tests.integration.test_modeldeployment import register
from tests.support import Cluster, MlflowServer, mlflow_client

pytestmark = pytest.mark.integration
NOW = "2026-01-01T00:00:00Z"


def monitor(name: str, target: str, **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": API_VERSION,
        "kind": "DriftMonitor",
        "metadata": {"name": name},
        "spec": {"target": {"modelDeployment": {"name": target}}, "interval": "1m", **spec},
    }


def serving(crds: Cluster, ns: str, name: str, model: str, version: str) -> None:
    """A ModelDeployment whose status says it serves ``version`` (no operator runs here)."""
    crds.apply(
        {
            "apiVersion": API_VERSION,
            "kind": "ModelDeployment",
            "metadata": {"name": name},
            "spec": {"model": {"name": model, "version": version}},
        },
        "-n",
        ns,
    )
    crds.kubectl(
        "patch",
        "mdep",
        name,
        "-n",
        ns,
        "--subresource=status",
        "--type=merge",
        "-p",
        json.dumps({"status": {"stableVersion": version, "phase": "Available"}}),
    )


def one_pass(
    crds: Cluster,
    kube: Kube,
    mlflow: MlflowServer,
    ns: str,
    name: str,
    now: str = NOW,
    bounds: Bounds | None = None,
) -> Any:
    obj = crds.get("dmon", name, ns)
    assert obj is not None
    return reconcile(
        obj,
        kube=kube,
        registry=Registry(mlflow.uri),
        now=now,
        server=ServerConfig("modelworks:0.1.0", "IfNotPresent", mlflow.uri),
        memory={},
        bounds=bounds,
    )


def ready(out: Any) -> dict[str, Any]:
    return next(c for c in out.status["conditions"] if c["type"] == "Ready")


def test_target_missing_then_not_serving(
    crds: Cluster, kube: Kube, mlflow: MlflowServer, namespace: str
) -> None:
    crds.apply(monitor("watch", "absent"), "-n", namespace)
    out = one_pass(crds, kube, mlflow, namespace, "watch")
    assert ready(out)["reason"] == "TargetNotFound" and out.status["phase"] == "Pending"
    assert [e.reason for e in out.events] == ["TargetNotFound"]
    assert out.requeue_after == 30.0

    crds.apply(
        {
            "apiVersion": API_VERSION,
            "kind": "ModelDeployment",
            "metadata": {"name": "absent"},
            "spec": {"model": {"name": "m", "alias": "champion"}},
        },
        "-n",
        namespace,
    )
    out = one_pass(crds, kube, mlflow, namespace, "watch")
    assert ready(out)["reason"] == "TargetNotServing"


def test_served_version_without_a_profile(
    crds: Cluster, kube: Kube, mlflow: MlflowServer, namespace: str
) -> None:
    model = f"m-{namespace}"
    version = register(mlflow.uri, model)  # a model with no reference profile logged
    serving(crds, namespace, "srv", model, version)
    crds.apply(monitor("watch", "srv"), "-n", namespace)
    out = one_pass(crds, kube, mlflow, namespace, "watch")
    assert ready(out)["reason"] == "NoReferenceProfile"
    assert PROFILE_FILE in ready(out)["message"]


def test_profile_of_the_served_version_and_an_empty_window(
    crds: Cluster, kube: Kube, mlflow: MlflowServer, namespace: str
) -> None:
    model = f"m-{namespace}"
    version = register(mlflow.uri, model)
    run_id = mlflow_client(mlflow.uri).get_model_version(model, version).run_id
    import numpy as np

    profile = build_profile({"x": np.arange(1000.0), "c": np.array(["a", "b"] * 500)})
    mlflow_client(mlflow.uri).log_dict(run_id, profile.to_json(), PROFILE_FILE)
    serving(crds, namespace, "srv", model, version)
    crds.apply(monitor("watch", "srv", minSamples=10), "-n", namespace)

    out = one_pass(crds, kube, mlflow, namespace, "watch")
    st = out.status
    assert st["servedVersion"] == version and st["pods"] == 0
    assert st["verdict"] == "InsufficientData"
    assert {f["name"] for f in st["features"]} == {"x", "c"}
    assert ready(out)["status"] == "True" and ready(out)["reason"] == "InsufficientData"
    assert st["lastCheckTime"] == NOW and st["nextCheckTime"] == "2026-01-01T00:01:00Z"
    assert out.requeue_after == 60.0

    # Written back, the next pass before nextCheckTime makes no API or MLflow call.
    crds.kubectl(
        "patch",
        "dmon",
        "watch",
        "-n",
        namespace,
        "--subresource=status",
        "--type=merge",
        "-p",
        json.dumps({"status": st}),
    )
    before = dict(kube.requests)
    early = one_pass(crds, kube, mlflow, namespace, "watch", now="2026-01-01T00:00:30Z")
    assert dict(kube.requests) == before
    assert early.requeue_after == 30.0
    assert early.status == crds.get("dmon", "watch", namespace)["status"]  # type: ignore[index]


def test_a_profile_over_the_size_limit_is_not_downloaded(
    crds: Cluster, kube: Kube, mlflow: MlflowServer, namespace: str
) -> None:
    import numpy as np

    model = f"m-{namespace}"
    version = register(mlflow.uri, model)
    run_id = mlflow_client(mlflow.uri).get_model_version(model, version).run_id
    profile = build_profile({f"x{i}": np.arange(1000.0) for i in range(40)}).to_json()
    mlflow_client(mlflow.uri).log_dict(run_id, profile, PROFILE_FILE)
    size = len(json.dumps(profile))
    serving(crds, namespace, "srv", model, version)
    crds.apply(monitor("watch", "srv"), "-n", namespace)
    small = Bounds(profile=Limits(deadline=60, max_bytes=size // 2))
    out = one_pass(crds, kube, mlflow, namespace, "watch", bounds=small)
    cond = ready(out)
    assert cond["reason"] == "ProfileTooLarge" and out.status["phase"] == "Pending"
    assert cond["message"].startswith(f"reference profile not loaded: {PROFILE_FILE} is ")
    assert cond["message"].endswith(
        f"over the limit of {size // 2} bytes (MODELWORKS_PROFILE_MAX_BYTES)"
    )
    assert [e.reason for e in out.events] == ["ProfileTooLarge"]
    assert ready(one_pass(crds, kube, mlflow, namespace, "watch"))["reason"] != "ProfileTooLarge"


def test_live_reference_must_come_from_mlflow(
    crds: Cluster, kube: Kube, mlflow: MlflowServer, namespace: str
) -> None:
    model = f"m-{namespace}"
    serving(crds, namespace, "srv", model, "1")
    crds.apply(
        monitor("watch", "srv", reference={"profileUri": "/data/profile.json"}), "-n", namespace
    )
    out = one_pass(crds, kube, mlflow, namespace, "watch")
    assert ready(out)["reason"] == "InvalidReference" and out.status["phase"] == "Failed"


@pytest.mark.parametrize("where", ["closed port", "not a Prometheus"])
def test_prometheus_source_that_does_not_answer(
    crds: Cluster, kube: Kube, mlflow: MlflowServer, namespace: str, where: str
) -> None:
    import numpy as np

    from tests.support import free_port

    model = f"m-{namespace}"
    version = register(mlflow.uri, model)
    run_id = mlflow_client(mlflow.uri).get_model_version(model, version).run_id
    profile = build_profile({"x": np.arange(1000.0)})
    mlflow_client(mlflow.uri).log_dict(run_id, profile.to_json(), PROFILE_FILE)
    serving(crds, namespace, "srv", model, version)
    # A port nobody listens on, or a real HTTP server that is not Prometheus (MLflow's).
    url = f"http://127.0.0.1:{free_port()}" if where == "closed port" else mlflow.uri
    watch = monitor("watch", "srv")
    watch["spec"]["target"]["prometheus"] = {"url": url}
    crds.apply(watch, "-n", namespace)
    out = one_pass(crds, kube, mlflow, namespace, "watch")
    cond = ready(out)
    assert cond["status"] == "False" and cond["reason"] == "PrometheusUnavailable"
    assert cond["message"].startswith(f"spec.target.prometheus: Prometheus at {url}")
    assert [e.reason for e in out.events] == ["PrometheusUnavailable"]
    assert out.requeue_after == 30.0
    assert "nextCheckTime" not in out.status


def test_prometheus_url_is_validated(crds: Cluster, namespace: str) -> None:
    bad = monitor("watch", "srv")
    bad["spec"]["target"]["prometheus"] = {"url": "prometheus:9090"}
    out = crds.kubectl("apply", "-n", namespace, "-f", "-", stdin=json.dumps(bad), check=False)
    assert out.returncode != 0
    assert "spec.target.prometheus.url" in out.stderr


SECRET = "internal-admin-token-4242"


class _Answers(http.server.BaseHTTPRequestHandler):
    """A server that is not Prometheus: its JSON error, or a redirect to ``location``."""

    location = ""

    def do_GET(self) -> None:
        if self.location:
            self.send_response(302)
            self.send_header("Location", self.location)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        body = json.dumps({"status": "error", "errorType": SECRET, "error": SECRET}).encode()
        self.send_response(400)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass


def _answering(location: str = "") -> http.server.ThreadingHTTPServer:
    handler = type("Handler", (_Answers,), {"location": location})
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    return srv


@pytest.mark.parametrize("answer", ["json error", "redirect"])
def test_prometheus_url_is_no_oracle(
    crds: Cluster, kube: Kube, mlflow: MlflowServer, namespace: str, answer: str
) -> None:
    """Status repeats neither another server's body nor where a redirect led."""
    import numpy as np

    model = f"m-{namespace}"
    version = register(mlflow.uri, model)
    run_id = mlflow_client(mlflow.uri).get_model_version(model, version).run_id
    mlflow_client(mlflow.uri).log_dict(
        run_id, build_profile({"x": np.arange(1000.0)}).to_json(), PROFILE_FILE
    )
    serving(crds, namespace, "srv", model, version)
    inner = _answering()
    inner_url = f"http://127.0.0.1:{inner.server_address[1]}/{SECRET}"
    outer = _answering(inner_url) if answer == "redirect" else inner
    url = f"http://127.0.0.1:{outer.server_address[1]}"
    watch = monitor("watch", "srv")
    watch["spec"]["target"]["prometheus"] = {"url": url}
    crds.apply(watch, "-n", namespace)
    try:
        out = one_pass(crds, kube, mlflow, namespace, "watch")
    finally:
        for srv in {inner, outer}:
            srv.shutdown()
            srv.server_close()
    cond = ready(out)
    assert cond["reason"] == "PrometheusUnavailable"
    assert SECRET not in cond["message"]
    assert (
        cond["message"]
        == {
            "json error": f"spec.target.prometheus: Prometheus at {url} refused the query (HTTP 400)",
            "redirect": f"spec.target.prometheus: Prometheus at {url} answered a redirect "
            "(HTTP 302), which is not followed",
        }[answer]
    )
    assert all(SECRET not in e.message for e in out.events)


# --- retraining: names from the decision, created not applied, failures finish ----------

LATER = "2027-01-01T00:00:00Z"  # past the monitor's first @hourly retraining


def retraining_monitor(
    crds: Cluster, mlflow: MlflowServer, ns: str, template: dict[str, Any]
) -> dict[str, Any]:
    """A live monitor whose checks score (an empty window) and whose @hourly schedule
    starts a retraining from ``template`` (no drift is needed)."""
    model = f"m-{ns}"
    version = register(mlflow.uri, model)
    run_id = mlflow_client(mlflow.uri).get_model_version(model, version).run_id
    import numpy as np

    mlflow_client(mlflow.uri).log_dict(
        run_id, build_profile({"x": np.arange(100.0)}).to_json(), PROFILE_FILE
    )
    serving(crds, ns, "srv", model, version)
    retrain = {"template": template, "schedule": "@hourly", "onDrift": False}
    crds.apply(monitor("watch", "srv", retrain=retrain), "-n", ns)
    obj = crds.get("dmon", "watch", ns)
    assert obj is not None
    return obj


def store(crds: Cluster, ns: str, status: dict[str, Any]) -> None:
    crds.kubectl(
        "patch",
        "dmon",
        "watch",
        "-n",
        ns,
        "--subresource=status",
        "--type=merge",
        "-p",
        json.dumps({"status": status}),
    )


def set_template(crds: Cluster, ns: str, template: dict[str, Any]) -> None:
    patch = {"spec": {"retrain": {"template": template}}}
    crds.kubectl("patch", "dmon", "watch", "-n", ns, "--type=merge", "-p", json.dumps(patch))


def retrainings(kube: Kube, ns: str) -> dict[str, dict[str, Any]]:
    return {tj["metadata"]["name"]: tj for tj in kube.list(API_VERSION, "TrainingJob", ns)}


def condition(out: Any, type_: str) -> dict[str, Any]:
    return next(c for c in out.status["conditions"] if c["type"] == type_)


TEMPLATE = {"image": "trainer:1", "suspend": True}


def finished(crds: Cluster, ns: str, name: str) -> None:
    """The retraining ran and succeeded (no operator runs TrainingJobs here)."""
    done = {
        "type": "Succeeded",
        "status": "True",
        "reason": "Registered",
        "message": "done",
        "lastTransitionTime": NOW,
    }
    status = {"status": {"phase": "Succeeded", "conditions": [done]}}
    crds.kubectl(
        "patch",
        "tj",
        name,
        "-n",
        ns,
        "--subresource=status",
        "--type=merge",
        "-p",
        json.dumps(status),
    )


def test_a_lost_status_write_never_rewrites_the_retraining_it_started(
    crds: Cluster, kube: Kube, mlflow: MlflowServer, namespace: str
) -> None:
    retraining_monitor(crds, mlflow, namespace, TEMPLATE)
    first = one_pass(crds, kube, mlflow, namespace, "watch", now=LATER)
    started = first.status["lastRetrain"]["trainingJob"]
    assert list(retrainings(kube, namespace)) == [started]
    finished(crds, namespace, started)
    # The status write is lost, and the template changes: the pass decides again.
    set_template(crds, namespace, {**TEMPLATE, "image": "trainer:2"})
    again = one_pass(crds, kube, mlflow, namespace, "watch", now="2027-01-01T00:00:10Z")
    assert again.status["lastRetrain"]["trainingJob"] == started  # found, as its own
    found = retrainings(kube, namespace)
    assert list(found) == [started]
    assert found[started]["metadata"]["generation"] == 1
    assert found[started]["spec"]["image"] == "trainer:1"

    # The write of the counter is lost later on: a later retraining is a new TrainingJob.
    store(crds, namespace, {**again.status, "retrainCount": None, "lastRetrain": None})
    later = one_pass(crds, kube, mlflow, namespace, "watch", now="2027-01-01T02:00:00Z")
    second = later.status["lastRetrain"]["trainingJob"]
    found = retrainings(kube, namespace)
    assert second != started and sorted(found) == sorted([started, second])
    assert found[started]["metadata"]["generation"] == 1
    assert found[second]["spec"]["image"] == "trainer:2"


def test_a_refused_retraining_is_a_failed_one_not_an_error(
    crds: Cluster, kube: Kube, mlflow: MlflowServer, namespace: str
) -> None:
    # 128 variables fit the template; the two the retraining adds do not fit a TrainingJob.
    crowded = {**TEMPLATE, "env": [{"name": f"V{i}", "value": "x"} for i in range(128)]}
    retraining_monitor(crds, mlflow, namespace, crowded)
    refused = one_pass(crds, kube, mlflow, namespace, "watch", now=LATER)
    retraining = condition(refused, "Retraining")
    assert (retraining["status"], retraining["reason"]) == ("False", "RetrainRefused")
    assert "the API server refused TrainingJob" in retraining["message"]
    assert "RetrainFailed" in [e.reason for e in refused.events]
    assert refused.status["lastRetrain"]["at"] == LATER  # the cooldown runs from the refusal
    assert "retrainCount" not in refused.status
    assert retrainings(kube, namespace) == {}


def test_a_retraining_stuck_under_an_older_spec_does_not_block_the_fixed_one(
    crds: Cluster, kube: Kube, mlflow: MlflowServer, namespace: str
) -> None:
    obj = retraining_monitor(crds, mlflow, namespace, TEMPLATE)
    # One of this monitor's retrainings, for generation 1, that never ran (no status at all).
    meta = obj["metadata"]
    kube.create(
        {
            "apiVersion": API_VERSION,
            "kind": "TrainingJob",
            "metadata": {
                "name": "watch-stuck",
                "namespace": namespace,
                "labels": {
                    "modelworks.dev/drift-monitor": meta["name"],
                    "modelworks.dev/drift-monitor-uid": meta["uid"],
                },
                "annotations": {"modelworks.dev/drift-monitor-generation": "1"},
            },
            "spec": {**TEMPLATE, "image": "does-not-exist:0"},
        }
    )
    set_template(crds, namespace, {**TEMPLATE, "image": "trainer:2"})  # fixed: generation 2
    fixed = one_pass(crds, kube, mlflow, namespace, "watch", now=LATER)
    started = (fixed.status.get("lastRetrain") or {}).get("trainingJob")
    assert started not in (None, "watch-stuck"), fixed.status
    assert retrainings(kube, namespace)[started]["spec"]["image"] == "trainer:2"
