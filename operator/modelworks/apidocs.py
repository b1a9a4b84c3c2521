"""API reference in Markdown, generated from the pydantic models in ``modelworks.api``.

One section per kind: its names, every spec and status field (flattened to a path such
as ``spec.rollout.steps[].weight``) with type, default, bounds, enum and description,
and every cross-field rule with its message (the CEL rule the API server enforces, or a
note that only the operator can check it). :func:`render` is pure; the checked-in
``docs/api-reference.md`` is its output and a unit test fails when the two differ:

    python -m modelworks.apidocs --write docs/api-reference.md
    python -m modelworks.apidocs --check docs/api-reference.md
"""

from __future__ import annotations

import argparse
import json
import sys
import typing
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from modelworks.api import API_VERSION, CATEGORY, KINDS, Kind
from modelworks.api.common import Rule

TITLE = "# Modelworks API reference"
INTRO = f"""\
Generated from the API models in `operator/modelworks/api` by
`python -m modelworks.apidocs --write docs/api-reference.md`; do not edit by hand (a
unit test fails when this file differs from the models). The CRDs in `crds/` come from
the same models, so what is written here is what `kubectl apply` enforces.

Group and version: `{API_VERSION}`. `kubectl get {CATEGORY}` lists all kinds.
`kubectl explain <kind>.spec --recursive` shows the same fields from a cluster.

Conventions: a field path ends in `[]` for the items of a list and in `{{}}` for the
values of a map; *required* marks a field that must be set; `≥`/`≤` bounds are inclusive,
`>`/`<` exclusive. Status is written by the operator only.
"""


# ---------------------------------------------------------------------------
# Schema walking
# ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Row:
    """One field of the flattened tree."""

    path: str
    type: str
    required: bool
    default: str
    constraints: str
    description: str


@dataclass(frozen=True)
class Located:
    """A rule of a model, and the path of the object it is declared on."""

    path: str
    rule: Rule


def _model_classes(root: type[BaseModel]) -> dict[str, type[BaseModel]]:
    """Every model reachable from ``root``'s fields, by class name (pydantic's $defs keys)."""
    found: dict[str, type[BaseModel]] = {}

    def visit(annotation: Any) -> None:
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            if annotation.__name__ in found:
                return
            found[annotation.__name__] = annotation
            for field in annotation.model_fields.values():
                visit(field.annotation)
            return
        for arg in typing.get_args(annotation):
            visit(arg)

    visit(root)
    return found


def _strip_optional(node: dict[str, Any]) -> dict[str, Any]:
    """``anyOf: [X, null]`` with outer keys -> X with the outer keys (outer ones win)."""
    branches = node.get("anyOf")
    if not branches:
        return node
    real = [b for b in branches if b != {"type": "null"}]
    if len(real) != 1 or len(real) == len(branches):
        return node
    outer = {k: v for k, v in node.items() if k != "anyOf"}
    return {**real[0], **outer}


def _ref_name(node: dict[str, Any]) -> str | None:
    ref = node.get("$ref")
    return str(ref).rsplit("/", 1)[-1] if ref else None


def _type_of(node: dict[str, Any], defs: dict[str, Any]) -> str:
    node = _strip_optional(node)
    name = _ref_name(node)
    if name:
        return "object" if "properties" in defs.get(name, {}) else _type_of(defs[name], defs)
    if node.get("x-kubernetes-int-or-string"):
        return "int-or-string"
    kind = node.get("type")
    if node.get("x-kubernetes-preserve-unknown-fields"):
        return "object (free-form)" if kind == "object" else "any"
    if kind == "array":
        return "[]" + _type_of(node.get("items") or {}, defs)
    if kind == "object" or ("additionalProperties" in node and "properties" not in node):
        values = node.get("additionalProperties")
        if isinstance(values, dict):
            return "map[string]" + _type_of(values, defs)
        if "properties" in node:
            return "object"
        return "map[string]any"
    if "anyOf" in node:
        return " or ".join(_type_of(b, defs) for b in node["anyOf"])
    if "const" in node:
        return "string" if isinstance(node["const"], str) else type(node["const"]).__name__
    if isinstance(kind, str):
        return kind
    return "any"


def _code(text: str, *, table: bool = True) -> str:
    """A code span; in a table cell a pipe must be escaped (GitHub renders the escape away)."""
    return "`" + (text.replace("|", "\\|") if table else text) + "`"


