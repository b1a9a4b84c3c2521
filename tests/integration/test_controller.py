"""The controller's own writes and bookkeeping against a real API server: status stored
whole and guarded by resourceVersion, deletions a relist missed, the leader Lease."""

from __future__ import annotations

from typing import Any, cast

import pytest

from modelworks.api import API_VERSION, MODEL_DEPLOYMENT, TRAINING_JOB
from modelworks.clients.kube import Kube, KubeError
from modelworks.clients.mlflow import Registry
from modelworks.handlers.controller import Controller
from modelworks.handlers.leader import LeaderElector
from modelworks.reconcilers.base import store_status
from modelworks.settings import Settings
from tests.integration.test_trainingjob import training_job
from tests.support import Cluster, MlflowServer, eventually

pytestmark = pytest.mark.integration
T0 = "2026-01-01T00:00:00Z"


def new_mdep(kube: Kube, ns: str, name: str) -> dict[str, Any]:
    return kube.create(
        {
            "apiVersion": API_VERSION,
            "kind": "ModelDeployment",
            "metadata": {"name": name, "namespace": ns},
            "spec": {"model": {"name": "churn", "alias": "champion"}},
        }
    )


def test_status_is_stored_whole_and_a_stale_body_is_refused(
    crds: Cluster, kube: Kube, namespace: str
) -> None:
    obj = new_mdep(kube, namespace, "whole")
    first = {
        "observedGeneration": 1,
        "phase": "Progressing",
        "resolved": {"version": "3", "alias": "champion"},
        "canary": {"version": "3", "step": 1, "weight": 20, "stepStarted": T0},
    }
    stored = store_status(kube, MODEL_DEPLOYMENT, obj, first)
    assert stored is not None and stored["status"] == first
    second = {
        "observedGeneration": 1,
        "phase": "Progressing",
        "resolved": {"version": "3"},
        "canary": {"version": "3", "step": 2, "weight": 50},
    }
    again = store_status(kube, MODEL_DEPLOYMENT, stored, second)
    assert again is not None
    read = kube.get(API_VERSION, "ModelDeployment", namespace, "whole")
    assert read is not None and read["status"] == second  # no nested key left behind
    # Nothing changed: no request at all.
    before = sum(kube.requests.values())
    assert store_status(kube, MODEL_DEPLOYMENT, again, second) is None
    assert sum(kube.requests.values()) == before
    # A status computed from a body older than the stored object is not stored.
    with pytest.raises(KubeError) as refused:
        store_status(kube, MODEL_DEPLOYMENT, stored, {"observedGeneration": 1, "phase": "Failed"})
    assert refused.value.status == 409
    read = kube.get(API_VERSION, "ModelDeployment", namespace, "whole")
    assert read is not None and read["status"] == second


def test_sweep_drops_an_object_whose_deleted_event_was_missed(
    crds: Cluster, kube: Kube, namespace: str
) -> None:
    controller = Controller(
        settings=Settings(namespaces=(namespace,)),
        kube=kube,
        registry=cast(Any, None),
        reconcilers={},
    )
    kept = new_mdep(kube, namespace, "kept")
    gone = new_mdep(kube, namespace, "gone")
    for body in (kept, gone):
        controller.observed(MODEL_DEPLOYMENT, None, body)
    kube.delete(API_VERSION, "ModelDeployment", namespace, "gone")  # its event never arrives
    eventually(
        lambda: kube.get(API_VERSION, "ModelDeployment", namespace, "gone") is None,
        timeout=30,
        what="the object to be deleted",
    )
    assert controller.sweep() == 1
    assert controller.known(kept["metadata"]["uid"])
    assert not controller.known(gone["metadata"]["uid"])
    assert controller.queue.depth() == 1  # only the kept object is queued


WRITES = ("POST", "PUT", "PATCH", "DELETE")


def test_a_pass_for_a_deleted_object_writes_nothing_and_its_successor_gets_its_children(
    crds: Cluster, kube: Kube, mlflow: MlflowServer, namespace: str
) -> None:
    from modelworks.handlers import RECONCILERS

    controller = Controller(
        settings=Settings(namespaces=(namespace,)),
        kube=kube,
        registry=Registry(mlflow.uri),
        reconcilers=RECONCILERS,
    )
    crds.apply(training_job("twin", namespace, model=f"m-{namespace}"))
    old = crds.get("trainingjob", "twin", namespace)
    assert old is not None
    controller.observed(TRAINING_JOB, "ADDED", old)
    crds.kubectl("delete", "tj", "twin", "-n", namespace)  # its DELETED event never arrives
    crds.apply(training_job("twin", namespace, model=f"m-{namespace}"))
    new = crds.get("trainingjob", "twin", namespace)
    assert new is not None and new["metadata"]["uid"] != old["metadata"]["uid"]
    controller.observed(TRAINING_JOB, "ADDED", new)  # the relist brings the successor

    writes = sum(kube.requests[v] for v in WRITES)
    controller.process(old["metadata"]["uid"])
    assert sum(kube.requests[v] for v in WRITES) == writes, "the dead uid's pass wrote"
    assert not controller.known(old["metadata"]["uid"])
    assert [
        j["metadata"]["name"]
        for j in kube.list("batch/v1", "Job", namespace)
        if any(r["uid"] == old["metadata"]["uid"] for r in j["metadata"]["ownerReferences"])
    ] == []

    controller.process(new["metadata"]["uid"])
    jobs = kube.list("batch/v1", "Job", namespace)
    assert [[r["uid"] for r in j["metadata"]["ownerReferences"]] for j in jobs] == [
        [new["metadata"]["uid"]]
    ]
    stored = crds.get("trainingjob", "twin", namespace)
    assert stored is not None and stored["status"]["jobName"] == jobs[0]["metadata"]["name"]


def test_one_replica_leads_and_a_standby_takes_over(
    crds: Cluster, kube: Kube, namespace: str
) -> None:
    def elector(identity: str) -> LeaderElector:
        return LeaderElector(
            kube,
            namespace,
            "modelworks-test",
            identity,
            duration_seconds=5,
            deadline_seconds=4,
            renew_seconds=0.5,
        )

    a, b = elector("a"), elector("b")
    a.start()
    eventually(a.leading.is_set, timeout=10, what="a to lead")
    b.start()
    try:
        for _ in range(4):  # b stands by while a renews, for longer than the lease
            assert not b.leading.wait(timeout=1.5)
            assert a.leading.is_set()
        lease = kube.get("coordination.k8s.io/v1", "Lease", namespace, "modelworks-test")
        assert lease is not None and lease["spec"]["holderIdentity"] == "a"
        a.stop()  # gives the lease up
        eventually(b.leading.is_set, timeout=5, what="b to take over")
        lease = kube.get("coordination.k8s.io/v1", "Lease", namespace, "modelworks-test")
        assert lease is not None and lease["spec"]["holderIdentity"] == "b"
        assert lease["spec"]["leaseTransitions"] == 2
    finally:
        a.stop()
        b.stop()
