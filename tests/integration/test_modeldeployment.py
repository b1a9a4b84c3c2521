"""ModelDeployment against a real API server (serving pods on kwok nodes) and a real MLflow.

kwok pods do not run the model server, so these tests check what the operator decides and
writes: alias resolution, children, rollouts by alias moves (rolling and canary with
``minRequests: 0``), idempotency. Serving real requests is the e2e tier's job.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from modelworks.api.common import API_VERSION
from modelworks.clients.kube import Kube
from modelworks.clients.mlflow import Registry
from modelworks.reconcilers.modeldeployment import ServerConfig, reconcile
from tests.integration.test_trainingjob import play_trainer
from tests.support import Cluster, MlflowServer, Operator, eventually, mlflow_client, run_operator

pytestmark = pytest.mark.integration
NOW = "2026-01-01T00:00:00Z"
KWOK = {
    "nodeSelector": {"type": "kwok"},
    "tolerations": [{"key": "kwok.x-k8s.io/node", "operator": "Exists", "effect": "NoSchedule"}],
}


def register(uri: str, model: str, alias: str | None = None) -> str:
    """A new version of ``model`` (a real logged scikit-learn model), optionally aliased."""
    client = mlflow_client(uri)
    exp = client.get_experiment_by_name("mdep-tests") or None
    exp_id = exp.experiment_id if exp else client.create_experiment("mdep-tests")
    run = client.create_run(exp_id)
    play_trainer(uri, run.info.run_id, auc=0.9)
    registry = Registry(uri)
    version = registry.register(model, registry.get_run(run.info.run_id), "model", tags={}).version
    if alias:
        client.set_registered_model_alias(model, alias, version)
    return version


def mdep(name: str, model: str, **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": API_VERSION,
        "kind": "ModelDeployment",
        "metadata": {"name": name},
        "spec": {"model": {"name": model, "alias": "champion"}, "podTemplate": KWOK, **spec},
    }


def get(crds: Cluster, kind: str, name: str, ns: str) -> dict[str, Any]:
    obj = crds.get(kind, name, ns)
    assert obj is not None, f"{kind}/{name}"
    return obj


def cond(obj: dict[str, Any], type_: str) -> dict[str, Any]:
    return next(c for c in obj["status"]["conditions"] if c["type"] == type_)


def template_version(dep: dict[str, Any] | None) -> str | None:
    if dep is None:
        return None
    return str(dep["spec"]["template"]["metadata"]["labels"]["modelworks.dev/model-version"])


# --- in-process passes -------------------------------------------------------------


def test_pass_builds_children_then_settles_without_writes(
    crds: Cluster, kube: Kube, mlflow: MlflowServer, namespace: str
) -> None:
    model = f"m-{namespace}"
    version = register(mlflow.uri, model)
    obj = mdep("fixed", model, replicas=2)
    obj["spec"]["model"] = {"name": model, "version": version}
    crds.apply(obj, "-n", namespace)
    registry = Registry(mlflow.uri)
    server = ServerConfig("modelworks:0.1.0", "IfNotPresent", mlflow.uri)

    def one_pass() -> dict[str, Any]:
        current = get(crds, "mdep", "fixed", namespace)
        out = reconcile(current, kube=kube, registry=registry, now=NOW, server=server)
        if out.status != current.get("status"):
            crds.kubectl(
                "patch",
                "mdep",
                "fixed",
                "-n",
                namespace,
                "--subresource=status",
                "--type=merge",
                "-p",
                __import__("json").dumps({"status": out.status}),
            )
        return out.status

    status = one_pass()
    assert status["phase"] == "Pending", status
    dep = kube.get("apps/v1", "Deployment", namespace, "fixed")
    assert dep is not None and dep["spec"]["replicas"] == 2
    assert template_version(dep) == version
    assert kube.get("v1", "Service", namespace, "fixed") is not None
    assert kube.get("policy/v1", "PodDisruptionBudget", namespace, "fixed") is not None
    assert kube.get("autoscaling/v2", "HorizontalPodAutoscaler", namespace, "fixed") is None
    status = eventually(
        lambda: (s := one_pass())["phase"] == "Available" and s,
        timeout=60,
        what="kwok pods to be ready and the pass to see it",
    )
    assert status["stableVersion"] == version
    assert status["readyReplicas"] == 2
    assert status["resolved"]["version"] == version and status["resolved"]["runId"]

    # A settled pass writes nothing: no apply (PATCH), no delete, no create.
    before = dict(kube.requests)
    again = one_pass()
    writes = {v: kube.requests[v] - before.get(v, 0) for v in ("PATCH", "POST", "DELETE", "PUT")}
    assert writes == {"PATCH": 0, "POST": 0, "DELETE": 0, "PUT": 0}
    assert again == status


def test_unknown_alias_is_reported(
    crds: Cluster, kube: Kube, mlflow: MlflowServer, namespace: str
) -> None:
    crds.apply(mdep("nothing", f"absent-{namespace}"), "-n", namespace)
    obj = get(crds, "mdep", "nothing", namespace)
    out = reconcile(
        obj,
        kube=kube,
        registry=Registry(mlflow.uri),
        now=NOW,
        server=ServerConfig("modelworks:0.1.0", "IfNotPresent", mlflow.uri),
    )
    assert out.status["phase"] == "Failed"
    ready = next(c for c in out.status["conditions"] if c["type"] == "Ready")
    assert ready["reason"] == "AliasNotFound" and "champion" in ready["message"]
    assert [e.reason for e in out.events] == ["AliasNotFound"]
    assert kube.get("apps/v1", "Deployment", namespace, "nothing") is None


# --- the operator as a process ------------------------------------------------------


@pytest.fixture
def operator(crds: Cluster, mlflow: MlflowServer, namespace: str, tmp: Path) -> Iterator[Operator]:
    # A short resync: alias moves are seen within seconds, not the 30 s registry poll.
    with run_operator(
        crds, tmp, namespaces=namespace, mlflow_tracking_uri=mlflow.uri, resync_seconds="3"
    ) as op:
        yield op


def test_alias_move_rolls_out_without_a_spec_change(
    crds: Cluster, mlflow: MlflowServer, namespace: str, operator: Operator
) -> None:
    model = f"m-{namespace}"
    v1 = register(mlflow.uri, model, alias="champion")
    crds.apply(
        mdep("roll", model, autoscaling={"minReplicas": 2, "maxReplicas": 4}), "-n", namespace
    )
    crds.kubectl("wait", "mdep/roll", "-n", namespace, "--for=condition=Ready", "--timeout=90s")
    obj = get(crds, "mdep", "roll", namespace)
    assert obj["status"]["stableVersion"] == v1
    assert obj["status"]["url"] == f"http://roll.{namespace}.svc.cluster.local"
    hpa = get(crds, "hpa", "roll", namespace)
    assert hpa["spec"]["minReplicas"] == 2 and hpa["spec"]["maxReplicas"] == 4
    get(crds, "pdb", "roll", namespace)
    columns = crds.kubectl("get", "mdep", "roll", "-n", namespace).stdout
    assert model in columns and "champion" in columns and "Available" in columns

    generation = obj["metadata"]["generation"]
    v2 = register(mlflow.uri, model, alias="champion")  # no change in Git
    done = eventually(
        lambda: (
            (o := get(crds, "mdep", "roll", namespace))["status"].get("stableVersion") == v2
            and o["status"]["phase"] == "Available"
            and o
        ),
        timeout=120,
        interval=1,
        what=f"version {v2} to roll out",
    )
    assert done["metadata"]["generation"] == generation
    assert template_version(crds.get("deployment", "roll", namespace)) == v2
    history = done["status"]["history"]
    assert [h["version"] for h in history] == [v1, v2]
    assert history[0]["until"] == history[1]["since"]
    assert "alias champion" in history[1]["reason"]
    reasons = crds.kubectl(
        "get",
        "events",
        "-n",
        namespace,
        "--field-selector",
        "involvedObject.name=roll",
        "-o",
        "jsonpath={.items[*].reason}",
    ).stdout.split()
    assert {"Serving", "RolloutStarted", "RolledOut"} <= set(reasons), reasons
    assert (
        operator.metric("modelworks_condition", kind="ModelDeployment", name="roll", type="Ready")
        == 1
    )


def test_canary_steps_then_promotes(
    crds: Cluster, mlflow: MlflowServer, namespace: str, operator: Operator
) -> None:
    model = f"m-{namespace}"
    v1 = register(mlflow.uri, model, alias="champion")
    rollout = {
        "strategy": "Canary",
        "steps": [{"weight": 25, "pauseSeconds": 2}, {"weight": 50, "pauseSeconds": 2}],
        "analysis": {"minRequests": 0},
    }
    crds.apply(mdep("canary", model, replicas=3, rollout=rollout), "-n", namespace)
    crds.kubectl("wait", "mdep/canary", "-n", namespace, "--for=condition=Ready", "--timeout=90s")
    v2 = register(mlflow.uri, model, alias="champion")
    seen = eventually(
        lambda: crds.get("deployment", "canary-canary", namespace),
        timeout=60,
        interval=0.5,
        what="the canary Deployment",
    )
    assert template_version(seen) == v2
    assert template_version(crds.get("deployment", "canary", namespace)) == v1
    svc = get(crds, "service", "canary", namespace)
    assert "modelworks.dev/track" not in svc["spec"]["selector"]
    done = eventually(
        lambda: (
            (o := get(crds, "mdep", "canary", namespace))["status"].get("stableVersion") == v2 and o
        ),
        timeout=120,
        interval=1,
        what="the canary to be promoted",
    )
    assert "canary" not in done["status"]
    eventually(
        lambda: crds.get("deployment", "canary-canary", namespace) is None,
        timeout=30,
        what="the canary Deployment to go",
    )
    assert template_version(crds.get("deployment", "canary", namespace)) == v2
    reasons = crds.kubectl(
        "get",
        "events",
        "-n",
        namespace,
        "--field-selector",
        "involvedObject.name=canary",
        "-o",
        "jsonpath={.items[*].reason}",
    ).stdout.split()
    assert {"RolloutStarted", "CanaryStep", "Promoted"} <= set(reasons), reasons


def events_of(crds: Cluster, ns: str, name: str) -> list[dict[str, Any]]:
    """The object's Events, oldest first."""
    out = crds.kubectl(
        "get", "events", "-n", ns, "--field-selector", f"involvedObject.name={name}", "-o", "json"
    ).stdout
    items = json.loads(out)["items"]
    return sorted(items, key=lambda e: (e.get("firstTimestamp") or "", e["metadata"]["name"]))


