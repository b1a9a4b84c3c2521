"""Reconcile a DRIFT_MONITOR: observe, build, apply, compute status."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from modelworks.api import DRIFT_MONITOR
from modelworks.clients.kube import Kube
from modelworks.clients.mlflow import Registry
from modelworks.reconcilers.base import validate
from modelworks.reconcilers.outcome import Outcome
from modelworks.status.common import not_implemented


def reconcile(
    obj: Mapping[str, Any], *, kube: Kube, registry: Registry, now: str, **_: Any
) -> Outcome:
    _spec, refused = validate(DRIFT_MONITOR, obj, now)
    if refused is not None:
        return refused
    return Outcome(status=not_implemented(DRIFT_MONITOR, obj, now), result="not-implemented")
