"""What a deleted object leaves to clean up outside Kubernetes. Pure.

Kubernetes' garbage collector removes a deleted TrainingJob's Job and pods; the MLflow
run it opened is not a Kubernetes object, so a run still open when its TrainingJob goes
would stay RUNNING for ever. The operator ends it as KILLED, once, best effort.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

FINAL_PHASES = ("Succeeded", "Failed")
KILLED = "KILLED"


def run_left_open(body: Mapping[str, Any]) -> str | None:
    """The MLflow run a deleted TrainingJob leaves open, or None."""
    status = body.get("status") or {}
    if status.get("phase") in FINAL_PHASES:
        return None
    run_id = (status.get("mlflow") or {}).get("runId")
    return str(run_id) if run_id else None
