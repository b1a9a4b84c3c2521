"""Crash at every write point (Sieve-style): each kind's whole life, killed right after
its Nth write to the API server or MLflow, then finished by a fresh operator.

A clean life counts the writes (W). For each N in 1..W a new life in a new namespace is
killed right after write N (``Crash`` from the client wrappers: every in-memory thing is
dropped), a new operator (new Controller, new clients, empty memory) runs it to the end,
and the end state must be exactly the clean one: one run, one Job, one version, the
alias on it, no orphans, a status that tells the truth.

The TrainingJob matrix runs in ``make test``; the ModelDeployment and DriftMonitor
matrices run under ``make chaos`` (marker ``chaos``), with a slice of each in ``make test``.
"""

from __future__ import annotations

import time
from collections import Counter
from typing import Any, Protocol

import pytest

from tests.reliability.scenarios import DriftLife, ServingLife, TrainingLife
from tests.reliability.wrappers import (
    Crash,
    Faults,
    apiserver_writes,
    client_writes,
    incarnation,
    live,
    mlflow_requests,
)
from tests.support import Cluster, MlflowServer

pytestmark = pytest.mark.integration

# Writes of one clean life; test_clean_* fail when they change (update them, and the
# figures in docs/reliability.md).
TJ_WRITES = 18
MD_WRITES = 12
DM_WRITES = 4
LIFE_TIMEOUT = {"TrainingJob": 120.0, "ModelDeployment": 240.0, "DriftMonitor": 60.0}
SLICE = 3  # crash points of the chaos-only matrices that also run in make test


class Scenario(Protocol):
    def start(self) -> None: ...
    def life(self) -> Any: ...
    def check(self) -> None: ...


def crash_then_recover(
    cluster: Cluster, uri: str, ns: str, scenario: Scenario, kind: str, crash_at: int | None
) -> tuple[Faults, Faults]:
    """One life killed after write ``crash_at`` (None: never), then finished by a new
    operator; the faults (writes) of both incarnations."""
    scenario.start()
    first, second = Faults(crash_at), Faults()
    life = scenario.life()
    kinds, clock = getattr(scenario, "kinds", ()), getattr(scenario, "clock", None)
    with incarnation(cluster.kubeconfig, uri, ns, first, kinds, clock) as op:
        try:
            live(op, life, LIFE_TIMEOUT[kind])
            settle(op)
        except Crash:
            pass
    with incarnation(cluster.kubeconfig, uri, ns, second, kinds, clock) as op:
        live(op, life, LIFE_TIMEOUT[kind])
        settle(op)
    scenario.check()
    if crash_at is not None:
        assert first.fired, f"the life ended after {first.count} writes, before write {crash_at}"
    return first, second


def settle(op: Any, seconds: float = 3.0) -> None:
    """Passes for a few more seconds: what a life writes after its end state counts too."""
    until = time.monotonic() + seconds
    while time.monotonic() < until:
        op.tick()


def points(writes: int, chaos_from: int | None = None) -> list[Any]:
    """1..writes; those from ``chaos_from`` on run only under ``make chaos``."""
    return [
        pytest.param(n, marks=pytest.mark.chaos) if chaos_from and n >= chaos_from else n
        for n in range(1, writes + 1)
    ]


def spread(writes: int, known: dict[int, str] | None = None) -> list[Any]:
    """Every crash point; a slice of ``SLICE`` spread over the life runs in make test.
    ``known``: crash points that fail on a defect another branch fixes (strict xfail)."""
    chosen = {round(i * (writes - 1) / (SLICE - 1)) + 1 for i in range(SLICE)}
    out = []
    for n in range(1, writes + 1):
        marks = [] if n in chosen else [pytest.mark.chaos]
        if known and n in known:
            marks.append(pytest.mark.xfail(strict=True, reason=known[n]))
        out.append(pytest.param(n, marks=marks))
    return out


# --- TrainingJob -------------------------------------------------------------------------