def seconds(text: str) -> float:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def test_each_canary_step_holds_its_own_pause(
    crds: Cluster, mlflow: MlflowServer, namespace: str, operator: Operator
) -> None:
    """Step 2's pause starts when step 2 does: a stepStarted left over from step 1 in the
    stored status (a merge patch that omitted the nested key) had cut it to nothing."""
    model = f"m-{namespace}"
    register(mlflow.uri, model, alias="champion")
    pauses = (6, 9)
    rollout = {
        "strategy": "Canary",
        "steps": [
            {"weight": 25, "pauseSeconds": pauses[0]},
            {"weight": 50, "pauseSeconds": pauses[1]},
        ],
        "analysis": {"minRequests": 0},
    }
    crds.apply(mdep("steps", model, replicas=3, rollout=rollout), "-n", namespace)
    crds.kubectl("wait", "mdep/steps", "-n", namespace, "--for=condition=Ready", "--timeout=90s")
    v2 = register(mlflow.uri, model, alias="champion")
    started: dict[int, set[str]] = {}  # step -> the stepStarted values status showed for it

    def promoted() -> bool:
        status = get(crds, "mdep", "steps", namespace)["status"]
        canary = status.get("canary") or {}
        if isinstance(canary.get("step"), int) and canary.get("stepStarted"):
            started.setdefault(canary["step"], set()).add(canary["stepStarted"])
        return bool(status.get("stableVersion") == v2)

    eventually(promoted, timeout=120, interval=0.5, what="the canary to be promoted")
    assert started.get(1) and started.get(2), started
    assert not started[1] & started[2], f"step 2 inherited step 1's start: {started}"
    times = {}
    for e in events_of(crds, namespace, "steps"):
        times.setdefault(e["reason"], seconds(e["firstTimestamp"]))
    assert {"RolloutStarted", "CanaryStep", "Promoted"} <= set(times), times
    # Event times have whole seconds: each step lasts at least its pause, less one second.
    assert times["CanaryStep"] - times["RolloutStarted"] >= pauses[0] - 1, times
    assert times["Promoted"] - times["CanaryStep"] >= pauses[1] - 1, times


