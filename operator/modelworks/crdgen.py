"""Generate the CustomResourceDefinitions in ``crds/`` from the pydantic API models.

pydantic emits JSON Schema (draft 2020-12, with ``$ref``/``$defs`` and ``anyOf`` for
optionals); Kubernetes wants a *structural* OpenAPI v3.0 schema: every node typed,
no references, no ``additionalProperties`` next to ``properties``. :func:`structural`
does that translation; everything else here is the CRD's frame (names, printer
columns, subresources). ``python -m modelworks crds --write`` rewrites ``crds/``;
the test suite fails when the checked-in files differ from what this produces.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import yaml

from modelworks.api import CATEGORY, GROUP, KINDS, VERSION, Kind
from modelworks.names import MANAGED_BY, PART_OF_LABEL

_DROP = {"title", "examples", "$defs"}


def _resolve(node: Any, defs: dict[str, Any]) -> Any:
    """Inline every ``$ref`` (pydantic's models never recurse, so this terminates)."""
    if isinstance(node, list):
        return [_resolve(n, defs) for n in node]
    if not isinstance(node, dict):
        return node
    if "$ref" in node:
        target = copy.deepcopy(defs[node["$ref"].split("/")[-1]])
        siblings = {k: v for k, v in node.items() if k != "$ref"}
        merged = {**_resolve(target, defs), **_resolve(siblings, defs)}
        return merged
    return {k: _resolve(v, defs) for k, v in node.items()}


def _collapse_optional(node: dict[str, Any]) -> dict[str, Any]:
    """``anyOf: [X, null]`` with outer keys -> X merged with the outer keys."""
    branches = node.get("anyOf")
    if not branches:
        return node
    non_null = [b for b in branches if b != {"type": "null"}]
    if len(non_null) == len(branches) or len(non_null) != 1:
        return node
    outer = {k: v for k, v in node.items() if k != "anyOf"}
    if outer.get("default", 0) is None:
        del outer["default"]
    return {**non_null[0], **outer}


def _key_rule(names: dict[str, Any]) -> dict[str, Any]:
    """Map-key constraints (JSON Schema propertyNames) as a CEL rule."""
    checks = []
    if "maxLength" in names:
        checks.append(f"k.size() <= {names['maxLength']}")
    if "pattern" in names:
        checks.append(f"k.matches(r'{names['pattern']}')")
    return {
        "rule": "self.all(k, " + " && ".join(checks or ["true"]) + ")",
        "message": "keys must"
        + (f" match {names['pattern']}" if "pattern" in names else "")
        + (" and" if len(checks) == 2 else "")
        + (f" be at most {names['maxLength']} characters" if "maxLength" in names else ""),
        "reason": "FieldValueInvalid",
    }


def structural(node: Any) -> Any:
    """Turn a resolved pydantic schema node into a structural Kubernetes schema node."""
    if isinstance(node, list):
        return [structural(n) for n in node]
    if not isinstance(node, dict):
        return node
    node = _collapse_optional(node)
    out: dict[str, Any] = {}
    key_constraints: dict[str, Any] = {}
    for key, value in node.items():
        if key in _DROP:
            continue
        if key == "additionalProperties" and value is False:
            continue  # unknown fields are pruned by the API server anyway
        if key == "default" and value is None:
            continue
        if key in ("exclusiveMinimum", "exclusiveMaximum") and not isinstance(value, bool):
            out["minimum" if key == "exclusiveMinimum" else "maximum"] = value
            out[key] = True
            continue
        if key == "const":
            out["enum"] = [value]
            continue
        if key == "patternProperties":  # constrained map keys: pattern; the values' schema
            key_constraints["pattern"], values = next(iter(value.items()))
            if "additionalProperties" not in node:
                out["additionalProperties"] = structural(values)
            continue
        if key == "propertyNames":  # constrained map keys: length
            key_constraints.update(value)
            continue
        if key in ("properties",):
            out[key] = {name: structural(sub) for name, sub in value.items()}
            continue
        out[key] = structural(value)
    untyped_values = out.get("additionalProperties") == {
        "x-kubernetes-preserve-unknown-fields": True
    }
    if key_constraints and not untyped_values:  # CEL cannot compile rules on untyped maps
        out.setdefault("x-kubernetes-validations", []).append(_key_rule(key_constraints))
    if out.get("x-kubernetes-int-or-string"):
        out.pop("type", None)
    elif not out.get("x-kubernetes-preserve-unknown-fields") and "type" not in out:
        if "properties" in out or "additionalProperties" in out:
            out["type"] = "object"
        elif "items" in out:
            out["type"] = "array"
        elif out == {} or set(out) <= {"description", "default"}:
            out["x-kubernetes-preserve-unknown-fields"] = True
    return out


def model_schema(model: type[Any]) -> dict[str, Any]:
    raw = model.model_json_schema(by_alias=True, mode="validation")
    defs = raw.pop("$defs", {})
    return structural(_resolve(raw, defs))  # type: ignore[no-any-return]


def _name_rule(kind: Kind) -> dict[str, Any]:
    return {
        "rule": f"self.metadata.name.size() <= {kind.max_name_length} && "
        f"self.metadata.name.matches('{kind.name_pattern}')",
        "message": f"metadata.name must be a DNS-1035 label (lower-case letters, digits and '-', "
        f"starting with a letter) of at most {kind.max_name_length} characters",
        "reason": "FieldValueInvalid",
    }


def crd(kind: Kind) -> dict[str, Any]:
    """The CustomResourceDefinition of one kind."""
    spec = model_schema(kind.spec)
    status = model_schema(kind.status)
    status["description"] = f"The observed state of the {kind.kind}, written by the operator."
    root: dict[str, Any] = {
        "type": "object",
        "description": spec.pop("description", kind.kind),
        "required": ["spec"],
        "properties": {
            "apiVersion": {"type": "string"},
            "kind": {"type": "string"},
            "metadata": {"type": "object"},
            "spec": {"description": "The desired state.", **spec},
            "status": status,
        },
        "x-kubernetes-validations": [_name_rule(kind)],
    }
    version: dict[str, Any] = {
        "name": VERSION,
        "served": True,
        "storage": True,
        "subresources": {"status": {}},
        "additionalPrinterColumns": kind.printer_columns,
        "schema": {"openAPIV3Schema": root},
    }
    if "model" in spec.get("properties", {}):
        version["selectableFields"] = [{"jsonPath": ".spec.model.name"}]
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {
            "name": f"{kind.plural}.{GROUP}",
            "labels": {PART_OF_LABEL: MANAGED_BY},
        },
        "spec": {
            "group": GROUP,
            "scope": "Namespaced",
            "names": {
                "kind": kind.kind,
                "listKind": f"{kind.kind}List",
                "plural": kind.plural,
                "singular": kind.singular,
                "shortNames": list(kind.short_names),
                "categories": [CATEGORY],
            },
            "versions": [version],
        },
    }


HEADER = "# Generated by `make crds` (python -m modelworks crds --write) from operator/modelworks/api.\n# Do not edit by hand: CI fails when this file differs from the models.\n"


def render(kind: Kind) -> str:
    return HEADER + yaml.safe_dump(crd(kind), sort_keys=False, width=100)


def files() -> dict[str, str]:
    """File name -> content for every CRD."""
    return {f"{GROUP}_{k.plural}.yaml": render(k) for k in KINDS}


def write(directory: Path) -> list[Path]:
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for name, text in files().items():
        path = directory / name
        path.write_text(text)
        written.append(path)
    return written


def stale(directory: Path) -> list[str]:
    """Names of the CRD files in ``directory`` that differ from the models (or are missing)."""
    return [
        name
        for name, text in files().items()
        if not (directory / name).is_file() or (directory / name).read_text() != text
    ]
