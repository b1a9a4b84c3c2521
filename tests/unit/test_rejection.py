"""Permanent errors: which refusals are permanent, and the status a refused write makes."""

from __future__ import annotations

from typing import Any

import pytest

from modelworks import conditions
from modelworks.api import DRIFT_MONITOR, MODEL_DEPLOYMENT, TRAINING_JOB, Kind
from modelworks.clients.kube import KubeError
from modelworks.clients.mlflow import TrackingUnavailable
from modelworks.reconcilers.base import classify
from modelworks.status.decision import Decision, rejected

NOW = "2026-01-01T00:00:00Z"
LATER = "2026-01-01T00:05:00Z"


def mlflow_error(code: str, message: str = "refused") -> Exception:
    from mlflow.exceptions import MlflowException
    from mlflow.protos.databricks_pb2 import ErrorCode

    return MlflowException(message, error_code=ErrorCode.Value(code))


@pytest.mark.parametrize(
    ("exc", "reason"),
    [
        (
            KubeError(422, "Invalid", 'Job.batch "x" is invalid: spec.template.spec.x'),
            "ChildRejected",
        ),
        (KubeError(400, "BadRequest", "bad"), "ChildRejected"),
        (KubeError(403, "Forbidden", "jobs is forbidden"), "ChildRejected"),
        (KubeError(404, "NotFound", "namespace gone"), "ChildRejected"),
        (KubeError(409, "Conflict", "apply conflict"), None),
        (KubeError(429, "TooManyRequests", "slow down"), None),
        (KubeError(500, "InternalError", "etcd"), None),
        (KubeError(503, "ServiceUnavailable", "webhook down"), None),
        (KubeError(0, "MaxRetryError", "connection refused"), None),
        (
            mlflow_error("INVALID_PARAMETER_VALUE", "Param value 'xxx' had length 9000"),
            "MLflowRejected",
        ),
        (mlflow_error("RESOURCE_ALREADY_EXISTS"), "MLflowRejected"),
        (mlflow_error("PERMISSION_DENIED"), "MLflowRejected"),
        (mlflow_error("INTERNAL_ERROR"), None),
        (mlflow_error("TEMPORARILY_UNAVAILABLE"), None),
        (TrackingUnavailable("connection refused"), None),
        (ValueError("a defect"), None),
    ],
)
def test_classify(exc: Exception, reason: str | None) -> None:
    out = classify(exc)
    assert (out[0] if out else None) == reason


def test_the_message_is_bounded_and_names_the_field() -> None:
    field = "spec.template.spec.affinity.nodeAffinity: Unsupported value"
    out = classify(KubeError(422, "Invalid", f"{field} {'x' * 5000}"))
    assert out is not None and field in out[1] and len(out[1]) < 600
    long = classify(mlflow_error("INVALID_PARAMETER_VALUE", "Param value " + "y" * 9000))
    assert long is not None and len(long[1]) < 400


def waiting(kind: Kind) -> dict[str, Any]:
    summary = {
        "type": kind.summary,
        "status": "Unknown",
        "reason": "Creating",
        "message": "creating",
        "lastTransitionTime": NOW,
        "observedGeneration": 1,
    }
    return {"observedGeneration": 1, "phase": "Pending", "conditions": [summary]}


@pytest.mark.parametrize("kind", [TRAINING_JOB, MODEL_DEPLOYMENT, DRIFT_MONITOR])
def test_a_refused_write_is_a_failed_summary_once(kind: Kind) -> None:
    decided: Decision[Any] = Decision(status=waiting(kind), requeue_after=1.0)
    first = rejected(kind, {}, decided, "ChildRejected", "422 Invalid: spec.x", NOW)
    summary = conditions.get(first.status["conditions"], kind.summary)
    assert summary is not None
    assert (summary["status"], summary["reason"]) == ("False", "ChildRejected")
    assert first.status["phase"] == "Failed"
    assert first.requeue_after is None and first.result == "rejected"
    assert [(e.reason, e.type) for e in first.events] == [("ChildRejected", "Warning")]
    # refused alike at the next pass: the same status (transition time kept), no new Event
    again = rejected(kind, first.status, decided, "ChildRejected", "422 Invalid: spec.x", LATER)
    assert again.status == first.status
    assert again.events == []


def test_the_decisions_news_is_dropped_when_its_writes_were_refused() -> None:
    from modelworks.conditions import Event

    decided: Decision[Any] = Decision(
        status=waiting(TRAINING_JOB), events=[Event("Created", "created the Job", "Normal")]
    )
    out = rejected(TRAINING_JOB, {}, decided, "MLflowRejected", "too long", NOW)
    assert [e.reason for e in out.events] == ["MLflowRejected"]
