"""HA: two operator replicas on one Lease; the active one is killed with SIGKILL mid-load.

Ten TrainingJobs are in flight (their runs exist and hold a trained model; they are
resumed at once, so their kwok pods complete and the leader reads the metrics, applies
the gate, registers the versions) when the leader dies without a word: no drain, no lease
release. The standby must take over once the lease has run out on its own clock, and the
end state must be the one a single replica reaches: every TrainingJob Succeeded, with one
MLflow run, one Job and one model version each. The takeover time is printed (see
docs/reliability.md for the figure).
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest

from tests.integration.test_trainingjob import play_trainer, training_job
from tests.reliability.operator_proc import Operator, operators, start_operator
from tests.reliability.test_watch_gaps import runs_for
from tests.support import Cluster, MlflowServer, eventually, mlflow_client

pytestmark = [pytest.mark.integration, pytest.mark.chaos]
COUNT = 10
LEASE = "modelworks-ha-test"


def leader(ops: list[Operator]) -> Operator | None:
    for op in ops:
        if op.alive() and op.metric("modelworks_leader") == 1:
            return op
    return None


def jobs_owned(cluster: Cluster, namespace: str) -> dict[str, int]:
    items = json.loads(cluster.kubectl("get", "jobs", "-n", namespace, "-o", "json").stdout)
    count: dict[str, int] = {}
    for job in items["items"]:
        for owner in job["metadata"].get("ownerReferences") or []:
            count[owner["uid"]] = count.get(owner["uid"], 0) + 1
    return count


def phases(cluster: Cluster, namespace: str) -> dict[str, Any]:
    items = json.loads(cluster.kubectl("get", "tj", "-n", namespace, "-o", "json").stdout)
    return {o["metadata"]["name"]: (o.get("status") or {}).get("phase") for o in items["items"]}


@pytest.mark.timeout(1200)
def test_standby_takes_over_from_a_killed_leader(
    crds: Cluster, mlflow: MlflowServer, namespace: str, tmp: Path
) -> None:
    ops = [
        start_operator(crds.kubeconfig, tmp, namespace, mlflow.uri, identity=f"op-{n}", lease=LEASE)
        for n in ("a", "b")
    ]
    with operators(*ops):
        first = eventually(lambda: leader(ops), timeout=60, what="a leader")
        names = [f"tj-{i}" for i in range(COUNT)]
        for i, name in enumerate(names):
            crds.apply(training_job(name, namespace, model=f"m-{namespace}-{i}"))
        for name in names:
            crds.kubectl(
                "wait",
                f"tj/{name}",
                "-n",
                namespace,
                "--for=condition=JobCreated",
                "--timeout=180s",
                timeout=200,
            )
        for name in names:
            obj = crds.get("tj", name, namespace)
            assert obj is not None
            play_trainer(
                mlflow.uri, runs_for(mlflow.uri, obj["metadata"]["uid"])[0].info.run_id, 0.9
            )
        for name in names:
            crds.kubectl(
                "patch",
                "tj",
                name,
                "-n",
                namespace,
                "--type=merge",
                "-p",
                '{"spec":{"suspend":false}}',
            )
        eventually(
            lambda: "Succeeded" in phases(crds, namespace).values(),
            timeout=60,
            interval=0.2,
            what="the first TrainingJob to succeed (the leader is mid-load)",
        )
        killed = time.monotonic()
        first.kill()
        second = eventually(lambda: leader(ops), timeout=60, interval=0.2, what="a new leader")
        takeover = time.monotonic() - killed
        assert second is not first
        print(f"\ntakeover after SIGKILL of the leader: {takeover:.1f} s")
        done: Any = eventually(
            lambda: (
                (p := phases(crds, namespace))
                and all(v in ("Succeeded", "Failed") for v in p.values())
                and p
            ),
            timeout=300,
            what="every TrainingJob final",
        )
        assert set(done.values()) == {"Succeeded"}, done
        owned = jobs_owned(crds, namespace)
        client = mlflow_client(mlflow.uri)
        for i, name in enumerate(names):
            obj = crds.get("tj", name, namespace)
            assert obj is not None
            uid = obj["metadata"]["uid"]
            assert len(runs_for(mlflow.uri, uid)) == 1, name
            assert owned.get(uid) == 1, name
            versions = client.search_model_versions(f"name='m-{namespace}-{i}'")
            assert len(versions) == 1, (name, [v.version for v in versions])
        lease = crds.get("lease", LEASE, namespace)
        assert lease is not None and lease["spec"]["holderIdentity"] == second.identity
        # The lease is 15 s, judged from the standby's last sight of a renewal (every 2 s).
        assert takeover < 30, f"takeover took {takeover:.1f} s"
