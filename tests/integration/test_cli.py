"""`modelworks status` and `modelworks watch` as people run them, against a real API server.

No operator runs in the test's namespace, so the statuses are the test's to write: they
are patched through the status subresource with kubectl, as the operator would write them,
and the command runs as a subprocess with the cluster's KUBECONFIG.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml

from modelworks.api.common import API_VERSION
from tests.support import ROOT, Cluster, MlflowServer, eventually

pytestmark = pytest.mark.integration
T0 = "2026-01-01T00:00:00Z"
MLFLOW_VARS = ("MODELWORKS_MLFLOW_TRACKING_URI", "MLFLOW_TRACKING_URI")


def env_for(cluster: Cluster, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in MLFLOW_VARS}
    env.update(KUBECONFIG=cluster.kubeconfig, PYTHONUNBUFFERED="1", COLUMNS="120", **extra)
    return env


def modelworks(
    cluster: Cluster, *args: str, timeout: float = 90, **extra: str
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "modelworks", *args],
        env=env_for(cluster, **extra),
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=ROOT,
    )


def cond(type_: str, status: str, reason: str, message: str = "") -> dict[str, Any]:
    return {
        "type": type_,
        "status": status,
        "reason": reason,
        "message": message,
        "lastTransitionTime": T0,
        "observedGeneration": 1,
    }


def create(
    cluster: Cluster,
    ns: str,
    kind: str,
    name: str,
    spec: dict[str, Any],
    status: dict[str, Any] | None = None,
    labels: dict[str, str] | None = None,
) -> None:
    cluster.apply(
        {
            "apiVersion": API_VERSION,
            "kind": kind,
            "metadata": {"name": name, "labels": labels or {}},
            "spec": spec,
        },
        "-n",
        ns,
    )
    if status is not None:
        patch_status(cluster, ns, kind, name, status)


def patch_status(cluster: Cluster, ns: str, kind: str, name: str, status: dict[str, Any]) -> None:
    cluster.kubectl(
        "patch",
        kind.lower(),
        name,
        "-n",
        ns,
        "--subresource=status",
        "--type=merge",
        "-p",
        json.dumps({"status": status}),
    )


def tj_spec(model: str) -> dict[str, Any]:
    return {
        "image": "trainer:1",
        "hyperparameters": {"epochs": 4},
        "model": {"name": model, "alias": "champion"},
        "qualityGate": [{"metric": "val_auc", "op": ">=", "value": 0.8}],
    }


def registered(model: str, version: str, auc: float) -> dict[str, Any]:
    return {
        "observedGeneration": 1,
        "phase": "Succeeded",
        "conditions": [
            cond(
                "Succeeded",
                "True",
                "ModelRegistered",
                f"registered {model} version {version} as @champion",
            )
        ],
        "mlflow": {"experimentId": "1", "runId": f"run{version}"},
        "metrics": {"val_auc": auc},
        "qualityGate": {"passed": True, "summary": f"val_auc={auc} >= 0.8"},
        "registeredModel": {"name": model, "version": version, "alias": "champion"},
    }


def the_loop(cluster: Cluster, ns: str, model: str = "churn") -> None:
    """train -> v1 -> served -> watched -> drift -> retrain -> v2 -> canary; one run in flight."""
    create(cluster, ns, "TrainingJob", "churn-train", tj_spec(model), registered(model, "1", 0.91))
    create(
        cluster,
        ns,
        "TrainingJob",
        "churn-drift-r1",
        tj_spec(model),
        registered(model, "2", 0.93),
        labels={
            "modelworks.dev/drift-monitor": "churn-drift",
            "modelworks.dev/retrain-of": "churn-train",
        },
    )
    create(
        cluster,
        ns,
        "TrainingJob",
        "churn-wide",
        tj_spec(model),
        {
            "observedGeneration": 1,
            "phase": "Running",
            "conditions": [cond("Succeeded", "Unknown", "Training", "training is in progress")],
            "progress": {"epoch": 1, "percent": 50.0},
        },
    )
    create(
        cluster,
        ns,
        "ModelDeployment",
        "churn",
        {"model": {"name": model, "alias": "champion"}},
        {
            "observedGeneration": 1,
            "phase": "Progressing",
            "conditions": [cond("Ready", "False", "CanaryStep", "canary step 1 of 2: 25%")],
            "resolved": {"version": "2", "alias": "champion", "runId": "run2"},
            "stableVersion": "1",
            "replicas": 2,
            "readyReplicas": 2,
            "canary": {"version": "2", "step": 0, "weight": 25, "replicas": 1, "readyReplicas": 1},
        },
    )
    create(
        cluster,
        ns,
        "DriftMonitor",
        "churn-drift",
        {"target": {"modelDeployment": {"name": "churn"}}, "method": "psi"},
        {
            "observedGeneration": 1,
            "phase": "Drifting",
            "conditions": [cond("Ready", "True", "Checked", "checked 4 features")],
            "verdict": "Drift",
            "driftedShare": 0.75,
            "servedVersion": "1",
            "lastCheckTime": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "lastRetrain": {"trainingJob": "churn-drift-r1", "at": T0, "reason": "drift"},
        },
    )


# --- status ------------------------------------------------------------------------------


def test_status_table_shows_the_lineage(crds: Cluster, namespace: str) -> None:
    the_loop(crds, namespace)
    proc = modelworks(crds, "status", "-n", namespace)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    print(proc.stdout)
    assert lines[0].split() == ["MODEL", "VERSION", "OBJECT", "PHASE", "CONDITION", "NOTES"]
    assert all(len(line) <= 120 for line in lines)

    def row(text: str) -> str:
        """The row of an object (its OBJECT cell), or the first one showing ``text``."""
        return next(
            (line for line in lines if f" {text}  " in line),
            next(line for line in lines if text in line),
        )

    assert row("tj/churn-train").split()[:5] == [
        "churn",
        "1",
        "tj/churn-train",
        "Succeeded",
        "Succeeded=True",
    ]
    # v1 is served (stable) and watched; the monitor hangs under the deployment's v1 row.
    stable, monitor = row("stable, 2/2 ready"), row("\\_ dmon/churn-drift")
    assert "\\_ mdep/churn" in stable and lines.index(stable) < lines.index(monitor)
    assert lines.index(monitor) < lines.index(row("tj/churn-drift-r1"))
    assert monitor.index("\\_") > stable.index("\\_") and "Drifting" in monitor
    assert "Drift, 75% of features drifted" in monitor
    # v2 came from the retrain, holds the alias, and takes a canary share.
    assert row("tj/churn-drift-r1").split()[:2] == ["2", "@champion"]
    words = " ".join(proc.stdout.split())  # notes wrap between words
    assert "retrain of tj/churn-train by dmon/churn-drift" in words
    canary = row("canary 25%")
    assert "mdep/churn" in canary and "Progressing" in canary and "Ready=False" in canary
    # The run in flight has no version yet.
    wide = row("tj/churn-wide")
    assert wide.split()[0] == "-" and "Running" in wide and "50% done" in wide


def test_status_json_is_the_same_lineage(crds: Cluster, namespace: str) -> None:
    the_loop(crds, namespace)
    proc = modelworks(crds, "status", "-n", namespace, "-o", "json")
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert out["namespace"] == namespace
    (model,) = out["models"]
    assert model["name"] == "churn"
    v1, v2, pending = model["versions"]
    assert [v["version"] for v in (v1, v2, pending)] == ["1", "2", None]
    assert [t["name"] for t in v1["trainingJobs"]] == ["churn-train"]
    assert [(d["name"], d["role"], d["phase"]) for d in v1["deployments"]] == [
        ("churn", "stable", "Progressing")
    ]
    (mon,) = v1["deployments"][0]["driftMonitors"]
    assert (mon["name"], mon["verdict"], mon["driftedShare"]) == ("churn-drift", "Drift", 0.75)
    assert mon["condition"]["status"] == "True"
    (retrain,) = v2["trainingJobs"]
    assert (retrain["retrainOf"], retrain["driftMonitor"]) == ("churn-train", "churn-drift")
    assert v2["aliases"] == ["champion"] and v1["aliases"] == []
    assert [(d["name"], d["role"]) for d in v2["deployments"]] == [("churn", "canary")]
    assert [t["progress"] for t in pending["trainingJobs"]] == [50.0]
    assert out["unattached"] == {"trainingJobs": [], "driftMonitors": []}


def test_status_defaults_to_the_context_namespace_and_tolerates_bare_objects(
    crds: Cluster, namespace: str, tmp: Path
) -> None:
    """Objects the operator never touched (no status at all) are listed, not a crash."""
    create(crds, namespace, "TrainingJob", "fresh", tj_spec("fresh-model"))
    create(
        crds, namespace, "DriftMonitor", "lonely", {"target": {"modelDeployment": {"name": "x"}}}
    )
    config = yaml.safe_load(Path(crds.kubeconfig).read_text())
    for ctx in config["contexts"]:
        ctx["context"]["namespace"] = namespace
    kubeconfig = tmp / "kubeconfig"
    kubeconfig.write_text(yaml.safe_dump(config))
    proc = subprocess.run(
        [sys.executable, "-m", "modelworks", "status"],
        env={**env_for(crds), "KUBECONFIG": str(kubeconfig)},
        capture_output=True,
        text=True,
        timeout=90,
        cwd=ROOT,
    )
    assert proc.returncode == 0, proc.stderr
    fresh = next(line for line in proc.stdout.splitlines() if "tj/fresh" in line)
    assert fresh.split()[:4] == ["fresh-model", "-", "tj/fresh", "-"]
    lonely = next(line for line in proc.stdout.splitlines() if "dmon/lonely" in line)
    assert "no verdict yet" in lonely and "target mdep/x not found" in lonely


def test_status_all_namespaces_and_empty(crds: Cluster, namespace: str) -> None:
    proc = modelworks(crds, "status", "-n", namespace)
    assert proc.returncode == 0 and proc.stdout == ""
    assert f"No Modelworks objects in namespace {namespace}" in proc.stderr
    the_loop(crds, namespace, model=f"m-{namespace}")
    proc = modelworks(crds, "status", "-A", "-o", "json")
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert out["namespace"] is None
    (mine,) = [m for m in out["models"] if m["name"] == f"m-{namespace}"]
    assert {t["namespace"] for v in mine["versions"] for t in v["trainingJobs"]} == {namespace}
    proc = modelworks(crds, "status", "-A", "--width", "200")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines()[0].split()[0] == "NAMESPACE"
    assert max(len(line) for line in proc.stdout.splitlines()) <= 200
    assert any(
        line.split()[0] == namespace and "tj/churn-wide" in line
        for line in proc.stdout.splitlines()
    ), proc.stdout


def test_status_with_mlflow_facts(crds: Cluster, namespace: str, mlflow: MlflowServer) -> None:
    from tests.integration.test_modeldeployment import register

    model = f"m-{namespace}"
    version = register(mlflow.uri, model, alias="prod")
    create(
        crds,
        namespace,
        "TrainingJob",
        "churn-train",
        tj_spec(model),
        registered(model, version, 0.9),
    )
    proc = modelworks(
        crds, "status", "-n", namespace, "-o", "json", MODELWORKS_MLFLOW_TRACKING_URI=mlflow.uri
    )
    assert proc.returncode == 0, proc.stderr
    (entry,) = json.loads(proc.stdout)["models"][0]["versions"]
    # The registry says where the aliases are now: prod, not the champion the TJ once set.
    assert entry["aliases"] == ["prod"]
    assert entry["mlflow"]["runId"] and entry["mlflow"]["metrics"] == {"val_auc": 0.9}
    proc = modelworks(crds, "status", "-n", namespace, MLFLOW_TRACKING_URI=mlflow.uri)
    assert proc.returncode == 0, proc.stderr
    assert f"mlflow run {entry['mlflow']['runId'][:12]}" in proc.stdout
    assert "val_auc=0.9" in proc.stdout and f"{version} @prod" in proc.stdout
    # An MLflow that does not answer costs a warning, not the table.
    proc = modelworks(
        crds, "status", "-n", namespace, MODELWORKS_MLFLOW_TRACKING_URI="http://127.0.0.1:9"
    )
    assert proc.returncode == 0 and "tj/churn-train" in proc.stdout
    assert "did not answer" in proc.stderr


# --- watch -------------------------------------------------------------------------------


@dataclass
class Watch:
    proc: subprocess.Popen[str]
    lines: list[str] = field(default_factory=list)

    def saw(self, text: str) -> bool:
        return any(text in line for line in list(self.lines))

    def wait(self, timeout: float = 60) -> int:
        code = self.proc.wait(timeout=timeout)
        time.sleep(0.2)  # let the reader drain the pipe
        return code


@contextmanager
def watching(cluster: Cluster, *args: str) -> Iterator[Watch]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "modelworks", "watch", *args, "--interval", "0.3"],
        env=env_for(cluster),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        cwd=ROOT,
    )
    watch = Watch(proc)

    def read() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            watch.lines.append(line.rstrip("\n"))

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        yield watch
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        reader.join(timeout=5)


def running(percent: float | None, **extra: Any) -> dict[str, Any]:
    status: dict[str, Any] = {
        "observedGeneration": 1,
        "phase": "Running",
        "conditions": [cond("Succeeded", "Unknown", "Training", "training is in progress")],
        **extra,
    }
    if percent is not None:
        status["progress"] = {"percent": percent, "epoch": int(percent // 25)}
    return status


def test_watch_follows_progress_to_the_registered_version(crds: Cluster, namespace: str) -> None:
    create(
        crds,
        namespace,
        "TrainingJob",
        "churn-train",
        tj_spec("churn"),
        {
            "observedGeneration": 1,
            "phase": "Pending",
            "conditions": [cond("Succeeded", "Unknown", "CreatingRun", "creating the run")],
        },
    )
    with watching(crds, "tj", "churn-train", "-n", namespace, "--timeout", "120") as w:
        eventually(lambda: w.saw("Pending (CreatingRun)"), timeout=30, what="the first line")
        for percent in (0, 25, 50, 75, 100):
            patch_status(
                crds,
                namespace,
                "TrainingJob",
                "churn-train",
                running(percent, metrics={"val_auc": 0.8 + percent / 1000, "loss": 0.5}),
            )
            eventually(
                lambda p=percent: w.saw(f"{p:.1f}%"), timeout=30, what=f"{percent}% on screen"
            )
        patch_status(crds, namespace, "TrainingJob", "churn-train", registered("churn", "3", 0.93))
        assert w.wait() == 0, "\n".join(w.lines)
    out = "\n".join(w.lines)
    print(out)
    bar_50 = next(line for line in w.lines if "50.0%" in line)
    assert "[############------------]" in bar_50 and "Running" in bar_50
    assert "epoch 2" in bar_50 and "val_auc=0.85" in bar_50
    assert "[########################] 100.0%" in out
    assert "Succeeded: registered churn version 3 as @champion" in out
    assert "quality gate passed: val_auc=0.93 >= 0.8" in out
    # Not a TTY: one line per change, no carriage returns.
    assert "\r" not in out
    assert len([line for line in w.lines if "75.0%" in line]) == 1


def test_watch_reports_a_failure(crds: Cluster, namespace: str) -> None:
    create(crds, namespace, "TrainingJob", "churn-train", tj_spec("churn"), running(25.0))
    with watching(crds, "trainingjob", "churn-train", "-n", namespace) as w:
        eventually(lambda: w.saw("25.0%"), timeout=30, what="the running line")
        failure = "pod churn-train-0: container trainer was killed for exceeding its memory limit"
        patch_status(
            crds,
            namespace,
            "TrainingJob",
            "churn-train",
            {
                "phase": "Failed",
                "conditions": [cond("Succeeded", "False", "OOMKilled", failure)],
            },
        )
        assert w.wait() == 1, "\n".join(w.lines)
    assert w.lines[-1] == f"Failed: OOMKilled: {failure}" or any(
        line == f"Failed: OOMKilled: {failure}" for line in w.lines
    )


def test_watch_times_out_and_misses_nothing(crds: Cluster, namespace: str) -> None:
    create(crds, namespace, "TrainingJob", "slow", tj_spec("churn"), running(10.0))
    started = time.monotonic()
    with watching(crds, "tj", "slow", "-n", namespace, "--timeout", "2") as w:
        assert w.wait() == 2, "\n".join(w.lines)
    assert time.monotonic() - started < 30
    assert any(line.startswith("Timed out after 2s: tj/slow  Running") for line in w.lines)
    proc = modelworks(crds, "watch", "tj", "absent", "-n", namespace)
    assert proc.returncode == 1 and "not found" in proc.stderr


def test_watch_ignores_the_outcome_of_an_older_generation(crds: Cluster, namespace: str) -> None:
    """A spec change makes a new run: the old Succeeded is not this run's outcome."""
    create(crds, namespace, "TrainingJob", "again", tj_spec("churn"), registered("churn", "1", 0.9))
    spec = tj_spec("churn")
    spec["hyperparameters"] = {"epochs": 8}
    create(crds, namespace, "TrainingJob", "again", spec)  # generation 2; status still says 1
    with watching(crds, "tj", "again", "-n", namespace, "--timeout", "60") as w:
        eventually(lambda: w.saw("waiting for the operator"), timeout=30, what="the stale line")
        status = registered("churn", "2", 0.95)
        status["observedGeneration"] = 2
        patch_status(crds, namespace, "TrainingJob", "again", status)
        assert w.wait() == 0, "\n".join(w.lines)
    assert w.saw("Succeeded: registered churn version 2 as @champion")
    assert not w.saw("version 1")
