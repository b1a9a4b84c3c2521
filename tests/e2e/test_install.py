"""The install an admin does, end to end: CRDs, then manifests/default as shipped, and the
sample loop driven by the operator *in the cluster* (not a host process).

The in-cluster operator runs with exactly the RBAC manifests/default ships, so a pass
here proves least privilege is enough: training, registration, serving and a drift
monitor, with no Forbidden answer in the operator's log. To stay out of the way of the
other tests (each runs its own host operator on its own namespace), only the operator
Deployment's environment and image are changed: it watches this test's namespace alone
(MODELWORKS_NAMESPACES) and talks to the MLflow server the node's pods reach. Everything
else is the manifests' own: security context, read-only root file system, probes, the
metrics Service, and leader election on the Lease in modelworks-system (namespaced and
cluster-wide alike), with the Role rbac.yaml ships for it.

The settled objects are also handed to the Argo CD health checks of manifests/gitops
(run under lua5.4 by the harness of tests/unit/test_gitops_health.py).

At the end the operator Deployment and the modelworks-system namespace (with the Lease and
the Lease's Role) are deleted, so no later test meets a second operator; the cluster-scoped
RBAC and CRDs stay.
"""

from __future__ import annotations

import json
import re
import subprocess
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest
import yaml

from modelworks import __version__
from tests.e2e.conftest import Node
from tests.e2e.test_trainingjob import sample
from tests.support import ROOT, Cluster, eventually
from tests.unit.test_gitops_health import HEALTH, check_dir, need_lua, run_health

pytestmark = pytest.mark.e2e
DEFAULT = ROOT / "manifests" / "default"
SAMPLES = ROOT / "manifests" / "samples"
SYSTEM = "modelworks-system"
OPERATOR = "modelworks-operator"
METRICS_SERVICE = "modelworks-operator-metrics"
LEASE_ROLE = "modelworks-operator-leader-election"
SELECTOR = "app.kubernetes.io/name=modelworks,app.kubernetes.io/component=operator"