def _constraints(node: dict[str, Any]) -> str:
    node = _strip_optional(node)
    parts = _own_constraints(node)
    items = node.get("items") if node.get("type") == "array" else None
    if isinstance(items, dict) and not _ref_name(items):
        inner = _own_constraints(items)
        if inner:
            parts.append("each item: " + ", ".join(inner))
    values = node.get("additionalProperties")
    if isinstance(values, dict) and not _ref_name(values):
        inner = _own_constraints(values)
        if inner:
            parts.append("each value: " + ", ".join(inner))
    return "; ".join(parts)


def _own_constraints(node: dict[str, Any]) -> list[str]:
    if node.get("x-kubernetes-int-or-string"):
        return ["a quantity such as `500m`, `2Gi` or `1`"]
    parts: list[str] = []
    enum = node.get("enum")
    if enum is None and "const" in node:
        enum = [node["const"]]
    if enum is not None:
        parts.append("one of " + ", ".join(_code(str(v)) for v in enum))
    for key, what in (
        ("minimum", "≥"),
        ("exclusiveMinimum", ">"),
        ("maximum", "≤"),
        ("exclusiveMaximum", "<"),
        ("minLength", "length ≥"),
        ("maxLength", "length ≤"),
        ("minItems", "items ≥"),
        ("maxItems", "items ≤"),
        ("minProperties", "entries ≥"),
        ("maxProperties", "entries ≤"),
    ):
        if key in node:
            parts.append(f"{what} {node[key]}")
    if "pattern" in node:
        parts.append("pattern " + _code(node["pattern"]))
    keys = node.get("propertyNames") or {}
    key_patterns = list((node.get("patternProperties") or {}).keys())
    if key_patterns:
        parts.append("keys match " + _code(key_patterns[0]))
    if "maxLength" in keys:
        parts.append(f"keys of length ≤ {keys['maxLength']}")
    if node.get("x-kubernetes-list-type") == "map":
        keys_of = ", ".join(node.get("x-kubernetes-list-map-keys") or [])
        parts.append(f"a map list keyed by {_code(keys_of)} (merged by key)")
    return parts


def _default(node: dict[str, Any]) -> str:
    if "default" not in node or node["default"] is None:
        return ""
    return _code(json.dumps(node["default"]))


def _description(node: dict[str, Any], defs: dict[str, Any]) -> str:
    text = node.get("description")
    if not text:
        name = _ref_name(_strip_optional(node))
        text = defs.get(name, {}).get("description") if name else None
    if not text:
        items = _strip_optional(node).get("items")
        if isinstance(items, dict):
            name = _ref_name(items)
            text = defs.get(name, {}).get("description") if name else items.get("description")
    return " ".join(str(text or "").split()).replace("|", "\\|")


def _walk(
    properties: dict[str, Any],
    required: Sequence[str],
    prefix: str,
    defs: dict[str, Any],
    models: dict[str, type[BaseModel]],
    rules: list[Located],
) -> Iterator[Row]:
    for name, raw in properties.items():
        node = _strip_optional(raw)
        path = f"{prefix}.{name}"
        yield Row(
            path=path,
            type=_type_of(node, defs),
            required=name in required,
            default=_default(raw),
            constraints=_constraints(node),
            description=_description(raw, defs),
        )
        yield from _children(node, path, defs, models, rules)


def _children(
    node: dict[str, Any],
    path: str,
    defs: dict[str, Any],
    models: dict[str, type[BaseModel]],
    rules: list[Located],
) -> Iterator[Row]:
    node = _strip_optional(node)
    name = _ref_name(node)
    if name:
        target = defs[name]
        if name in models:
            rules.extend(Located(path, r) for r in getattr(models[name], "__rules__", ()))
        if "properties" in target:
            yield from _walk(
                target["properties"], target.get("required", []), path, defs, models, rules
            )
        return
    if node.get("type") == "array" and isinstance(node.get("items"), dict):
        yield from _children(node["items"], path + "[]", defs, models, rules)
    values = node.get("additionalProperties")
    if isinstance(values, dict) and (_ref_name(values) or values.get("type") == "array"):
        yield from _children(values, path + "{}", defs, models, rules)


