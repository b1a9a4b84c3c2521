"""Parse an object's spec into its model; errors come back naming the field."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

from pydantic import ValidationError

from modelworks.api import Kind
from modelworks.api.common import ApiModel


def field_path(parts: Sequence[str | int]) -> str:
    """Kubernetes-style path: ``spec.rollout.steps[0].weight``."""
    out = ""
    for part in parts:
        if isinstance(part, int):
            out += f"[{part}]"
        elif not part.startswith(("function-", "[key]")):  # pydantic's own markers
            out += f".{part}" if out else part
    return out


def parse_spec(kind: Kind, obj: Mapping[str, Any]) -> tuple[ApiModel | None, list[str]]:
    """``(spec, [])`` when the spec is valid, else ``(None, ["spec.field: reason", ...])``."""
    errors: list[str] = []
    name = str((obj.get("metadata") or {}).get("name", ""))
    if len(name) > kind.max_name_length or not re.fullmatch(kind.name_pattern, name):
        errors.append(
            f"metadata.name: must be a DNS-1035 label of at most {kind.max_name_length} "
            f"characters, not {name!r}"
        )
    try:
        spec = kind.spec.model_validate(obj.get("spec") or {})
    except ValidationError as exc:
        for err in exc.errors():
            field = str((err.get("ctx") or {}).get("field", "")).lstrip(".")
            path = field_path(("spec", *err["loc"], *([field] if field else [])))
            msg = str(err["msg"]).removeprefix("Value error, ")
            errors.append(f"{path}: {msg}")
        return None, errors
    return (None, errors) if errors else (spec, [])
