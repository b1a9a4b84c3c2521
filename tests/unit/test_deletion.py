"""The MLflow run a deleted TrainingJob leaves open."""

from __future__ import annotations

from typing import Any

import pytest

from modelworks.status.deletion import run_left_open

CASES: list[tuple[str, dict[str, Any], str | None]] = [
    ("running", {"status": {"phase": "Running", "mlflow": {"runId": "r1"}}}, "r1"),
    ("pending with a run", {"status": {"phase": "Pending", "mlflow": {"runId": "r1"}}}, "r1"),
    ("suspended", {"status": {"phase": "Suspended", "mlflow": {"runId": "r1"}}}, "r1"),
    ("succeeded", {"status": {"phase": "Succeeded", "mlflow": {"runId": "r1"}}}, None),
    ("failed", {"status": {"phase": "Failed", "mlflow": {"runId": "r1"}}}, None),
    ("no run yet", {"status": {"phase": "Pending"}}, None),
    ("no status", {}, None),
]


@pytest.mark.parametrize(("body", "want"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_run_left_open(body: dict[str, Any], want: str | None) -> None:
    assert run_left_open(body) == want
