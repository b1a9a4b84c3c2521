"""The CRDs on a real kube-apiserver: install, accept the samples, refuse bad input, default."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from tests.cases import DEFAULTS, INVALID, MINIMAL, Case, minimal
from tests.support import ROOT, Cluster

pytestmark = pytest.mark.integration
SAMPLES = ROOT / "manifests" / "samples"


@pytest.mark.parametrize("samples", [SAMPLES, SAMPLES.parent / "loop"], ids=["samples", "loop"])
def test_samples_are_accepted(crds: Cluster, namespace: str, samples: Path) -> None:
    crds.kubectl("apply", "-n", namespace, "-k", str(samples))
    out = crds.kubectl("get", "modelworks", "-n", namespace, "-o", "name").stdout.split()
    assert sorted(out) == [
        "driftmonitor.modelworks.dev/churn-drift",
        "modeldeployment.modelworks.dev/churn",
        "trainingjob.modelworks.dev/churn-train",
    ]


@pytest.mark.parametrize("case", [c for c in INVALID if c.server], ids=lambda c: c.id)
def test_invalid_object_is_refused_naming_the_field(crds: Cluster, case: Case) -> None:
    proc = crds.apply(case.obj(), "-n", "default", "--dry-run=server", check=False)
    assert proc.returncode != 0, f"{case.id} was accepted"
    assert case.field in proc.stderr, proc.stderr


@pytest.mark.parametrize("kind", sorted(MINIMAL))
def test_defaults_are_applied(crds: Cluster, namespace: str, kind: str) -> None:
    obj = minimal(kind)
    crds.apply(obj, "-n", namespace)
    stored = crds.get(kind.lower(), obj["metadata"]["name"], namespace)
    assert stored is not None
    for key, value in DEFAULTS[kind].items():
        if isinstance(value, dict):
            assert value.items() <= stored["spec"][key].items(), key
        else:
            assert stored["spec"][key] == value, key


def test_printer_columns_and_category(crds: Cluster, namespace: str) -> None:
    crds.kubectl("apply", "-n", namespace, "-k", str(SAMPLES))
    headers = {
        "tj": ["NAME", "PHASE", "SUCCEEDED", "MODEL", "VERSION", "GATE", "AGE"],
        "mdep": ["NAME", "MODEL", "ALIAS", "VERSION", "READY", "REPLICAS", "PHASE", "AGE"],
        "dmon": ["NAME", "TARGET", "METHOD", "VERDICT", "DRIFTED", "READY", "LAST-CHECK", "AGE"],
    }
    for short, columns in headers.items():
        out = crds.kubectl("get", short, "-n", namespace).stdout.splitlines()
        assert out[0].split() == columns, out[0]
    wide = crds.kubectl("get", "tj", "-n", namespace, "-o", "wide").stdout.splitlines()[0].split()
    assert {"REASON", "RUN"} <= set(wide)
    both = crds.kubectl("get", "tj,mdep,dmon", "-n", namespace).stdout
    assert "churn-train" in both and "churn-drift" in both
    category = crds.kubectl("get", "modelworks", "-n", namespace).stdout
    assert category.count("NAME") == 3  # one table per kind


def test_explain_shows_the_model_docs(crds: Cluster) -> None:
    out = crds.kubectl("explain", "trainingjob.spec.qualityGate").stdout
    assert "Every rule must hold" in out
    out = crds.kubectl("explain", "modeldeployment.spec.model").stdout
    assert "exactly one of a version or an alias" in out


def test_selectable_field_model_name(crds: Cluster, namespace: str) -> None:
    crds.kubectl("apply", "-n", namespace, "-k", str(SAMPLES))
    other = minimal("ModelDeployment", name="other")
    other["spec"]["model"]["name"] = "fraud"
    crds.apply(other, "-n", namespace)
    out = crds.kubectl(
        "get", "mdep", "-n", namespace, "--field-selector", "spec.model.name=fraud", "-o", "name"
    ).stdout.split()
    assert out == ["modeldeployment.modelworks.dev/other"]


def test_status_schema_is_strict(crds: Cluster, namespace: str) -> None:
    """Unknown status fields are pruned: kopf cannot hide its bookkeeping there."""
    obj = minimal("DriftMonitor")
    crds.apply(obj, "-n", namespace)
    patch = {"status": {"verdict": "NoDrift", "kopf": {"progress": {}}}}
    crds.kubectl(
        "patch",
        "dmon",
        obj["metadata"]["name"],
        "-n",
        namespace,
        "--subresource=status",
        "--type=merge",
        "-p",
        yaml.safe_dump(patch),
    )
    stored = crds.get("dmon", obj["metadata"]["name"], namespace)
    assert stored is not None
    assert stored["status"] == {"verdict": "NoDrift"}
