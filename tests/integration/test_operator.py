"""The operator as a process against a real API server: status, conditions, no idle writes."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import yaml

from tests.cases import INVALID, Case
from tests.support import ROOT, Cluster, MlflowServer, eventually, run_operator

pytestmark = pytest.mark.integration
SAMPLES = ROOT / "manifests" / "samples"
# (kind, name, summary condition, its reason before anything is trained)
OBJECTS = [
    ("modeldeployment", "churn", "Ready", "AliasNotFound"),
    ("driftmonitor", "churn-drift", "Ready", "TargetNotServing"),
]


def summary(obj: dict, type_: str) -> dict | None:  # type: ignore[type-arg]
    for cond in (obj.get("status") or {}).get("conditions") or []:
        if cond["type"] == type_:
            return cond  # type: ignore[no-any-return]
    return None


def test_operator_writes_status_on_every_kind(
    crds: Cluster, mlflow: MlflowServer, namespace: str, tmp: Path
) -> None:
    with run_operator(
        crds, tmp, namespaces=namespace, resync_seconds="1", mlflow_tracking_uri=mlflow.uri
    ) as op:
        # The sample TrainingJob, suspended: it gets its run and its Job, and no pod runs
        # (whether or not the cluster has a node for real pods).
        docs = [
            yaml.safe_load(p.read_text())
            for p in sorted(SAMPLES.glob("*.yaml"))
            if p.name != "kustomization.yaml"
        ]
        for doc in docs:
            if doc["kind"] == "TrainingJob":
                doc["spec"]["suspend"] = True
            crds.apply(doc, "-n", namespace)
        crds.kubectl(
            "wait", "tj/churn-train", "-n", namespace, "--for=condition=JobCreated", "--timeout=60s"
        )
        tj = crds.get("tj", "churn-train", namespace)
        assert tj is not None and tj["status"]["phase"] == "Suspended"
        assert summary(tj, "Succeeded")["reason"] == "Suspended"  # type: ignore[index]
        for kind, name, cond, reason in OBJECTS:
            # What an admin (or a CI pipeline) would type:
            crds.kubectl(
                "wait",
                f"{kind}/{name}",
                "-n",
                namespace,
                f"--for=condition={cond}=False",
                "--timeout=60s",
            )

            # The first False may be a passing state (the DriftMonitor can be seen before its
            # ModelDeployment exists: TargetNotFound); the settled reason follows.
            def settled(
                kind: str = kind, name: str = name, cond: str = cond, reason: str = reason
            ) -> dict | None:  # type: ignore[type-arg]
                o = crds.get(kind, name, namespace)
                c = summary(o, cond) if o else None
                return o if c is not None and c["reason"] == reason else None

            obj = eventually(settled, timeout=60, what=f"{kind}/{name} {cond}={reason}")
            status = obj["status"]
            assert status["observedGeneration"] == obj["metadata"]["generation"]
            c = summary(obj, cond)
            assert c is not None
            assert c["observedGeneration"] == obj["metadata"]["generation"]
            assert "kopf" not in status
            # No finalizer: objects stay deletable while the operator is down or uninstalled.
            assert not obj["metadata"].get("finalizers"), obj["metadata"]
            # No bookkeeping on the object: kopf only watches, the operator writes status.
            for key in obj["metadata"].get("annotations") or {}:
                assert not key.startswith(("kopf.zalando.org/", "modelworks.dev/")), key

        # A spec change is a new generation, and status follows it.
        crds.kubectl(
            "patch",
            "tj",
            "churn-train",
            "-n",
            namespace,
            "--type=merge",
            "-p",
            '{"spec":{"backoffLimit":2}}',
        )
        eventually(
            lambda: (
                (o := crds.get("tj", "churn-train", namespace))
                and o["status"]["observedGeneration"] == o["metadata"]["generation"] == 2
            ),
            timeout=30,
            what="observedGeneration 2",
        )

        # Settled objects cost no writes: resync passes run, resourceVersions stay.
        eventually(
            lambda: op.metric("modelworks_reconcile_total", kind="TrainingJob") >= 2,
            timeout=30,
            what="reconciles to be counted",
        )
        watched = [(k, n) for k, n, _, _ in OBJECTS] + [("trainingjob", "churn-train")]
        before = {n: crds.get(k, n, namespace)["metadata"]["resourceVersion"] for k, n in watched}  # type: ignore[index]
        passes = op.metric("modelworks_reconcile_total")
        time.sleep(12)  # observation window: two resync ticks at least
        after = {n: crds.get(k, n, namespace)["metadata"]["resourceVersion"] for k, n in watched}  # type: ignore[index]
        assert after == before, "an idle object was written"
        assert op.metric("modelworks_reconcile_total") >= passes + 3, "resync passes did not run"
        assert op.metric("modelworks_build_info") == 1


def test_restarted_operator_resumes_without_rewriting(
    crds: Cluster, namespace: str, tmp: Path
) -> None:
    """Level-based: a new operator process recomputes the same status and writes nothing."""
    with run_operator(crds, tmp, namespaces=namespace):
        crds.kubectl("apply", "-n", namespace, "-f", str(SAMPLES / "modeldeployment.yaml"))
        crds.kubectl(
            "wait", "mdep/churn", "-n", namespace, "--for=condition=Ready=False", "--timeout=60s"
        )
    settled = crds.get("mdep", "churn", namespace)
    assert settled is not None
    with run_operator(crds, tmp, namespaces=namespace) as op:
        eventually(
            lambda: op.metric("modelworks_reconcile_total", kind="ModelDeployment") >= 1,
            timeout=30,
            what="the resumed pass",
        )
        assert op.metric("modelworks_status_writes_total") == 0
    again = crds.get("mdep", "churn", namespace)
    assert again is not None
    assert again["status"] == settled["status"]
    # Only our own Events reach users, not kopf's "handler succeeded" chatter.
    reasons = crds.kubectl(
        "get", "events", "-n", namespace, "-o", "jsonpath={.items[*].reason}"
    ).stdout.split()
    assert not [r for r in reasons if r.lower() in ("logging", "handler")], reasons


@pytest.mark.parametrize("case", [c for c in INVALID if not c.server], ids=lambda c: c.id)
def test_what_cel_cannot_check_the_operator_refuses(
    crds: Cluster, namespace: str, tmp: Path, case: Case
) -> None:
    """Accepted at the door (CEL cannot see into the map), refused by the operator."""
    with run_operator(crds, tmp, namespaces=namespace):
        obj = case.obj()
        crds.apply(obj, "-n", namespace)
        name = obj["metadata"]["name"]
        crds.kubectl(
            "wait",
            f"{case.kind.lower()}/{name}",
            "-n",
            namespace,
            "--for=condition=Stalled",
            "--timeout=60s",
        )
        stored = crds.get(case.kind.lower(), name, namespace)
        assert stored is not None
        summary = next(c for c in stored["status"]["conditions"] if c["type"] == "Succeeded")
        assert summary["reason"] == "InvalidSpec" and case.field in summary["message"]
        events = crds.kubectl(
            "get",
            "events",
            "-n",
            namespace,
            "--field-selector",
            f"involvedObject.name={name},reason=InvalidSpec,type=Warning",
            "-o",
            "jsonpath={.items[*].message}",
        ).stdout
        assert case.field in events
