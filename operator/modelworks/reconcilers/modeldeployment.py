"""Reconcile a MODEL_DEPLOYMENT: observe, build, apply, compute status."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from modelworks.api import MODEL_DEPLOYMENT
from modelworks.clients.kube import Kube
from modelworks.clients.mlflow import Registry
from modelworks.reconcilers.base import validate
from modelworks.reconcilers.outcome import Outcome
from modelworks.status.common import not_implemented


def reconcile(obj: Mapping[str, Any], *, kube: Kube, registry: Registry, now: str) -> Outcome:
    _spec, refused = validate(MODEL_DEPLOYMENT, obj, now)
    if refused is not None:
        return refused
    return Outcome(status=not_implemented(MODEL_DEPLOYMENT, obj, now), result="not-implemented")
