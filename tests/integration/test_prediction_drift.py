"""Prediction drift, live: a serving pod's real /metrics, the real API server and MLflow.

The pod is a real Pod object that no kubelet runs (a scheduling gate keeps it off every
node); its status says it is ready at a loopback address where a real HTTP server
answers what the model server's own counters (FeatureObserver, PredictionObserver)
counted for real answers. The monitor's pass reads the reference profile (with outputs)
logged with the served version in MLflow, scrapes the pod, scores features and outputs,
and its status is written back through the API server.
"""

from __future__ import annotations

import contextlib
import errno
import http.server
import json
import threading
import zlib
from collections.abc import Iterator
from dataclasses import replace
from typing import Any

import numpy as np
import pandas as pd  # type: ignore[import-untyped]
import pytest

from modelworks.builders.modeldeployment import selector
from modelworks.clients.kube import Kube
from modelworks.drift.profile import PROFILE_FILE, build_profile, profile_outputs
from modelworks.names import SERVER_PORT, VERSION_LABEL
from modelworks.serving import metrics
from modelworks.serving.answers import rows
from tests.integration.test_driftmonitor import monitor, one_pass, serving
from tests.integration.test_modeldeployment import register
from tests.support import ROOT, Cluster, MlflowServer, mlflow_client

pytestmark = pytest.mark.integration
RNG = np.random.default_rng(5)
DRIFT_MONITOR_CRD = ROOT / "crds" / "modelworks.dev_driftmonitors.yaml"


def proba(n: int, a: float, b: float) -> np.ndarray:
    """``n`` answers of a binary classifier, P(churn) ~ Beta(a, b)."""
    p = RNG.beta(a, b, n)
    return np.column_stack([1 - p, p])


@contextlib.contextmanager
def pod_metrics(namespace: str) -> Iterator[str]:
    """A real HTTP server on SERVER_PORT of a loopback address of this test's own,
    answering the model server's /metrics as it is at each GET; yields the address."""

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body, content_type = metrics.render()
            self.send_response(200)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            pass

    start = zlib.crc32(namespace.encode())
    for i in range(20):
        n = (start + i) % 250 + 3
        host = f"127.0.{n}.{(start >> 8) % 250 + 3}"
        try:
            server = http.server.ThreadingHTTPServer((host, SERVER_PORT), Handler)
            break
        except OSError as exc:
            if exc.errno != errno.EADDRINUSE:
                raise
    else:
        raise RuntimeError("no free loopback address")
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield host
    finally:
        server.shutdown()
        server.server_close()


def ready_pod(crds: Cluster, ns: str, target: str, version: str, ip: str) -> None:
    """A Pod of ``target`` serving ``version``, never scheduled, whose status says Ready at ``ip``."""
    labels = {**selector({"metadata": {"name": target}}), VERSION_LABEL: version}
    crds.apply(
        {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": f"{target}-0", "labels": labels},
            "spec": {
                "schedulingGates": [{"name": "modelworks.dev/test-never-scheduled"}],
                "containers": [{"name": "server", "image": "modelworks:never-run"}],
            },
        },
        "-n",
        ns,
    )
    status = {
        "phase": "Running",
        "podIP": ip,
        "podIPs": [{"ip": ip}],
        "conditions": [
            {"type": "Ready", "status": "True", "lastTransitionTime": "2026-01-01T00:00:00Z"}
        ],
    }
    crds.kubectl(
        "patch",
        "pod",
        f"{target}-0",
        "-n",
        ns,
        "--subresource=status",
        "--type=merge",
        "-p",
        json.dumps({"status": status}),
    )


def apply_crd(crds: Cluster) -> None:
    """This branch's DriftMonitor CRD: the shared cluster's CRDs are applied by every test
    run of every branch, and one without spec/status.predictions prunes them."""
    crds.kubectl("apply", "--server-side", "--force-conflicts", "-f", str(DRIFT_MONITOR_CRD))
    crds.kubectl(
        "wait", "--for=condition=Established", "crd/driftmonitors.modelworks.dev", "--timeout=60s"
    )


def write_status(crds: Cluster, ns: str, name: str, status: dict[str, Any]) -> dict[str, Any]:
    """``status`` written through the API server, as stored."""
    apply_crd(crds)
    crds.kubectl(
        "patch",
        "dmon",
        name,
        "-n",
        ns,
        "--subresource=status",
        "--type=merge",
        "-p",
        json.dumps({"status": status}),
    )
    stored = crds.get("dmon", name, ns)
    assert stored is not None
    return dict(stored["status"])


def test_live_prediction_drift_from_a_pods_counters(
    crds: Cluster, kube: Kube, mlflow: MlflowServer, namespace: str
) -> None:
    model = f"m-{namespace}"
    version = register(mlflow.uri, model)
    run_id = mlflow_client(mlflow.uri).get_model_version(model, version).run_id
    x_ref = RNG.normal(size=2000)
    reference = rows(proba(2000, 2, 5))
    profile = replace(
        build_profile({"x": x_ref}),
        outputs=profile_outputs(reference.prediction, reference.scores),
    )
    mlflow_client(mlflow.uri).log_dict(run_id, profile.to_json(), PROFILE_FILE)
    serving(crds, namespace, "srv", model, version)

    features = metrics.FeatureObserver(profile, model, version)
    answers = metrics.PredictionObserver(profile.outputs, model, version)

    def traffic(n: int, a: float, b: float) -> None:
        frame = pd.DataFrame({"x": RNG.normal(size=n)})  # inputs as in training
        features.observe(frame)
        answers.answered(frame, proba(n, a, b))

    with pod_metrics(namespace) as ip:
        ready_pod(crds, namespace, "srv", version, ip)
        crds.apply(monitor("watch", "srv", minSamples=100), "-n", namespace)

        traffic(600, 2, 5)  # answers like the reference
        calm = one_pass(crds, kube, mlflow, namespace, "watch")
        assert "predictions" in calm.status, calm.status
        st = write_status(crds, namespace, "watch", calm.status)
        assert st["pods"] == 1 and st["verdict"] == "NoDrift", st
        assert {p["name"]: p["drifted"] for p in st["predictions"]} == {
            "prediction": False,
            "score": False,
        }
        assert st["predictions"][0]["samples"] == 600
        assert [f["name"] for f in st["features"]] == ["x"]

        traffic(3000, 5, 2)  # the same inputs, but the model now says "churn" far more
        later = "2026-01-01T00:01:00Z"
        out = one_pass(crds, kube, mlflow, namespace, "watch", now=later)
    st = write_status(crds, namespace, "watch", out.status)
    drifted = {p["name"] for p in st["predictions"] if p.get("drifted")}
    assert drifted == {"prediction", "score"}, st["predictions"]
    assert not any(f.get("drifted") for f in st["features"])
    assert st["verdict"] == "Drift" and st["driftedShare"] == pytest.approx(2 / 3, abs=1e-3)
    assert st["phase"] == "Drifting"
    declared = next(c for c in st["conditions"] if c["type"] == "DriftDetected")
    assert declared["status"] == "True"
    assert "2 of 2 outputs drifted (prediction, score)" in declared["message"]
    assert [e.reason for e in out.events] == ["PredictionDrift", "DriftDetected"]
    assert "prediction drift: 2 of 2 outputs drifted" in out.events[0].message
