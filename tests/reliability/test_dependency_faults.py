"""MLflow's faults, injected by a TCP proxy in front of the real server, seen through the
operator run as a process: no crash loop, conditions instead, recovery within a minute of
the fault's end, nothing lost or duplicated, and objects that do not need MLflow served
on time meanwhile."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest

from modelworks.api import API_VERSION
from modelworks.clients.kube import Kube
from tests.integration.test_modeldeployment import register
from tests.integration.test_trainingjob import kwok_pods, training_job
from tests.reliability.faults import (
    FaultyHTTP,
    canary_mdep,
    condition,
    faulty_http,
    mlflow_proxy,
    mlflow_uri,
    pod_quota,
    rollback_delay,
    runs_of,
    start_canary,
    timed,
)
from tests.reliability.proxy import FaultProxy, Mode
from tests.support import Cluster, Operator, eventually, run_operator

pytestmark = pytest.mark.integration
__all__ = ["faulty_http", "mlflow_proxy", "mlflow_uri"]  # fixtures
RECOVERY = 60.0  # seconds from a fault's end to every object served again
LOAD = 6  # TrainingJobs whose passes all need MLflow: more than the operator's workers


def record(tmp: Path, **figures: float) -> None:
    """Print the figures (``-s`` shows them) and keep them beside the test's files."""
    print(json.dumps({k: round(v, 1) for k, v in figures.items()}))
    (tmp / "figures.json").write_text(json.dumps(figures))


def trainingjobs(crds: Cluster, namespace: str, n: int) -> list[str]:
    """``n`` TrainingJobs whose pods (on kwok) stay running: each pass reads MLflow."""
    names = [f"load-{i}" for i in range(n)]
    for name in names:
        tj = training_job(name, namespace, model=f"m-{namespace}-{name}", suspend=False)
        tj["spec"]["podTemplate"] = kwok_pods(delay="3600s")
        crds.apply(tj)
    return names


def every_run_once(kube: Kube, mlflow: str, namespace: str, names: list[str]) -> bool:
    """Every TrainingJob has its run in its status, and exactly one run in MLflow."""
    for name in names:
        obj = kube.get(API_VERSION, "TrainingJob", namespace, name) or {}
        if not ((obj.get("status") or {}).get("mlflow") or {}).get("runId"):
            return False
        if runs_of(mlflow, f"{namespace}-{name}", obj["metadata"]["uid"]) != 1:
            return False
    return True


def operator_for(crds: Cluster, tmp: Path, namespace: str, proxy: FaultProxy) -> Any:
    return run_operator(
        crds, tmp, namespaces=namespace, mlflow_tracking_uri=proxy.url, resync_seconds="3"
    )


def test_a_canary_rolls_back_on_time_while_mlflow_is_blackholed(
    crds: Cluster,
    kube: Kube,
    namespace: str,
    mlflow_uri: str,
    mlflow_proxy: FaultProxy,
    tmp: Path,
) -> None:
    models = {name: f"m-{namespace}-{name}" for name in ("healthy", "blackholed")}
    with operator_for(crds, tmp, namespace, mlflow_proxy) as op:
        for name, model in models.items():
            register(mlflow_uri, model, alias="champion")
            crds.apply(canary_mdep(name, model), "-n", namespace)
        for name in models:
            crds.kubectl(
                "wait", f"mdep/{name}", "-n", namespace, "--for=condition=Ready", "--timeout=90s"
            )
        pod_quota(crds, namespace, pods=len(models))  # no room for a canary pod

        v = start_canary(crds, mlflow_uri, namespace, "healthy", models["healthy"])
        healthy = rollback_delay(kube, namespace, "healthy", v)

        v = start_canary(crds, mlflow_uri, namespace, "blackholed", models["blackholed"])
        mlflow_proxy.set_mode("blackhole")
        names = trainingjobs(crds, namespace, LOAD)
        blackholed = rollback_delay(kube, namespace, "blackholed", v)
        assert_outage_reported(kube, op, namespace, names)
        mlflow_proxy.set_mode("pass")
        recovery = timed(
            lambda: (
                every_run_once(kube, mlflow_uri, namespace, names)
                and condition(
                    kube.get(API_VERSION, "ModelDeployment", namespace, "blackholed"),
                    "ModelResolved",
                ).get("status")
                == "True"
            ),
            timeout=RECOVERY,
            what="every TrainingJob's run, and the alias resolved again",
        )
        obj = kube.get(API_VERSION, "ModelDeployment", namespace, "blackholed") or {}
        assert obj["status"]["rollback"]["fromVersion"] == v  # pinned, not started again
        assert crds.get("deployment", "blackholed-canary", namespace) is None
    record(tmp, rollback_healthy_s=healthy, rollback_blackholed_s=blackholed, recovery_s=recovery)
    assert blackholed <= healthy + 15, (healthy, blackholed)


