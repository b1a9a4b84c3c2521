"""Table-driven tests of the small pure pieces: conditions, durations, quantities, settings."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest

from modelworks import conditions
from modelworks.api import TRAINING_JOB
from modelworks.api.common import parse_duration
from modelworks.api.quantity import parse_quantity
from modelworks.reconcilers.base import validate
from modelworks.settings import Settings
from modelworks.status.common import not_implemented
from tests.cases import minimal

T0, T1 = "2026-01-01T00:00:00Z", "2026-01-01T00:05:00Z"
READY = {
    "type": "Ready",
    "status": "True",
    "reason": "Up",
    "message": "m",
    "lastTransitionTime": T0,
    "observedGeneration": 1,
}


@pytest.mark.parametrize(
    ("before", "status", "reason", "gen", "expected_time", "expected_len"),
    [
        ([], True, "Up", 1, T1, 1),  # new condition: now
        ([READY], True, "Up", 1, T0, 1),  # unchanged status keeps its transition time
        ([READY], True, "StillUp", 2, T0, 1),  # reason/generation change is no transition
        ([READY], False, "Down", 2, T1, 1),  # status change moves the time
        ([READY], "Unknown", "Lost", 2, T1, 1),
    ],
)
def test_set_condition(
    before: list[dict[str, Any]],
    status: bool | str,
    reason: str,
    gen: int,
    expected_time: str,
    expected_len: int,
) -> None:
    out = conditions.set_condition(before, "Ready", status, reason, "msg", now=T1, generation=gen)
    assert len(out) == expected_len
    cond = conditions.get(out, "Ready")
    assert cond is not None
    assert cond["lastTransitionTime"] == expected_time
    assert cond["reason"] == reason and cond["observedGeneration"] == gen
    assert before == ([] if not before else [READY]), "input must not be mutated"


def test_set_condition_keeps_others_in_order() -> None:
    other = dict(READY, type="Available")
    out = conditions.set_condition([other, READY], "Ready", False, "Down", "", now=T1, generation=1)
    assert [c["type"] for c in out] == ["Available", "Ready"]
    assert conditions.is_true(out, "Available") and not conditions.is_true(out, "Ready")
    assert [c["type"] for c in conditions.remove(out, "Available")] == ["Ready"]


def test_set_condition_refuses_bad_status() -> None:
    with pytest.raises(ValueError, match="True, False or Unknown"):
        conditions.set_condition([], "Ready", "Yes", "R", "", now=T0, generation=None)


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("30s", 30), ("5m", 300), ("1h30m", 5400), ("250ms", 0.25), ("1.5h", 5400), ("2h0m10s", 7210)],
)
def test_parse_duration(text: str, seconds: float) -> None:
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize("text", ["", "5", "5 minutes", "m5", "-1s", "1d"])
def test_parse_duration_refuses(text: str) -> None:
    with pytest.raises(ValueError):
        parse_duration(text)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("500m", Decimal("0.5")),
        ("1", Decimal(1)),
        (2, Decimal(2)),
        ("1Gi", Decimal(2**30)),
        ("1G", Decimal(10**9)),
        ("1e3", Decimal(1000)),
        ("128Mi", Decimal(128 * 2**20)),
        ("0.5", Decimal("0.5")),
    ],
)
def test_parse_quantity(value: int | str, expected: Decimal) -> None:
    assert parse_quantity(value) == expected


@pytest.mark.parametrize("value", ["lots", "1GB", "", "1.2.3", "Gi"])
def test_parse_quantity_refuses(value: str) -> None:
    with pytest.raises(ValueError):
        parse_quantity(value)


@pytest.mark.parametrize(
    ("env", "attr", "expected"),
    [
        ({}, "namespaces", ()),
        ({"MODELWORKS_NAMESPACES": "a, b,"}, "namespaces", ("a", "b")),
        ({"MODELWORKS_RESYNC_SECONDS": "30"}, "resync_seconds", 30.0),
        ({"MLFLOW_TRACKING_URI": "http://m:5000"}, "mlflow_tracking_uri", "http://m:5000"),
        (
            {"MODELWORKS_MLFLOW_TRACKING_URI": "http://a", "MLFLOW_TRACKING_URI": "http://b"},
            "mlflow_tracking_uri",
            "http://a",
        ),
        ({"MLFLOW_TRACKING_URI": "http://m"}, "mlflow_ui_url", "http://m"),
        ({"MODELWORKS_METRICS_PORT": "0"}, "metrics_port", 0),
        ({"MODELWORKS_LOG_LEVEL": "debug"}, "log_level", "DEBUG"),
    ],
)
def test_settings(env: dict[str, str], attr: str, expected: Any) -> None:
    assert getattr(Settings.from_env(env), attr) == expected


@pytest.mark.parametrize(
    ("env", "names"),
    [
        ({"MODELWORKS_RESYNC_SECONDS": "soon"}, "MODELWORKS_RESYNC_SECONDS"),
        ({"MODELWORKS_RESYNC_SECONDS": "0"}, "MODELWORKS_RESYNC_SECONDS"),
        ({"MODELWORKS_METRICS_PORT": "70000"}, "MODELWORKS_METRICS_PORT"),
        ({"MODELWORKS_LOG_FORMAT": "xml"}, "MODELWORKS_LOG_FORMAT"),
        ({"MODELWORKS_IMAGE_PULL_POLICY": "Sometimes"}, "MODELWORKS_IMAGE_PULL_POLICY"),
    ],
)
def test_settings_errors_name_the_variable(env: dict[str, str], names: str) -> None:
    with pytest.raises(ValueError, match=names):
        Settings.from_env(env)


def _with_meta(
    obj: dict[str, Any], generation: int, status: dict[str, Any] | None = None
) -> dict[str, Any]:
    obj["metadata"].update(generation=generation, uid="u1")
    if status is not None:
        obj["status"] = status
    return obj


def test_not_implemented_status_is_stable() -> None:
    obj = _with_meta(minimal("TrainingJob"), 3)
    first = not_implemented(TRAINING_JOB, obj, T0)
    assert first["observedGeneration"] == 3 and first["phase"] == "Pending"
    cond = conditions.get(first["conditions"], "Succeeded")
    assert cond is not None and cond["reason"] == "NotImplemented" and cond["status"] == "False"
    again = not_implemented(TRAINING_JOB, _with_meta(minimal("TrainingJob"), 3, first), T1)
    assert again == first, "a pass that finds nothing new must produce the same status"


def test_invalid_spec_posts_one_event_per_generation() -> None:
    obj = _with_meta(minimal("TrainingJob"), 2)
    obj["spec"]["replicas"] = 0
    spec, outcome = validate(TRAINING_JOB, obj, T0)
    assert spec is None and outcome is not None
    assert outcome.result == "invalid"
    assert [e.reason for e in outcome.events] == ["InvalidSpec"]
    assert "spec.replicas" in outcome.events[0].message
    assert conditions.is_true(outcome.status["conditions"], "Stalled")
    obj["status"] = outcome.status
    _, again = validate(TRAINING_JOB, obj, T1)
    assert again is not None and again.events == [] and again.status == outcome.status
