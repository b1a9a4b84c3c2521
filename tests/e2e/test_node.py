"""Pods that really run: the project image on a real node, talking to MLflow, serving
through Services and DNS, reaching the API server, killed for memory, cleaned up.

Every pod meets Pod Security "restricted" (the namespaces enforce it)."""

from __future__ import annotations

import json
import re
import textwrap
import time
import urllib.request
import uuid
from pathlib import Path

import pytest

from tests.e2e.conftest import Node, container, ctr, describe, logs, pod, pod_spec, wait_pod_done
from tests.support import Cluster, eventually, mlflow_client

pytestmark = pytest.mark.e2e


def py(code: str) -> list[str]:
    return ["python3", "-c", textwrap.dedent(code)]


def test_real_node_is_ready_and_kwok_nodes_stay_tainted(
    cluster: Cluster, real_node: Node, ns: str, image: str
) -> None:
    if real_node.labels.get("modelworks.dev/node-kind") == "real":
        assert real_node.labels.get("type") == "real"
    nodes = json.loads(cluster.kubectl("get", "nodes", "-l", "type=kwok", "-o", "json").stdout)
    for n in nodes["items"]:
        assert {"key": "kwok.x-k8s.io/node", "value": "fake", "effect": "NoSchedule"} in n["spec"][
            "taints"
        ], n["metadata"]["name"]
    # A pod without any node selector lands on the real node and runs.
    cluster.apply(pod("hello", ns, container(image, ["python3", "-c", "print('hello')"])))
    done = wait_pod_done(cluster, "hello", ns)
    assert done["status"]["phase"] == "Succeeded", describe(cluster, "hello", ns)
    assert done["spec"]["nodeName"] == real_node.name
    assert logs(cluster, "hello", ns).strip() == "hello"


def test_pod_logs_a_metric_and_an_artifact_to_mlflow(
    cluster: Cluster, ns: str, image: str, mlflow_uri: str, tmp_path: Path
) -> None:
    experiment = f"e2e-{ns}"
    code = f"""
        import mlflow
        mlflow.set_experiment({experiment!r})
        with mlflow.start_run(run_name="from-a-pod") as run:
            mlflow.log_param("where", "pod")
            mlflow.log_metric("accuracy", 0.875)
            with open("/tmp/note.txt", "w") as f:
                f.write("written in namespace {ns}")
            mlflow.log_artifact("/tmp/note.txt", artifact_path="notes")
        print("RUN_ID=" + run.info.run_id)
    """
    cluster.apply(
        pod(
            "trainer",
            ns,
            container(image, py(code), env={"MLFLOW_TRACKING_URI": mlflow_uri}, memory="512Mi"),
        )
    )
    done = wait_pod_done(cluster, "trainer", ns, timeout=240)
    assert done["status"]["phase"] == "Succeeded", describe(cluster, "trainer", ns)
    match = re.search(r"RUN_ID=([0-9a-f]{32})", logs(cluster, "trainer", ns))
    assert match, logs(cluster, "trainer", ns)

    client = mlflow_client(mlflow_uri)
    run = client.get_run(match.group(1))
    assert run.data.metrics["accuracy"] == pytest.approx(0.875)
    assert run.data.params["where"] == "pod"
    assert client.get_experiment(run.info.experiment_id).name == experiment
    assert [a.path for a in client.list_artifacts(run.info.run_id, "notes")] == ["notes/note.txt"]
    local = client.download_artifacts(run.info.run_id, "notes/note.txt", str(tmp_path))
    assert Path(local).read_text() == f"written in namespace {ns}"