def assert_outage_reported(kube: Kube, op: Operator, namespace: str, names: list[str]) -> None:
    """The outage is a condition on the objects that need MLflow; the operator runs on."""
    eventually(
        lambda: any(
            condition(kube.get(API_VERSION, "TrainingJob", namespace, n), "Succeeded").get("reason")
            == "MLflowUnavailable"
            for n in names
        ),
        timeout=60,
        what="a TrainingJob to report MLflowUnavailable",
    )
    assert op.process.poll() is None and op.healthy()


@pytest.mark.parametrize(
    ("mode", "seconds"),
    [
        pytest.param("down", 25, id="down-25s"),
        pytest.param("refuse", 20, id="refuse-20s"),
        pytest.param("down", 120, id="down-2min", marks=pytest.mark.chaos),
    ],
)
def test_trainingjobs_recover_after_mlflow_is_back(
    crds: Cluster,
    kube: Kube,
    namespace: str,
    mlflow_uri: str,
    mlflow_proxy: FaultProxy,
    tmp: Path,
    mode: Mode,
    seconds: float,
) -> None:
    mlflow_proxy.set_mode(mode)
    with operator_for(crds, tmp, namespace, mlflow_proxy) as op:
        names = trainingjobs(crds, namespace, LOAD)
        assert_outage_reported(kube, op, namespace, names)
        time.sleep(max(0.0, seconds - 10))
        assert op.process.poll() is None and op.healthy()
        assert not any(
            runs_of(mlflow_uri, f"{namespace}-{n}", kube_uid(kube, namespace, n)) for n in names
        )
        mlflow_proxy.set_mode("pass")
        recovery = timed(
            lambda: every_run_once(kube, mlflow_uri, namespace, names),
            timeout=RECOVERY,
            what="every TrainingJob's run, once",
        )
        for name in names:
            ready = condition(kube.get(API_VERSION, "TrainingJob", namespace, name), "Succeeded")
            assert ready.get("reason") != "MLflowUnavailable", ready
    record(tmp, **{f"recovery_after_{mode}_{seconds:.0f}s_s": recovery})


def kube_uid(kube: Kube, namespace: str, name: str) -> str:
    obj = kube.get(API_VERSION, "TrainingJob", namespace, name)
    assert obj is not None
    return str(obj["metadata"]["uid"])


# --- Prometheus and the serving pods' /metrics, from a real local HTTP server --------------

BOUNDED_PASS = 15.0  # seconds: a pass ends within its HTTP deadlines, whatever the server does


def drift_target(crds: Cluster, mlflow_uri: str, namespace: str, prometheus: str) -> None:
    """A ModelDeployment that serves a version with a reference profile, and its monitor."""
    import numpy as np

    from modelworks.drift.profile import PROFILE_FILE, build_profile
    from tests.integration.test_driftmonitor import monitor, serving
    from tests.support import mlflow_client

    model = f"m-{namespace}"
    version = register(mlflow_uri, model)
    client = mlflow_client(mlflow_uri)
    run_id = client.get_model_version(model, version).run_id
    client.log_dict(run_id, build_profile({"x": np.arange(1000.0)}).to_json(), PROFILE_FILE)
    serving(crds, namespace, "srv", model, version)
    watch = monitor("watch", "srv")
    watch["spec"]["target"]["prometheus"] = {"url": prometheus}
    crds.apply(watch, "-n", namespace)


def drift_pass(crds: Cluster, kube: Kube, mlflow_uri: str, namespace: str) -> tuple[Any, float]:
    from modelworks.clients.mlflow import Registry
    from modelworks.reconcilers.driftmonitor import reconcile
    from modelworks.reconcilers.modeldeployment import ServerConfig

    obj = crds.get("dmon", "watch", namespace)
    assert obj is not None
    started = time.monotonic()
    out = reconcile(
        obj,
        kube=kube,
        registry=Registry(mlflow_uri),
        now="2026-01-01T00:00:00Z",
        server=ServerConfig("modelworks:0.1.0", "IfNotPresent", mlflow_uri),
        memory={},
    )
    return out, time.monotonic() - started


