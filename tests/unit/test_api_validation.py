"""The operator's own validation refuses every bad object and names the field."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from modelworks.api import BY_KIND
from modelworks.api.validate import parse_spec
from tests.cases import DEFAULTS, INVALID, MINIMAL, Case, minimal

ROOT = Path(__file__).resolve().parents[2]
SAMPLES = sorted((ROOT / "manifests" / "samples").glob("*.yaml"))
EXAMPLES = sorted((ROOT / "examples").glob("*.yaml"))


def test_the_table_is_broad() -> None:
    assert len(INVALID) >= 20
    assert {c.kind for c in INVALID} == set(MINIMAL)
    assert len({c.id for c in INVALID}) == len(INVALID)


@pytest.mark.parametrize("case", INVALID, ids=lambda c: c.id)
def test_invalid_object_is_refused_naming_the_field(case: Case) -> None:
    spec, errors = parse_spec(BY_KIND[case.kind], case.obj())
    assert spec is None
    assert any(e.startswith(case.field) for e in errors), errors


@pytest.mark.parametrize("kind", sorted(MINIMAL))
def test_minimal_object_is_valid_and_defaulted(kind: str) -> None:
    spec, errors = parse_spec(BY_KIND[kind], minimal(kind))
    assert errors == []
    assert spec is not None
    wire = spec.model_dump(by_alias=True, exclude_none=True, mode="json")
    for key, value in DEFAULTS[kind].items():
        if isinstance(value, dict):
            assert value.items() <= wire[key].items(), key
        else:
            assert wire[key] == value, key


@pytest.mark.parametrize("path", SAMPLES + EXAMPLES, ids=lambda p: p.name)
def test_samples_are_valid(path: Path) -> None:
    for doc in yaml.safe_load_all(path.read_text()):
        if doc.get("kind") == "Kustomization":
            continue
        spec, errors = parse_spec(BY_KIND[doc["kind"]], doc)
        assert errors == [], errors
        assert spec is not None


def test_samples_form_the_loop() -> None:
    docs = {d["kind"]: d for p in SAMPLES for d in yaml.safe_load_all(p.read_text())}
    tj, md, dm = docs["TrainingJob"], docs["ModelDeployment"], docs["DriftMonitor"]
    assert md["spec"]["model"]["name"] == tj["spec"]["model"]["name"]
    assert md["spec"]["model"]["alias"] == tj["spec"]["model"]["alias"]
    assert dm["spec"]["target"]["modelDeployment"]["name"] == md["metadata"]["name"]
    assert dm["spec"]["retrain"]["fromTrainingJob"]["name"] == tj["metadata"]["name"]