def one(docs: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    found = [d for d in docs if d["kind"] == kind and d["metadata"]["name"] == name]
    assert len(found) == 1, f"{kind}/{name}: {len(found)} in manifests/default"
    return found[0]


def set_env(container: dict[str, Any], values: dict[str, str]) -> None:
    """Set (or add) environment variables of a container, keeping the order of the rest."""
    env = container.setdefault("env", [])
    for name, value in values.items():
        entry = next((e for e in env if e["name"] == name), None)
        if entry is None:
            env.append({"name": name, "value": value})
        else:
            entry.clear()
            entry.update(name=name, value=value)


def install_documents(
    cluster: Cluster, ns: str, image: str, mlflow_uri: str
) -> list[dict[str, Any]]:
    """`kubectl kustomize manifests/default`, with the operator scoped to ``ns``."""
    built = cluster.kubectl("kustomize", str(DEFAULT)).stdout
    docs = [d for d in yaml.safe_load_all(built) if d]
    deployment = one(docs, "Deployment", OPERATOR)
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    container["image"] = image
    set_env(
        container,
        {
            "MODELWORKS_NAMESPACES": ns,
            "MODELWORKS_MLFLOW_TRACKING_URI": mlflow_uri,
            "MODELWORKS_MLFLOW_UI_URL": mlflow_uri,
            "MODELWORKS_IMAGE": image,
        },
    )
    return docs


@dataclass
class InCluster:
    """The operator as manifests/default runs it, and the documents it was installed from."""

    cluster: Cluster
    docs: list[dict[str, Any]]

    def pod(self) -> dict[str, Any]:
        pods = json.loads(
            self.cluster.kubectl("get", "pods", "-n", SYSTEM, "-l", SELECTOR, "-o", "json").stdout
        )["items"]
        live = [p for p in pods if not p["metadata"].get("deletionTimestamp")]
        assert len(live) == 1, [p["metadata"]["name"] for p in pods]
        return live[0]  # type: ignore[no-any-return]

    def log(self) -> str:
        return self.cluster.kubectl(
            "logs", "-n", SYSTEM, f"deployment/{OPERATOR}", "--tail=-1", check=False
        ).stdout

    def raw(self, path: str, *, check: bool = True) -> str:
        """GET through the API server (its service and pod proxy), as an admin can."""
        proc = self.cluster.kubectl("get", "--raw", path, timeout=30, check=check)
        return proc.stdout if proc.returncode == 0 else ""


def explain(cluster: Cluster, ns: str, op: InCluster) -> str:
    out = cluster.kubectl("get", "modelworks,pods", "-n", ns, "-o", "wide", check=False).stdout
    objs = cluster.kubectl("get", "modelworks", "-n", ns, "-o", "yaml", check=False).stdout
    system = cluster.kubectl("get", "pods", "-n", SYSTEM, "-o", "wide", check=False).stdout
    events = cluster.kubectl(
        "get", "events", "-n", ns, "--sort-by=.lastTimestamp", check=False
    ).stdout
    return (
        f"{out}\n--- objects ---\n{objs[-5000:]}\n--- events ---\n{events[-2500:]}"
        f"\n--- {SYSTEM} ---\n{system}\n--- operator ---\n{op.log()[-4000:]}"
    )


@pytest.fixture
def in_cluster(
    cluster: Cluster, crds: Cluster, real_node: Node, ns: str, image: str, mlflow_uri: str
) -> Iterator[InCluster]:
    """CRDs, then manifests/default; the operator Deployment rolled out and live."""
    cluster.kubectl("apply", "-f", str(ROOT / "crds"))
    docs = install_documents(cluster, ns, image, mlflow_uri)
    op = InCluster(cluster, docs)
    try:
        cluster.kubectl("apply", "-f", "-", stdin=yaml.safe_dump_all(docs))
        try:
            cluster.kubectl(
                "rollout",
                "status",
                "-n",
                SYSTEM,
                f"deployment/{OPERATOR}",
                "--timeout=300s",
                timeout=320,
            )
        except AssertionError as exc:
            raise AssertionError(f"{exc}\n{explain(cluster, ns, op)}") from None
        yield op
    finally:
        cluster.kubectl(
            "delete",
            "deployment",
            OPERATOR,
            "-n",
            SYSTEM,
            "--ignore-not-found",
            "--wait=true",
            "--timeout=120s",
            check=False,
            timeout=150,
        )
        eventually(
            lambda: (
                not json.loads(
                    cluster.kubectl(
                        "get", "pods", "-n", SYSTEM, "-l", SELECTOR, "-o", "json", check=False
                    ).stdout
                    or '{"items": []}'
                )["items"]
            ),
            timeout=120,
            interval=2,
            what="the in-cluster operator's pod to be gone",
        )
        cluster.kubectl(
            "delete",
            "namespace",
            SYSTEM,
            "--ignore-not-found",
            "--wait=true",
            "--timeout=180s",
            check=False,
            timeout=200,
        )


def admin_wait(
    cluster: Cluster,
    ns: str,
    resource: str,
    condition: str,
    timeout: int,
    *,
    failed: Callable[[], str | None],
    explain: Callable[[], str],
) -> None:
    """`kubectl wait --for=condition=...` as an admin runs it; given up early when
    ``failed`` says the object can no longer get there (kubectl would wait it out)."""
    command = [
        cluster.kubectl_path,
        "--kubeconfig",
        cluster.kubeconfig,
        "wait",
        resource,
        "-n",
        ns,
        f"--for=condition={condition}",
        f"--timeout={timeout}s",
    ]
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        while True:
            try:
                out, err = proc.communicate(timeout=5)
                break
            except subprocess.TimeoutExpired:
                why = failed()
                if why:
                    raise AssertionError(f"{resource}: {why}\n{explain()}") from None
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    if proc.returncode != 0:
        raise AssertionError(f"kubectl wait {resource}: {err.strip()}\n{explain()}")
    assert "condition met" in out, out


def phase_failed(cluster: Cluster, kind: str, name: str, ns: str, *phases: str) -> str | None:
    obj = cluster.get(kind, name, ns) or {}
    status = obj.get("status") or {}
    if status.get("phase") in phases:
        return f"phase {status['phase']}: {json.dumps(status.get('conditions'))[:1500]}"
    return None


def health(kind: str, obj: dict[str, Any]) -> tuple[str, str]:
    """What Argo CD's health check for ``kind`` says of the live object."""
    return run_health(need_lua(), check_dir(kind) / "health.lua", obj)


def metric_value(text: str, family: str, /, **labels: str) -> float | None:
    """The first sample of ``family`` whose labels include ``labels``."""
    for line in text.splitlines():
        if not line.startswith((family + "{", family + " ")):
            continue
        head, _, value = line.rpartition(" ")
        if all(f'{k}="{v}"' in head for k, v in labels.items()):
            return float(value)
    return None


# Install, train, serve and monitor on two shared cores: more than the default 600 s.
@pytest.mark.timeout(2400)
def test_manifests_default_runs_the_sample_loop_in_cluster(
    cluster: Cluster,
    ns: str,
    image: str,
    mlflow_uri: str,
    real_node: Node,
    in_cluster: InCluster,
) -> None:
    op = in_cluster
    need_lua()  # fail (CI) or skip before minutes of training, not after

    def why() -> str:
        return explain(cluster, ns, op)

    # --- the operator pod: where and how it runs -----------------------------------
    pod = op.pod()
    spec = pod["spec"]
    assert spec["nodeName"] == real_node.name
    assert spec["serviceAccountName"] == OPERATOR
    assert spec["securityContext"]["runAsNonRoot"] is True
    assert spec["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault"
    (container,) = spec["containers"]
    sc = container["securityContext"]
    assert sc["readOnlyRootFilesystem"] is True and sc["allowPrivilegeEscalation"] is False
    assert sc["capabilities"]["drop"] == ["ALL"]
    assert container["image"] == image
    ns_labels = cluster.get("namespace", SYSTEM)["metadata"]["labels"]  # type: ignore[index]
    assert ns_labels["pod-security.kubernetes.io/enforce"] == "restricted"
    assert any(
        c["type"] == "Ready" and c["status"] == "True" for c in pod["status"]["conditions"]
    ), why()
    name = pod["metadata"]["name"]
    # The Deployment has a liveness probe only: Ready comes with the container's start, the
    # liveness endpoint a few seconds later, once Python and kopf are up.
    healthz = f"/api/v1/namespaces/{SYSTEM}/pods/{name}:8080/proxy/healthz"
    try:
        eventually(
            lambda: op.raw(healthz, check=False).strip(),
            timeout=120,
            interval=2,
            what="the operator's /healthz (through the API server's pod proxy)",
        )
    except AssertionError as exc:
        raise AssertionError(f"{exc}\n{why()}") from None
    # RBAC in the cluster is what manifests/default ships, rule for rule.
    shipped = one(op.docs, "ClusterRole", OPERATOR)["rules"]
    live = cluster.get("clusterrole", OPERATOR)
    assert live is not None and live["rules"] == shipped
    lease_role = one(op.docs, "Role", LEASE_ROLE)
    live = cluster.get("role", LEASE_ROLE, SYSTEM)
    assert live is not None and live["rules"] == lease_role["rules"]
    # The only replica leads: it holds the Lease the manifests name, under its pod name.
    (installed,) = one(op.docs, "Deployment", OPERATOR)["spec"]["template"]["spec"]["containers"]
    env = {e["name"]: e.get("value") for e in installed["env"]}
    lease_name = env["MODELWORKS_LEADER_ELECTION"]
    assert lease_name, "manifests/default elects a leader"

    def lease_holder() -> str | None:
        lease = cluster.get("lease", lease_name, SYSTEM)
        return ((lease or {}).get("spec") or {}).get("holderIdentity") or None

    try:
        holder = eventually(lease_holder, timeout=60, interval=2, what="the Lease's holder")
    except AssertionError as exc:
        raise AssertionError(f"{exc}\n{why()}") from None
    assert holder == name, (holder, name)

    # --- TrainingJob: trains and registers (kubectl wait, as an admin would) --------
    tj = sample(ns, image)
    model = tj["spec"]["model"]["name"]
    cluster.apply(tj)
    admin_wait(
        cluster,
        ns,
        "tj/churn-train",
        "Succeeded",
        900,
        failed=lambda: phase_failed(cluster, "tj", "churn-train", ns, "Failed"),
        explain=why,
    )
    trained = cluster.get("tj", "churn-train", ns)
    assert trained is not None
    assert trained["status"]["registeredModel"]["name"] == model
    assert trained["status"]["registeredModel"]["alias"] == "champion"

    # --- ModelDeployment: serves the alias; spec.image left to MODELWORKS_IMAGE ----
    mdep = yaml.safe_load((SAMPLES / "modeldeployment.yaml").read_text())
    mdep["metadata"]["namespace"] = ns
    mdep["spec"]["model"]["name"] = model
    mdep["spec"]["resources"] = {
        "requests": {"cpu": "100m", "memory": "384Mi"},
        "limits": {"memory": "1Gi"},
    }
    # Small canary steps with no analysis: no traffic is needed to move on.
    mdep["spec"]["rollout"]["steps"] = [{"weight": 50, "pauseSeconds": 5}]
    mdep["spec"]["rollout"]["analysis"] = {"minRequests": 0}
    cluster.apply(mdep)
    admin_wait(
        cluster,
        ns,
        "mdep/churn",
        "Ready",
        600,
        failed=lambda: phase_failed(cluster, "mdep", "churn", ns, "Failed", "Degraded"),
        explain=why,
    )
    serving = cluster.get("deployment", "churn", ns)
    assert serving is not None
    assert serving["spec"]["template"]["spec"]["containers"][0]["image"] == image

    # --- DriftMonitor: the in-cluster operator reports on it -----------------------
    dmon = yaml.safe_load((SAMPLES / "driftmonitor.yaml").read_text())
    dmon["metadata"]["namespace"] = ns
    cluster.apply(dmon)

    def dmon_observed() -> dict[str, Any] | None:
        obj = cluster.get("dmon", "churn-drift", ns)
        status = (obj or {}).get("status") or {}
        if obj and status.get("observedGeneration") == obj["metadata"]["generation"]:
            return obj
        return None

    try:
        monitor = eventually(
            dmon_observed, timeout=180, interval=2, what="the DriftMonitor's status"
        )
    except AssertionError as exc:
        raise AssertionError(f"{exc}\n{why()}") from None
    assert any(c["type"] == "Ready" for c in monitor["status"].get("conditions") or []), monitor[
        "status"
    ]

    # --- GitOps: Argo CD's health checks on the live, settled objects --------------
    settled = {
        "TrainingJob": cluster.get("tj", "churn-train", ns),
        "ModelDeployment": cluster.get("mdep", "churn", ns),
        "DriftMonitor": cluster.get("dmon", "churn-drift", ns),
    }
    verdicts = {}
    for kind, obj in settled.items():
        assert obj is not None, kind
        verdicts[kind] = health(kind, obj)
    assert verdicts["TrainingJob"][0] == "Healthy", verdicts
    assert verdicts["ModelDeployment"][0] == "Healthy", verdicts
    assert verdicts["DriftMonitor"][0] in HEALTH, verdicts

    # --- the metrics Service answers, with this namespace's objects ---------------
    metrics = op.raw(
        f"/api/v1/namespaces/{SYSTEM}/services/{METRICS_SERVICE}:metrics/proxy/metrics"
    )
    # The image runs this checkout's package, not the stub its dependency layer was built
    # from (an early Dockerfile shipped the stub's __init__: version "0").
    build_info = metric_value(metrics, "modelworks_build_info", version=__version__)
    assert build_info == 1.0, metrics[:2000]
    assert metric_value(metrics, "modelworks_leader") == 1.0, metrics[:2000]
    assert (metric_value(metrics, "modelworks_reconcile_total", kind="TrainingJob") or 0) > 0
    for kind, obj_name, cond in (
        ("TrainingJob", "churn-train", "Succeeded"),
        ("ModelDeployment", "churn", "Ready"),
    ):
        value = metric_value(
            metrics, "modelworks_condition", kind=kind, namespace=ns, name=obj_name, type=cond
        )
        assert value == 1.0, (kind, value)

    # --- the operator's log: JSON lines, and RBAC never said no ---------------------
    pod = op.pod()
    assert all(s["restartCount"] == 0 for s in pod["status"]["containerStatuses"]), why()
    text = op.log()
    lines = [line for line in text.splitlines() if line.strip()]
    assert lines, "the operator logged nothing"
    for line in lines:
        try:
            record = json.loads(line)
        except ValueError:
            raise AssertionError(f"not a JSON log line: {line!r}") from None
        assert isinstance(record, dict) and "message" in record, line
        message = str(record["message"])
        assert "forbidden" not in line.lower(), line
        assert not re.search(r"\b403\b", message), line
        # kopf's notice when a right is missing and it carries on without it.
        assert "not enough permissions" not in message.lower(), line
    assert any(str(json.loads(line)["message"]).startswith("modelworks ") for line in lines)