def test_switching_from_an_alias_to_a_version_clears_the_alias_and_settles(
    crds: Cluster, mlflow: MlflowServer, namespace: str, operator: Operator
) -> None:
    model = f"m-{namespace}"
    v1 = register(mlflow.uri, model, alias="champion")
    crds.apply(mdep("pin", model), "-n", namespace)
    crds.kubectl("wait", "mdep/pin", "-n", namespace, "--for=condition=Ready", "--timeout=90s")
    assert get(crds, "mdep", "pin", namespace)["status"]["resolved"]["alias"] == "champion"
    crds.kubectl(
        "patch",
        "mdep",
        "pin",
        "-n",
        namespace,
        "--type=merge",
        "-p",
        json.dumps({"spec": {"model": {"alias": None, "version": v1}}}),
    )
    pinned = eventually(
        lambda: (
            (o := get(crds, "mdep", "pin", namespace))["status"]["observedGeneration"] == 2
            and cond(o, "Ready")["status"] == "True"
            and o
        ),
        timeout=60,
        interval=0.5,
        what="generation 2 to be Ready",
    )
    assert pinned["status"]["resolved"] == {
        "version": v1,
        "runId": pinned["status"]["resolved"]["runId"],
        "source": pinned["status"]["resolved"]["source"],
    }
    # Settled: at least three more passes (resync 3 s), and not one write.
    version = pinned["metadata"]["resourceVersion"]
    passes = operator.metric("modelworks_reconcile_total", kind="ModelDeployment")
    eventually(
        lambda: operator.metric("modelworks_reconcile_total", kind="ModelDeployment") >= passes + 3,
        timeout=30,
        what="three more passes",
    )
    assert get(crds, "mdep", "pin", namespace)["metadata"]["resourceVersion"] == version