def fields(model: type[BaseModel], root: str) -> tuple[list[Row], list[Located], dict[str, Any]]:
    """The flattened fields of ``model`` under ``root``, the rules met on the way, the schema."""
    schema = model.model_json_schema(by_alias=True, mode="validation")
    defs = schema.get("$defs", {})
    models = _model_classes(model)
    rules = [Located(root, r) for r in getattr(model, "__rules__", ())]
    rows = list(
        _walk(schema.get("properties", {}), schema.get("required", []), root, defs, models, rules)
    )
    return rows, rules, schema


# ---------------------------------------------------------------------------
# Markdown
# ---------------------------------------------------------------------------


def _table(rows: list[Row]) -> list[str]:
    out = [
        "| Field | Type | Default | Constraints | Description |",
        "| --- | --- | --- | --- | --- |",
    ]
    for row in rows:
        field = _code(row.path) + (" *required*" if row.required else "")
        out.append(
            f"| {field} | {_code(row.type)} | {row.default} | {row.constraints} | {row.description} |"
        )
    return out


def _rules(located: list[Located]) -> list[str]:
    out: list[str] = []
    for item in located:
        rule = item.rule
        where = item.path + rule.field
        if rule.cel:
            out.append(f"- {_code(where, table=False)}: {rule.message}.")
            out.append(
                f"  CEL on {_code(item.path, table=False)} ({rule.reason}): "
                + _code(rule.cel, table=False)
            )
        else:
            out.append(
                f"- {_code(where, table=False)}: {rule.message}. Checked by the operator only "
                "(not expressible in CEL): the object is accepted and reported with `InvalidSpec`."
            )
    return out


def _anchor(kind: Kind) -> str:
    return kind.kind.lower()


def render_kind(kind: Kind) -> str:
    spec_rows, spec_rules, spec_schema = fields(kind.spec, "spec")
    status_rows, _, _ = fields(kind.status, "status")
    lines = [f"## {kind.kind}", ""]
    if spec_schema.get("description"):
        lines += [" ".join(spec_schema["description"].split()), ""]
    lines += [
        f"- `apiVersion: {API_VERSION}`, `kind: {kind.kind}`, namespaced",
        f"- Names: plural `{kind.plural}`, singular `{kind.singular}`, short "
        + ", ".join(f"`{s}`" for s in kind.short_names)
        + f", category `{CATEGORY}`",
        f"- `metadata.name`: a DNS-1035 label of at most {kind.max_name_length} characters "
        f"(pattern {_code(kind.name_pattern)})",
        f"- Summary condition: `{kind.summary}` "
        f"(`kubectl wait --for=condition={kind.summary} {kind.singular}/<name>`)",
        "",
        "### Spec",
        "",
        *_table(spec_rows),
        "",
        "### Validation rules",
        "",
        "Cross-field rules, enforced by the API server (CEL `x-kubernetes-validations`, so "
        "`kubectl apply` names the field) and again by the operator.",
        "",
        *(_rules(spec_rules) or ["None."]),
        "",
        "### Status",
        "",
        "Conditions follow `metav1.Condition`, one per `type`; the summary condition is "
        f"`{kind.summary}`.",
        "",
        *_table(status_rows),
        "",
        "### Printer columns",
        "",
        "| Column | JSONPath | Shown |",
        "| --- | --- | --- |",
    ]
    for column in kind.printer_columns:
        shown = "with `-o wide`" if column.get("priority") else "always"
        lines.append(f"| {column['name']} | {_code(column['jsonPath'])} | {shown} |")
    return "\n".join(lines) + "\n"


def render() -> str:
    """The whole reference, deterministic: the same models give the same bytes."""
    toc = [f"- [{k.kind}](#{_anchor(k)})" for k in KINDS]
    parts = [TITLE, "", INTRO, *toc, ""]
    for kind in KINDS:
        parts.append(render_kind(kind))
    return "\n".join(parts).rstrip("\n") + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m modelworks.apidocs", description=__doc__)
    mode = parser.add_mutually_exclusive_group(required=True)
    mode.add_argument("--write", metavar="FILE", type=Path, help="write the reference to FILE")
    mode.add_argument(
        "--check", metavar="FILE", type=Path, help="exit 1 when FILE differs from the models"
    )
    args = parser.parse_args(argv)
    text = render()
    if args.write is not None:
        args.write.parent.mkdir(parents=True, exist_ok=True)
        args.write.write_text(text)
        print(f"wrote {args.write}")
        return 0
    path: Path = args.check
    if not path.is_file() or path.read_text() != text:
        print(f"{path} is stale: run python -m modelworks.apidocs --write {path}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
