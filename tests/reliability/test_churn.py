"""Churn: TrainingJobs (and a few ModelDeployments) created and deleted over and over, with
the operator stopped during some of the cycles and started again.

After the garbage collector settles:

- no leaked child: no Job, Deployment or Service in the namespace outlives its owner;
- no duplicate side effect: at most one MLflow run per TrainingJob uid;
- a TrainingJob that reached a final phase before it was deleted has a finished run.

A TrainingJob deleted while its pods still ran leaves its MLflow run RUNNING: the operator
puts no finalizer on its objects (they stay deletable while it is down), so nothing ends
the run of a deletion it did not see. The test prints how many there were; see
docs/reliability.md.

Both are ``chaos``: the 10-cycle slice took 157 s on the loaded development machine (the
bar for the integration tier is 60 s).
"""

from __future__ import annotations

import json
import random
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from urllib3.exceptions import MaxRetryError

from modelworks.api import GROUP, VERSION
from modelworks.names import MANAGED_BY, MANAGED_BY_LABEL
from tests.integration.test_modeldeployment import KWOK, register
from tests.integration.test_trainingjob import kwok_pods, training_job
from tests.reliability.gaps import custom_api
from tests.reliability.operator_proc import Operator, start_operator
from tests.reliability.test_watch_gaps import runs_for
from tests.support import Cluster, MlflowServer, eventually

pytestmark = pytest.mark.integration
CHILDREN = "jobs,deployments,services"


def leftovers(cluster: Cluster, namespace: str) -> list[str]:
    """Children managed by Modelworks whose owner no longer exists."""
    out = json.loads(
        cluster.kubectl(
            "get",
            CHILDREN,
            "-n",
            namespace,
            "-l",
            f"{MANAGED_BY_LABEL}={MANAGED_BY}",
            "-o",
            "json",
        ).stdout
    )
    return [f"{o['kind']}/{o['metadata']['name']}" for o in out["items"]]


def mdep(name: str, model: str) -> dict[str, Any]:
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "ModelDeployment",
        "metadata": {"name": name},
        "spec": {"model": {"name": model, "version": "1"}, "podTemplate": KWOK},
    }


def patiently(call: Callable[..., Any], *args: Any) -> Any:
    """``call(*args)``, again while the API server does not answer (it may be restarting)."""
    deadline = time.monotonic() + 120
    while True:
        try:
            return call(*args)
        except MaxRetryError:
            if time.monotonic() > deadline:
                raise
            time.sleep(2)


class Churner:
    def __init__(self, cluster: Cluster, namespace: str, model: str) -> None:
        self.api = custom_api(cluster)
        self.namespace, self.model = namespace, model
        self.rng = random.Random(13)
        self.uids: list[str] = []
        self.finished: list[str] = []  # uids whose TrainingJob was final before deletion

    def tj(self, i: int, operator_up: bool) -> None:
        body = training_job(f"c-{i}", self.namespace, model=self.model, suspend=False)
        body["spec"]["podTemplate"] = kwok_pods("1s")
        for key in ("model", "qualityGate"):
            body["spec"].pop(key)
        created: Any = patiently(
            self.api.create_namespaced_custom_object,
            GROUP,
            VERSION,
            self.namespace,
            "trainingjobs",
            body,
        )
        self.uids.append(created["metadata"]["uid"])
        if i % 5 == 4 and operator_up:
            self._until_final(f"c-{i}", created["metadata"]["uid"])
        else:
            time.sleep(self.rng.uniform(0, 2))
        patiently(
            self.api.delete_namespaced_custom_object,
            GROUP,
            VERSION,
            self.namespace,
            "trainingjobs",
            f"c-{i}",
        )

    def _until_final(self, name: str, uid: str) -> None:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            obj: Any = patiently(
                self.api.get_namespaced_custom_object,
                GROUP,
                VERSION,
                self.namespace,
                "trainingjobs",
                name,
            )
            if (obj.get("status") or {}).get("phase") in ("Succeeded", "Failed"):
                self.finished.append(uid)
                return
            time.sleep(0.5)

    def md(self, i: int) -> None:
        patiently(
            self.api.create_namespaced_custom_object,
            GROUP,
            VERSION,
            self.namespace,
            "modeldeployments",
            mdep(f"s-{i}", self.model),
        )
        time.sleep(self.rng.uniform(0.5, 3))
        patiently(
            self.api.delete_namespaced_custom_object,
            GROUP,
            VERSION,
            self.namespace,
            "modeldeployments",
            f"s-{i}",
        )


def churn(
    crds: Cluster, mlflow: MlflowServer, namespace: str, tmp: Path, cycles: int
) -> dict[str, Any]:
    model = f"m-{namespace}"
    register(mlflow.uri, model)
    churner = Churner(crds, namespace, model)
    down = {c for c in range(cycles) if c % 10 in (3, 4)}  # operator stopped for these
    op: Operator | None = None
    started = time.monotonic()
    try:
        for i in range(cycles):
            if i in down and op is not None:
                op.stop()
                op = None
            if i not in down and op is None:
                op = start_operator(
                    crds.kubeconfig, tmp, namespace, mlflow.uri, resync_seconds="10"
                )
            churner.tj(i, operator_up=op is not None)
            if i % 10 == 0:
                churner.md(i)
        assert op is not None
        eventually(
            lambda: not leftovers(crds, namespace),
            timeout=180,
            interval=2,
            what="every child gone with its owner",
        )
        time.sleep(15)  # a resync period: a pass for a deleted object would write now
        assert op.alive(), op.log()[-3000:]
        assert leftovers(crds, namespace) == []
    finally:
        if op is not None:
            op.stop()
    return stats(mlflow, churner, time.monotonic() - started)


def stats(mlflow: MlflowServer, churner: Churner, seconds: float) -> dict[str, Any]:
    runs = {uid: runs_for(mlflow.uri, uid) for uid in churner.uids}
    duplicated = {uid: len(r) for uid, r in runs.items() if len(r) > 1}
    assert duplicated == {}, f"more than one run for a TrainingJob: {duplicated}"
    unfinished = [uid for uid in churner.finished if runs[uid][0].info.status == "RUNNING"]
    assert unfinished == [], f"final TrainingJobs whose run is still RUNNING: {unfinished}"
    return {
        "cycles": len(churner.uids),
        "seconds": round(seconds),
        "runs": sum(len(r) for r in runs.values()),
        "running_after_delete": sum(
            1 for r in runs.values() for run in r if run.info.status == "RUNNING"
        ),
        "final_before_delete": len(churner.finished),
    }


@pytest.mark.chaos
def test_churn_slice(crds: Cluster, mlflow: MlflowServer, namespace: str, tmp: Path) -> None:
    print("\n", churn(crds, mlflow, namespace, tmp, 10))


@pytest.mark.chaos
@pytest.mark.timeout(3600)
def test_churn_hundred_cycles(
    crds: Cluster, mlflow: MlflowServer, namespace: str, tmp: Path
) -> None:
    print("\n", churn(crds, mlflow, namespace, tmp, 100))