OPERATOR_ONLY_MLFLOW = {  # endpoints the trainer never calls: the operator's writes alone
    "POST /api/2.0/mlflow/experiments/create": "mlflow create_experiment",
    "POST /api/2.0/mlflow/runs/create": "mlflow create_run",
    "POST /api/2.0/mlflow/registered-models/create": "mlflow create_registered_model",
    "POST /api/2.0/mlflow/model-versions/create": "mlflow create_model_version",
    "POST /api/2.0/mlflow/registered-models/alias": "mlflow set_registered_model_alias",
}


def test_clean_trainingjob_life_counts_its_writes(
    world: tuple[Cluster, str, str], mlflow: MlflowServer
) -> None:
    cluster, uri, ns = world
    log = mlflow.root / "mlflow-server.log"
    api_before, mlflow_before = apiserver_writes(cluster.kubectl), mlflow_requests(log)
    first, second = crash_then_recover(
        cluster, uri, ns, TrainingLife(cluster, uri, ns), "TrainingJob", None
    )
    api = apiserver_writes(cluster.kubectl) - api_before
    seen = mlflow_requests(log) - mlflow_before
    ours = client_writes(first)
    assert first.count == TJ_WRITES, "\n".join(first.writes)
    assert second.count == 0, second.writes  # a settled life: the next operator writes nothing
    for endpoint, call in OPERATOR_ONLY_MLFLOW.items():
        assert seen[endpoint] == ours[call] == 1, (endpoint, seen, ours)
    # The API server counts cluster-wide (other tests write too): at least ours.
    by_server: Counter[tuple[str, str, str]] = Counter()
    for what, n in ours.items():
        if what.startswith("mlflow"):
            continue
        method, path = what.split(" ", 1)
        parts = path.split("/")
        sub = parts[-1] if parts[-1] == "status" else ""
        resource = parts[-3] if sub else (parts[-2] if method != "POST" else parts[-1])
        verb = "APPLY" if method == "PATCH" and not sub else method
        by_server[(verb, resource, sub)] += n
    for key, n in by_server.items():
        assert api[key] >= n, (key, n, api[key])


@pytest.mark.parametrize("crash_at", points(TJ_WRITES))
def test_trainingjob_crash_after_write(world: tuple[Cluster, str, str], crash_at: int) -> None:
    cluster, uri, ns = world
    crash_then_recover(cluster, uri, ns, TrainingLife(cluster, uri, ns), "TrainingJob", crash_at)


# --- ModelDeployment ---------------------------------------------------------------------


def test_clean_modeldeployment_life_counts_its_writes(world: tuple[Cluster, str, str]) -> None:
    cluster, uri, ns = world
    first, second = crash_then_recover(
        cluster, uri, ns, ServingLife(cluster, uri, ns), "ModelDeployment", None
    )
    assert first.count == MD_WRITES, "\n".join(first.writes)
    assert second.count == 0, second.writes


@pytest.mark.parametrize("crash_at", spread(MD_WRITES))
def test_modeldeployment_crash_after_write(world: tuple[Cluster, str, str], crash_at: int) -> None:
    cluster, uri, ns = world
    crash_then_recover(cluster, uri, ns, ServingLife(cluster, uri, ns), "ModelDeployment", crash_at)


# --- DriftMonitor ------------------------------------------------------------------------


def test_clean_driftmonitor_life_counts_its_writes(world: tuple[Cluster, str, str]) -> None:
    cluster, uri, ns = world
    first, second = crash_then_recover(
        cluster, uri, ns, DriftLife(cluster, uri, ns), "DriftMonitor", None
    )
    assert first.count == DM_WRITES, "\n".join(first.writes)
    assert second.count == 0, second.writes


@pytest.mark.parametrize("crash_at", spread(DM_WRITES))
def test_driftmonitor_crash_after_write(world: tuple[Cluster, str, str], crash_at: int) -> None:
    cluster, uri, ns = world
    crash_then_recover(cluster, uri, ns, DriftLife(cluster, uri, ns), "DriftMonitor", crash_at)