def test_deployment_answers_through_its_service_from_the_host_and_from_a_pod(
    cluster: Cluster, ns: str, image: str
) -> None:
    serve = [
        "sh",
        "-c",
        'mkdir -p /srv/www && echo "hello from $(hostname)" > /srv/www/index.html'
        " && exec python3 -m http.server 8080 --bind 0.0.0.0 --directory /srv/www",
    ]
    web = container(
        image,
        serve,
        name="web",
        memory="128Mi",
        ports=[{"name": "http", "containerPort": 8080}],
        readinessProbe={"httpGet": {"path": "/", "port": "http"}, "periodSeconds": 1},
        volumeMounts=[{"name": "www", "mountPath": "/srv"}],
    )
    template = pod_spec(web, restart="Always", volumes=[{"name": "www", "emptyDir": {}}])
    cluster.apply(
        {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": "web", "namespace": ns},
            "spec": {
                "replicas": 2,
                "selector": {"matchLabels": {"app": "web"}},
                "template": {"metadata": {"labels": {"app": "web"}}, "spec": template},
            },
        }
    )
    cluster.apply(
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": "web", "namespace": ns},
            "spec": {"selector": {"app": "web"}, "ports": [{"port": 80, "targetPort": "http"}]},
        }
    )
    cluster.kubectl("rollout", "status", "-n", ns, "deployment/web", "--timeout=180s", timeout=200)
    ip = cluster.get("service", "web", ns)["spec"]["clusterIP"]  # type: ignore[index]

    # From the host, through kube-proxy's rules for the cluster IP.
    def from_host() -> str | None:
        try:
            with urllib.request.urlopen(f"http://{ip}/", timeout=3) as r:
                return r.read().decode()  # type: ignore[no-any-return]
        except OSError:
            return None

    seen = {eventually(from_host, timeout=30, what=f"http://{ip}/ from the host").strip()}

    def both_answered() -> bool:
        # kube-proxy may still have one endpoint in its rules when the rollout is done (CI
        # saw 21 answers from one replica): ask until both have answered, with a deadline.
        seen.add((from_host() or "").strip())
        return len(seen - {""}) == 2

    eventually(both_answered, timeout=30, interval=0.1, what=f"both replicas behind {ip}")
    seen.discard("")
    replicas = {
        p["metadata"]["name"]
        for p in json.loads(
            cluster.kubectl("get", "pods", "-n", ns, "-l", "app=web", "-o", "json").stdout
        )["items"]
    }
    assert seen <= {f"hello from {r}" for r in replicas}, seen
    assert len(seen) == 2, seen

    # From another pod, by DNS name: the full name, the short name and with the namespace.
    code = f"""
        import socket, urllib.request
        for host in ["web.{ns}.svc.cluster.local", "web", "web.{ns}"]:
            body = urllib.request.urlopen("http://" + host + "/", timeout=5).read().decode().strip()
            print(host, socket.gethostbyname(host), body)
    """
    cluster.apply(pod("client", ns, container(image, py(code), memory="128Mi")))
    done = wait_pod_done(cluster, "client", ns)
    out = logs(cluster, "client", ns)
    assert done["status"]["phase"] == "Succeeded", describe(cluster, "client", ns)
    lines = out.strip().splitlines()
    assert [line.split()[0] for line in lines] == [
        f"web.{ns}.svc.cluster.local",
        "web",
        f"web.{ns}",
    ]
    for line in lines:
        _, resolved, body = line.split(" ", 2)
        assert resolved == ip
        assert body in {f"hello from {r}" for r in replicas}


def test_pod_reaches_the_api_server_with_its_service_account(
    cluster: Cluster, ns: str, image: str
) -> None:
    code = """
        import json, ssl, urllib.request
        sa = "/var/run/secrets/kubernetes.io/serviceaccount/"
        token = open(sa + "token").read()
        ctx = ssl.create_default_context(cafile=sa + "ca.crt")
        def call(path, body=None):
            req = urllib.request.Request(
                "https://kubernetes.default.svc" + path,
                data=None if body is None else json.dumps(body).encode(),
                headers={"Authorization": "Bearer " + token, "Content-Type": "application/json"},
            )
            return json.load(urllib.request.urlopen(req, context=ctx, timeout=10))
        print("VERSION=" + call("/version")["gitVersion"])
        review = call("/apis/authentication.k8s.io/v1/selfsubjectreviews",
                      {"apiVersion": "authentication.k8s.io/v1", "kind": "SelfSubjectReview"})
        print("USER=" + review["status"]["userInfo"]["username"])
    """
    cluster.apply(pod("api", ns, container(image, py(code), memory="128Mi")))
    done = wait_pod_done(cluster, "api", ns)
    out = logs(cluster, "api", ns)
    assert done["status"]["phase"] == "Succeeded", describe(cluster, "api", ns)
    server = json.loads(cluster.kubectl("version", "-o", "json").stdout)["serverVersion"]
    assert f"VERSION={server['gitVersion']}" in out
    assert f"USER=system:serviceaccount:{ns}:default" in out


