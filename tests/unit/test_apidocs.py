"""docs/api-reference.md is generated from the API models and must not go stale."""

from __future__ import annotations

from pathlib import Path

from modelworks import apidocs
from modelworks.api import KINDS
from modelworks.api.common import ApiModel

ROOT = Path(__file__).resolve().parents[2]
DOC = ROOT / "docs" / "api-reference.md"


def test_checked_in_reference_is_current() -> None:
    assert DOC.is_file(), "run: python -m modelworks.apidocs --write docs/api-reference.md"
    assert DOC.read_text() == apidocs.render(), (
        "docs/api-reference.md differs from the API models: "
        "python -m modelworks.apidocs --write docs/api-reference.md"
    )


def test_render_is_deterministic() -> None:
    assert apidocs.render() == apidocs.render()


def _rules_of(model: type[ApiModel]) -> list[str]:
    return [r.message for r in model.__rules__]


def test_every_field_and_rule_is_documented() -> None:
    text = apidocs.render()
    for kind in KINDS:
        assert f"## {kind.kind}" in text
        for root, model in (("spec", kind.spec), ("status", kind.status)):
            rows, rules, _ = apidocs.fields(model, root)
            paths = {r.path for r in rows}
            for name, field in model.model_fields.items():
                assert f"{root}.{field.alias or name}" in paths, (kind.kind, name)
            for row in rows:
                assert f"`{row.path}`" in text, row.path
            for located in rules:
                assert located.rule.message in text, located.rule.message
    # Rules declared on nested models are found too (not only the spec's own).
    rows, rules, _ = apidocs.fields(KINDS[1].spec, "spec")
    assert {"exactly one of version or alias must be set", *_rules_of(KINDS[1].spec)} <= {
        r.rule.message for r in rules
    }


def test_field_details() -> None:
    rows, _, _ = apidocs.fields(KINDS[0].spec, "spec")
    by_path = {r.path: r for r in rows}
    replicas = by_path["spec.replicas"]
    assert (replicas.type, replicas.default) == ("integer", "`1`")
    assert "≥ 1" in replicas.constraints and "≤ 1024" in replicas.constraints
    assert by_path["spec.image"].required and not replicas.required
    assert "one of `All`, `Running`, `None`" in by_path["spec.cleanPodPolicy"].constraints
    assert by_path["spec.env"].type == "[]object"
    assert "spec.env[].valueFrom.secretKeyRef.key" in by_path
    assert by_path["spec.resources.limits"].type == "map[string]int-or-string"


def test_cli_check_and_write(tmp_path: Path) -> None:
    out = tmp_path / "api.md"
    assert apidocs.main(["--check", str(out)]) == 1  # missing
    assert apidocs.main(["--write", str(out)]) == 0
    assert apidocs.main(["--check", str(out)]) == 0
    out.write_text(out.read_text() + "edited by hand\n")
    assert apidocs.main(["--check", str(out)]) == 1
