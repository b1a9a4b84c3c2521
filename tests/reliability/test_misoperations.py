"""Misoperations (Acto-style): a bad change to a healthy object, then its revert.

Each case runs in its own namespace against the real API server and MLflow, with the
operator in-process (tests.reliability.wrappers). A change admission refuses must name
the field and leave the object as it was. A change admission accepts is the operator's
test: within the first pass of the new generation its summary condition says False with
a clear reason (where the table names one), nothing is destroyed (the serving Deployment
keeps the old version, registered versions and aliases are untouched), and after the
revert the object is healthy again.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

import pytest

from modelworks.api import API_VERSION
from tests.integration.test_modeldeployment import KWOK, register
from tests.integration.test_trainingjob import training_job
from tests.reliability.misops import MISOPS, TJ, Misop, merge
from tests.reliability.scenarios import conditions_of, items
from tests.reliability.wrappers import Faults, InProcessOperator, incarnation
from tests.support import Cluster, mlflow_client

pytestmark = pytest.mark.integration
PLURAL = {
    "TrainingJob": "trainingjob",
    "ModelDeployment": "modeldeployment",
    "DriftMonitor": "driftmonitor",
}
SUMMARY = {"TrainingJob": "Succeeded", "ModelDeployment": "Ready", "DriftMonitor": "Ready"}
HEALTHY_PHASE = {
    "TrainingJob": "Suspended",
    "ModelDeployment": "Available",
    "DriftMonitor": "Monitoring",
}


def params() -> list[Any]:
    out = []
    for case in MISOPS:
        marks: list[Any] = [pytest.mark.chaos] if case.chaos else []
        if case.defect:
            marks.append(pytest.mark.xfail(strict=True, reason=case.defect))
        out.append(pytest.param(case, id=case.id, marks=marks))
    return out


def base(kind: str, ns: str, model: str) -> dict[str, Any]:
    if kind == TJ:
        obj = training_job("obj", ns, model=model)
        obj["metadata"]["namespace"] = ns
        return obj
    spec: dict[str, Any]
    if kind == "ModelDeployment":
        spec = {"model": {"name": model, "alias": "champion"}, "replicas": 1, "podTemplate": KWOK}
    else:
        spec = {"target": {"modelDeployment": {"name": "srv"}}, "interval": "1m", "minSamples": 10}
    return {
        "apiVersion": API_VERSION,
        "kind": kind,
        "metadata": {"name": "obj", "namespace": ns},
        "spec": spec,
    }


def prepare(cluster: Cluster, uri: str, ns: str, kind: str) -> dict[str, Any]:
    """A registered, aliased version of the namespace's model (what must survive), the
    served ModelDeployment a monitor watches, and the object itself."""
    model = f"m-{ns}"
    version = register(uri, model, alias="champion")
    if kind == "DriftMonitor":
        import numpy as np

        from modelworks.drift.profile import PROFILE_FILE, build_profile

        client = mlflow_client(uri)
        run_id = client.get_model_version(model, version).run_id
        client.log_dict(run_id, build_profile({"x": np.arange(1000.0)}).to_json(), PROFILE_FILE)
        cluster.apply(
            {
                "apiVersion": API_VERSION,
                "kind": "ModelDeployment",
                "metadata": {"name": "srv", "namespace": ns},
                "spec": {"model": {"name": model, "version": version}},
            }
        )
        cluster.kubectl(
            "patch", "mdep", "srv", "-n", ns, "--subresource=status", "--type=merge",
            "-p", json.dumps({"status": {"stableVersion": version, "phase": "Available"}}),
        )  # fmt: skip
    obj = base(kind, ns, model)
    cluster.apply(obj)
    return obj


def keep(cluster: Cluster, uri: str, ns: str) -> dict[str, Any]:
    """What no misoperation may destroy: the registry's versions and alias, what serves."""
    model = f"m-{ns}"
    client = mlflow_client(uri)
    versions = sorted(
        (v.version, v.run_id) for v in client.search_model_versions(f"name = '{model}'")
    )
    serving = {
        d["metadata"]["name"]: d["spec"]["template"]["metadata"]["labels"].get(
            "modelworks.dev/model-version"
        )
        for d in items(cluster, ns, "deployments")
        if not d["metadata"].get("deletionTimestamp")
        and not d["metadata"]["name"].endswith("-canary")
    }
    return {
        "versions": versions,
        "alias": client.get_model_version_by_alias(model, "champion").version,
        "serving": serving,
    }


def passes_until(
    op: InProcessOperator, probe: Callable[[], dict[str, Any] | None], timeout: float, what: str
) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        found = probe()
        if found:
            return found
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")
        op.tick()


def current(cluster: Cluster, case: Misop, ns: str) -> dict[str, Any]:
    obj = cluster.get(PLURAL[case.kind], "obj", ns)
    assert obj is not None
    return obj


def healthy(obj: dict[str, Any], kind: str) -> bool:
    st = obj.get("status") or {}
    if st.get("observedGeneration") != obj["metadata"]["generation"]:
        return False
    if kind == TJ:
        return st.get("phase") == HEALTHY_PHASE[kind]
    ready = conditions_of(obj).get("Ready") or {}
    return st.get("phase") == HEALTHY_PHASE[kind] and ready.get("status") == "True"


@pytest.mark.parametrize("case", params())
def test_misoperation_then_revert(world: tuple[Cluster, str, str], case: Misop) -> None:
    cluster, uri, ns = world
    good = prepare(cluster, uri, ns, case.kind)
    with incarnation(cluster.kubeconfig, uri, ns, Faults(), (case.kind,)) as op:

        def settled_healthy() -> dict[str, Any] | None:
            obj = current(cluster, case, ns)
            return obj if healthy(obj, case.kind) else None

        before_obj = passes_until(op, settled_healthy, 90, f"a healthy {case.kind}")
        before = keep(cluster, uri, ns)
        bad = {**good, "spec": merge(good["spec"], case.change)}
        applied = cluster.apply(bad, check=False)
        if case.refused is not None:
            assert applied.returncode != 0, f"admission accepted {case.change}"
            assert case.refused in applied.stderr, applied.stderr
            after = current(cluster, case, ns)
            assert after["metadata"]["generation"] == before_obj["metadata"]["generation"]
            return
        assert applied.returncode == 0, applied.stderr
        generation = current(cluster, case, ns)["metadata"]["generation"]

        def judged() -> dict[str, Any] | None:
            obj = current(cluster, case, ns)
            return (
                obj if (obj.get("status") or {}).get("observedGeneration") == generation else None
            )

        obj = passes_until(op, judged, 30, "the first pass of the bad generation")
        said = conditions_of(obj).get(case.condition or SUMMARY[case.kind]) or {}
        if case.reason is not None:
            assert (said.get("status"), said.get("reason")) == ("False", case.reason), obj["status"]
            assert said.get("message"), said
        assert keep(cluster, uri, ns) == before, "a misoperation destroyed something"

        cluster.apply(good)
        passes_until(op, settled_healthy, 90, f"the {case.kind} to recover after the revert")
        assert keep(cluster, uri, ns) == before
