"""The generated CRDs: in sync with the models and structural by construction."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from modelworks import crdgen
from modelworks.api import KINDS, Kind

ROOT = Path(__file__).resolve().parents[2]


def test_checked_in_crds_match_the_models() -> None:
    assert crdgen.stale(ROOT / "crds") == [], "run `make crds` and commit crds/"


def walk(node: Any, path: str = "") -> list[tuple[str, dict[str, Any]]]:
    out: list[tuple[str, dict[str, Any]]] = []
    if isinstance(node, dict):
        out.append((path, node))
        for key in ("properties",):
            for name, sub in (node.get(key) or {}).items():
                out += walk(sub, f"{path}.{name}")
        if isinstance(node.get("items"), dict):
            out += walk(node["items"], f"{path}[]")
        if isinstance(node.get("additionalProperties"), dict):
            out += walk(node["additionalProperties"], f"{path}{{}}")
    return out


@pytest.mark.parametrize("kind", KINDS, ids=lambda k: k.kind)
def test_schema_is_structural(kind: Kind) -> None:
    schema = crdgen.crd(kind)["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    for path, node in walk(schema):
        assert "$ref" not in node and "$defs" not in node, path
        assert "title" not in node, path
        assert not ("properties" in node and "additionalProperties" in node), path
        if node.get("x-kubernetes-int-or-string"):
            continue
        assert "anyOf" not in node and "oneOf" not in node, path
        assert "type" in node or node.get("x-kubernetes-preserve-unknown-fields"), path
        assert node.get("default", 0) is not None, path


@pytest.mark.parametrize("kind", KINDS, ids=lambda k: k.kind)
def test_crd_frame(kind: Kind) -> None:
    c = crdgen.crd(kind)
    names = c["spec"]["names"]
    assert names["categories"] == ["modelworks"]
    assert names["shortNames"] == list(kind.short_names)
    assert "md" not in names["shortNames"]  # Cluster API's MachineDeployment owns it
    version = c["spec"]["versions"][0]
    assert version["subresources"] == {"status": {}}
    columns = version["additionalPrinterColumns"]
    for col in columns:
        assert "[-1" not in col["jsonPath"], "select conditions by type, never by position"
    summary = [c for c in columns if f'@.type=="{kind.summary}"' in c["jsonPath"]]
    assert summary, f"a printer column must show the {kind.summary} condition"
    status = version["schema"]["openAPIV3Schema"]["properties"]["status"]["properties"]
    assert {"observedGeneration", "phase", "conditions"} <= set(status)
    conds = status["conditions"]
    assert conds["x-kubernetes-list-type"] == "map"
    assert conds["x-kubernetes-list-map-keys"] == ["type"]


def test_short_names_are_the_designed_ones() -> None:
    assert {k.kind: k.short_names for k in KINDS} == {
        "TrainingJob": ("tj",),
        "ModelDeployment": ("mdep",),
        "DriftMonitor": ("dmon",),
    }


@pytest.mark.parametrize(
    ("node", "expected"),
    [
        ({"anyOf": [{"type": "integer"}, {"type": "null"}], "default": None}, {"type": "integer"}),
        (
            {"type": "number", "exclusiveMinimum": 0.5},
            {"type": "number", "minimum": 0.5, "exclusiveMinimum": True},
        ),
        ({"const": "x", "type": "string"}, {"enum": ["x"], "type": "string"}),
        (
            {"type": "object", "additionalProperties": False, "properties": {}},
            {"type": "object", "properties": {}},
        ),
        ({"title": "T", "type": "string"}, {"type": "string"}),
        ({}, {"x-kubernetes-preserve-unknown-fields": True}),
        (
            {
                "type": "object",
                "additionalProperties": {"type": "string"},
                "propertyNames": {"maxLength": 3},
            },
            {
                "type": "object",
                "additionalProperties": {"type": "string"},
                "x-kubernetes-validations": [
                    {
                        "rule": "self.all(k, k.size() <= 3)",
                        "message": "keys must be at most 3 characters",
                        "reason": "FieldValueInvalid",
                    }
                ],
            },
        ),
    ],
)
def test_structural_translation(node: dict[str, Any], expected: dict[str, Any]) -> None:
    assert crdgen.structural(node) == expected
