"""Whole lives of each kind, played against the real API server and MLflow, and the
invariants every life must end in, whatever crashed on the way.

The world (users, trainers, kwok) lives outside the operator: it survives a crash, as
the cluster and the trainer's pod would.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from modelworks.api import API_VERSION
from modelworks.api.trainingjob import TrainingJobSpec
from modelworks.builders.trainingjob import experiment_name, source_key
from modelworks.names import MANAGED_BY, MANAGED_BY_LABEL, SOURCE_TAG
from tests.integration.test_modeldeployment import KWOK, register
from tests.integration.test_trainingjob import play_trainer, training_job
from tests.reliability.wrappers import Clock, Life
from tests.support import Cluster, mlflow_client

OWNED = (
    ("batch/v1", "jobs"),
    ("apps/v1", "deployments"),
    ("v1", "services"),
    ("autoscaling/v2", "horizontalpodautoscalers"),
    ("policy/v1", "poddisruptionbudgets"),
    (API_VERSION, "trainingjobs"),
)


def conditions_of(obj: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {c["type"]: c for c in (obj.get("status") or {}).get("conditions") or []}


def settled(obj: dict[str, Any] | None, phases: tuple[str, ...]) -> bool:
    if obj is None:
        return False
    st = obj.get("status") or {}
    return st.get("phase") in phases and st.get("observedGeneration") == obj["metadata"].get(
        "generation"
    )


def items(cluster: Cluster, ns: str, resource: str) -> list[dict[str, Any]]:
    out = cluster.kubectl("get", resource, "-n", ns, "-o", "json").stdout
    return list(json.loads(out)["items"])


def orphans(cluster: Cluster, ns: str) -> list[str]:
    """Everything the operator made in ``ns`` without a controlling owner that still lives."""
    live: set[str] = set()
    made: list[dict[str, Any]] = []
    for kind in ("trainingjobs", "modeldeployments", "driftmonitors"):
        live |= {o["metadata"]["uid"] for o in items(cluster, ns, f"{kind}.modelworks.dev")}
    for _, resource in OWNED:
        for obj in items(cluster, ns, resource):
            if obj["metadata"].get("deletionTimestamp"):
                continue
            if (obj["metadata"].get("labels") or {}).get(MANAGED_BY_LABEL) == MANAGED_BY:
                made.append(obj)
    bad = []
    for obj in made:
        if obj["kind"] == "TrainingJob":  # a retraining outlives its monitor by design
            continue
        refs = [r for r in obj["metadata"].get("ownerReferences") or [] if r.get("controller")]
        if not refs or not all(r["uid"] in live for r in refs):
            bad.append(f"{obj['kind']}/{obj['metadata']['name']}")
    return bad


# --- TrainingJob: run -> trainer logs -> unsuspend -> Job completes -> gate -> register ----


@dataclass
class TrainingLife:
    cluster: Cluster
    uri: str
    ns: str
    name: str = "train"
    trained: str | None = None
    model: str = field(init=False)

    def __post_init__(self) -> None:
        self.model = f"m-{self.ns}"

    def start(self) -> None:
        self.cluster.apply(training_job(self.name, self.ns, model=self.model))

    def get(self) -> dict[str, Any] | None:
        return self.cluster.get("trainingjob", self.name, self.ns)

    def world(self) -> None:
        obj = self.get()
        run_id = ((obj or {}).get("status") or {}).get("mlflow", {}).get("runId")
        if run_id and self.trained is None:
            play_trainer(self.uri, run_id, auc=0.93)
            self.cluster.kubectl(
                "patch", "tj", self.name, "-n", self.ns, "--type=merge",
                "-p", '{"spec":{"suspend":false}}',
            )  # fmt: skip
            self.trained = run_id

    def life(self) -> Life:
        return Life(
            self.world,
            lambda: settled(self.get(), ("Succeeded", "Failed")),
            f"TrainingJob {self.ns}/{self.name} to finish",
            lambda: (self.get() or {}).get("status"),
        )

    def check(self) -> None:
        obj = self.get()
        assert obj is not None
        st = obj["status"]
        cond = conditions_of(obj)
        assert st["phase"] == "Succeeded" and cond["Succeeded"]["status"] == "True", st
        spec = TrainingJobSpec.model_validate(obj["spec"])
        client = mlflow_client(self.uri)
        exp = client.get_experiment_by_name(experiment_name(obj, spec))
        runs = client.search_runs(
            [exp.experiment_id], filter_string=f"tags.`{SOURCE_TAG}` = '{source_key(obj, spec)}'"
        )
        assert len(runs) == 1, [r.info.run_id for r in runs]
        assert len(client.search_runs([exp.experiment_id])) == 1
        run = runs[0]
        assert run.info.status == "FINISHED"
        assert st["mlflow"]["runId"] == run.info.run_id
        jobs = items(self.cluster, self.ns, "jobs")
        assert [j["metadata"]["name"] for j in jobs] == [st["jobName"]]
        versions = client.search_model_versions(f"name = '{self.model}'")
        assert [(v.version, v.run_id) for v in versions] == [("1", run.info.run_id)]
        assert client.get_model_version_by_alias(self.model, "champion").version == "1"
        assert st["registeredModel"]["version"] == "1"
        assert cond["ModelRegistered"]["status"] == "True"
        assert orphans(self.cluster, self.ns) == []


# --- ModelDeployment: serve v1 -> alias moves to v2 -> canary -> deadline -> rollback -----


@dataclass
class ServingLife:
    """v1 serves; the alias moves to v2; its canary's pods cannot be created (a
    ResourceQuota the world adds), so its Deployment misses its progress deadline and the
    operator rolls back to v1."""

    cluster: Cluster
    uri: str
    ns: str
    name: str = "serve"
    model: str = field(init=False)
    v1: str = ""
    v2: str = ""

    def __post_init__(self) -> None:
        self.model = f"m-{self.ns}"

    def start(self) -> None:
        self.v1 = register(self.uri, self.model, alias="champion")
        self.cluster.apply(
            {
                "apiVersion": API_VERSION,
                "kind": "ModelDeployment",
                "metadata": {"name": self.name, "namespace": self.ns},
                "spec": {
                    "model": {"name": self.model, "alias": "champion"},
                    "replicas": 1,
                    "podTemplate": KWOK,
                    "rollout": {
                        "strategy": "Canary",
                        "steps": [{"weight": 50, "pauseSeconds": 1}],
                        "analysis": {"minRequests": 0},
                        "progressDeadlineSeconds": 30,
                    },
                },
            }
        )

    def get(self) -> dict[str, Any] | None:
        return self.cluster.get("modeldeployment", self.name, self.ns)

    def world(self) -> None:
        obj = self.get()
        st = (obj or {}).get("status") or {}
        if not self.v2 and st.get("stableVersion") == self.v1 and st.get("phase") == "Available":
            self.cluster.apply(
                {
                    "apiVersion": "v1",
                    "kind": "ResourceQuota",
                    "metadata": {"name": "no-more-pods", "namespace": self.ns},
                    "spec": {"hard": {"pods": "1"}},
                }
            )
            self.v2 = register(self.uri, self.model, alias="champion")

    def life(self) -> Life:
        def done() -> bool:
            st = ((self.get() or {}).get("status")) or {}
            canary = self.cluster.get("deployment", f"{self.name}-canary", self.ns)
            return (
                bool(self.v2)
                and (st.get("rollback") or {}).get("fromVersion") == self.v2
                and canary is None
                and st.get("replicas") == 1
            )

        return Life(
            self.world,
            done,
            f"ModelDeployment {self.ns}/{self.name} to roll back",
            lambda: (self.get() or {}).get("status"),
        )

    def check(self) -> None:
        obj = self.get()
        assert obj is not None
        st = obj["status"]
        assert st["stableVersion"] == self.v1, st
        assert st["rollback"]["fromVersion"] == self.v2 and st["rollback"]["toVersion"] == self.v1
        assert conditions_of(obj)["Degraded"]["status"] == "True"
        assert st["phase"] == "Degraded", st
        deps = {d["metadata"]["name"]: d for d in items(self.cluster, self.ns, "deployments")}
        versions = {
            n: d["spec"]["template"]["metadata"]["labels"]["modelworks.dev/model-version"]
            for n, d in deps.items()
            if not d["metadata"].get("deletionTimestamp")
        }
        assert versions == {self.name: self.v1}, versions
        client = mlflow_client(self.uri)
        assert [v.version for v in client.search_model_versions(f"name = '{self.model}'")] == [
            self.v2,
            self.v1,
        ] or sorted(
            v.version for v in client.search_model_versions(f"name = '{self.model}'")
        ) == sorted([self.v1, self.v2])
        assert client.get_model_version_by_alias(self.model, "champion").version == self.v2
        assert orphans(self.cluster, self.ns) == []


# --- DriftMonitor: first check -> time passes -> scheduled retrain -> TrainingJob ----------


@dataclass
class DriftLife:
    """A monitor of a ModelDeployment the world says serves v1 (no ModelDeployment pass
    runs: this life is the monitor's alone). Its first check finds the reference profile
    and an empty window; then two minutes pass and the every-minute schedule starts a
    retraining TrainingJob."""

    cluster: Cluster
    uri: str
    ns: str
    name: str = "watch"
    model: str = field(init=False)
    clock: Clock = field(default_factory=Clock)
    kinds: tuple[str, ...] = ("DriftMonitor",)

    def __post_init__(self) -> None:
        self.model = f"m-{self.ns}"

    def start(self) -> None:
        import numpy as np

        from modelworks.drift.profile import PROFILE_FILE, build_profile

        version = register(self.uri, self.model, alias="champion")
        client = mlflow_client(self.uri)
        run_id = client.get_model_version(self.model, version).run_id
        profile = build_profile({"x": np.arange(1000.0)})
        client.log_dict(run_id, profile.to_json(), PROFILE_FILE)
        self.cluster.apply(
            {
                "apiVersion": API_VERSION,
                "kind": "ModelDeployment",
                "metadata": {"name": "srv", "namespace": self.ns},
                "spec": {"model": {"name": self.model, "version": version}},
            }
        )
        self.cluster.kubectl(
            "patch", "mdep", "srv", "-n", self.ns, "--subresource=status", "--type=merge",
            "-p", json.dumps({"status": {"stableVersion": version, "phase": "Available"}}),
        )  # fmt: skip
        self.cluster.apply(
            {
                "apiVersion": API_VERSION,
                "kind": "DriftMonitor",
                "metadata": {"name": self.name, "namespace": self.ns},
                "spec": {
                    "target": {"modelDeployment": {"name": "srv"}},
                    "interval": "1m",
                    "minSamples": 10,
                    "retrain": {
                        "template": {
                            "image": "modelworks:0.1.0",
                            "model": {"name": self.model},
                            "suspend": True,
                        },
                        "schedule": "* * * * *",
                    },
                },
            }
        )

    def get(self) -> dict[str, Any] | None:
        return self.cluster.get("driftmonitor", self.name, self.ns)

    def world(self) -> None:
        st = (self.get() or {}).get("status") or {}
        if st.get("lastCheckTime") and self.clock.offset == 0:
            self.clock.offset = 150.0
            self.cluster.kubectl(
                "annotate", "dmon", self.name, "-n", self.ns, "chaos/time-passed=150s"
            )

    def retrainings(self) -> list[dict[str, Any]]:
        return [
            tj
            for tj in items(self.cluster, self.ns, "trainingjobs.modelworks.dev")
            if (tj["metadata"].get("labels") or {}).get("modelworks.dev/drift-monitor") == self.name
        ]

    def life(self) -> Life:
        def done() -> bool:
            st = (self.get() or {}).get("status") or {}
            return bool(st.get("lastRetrain")) and bool(self.retrainings())

        return Life(
            self.world,
            done,
            f"DriftMonitor {self.ns}/{self.name} to retrain",
            lambda: (self.get() or {}).get("status"),
        )

    def check(self) -> None:
        obj = self.get()
        assert obj is not None
        st = obj["status"]
        tjs = self.retrainings()
        assert len(tjs) == 1, [t["metadata"]["name"] for t in tjs]
        assert st["lastRetrain"]["trainingJob"] == tjs[0]["metadata"]["name"], st
        assert st["retrainCount"] == 1, st
        assert st["lastRetrain"]["reason"].startswith("schedule") or st["lastRetrain"]["reason"]
        assert conditions_of(obj)["Ready"]["status"] == "True", st
        assert st.get("observedGeneration") == obj["metadata"]["generation"]
        assert orphans(self.cluster, self.ns) == []
