"""core/v1 Events about our objects, as the operator posts them. Pure."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from modelworks.conditions import Event
from modelworks.names import MANAGED_BY, REPORTING_CONTROLLER

MESSAGE_LIMIT = 1024  # the API server's bound on an Event's message


def build_event(obj: Mapping[str, Any], event: Event, now: str, instance: str) -> dict[str, Any]:
    """A new Event (a fresh name per post) about ``obj``; ``now`` is RFC 3339."""
    meta = obj["metadata"]
    message = event.message
    if len(message) > MESSAGE_LIMIT:
        message = message[: MESSAGE_LIMIT - 1] + "…"
    return {
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": {"generateName": f"{meta['name']}.", "namespace": meta["namespace"]},
        "involvedObject": {
            "apiVersion": obj["apiVersion"],
            "kind": obj["kind"],
            "name": meta["name"],
            "namespace": meta["namespace"],
            "uid": meta["uid"],
            "resourceVersion": meta.get("resourceVersion", ""),
        },
        "type": event.type,
        "reason": event.reason,
        "message": message,
        "source": {"component": MANAGED_BY},
        "reportingComponent": REPORTING_CONTROLLER,
        "reportingInstance": instance,
        "firstTimestamp": now,
        "lastTimestamp": now,
        "count": 1,
    }
