"""The Events the operator posts, with plain data."""

from __future__ import annotations

from modelworks.builders.events import MESSAGE_LIMIT, build_event
from modelworks.conditions import Event

OBJ = {
    "apiVersion": "modelworks.dev/v1alpha1",
    "kind": "ModelDeployment",
    "metadata": {"name": "churn", "namespace": "ml", "uid": "u-1", "resourceVersion": "42"},
}


def test_event_names_its_object_and_reporter() -> None:
    ev = build_event(
        OBJ, Event("Promoted", "version 2 serves", "Normal"), "2026-01-01T00:00:00Z", "pod-a"
    )
    assert ev["metadata"] == {"generateName": "churn.", "namespace": "ml"}
    assert ev["involvedObject"] == {
        "apiVersion": "modelworks.dev/v1alpha1",
        "kind": "ModelDeployment",
        "name": "churn",
        "namespace": "ml",
        "uid": "u-1",
        "resourceVersion": "42",
    }
    assert (ev["type"], ev["reason"], ev["message"]) == ("Normal", "Promoted", "version 2 serves")
    assert ev["reportingInstance"] == "pod-a"
    assert ev["firstTimestamp"] == ev["lastTimestamp"] == "2026-01-01T00:00:00Z"


def test_a_long_message_is_cut_to_the_limit() -> None:
    ev = build_event(OBJ, Event("X", "m" * 5000, "Warning"), "2026-01-01T00:00:00Z", "pod-a")
    assert len(ev["message"]) == MESSAGE_LIMIT
    assert ev["message"].endswith("…")