def test_pod_over_its_memory_limit_is_oomkilled(cluster: Cluster, ns: str, image: str) -> None:
    hog = container(image, ["python3", "-c", "b = bytearray(300 * 1024 * 1024)"], memory="64Mi")
    cluster.apply(pod("hog", ns, hog))

    def terminated() -> dict[str, object] | None:
        p = cluster.get("pod", "hog", ns)
        for s in (p or {}).get("status", {}).get("containerStatuses", []):
            state = s.get("state", {}).get("terminated") or s.get("lastState", {}).get("terminated")
            if state:
                return state  # type: ignore[no-any-return]
        return None

    state = eventually(terminated, timeout=180, interval=1, what="the hog container to terminate")
    assert state["reason"] == "OOMKilled", f"{state}\n{describe(cluster, 'hog', ns)}"
    assert state["exitCode"] == 137
    eventually(
        lambda: (cluster.get("pod", "hog", ns) or {}).get("status", {}).get("phase") == "Failed",
        timeout=30,
        what="the hog pod to be Failed",
    )


def test_deleting_the_namespace_removes_every_pod_and_container(
    cluster: Cluster, real_node: Node, image: str, containerd_address: str | None
) -> None:
    name = f"e2e-delete-{uuid.uuid4().hex[:5]}"
    cluster.apply(
        {
            "apiVersion": "v1",
            "kind": "Namespace",
            "metadata": {
                "name": name,
                "labels": {"pod-security.kubernetes.io/enforce": "restricted"},
            },
        }
    )
    try:
        eventually(lambda: cluster.get("serviceaccount", "default", name), timeout=30, what="SA")
        sleeper = container(image, ["sleep", "infinity"], name="sleeper", memory="32Mi")
        cluster.apply(
            {
                "apiVersion": "apps/v1",
                "kind": "Deployment",
                "metadata": {"name": "sleepers", "namespace": name},
                "spec": {
                    "replicas": 2,
                    "selector": {"matchLabels": {"app": "sleepers"}},
                    "template": {
                        "metadata": {"labels": {"app": "sleepers"}},
                        "spec": pod_spec(sleeper, restart="Always"),
                    },
                },
            }
        )
        cluster.apply(pod("loner", name, sleeper, restart="Always"))
        cluster.kubectl(
            "wait",
            "-n",
            name,
            "--for=condition=Ready",
            "pod",
            "--all",
            "--timeout=120s",
            timeout=150,
        )
        pods = json.loads(cluster.kubectl("get", "pods", "-n", name, "-o", "json").stdout)["items"]
        assert len(pods) == 3
        assert {p["spec"]["nodeName"] for p in pods} == {real_node.name}

        selector = f'labels."io.kubernetes.pod.namespace"=={name}'
        before: set[str] = set()
        if containerd_address:
            before = set(ctr(containerd_address, "containers", "ls", "-q", selector).split())
            # Three sandboxes (pause) and three app containers.
            assert len(before) == 6, before
    finally:
        t0 = time.monotonic()
        cluster.kubectl("delete", "namespace", name, "--wait=true", "--timeout=180s", timeout=200)
    assert cluster.get("namespace", name) is None
    assert cluster.kubectl("get", "pods", "-n", name, "-o", "name").stdout.strip() == ""
    if not containerd_address:
        return

    def gone() -> bool:
        left = ctr(containerd_address, "containers", "ls", "-q", selector).split()
        tasks = {
            line.split()[0] for line in ctr(containerd_address, "tasks", "ls").splitlines()[1:]
        }
        return not left and not (before & tasks)

    eventually(gone, timeout=120, interval=2, what=f"containerd to drop the containers of {name}")
    print(f"namespace {name}: pods and containers gone {time.monotonic() - t0:.1f}s after delete")
