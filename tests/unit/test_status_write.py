"""Status is stored whole: the merge patch the operator sends turns the old status into the
new one at every depth, and every kind's status model refuses what it does not know."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from modelworks.api import KINDS, MODEL_DEPLOYMENT
from modelworks.status.common import StatusInvalid, merge_patch, typed


def apply(target: Any, patch: Any) -> Any:
    """RFC 7386, section 2: what the API server does with a JSON merge patch."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    out = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            out.pop(key, None)
        else:
            out[key] = apply(out.get(key), value)
    return out


CANARY_STEP_1 = {"version": "2", "step": 1, "weight": 20, "stepStarted": "2026-01-01T00:00:00Z"}
CANARY_STEP_2 = {"version": "2", "step": 2, "weight": 50}  # its pause has not begun yet


@pytest.mark.parametrize(
    ("name", "old", "new", "expected"),
    [
        ("equal", {"a": {"b": 1}}, {"a": {"b": 1}}, {}),
        ("top-level key gone", {"a": 1, "b": 2}, {"a": 1}, {"b": None}),
        (
            "nested key gone: the next canary step has not started its pause",
            {"phase": "Progressing", "canary": CANARY_STEP_1},
            {"phase": "Progressing", "canary": CANARY_STEP_2},
            {"canary": {"step": 2, "weight": 50, "stepStarted": None}},
        ),
        (
            "alias gone after switching to a pinned version",
            {"resolved": {"version": "3", "alias": "champion"}},
            {"resolved": {"version": "3"}},
            {"resolved": {"alias": None}},
        ),
        ("three levels deep", {"a": {"b": {"c": 1, "d": 2}}}, {"a": {"b": {"c": 1}}}, None),
        ("object replaces a scalar", {"a": 1}, {"a": {"b": 1}}, {"a": {"b": 1}}),
        ("scalar replaces an object", {"a": {"b": 1}}, {"a": 2}, {"a": 2}),
        ("lists are replaced whole", {"a": [1, 2]}, {"a": [2]}, {"a": [2]}),
        ("from nothing", {}, {"a": {"b": [1]}}, {"a": {"b": [1]}}),
        ("falsy values are values", {"a": 1}, {"a": 0}, {"a": 0}),
    ],
)
def test_merge_patch_stores_exactly_the_new_status(
    name: str, old: dict[str, Any], new: dict[str, Any], expected: dict[str, Any] | None
) -> None:
    patch = merge_patch(old, new)
    if expected is not None:
        assert patch == expected
    assert apply(old, patch) == new


@pytest.mark.parametrize("kind", KINDS, ids=lambda k: k.kind)
def test_status_models_refuse_unknown_keys(kind: Any) -> None:
    with pytest.raises(StatusInvalid, match="does not fit"):
        typed(kind, {"observedGeneration": 1, "stepStarted": "2026-01-01T00:00:00Z"})


def test_a_status_the_model_would_change_is_refused() -> None:
    with pytest.raises(StatusInvalid, match="changes when typed"):
        typed(MODEL_DEPLOYMENT, {"observedGeneration": 1, "resolved": {"version": None}})


def test_a_typed_status_round_trips() -> None:
    status = {"observedGeneration": 2, "phase": "Progressing", "canary": CANARY_STEP_1}
    assert typed(MODEL_DEPLOYMENT, status) == status
