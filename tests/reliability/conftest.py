"""Fixtures of the reliability tier (crash points, misoperations). Other fault tiers keep
their own fixtures in their own modules."""

from __future__ import annotations

import pytest

from tests.support import Cluster, MlflowServer


@pytest.fixture
def world(crds: Cluster, mlflow: MlflowServer, namespace: str) -> tuple[Cluster, str, str]:
    """The cluster, the MLflow URI and a fresh namespace for one life."""
    return crds, mlflow.uri, namespace
