"""Watch gaps: the operator misses a TrainingJob's deletion and sees its successor by name.

The real operator (a subprocess on the test's namespace, talking to the API server through
a :class:`Cutter`) is paused with SIGSTOP and its connections are reset. While it is
stopped, its TrainingJob is deleted (its Job garbage-collected, or orphaned with
``--cascade=orphan``) and created again under the same name and spec, and the API server
is made to forget the resourceVersion the operator's watch holds (:func:`gaps.expire`).
On SIGCONT the watch gets 410 Gone and lists again: the old object's DELETED event never
arrives. Then:

- nothing is written for the old uid any more: no child owned by it is created or
  updated, no Event is posted about it, no MLflow run is made for it;
- the new object owns its children: the Job's ownerReferences carry the new uid, and its
  MLflow run is the new uid's.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest

from modelworks.names import SOURCE_TAG
from tests.integration.test_trainingjob import training_job
from tests.reliability.gaps import custom_api, expire, list_version
from tests.reliability.operator_proc import (
    Cutter,
    WatchLog,
    api_address,
    kubeconfig_through,
    operators,
    start_operator,
)
from tests.support import Cluster, MlflowServer, eventually, mlflow_client

pytestmark = [pytest.mark.integration, pytest.mark.chaos]


def job_of(cluster: Cluster, namespace: str, uid: str) -> dict[str, Any] | None:
    jobs = cluster.kubectl("get", "jobs", "-n", namespace, "-o", "json").stdout
    for job in json.loads(jobs)["items"]:
        if uid in {o["uid"] for o in job["metadata"].get("ownerReferences") or []}:
            return job  # type: ignore[no-any-return]
    return None


def runs_for(uri: str, uid: str) -> list[Any]:
    client = mlflow_client(uri)
    exps = [e.experiment_id for e in client.search_experiments()]
    return list(client.search_runs(exps, filter_string=f"tags.`{SOURCE_TAG}` LIKE '{uid}/%'"))


def events_about(cluster: Cluster, namespace: str, uid: str) -> list[str]:
    out = cluster.kubectl(
        "get",
        "events",
        "-n",
        namespace,
        "--field-selector",
        f"involvedObject.uid={uid}",
        "-o",
        "jsonpath={range .items[*]}{.reason}/{.count}{'\\n'}{end}",
    ).stdout
    return sorted(line for line in out.splitlines() if line)


def remove_the_orphan(crds: Cluster, namespace: str) -> None:
    """The Job the old TrainingJob left (``--cascade=orphan``) has the name the new one's Job
    would get: the new one never adopts or rewrites it, it reports ``NameTaken`` naming it;
    once the orphan is deleted, the new one makes its own Job."""

    def taken() -> str | None:
        tj = crds.get("tj", "tj", namespace) or {}
        for cond in (tj.get("status") or {}).get("conditions") or []:
            if cond.get("type") == "Succeeded" and cond.get("reason") == "NameTaken":
                return str(cond["message"])
        return None

    message = eventually(taken, timeout=120, what="NameTaken for the orphaned Job")
    name = message.split()[1]
    assert message.startswith(f"Job {name} exists and is not owned by this TrainingJob"), message
    crds.kubectl("delete", "job", name, "-n", namespace, "--cascade=background")


@pytest.mark.parametrize(
    "cascade",
    [
        "background",
        "orphan",
    ],
)
@pytest.mark.timeout(1200)
def test_deleted_and_recreated_during_a_watch_gap(
    crds: Cluster, mlflow: MlflowServer, namespace: str, tmp: Path, cascade: str
) -> None:
    cutter = Cutter(api_address(crds), api_address(crds)[0])
    kubeconfig = kubeconfig_through(crds, cutter, tmp / "kubeconfig")
    op = start_operator(kubeconfig, tmp, namespace, mlflow.uri, resync_seconds="30")
    jobs = WatchLog(crds, "jobs", namespace)
    try:
        with operators(op):
            crds.apply(training_job("tj", namespace, model=f"m-{namespace}"))
            crds.kubectl(
                "wait",
                "tj/tj",
                "-n",
                namespace,
                "--for=condition=JobCreated",
                "--timeout=240s",
                timeout=260,
            )
            old = crds.get("tj", "tj", namespace)
            assert old is not None
            old_uid = old["metadata"]["uid"]
            assert job_of(crds, namespace, old_uid) is not None
            assert len(runs_for(mlflow.uri, old_uid)) == 1

            op.pause()
            assert cutter.cut() > 0, "the operator had no connection open"
            before = list_version(custom_api(crds), namespace, "trainingjobs")
            crds.kubectl("delete", "tj", "tj", "-n", namespace, f"--cascade={cascade}")
            crds.apply(training_job("tj", namespace, model=f"m-{namespace}"))
            new = crds.get("tj", "tj", namespace)
            assert new is not None
            new_uid = new["metadata"]["uid"]
            assert new_uid != old_uid
            expire(crds, namespace, before)
            old_events = events_about(crds, namespace, old_uid)
            old_runs = len(runs_for(mlflow.uri, old_uid))

            resumed = time.monotonic()
            op.resume()
            if cascade == "orphan":
                remove_the_orphan(crds, namespace)
            eventually(
                lambda: job_of(crds, namespace, new_uid),
                timeout=120,
                what="a Job owned by the new TrainingJob",
            )
            crds.kubectl(
                "wait",
                "tj/tj",
                "-n",
                namespace,
                "--for=condition=JobCreated",
                "--timeout=240s",
                timeout=260,
            )
            time.sleep(35)  # one resync period: a stale pass would have run by now
            assert op.alive(), op.log()[-3000:]

            stale = [s for s in jobs.since(resumed) if old_uid in s.owners and s.type != "DELETED"]
            assert stale == [], f"children of the old uid written after resume: {stale}"
            assert events_about(crds, namespace, old_uid) == old_events
            assert len(runs_for(mlflow.uri, old_uid)) == old_runs
            assert len(runs_for(mlflow.uri, new_uid)) == 1
            job = job_of(crds, namespace, new_uid)
            assert job is not None
            owners = [o["uid"] for o in job["metadata"]["ownerReferences"]]
            assert owners == [new_uid]
            env = {
                e["name"]: e.get("value")
                for e in job["spec"]["template"]["spec"]["containers"][0]["env"]
            }
            assert env["MLFLOW_RUN_ID"] == runs_for(mlflow.uri, new_uid)[0].info.run_id
            final = crds.get("tj", "tj", namespace)
            assert final is not None and final["metadata"]["uid"] == new_uid
            assert final["status"]["observedGeneration"] == final["metadata"]["generation"]
    finally:
        jobs.stop()
        cutter.close()