@pytest.mark.parametrize(
    "mode",
    [
        "garbage",
        "no-value",
        "trickle",
    ],
)
def test_drift_monitor_reports_a_broken_prometheus_and_recovers(
    crds: Cluster,
    kube: Kube,
    namespace: str,
    mlflow_uri: str,
    faulty_http: FaultyHTTP,
    mode: str,
) -> None:
    drift_target(crds, mlflow_uri, namespace, faulty_http.url)
    faulty_http.mode = mode
    out, took = drift_pass(crds, kube, mlflow_uri, namespace)
    ready = next(c for c in out.status["conditions"] if c["type"] == "Ready")
    assert (ready["status"], ready["reason"]) == ("False", "PrometheusUnavailable"), ready
    assert ready["message"].startswith(f"spec.target.prometheus: Prometheus at {faulty_http.url}")
    assert took < BOUNDED_PASS, f"the pass took {took:.1f}s"

    faulty_http.mode = "prometheus"  # fixed
    out, _ = drift_pass(crds, kube, mlflow_uri, namespace)
    ready = next(c for c in out.status["conditions"] if c["type"] == "Ready")
    assert ready["reason"] != "PrometheusUnavailable", ready


def analysis_of(server: FaultyHTTP, min_requests: int = 10) -> tuple[str, str]:
    """What canary analysis concludes from one canary pod whose /metrics is ``server``:
    the same scrape and arithmetic the ModelDeployment's observe does."""
    from modelworks.api.modeldeployment import Analysis
    from modelworks.clients.scrape import scrape_pods
    from modelworks.reconcilers.modeldeployment import SERVING_PREFIXES
    from modelworks.status.modeldeployment import analyse, analysis_facts

    pod = {"metadata": {"name": "canary-0"}, "status": {"podIP": "127.0.0.1"}}
    (scrape,) = scrape_pods([pod], server.server_address[1], SERVING_PREFIXES)
    samples = [(s.name, s.labels, s.value) for s in scrape.samples]
    facts = analysis_facts([samples], [], int(scrape.error is not None))
    return analyse(facts, Analysis(min_requests=min_requests))


@pytest.mark.parametrize(
    ("mode", "verdict"),
    [
        ("metrics-malformed", "Inconclusive"),
        ("metrics-non-finite", "Inconclusive"),
        ("trickle", "Inconclusive"),
    ],
)
def test_canary_analysis_of_broken_pod_metrics_and_recovery(
    faulty_http: FaultyHTTP, mode: str, verdict: str
) -> None:
    faulty_http.mode = mode
    started = time.monotonic()
    assert analysis_of(faulty_http)[0] == verdict
    assert time.monotonic() - started < BOUNDED_PASS
    faulty_http.mode = "metrics"  # fixed: 200 requests, no errors
    assert analysis_of(faulty_http)[0] == "Pass"


# --- the API server restarted (it disrupts everyone on the cluster: chaos only) -------------


@pytest.mark.chaos
def test_operator_serves_again_after_the_api_server_restarts(
    crds: Cluster, kube: Kube, namespace: str, mlflow_uri: str, tmp: Path
) -> None:
    from tests.reliability.faults import restart_apiserver

    if not (Path(crds.kubeconfig).resolve().parent / "pids" / "kube-apiserver.pid").exists():
        pytest.fail("needs the local cluster of hack/cluster.sh (its kube-apiserver pid file)")
    model = f"m-{namespace}"
    register(mlflow_uri, model, alias="champion")
    with run_operator(
        crds, tmp, namespaces=namespace, mlflow_tracking_uri=mlflow_uri, resync_seconds="10"
    ) as op:
        crds.apply(canary_mdep("before", model), "-n", namespace)
        baseline = timed(
            lambda: (
                condition(
                    kube.get(API_VERSION, "ModelDeployment", namespace, "before"), "Ready"
                ).get("status")
                == "True"
            ),
            timeout=RECOVERY,
            what="a ModelDeployment to be served before the restart",
        )
        down = restart_apiserver(crds)
        crds.apply(canary_mdep("after", model), "-n", namespace)
        served = timed(
            lambda: (
                condition(
                    kube.get(API_VERSION, "ModelDeployment", namespace, "after"), "Ready"
                ).get("status")
                == "True"
            ),
            timeout=RECOVERY,
            what="a ModelDeployment created after the restart to be served",
        )
        assert op.process.poll() is None, op.log()[-3000:]
        crds.kubectl("delete", "deployment", "before", "-n", namespace)  # a child's event
        recreated = timed(
            lambda: crds.get("deployment", "before", namespace),
            timeout=RECOVERY,
            what="the deleted child to be recreated",
        )
    record(
        tmp,
        served_before_restart_s=baseline,
        apiserver_down_s=down,
        served_after_restart_s=served,
        child_recreated_s=recreated,
    )
