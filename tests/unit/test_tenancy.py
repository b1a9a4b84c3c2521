"""Tenancy rules and the TrainingJob's registration under them: table-driven, plain data."""

from __future__ import annotations

from typing import Any

import pytest

from modelworks import conditions
from modelworks.api.driftmonitor import DriftMonitorSpec
from modelworks.api.trainingjob import TrainingJobSpec
from modelworks.settings import Settings
from modelworks.status import tenancy
from modelworks.status.driftmonitor import Facts as DriftFacts
from modelworks.status.driftmonitor import decide as drift_decide
from modelworks.status.tenancy import MlflowRef
from modelworks.status.trainingjob import (
    ModelSource,
    Register,
    Registration,
    RemoveStaleJobs,
    RunFacts,
    SetAlias,
    TrainingFacts,
    decide,
)

NOW = "2026-01-01T00:00:00Z"


@pytest.mark.parametrize(
    ("uri", "ref"),
    [
        ("runs:/abc/profile.json", MlflowRef(run_id="abc")),
        ("runs:///abc/data/x.parquet", MlflowRef(run_id="abc")),
        ("runs:/", None),
        ("models:/churn/3", MlflowRef(model="churn", version="3")),
        ("models:/churn@champion", MlflowRef(model="churn", alias="champion")),
        ("models:/churn/Production", MlflowRef(model="churn", version="Production")),
        ("models:/m-0123abcd", MlflowRef(model="m-0123abcd")),
        ("models:/@x", None),
        ("s3://bucket/x.parquet", None),
        ("mlflow-artifacts:/1/abc/artifacts/x", None),
        ("/data/x.csv", None),
    ],
)
def test_parse_ref(uri: str, ref: MlflowRef | None) -> None:
    assert tenancy.parse_ref(uri) == ref


# namespace, owner, sharing -> may write (register, move an alias)?
WRITES = [
    ("a", None, True),  # unowned: the first writer claims it
    ("a", "a", True),
    ("b", "a", False),
]


@pytest.mark.parametrize(("ns", "owner", "allowed"), WRITES)
def test_write_refusal(ns: str, owner: str | None, allowed: bool) -> None:
    refusal = tenancy.write_refusal(ns, "churn", owner)
    assert (refusal is None) == allowed
    if not allowed:
        assert refusal == f"model churn belongs to namespace {owner}"


# namespace, owner, sharing, the version's namespace -> refusal contains (None: allowed)
RESOLVES: list[tuple[str, str | None, frozenset[str], str | None, str | None]] = [
    ("a", "a", frozenset(), "a", None),
    ("a", "a", frozenset(), None, None),  # a version registered by hand, no lineage
    ("b", "a", frozenset(), "a", "belongs to namespace a and is not shared with b"),
    ("b", "a", frozenset({"b"}), "a", None),
    ("b", "a", frozenset({"*"}), "a", None),
    ("c", "a", frozenset({"b"}), "a", "not shared with c"),
    ("a", "a", frozenset(), "b", "version 2 of model churn was registered from namespace b"),
    ("b", "a", frozenset({"b"}), "b", "not by the model's owner a"),  # shared: owner's only
    ("a", None, frozenset(), "a", None),  # unowned model: the namespace's own versions
    ("a", None, frozenset(), "b", "registered from namespace b"),
    ("b", None, frozenset(), None, None),
]


@pytest.mark.parametrize(("ns", "owner", "sharing", "origin", "refused"), RESOLVES)
def test_resolve_refusal(
    ns: str, owner: str | None, sharing: frozenset[str], origin: str | None, refused: str | None
) -> None:
    refusal = tenancy.resolve_refusal(ns, "churn", owner, sharing, "2", origin)
    if refused is None:
        assert refusal is None
    else:
        assert refusal is not None and refused in refusal


@pytest.mark.parametrize(
    ("ns", "run_ns", "refused"),
    [("a", "a", False), ("a", None, False), ("b", "a", True)],
)
def test_run_refusal(ns: str, run_ns: str | None, refused: bool) -> None:
    refusal = tenancy.run_refusal(ns, "abc", run_ns)
    assert (refusal is not None) == refused
    if refused:
        assert refusal == f"run abc belongs to namespace {run_ns}"


@pytest.mark.parametrize(
    ("text", "parsed"),
    [
        ("", {}),
        ("churn=team-b", {"churn": frozenset({"team-b"})}),
        (
            " churn = team-b , team-c ; base=* ;",
            {"churn": frozenset({"team-b", "team-c"}), "base": frozenset({"*"})},
        ),
        ("churn=b;churn=c", {"churn": frozenset({"b", "c"})}),
    ],
)
def test_shared_models_setting(text: str, parsed: dict[str, frozenset[str]]) -> None:
    assert Settings.from_env({"MODELWORKS_SHARED_MODELS": text}).shared_models == parsed


@pytest.mark.parametrize("text", ["churn", "=b", "churn=", "churn=,"])
def test_shared_models_setting_refuses_bad_entries(text: str) -> None:
    with pytest.raises(ValueError, match="MODELWORKS_SHARED_MODELS"):
        Settings.from_env({"MODELWORKS_SHARED_MODELS": text})


# --- the TrainingJob's registration -----------------------------------------------------

SPEC = TrainingJobSpec.model_validate(
    {
        "image": "trainer:1",
        "model": {"name": "churn", "alias": "champion"},
        "qualityGate": [{"metric": "auc", "value": 0.8}],
    }
)
DONE = {"status": {"conditions": [{"type": "Complete", "status": "True"}], "succeeded": 1}}
RUN = RunFacts("7", "abc", metrics={"auc": 0.9})


def finished(**kw: Any) -> TrainingFacts:
    return TrainingFacts("j", generation=1, job=DONE, run=RUN, namespace="team-b", **kw)


# facts -> phase, ModelRegistered reason, actions, Event reasons besides transitions
REGISTRATION: list[tuple[str, TrainingFacts, str, str, tuple[Any, ...], list[str]]] = [
    (
        "owned elsewhere: refused before the gate reads anything",
        finished(model_owner="team-a"),
        "Failed",
        "ModelOwnedElsewhere",
        (),
        [],
    ),
    (
        "owned elsewhere, a version of this run registered before ownership existed",
        finished(
            model_owner="team-a",
            baselines={},
            registration=Registration("churn", "4", "runs:/abc/model"),
        ),
        "Failed",
        "ModelOwnedElsewhere",
        (),
        [],
    ),
    (
        "new model: registered (and owned) by this namespace",
        finished(baselines={}, model_source=ModelSource("runs:/abc/model")),
        "Running",
        "Registering",
        (Register("churn", "abc", "runs:/abc/model", None),),
        [],
    ),
    (
        "own model: the alias moves",
        finished(
            model_owner="team-b",
            baselines={},
            registration=Registration("churn", "4", "runs:/abc/model"),
        ),
        "Succeeded",
        "Registered",
        (SetAlias("churn", "champion", "4"),),
        [],
    ),
    (
        "no owner tag, first version from this namespace: claimed, with an Event",
        finished(
            model_owner="team-b",
            model_unclaimed=True,
            baselines={},
            model_source=ModelSource("runs:/abc/model"),
        ),
        "Running",
        "Registering",
        (Register("churn", "abc", "runs:/abc/model", None),),
        ["ModelClaimed"],
    ),
]


@pytest.mark.parametrize(
    ("name", "facts", "phase", "reason", "actions", "news"),
    REGISTRATION,
    ids=[case[0] for case in REGISTRATION],
)
def test_registration_under_ownership(
    name: str,
    facts: TrainingFacts,
    phase: str,
    reason: str,
    actions: tuple[Any, ...],
    news: list[str],
) -> None:
    out = decide(SPEC, facts, {}, NOW)
    assert out.status["phase"] == phase
    registered = conditions.get(out.status["conditions"], "ModelRegistered")
    assert registered is not None and registered["reason"] == reason
    assert out.actions == actions
    transitions = {c["reason"] for c in out.status["conditions"]}
    assert [e.reason for e in out.events if e.reason not in transitions] == news


def test_refusal_names_the_owner_and_settles() -> None:
    out = decide(SPEC, finished(model_owner="team-a"), {}, NOW)
    summary = conditions.get(out.status["conditions"], "Succeeded")
    assert summary is not None and summary["status"] == "False"
    assert summary["message"] == "model churn belongs to namespace team-a"
    assert out.requeue_after is None
    assert "ModelOwnedElsewhere" in [e.reason for e in out.events]
    assert "qualityGate" not in out.status
    again = decide(SPEC, finished(model_owner="team-a"), out.status, NOW)
    assert again.status == out.status and again.events == []


def test_a_dataset_of_another_namespace_starts_nothing() -> None:
    refused = TrainingFacts(
        "j", generation=1, namespace="team-b", dataset_refusal="run abc belongs to namespace a"
    )
    out = decide(SPEC, refused, {}, NOW)
    assert out.status["phase"] == "Failed"
    summary = conditions.get(out.status["conditions"], "Succeeded")
    assert summary is not None and summary["reason"] == "ModelOwnedElsewhere"
    assert summary["message"] == "spec.dataset.uri: run abc belongs to namespace a"
    assert out.actions == () and out.requeue_after is None
    stale = TrainingFacts("j", generation=1, dataset_refusal="x", stale_jobs=("old",))
    assert decide(SPEC, stale, {}, NOW).actions == (RemoveStaleJobs(("old",)),)


def test_a_batch_check_of_another_namespace_starts_no_job() -> None:
    spec = DriftMonitorSpec.model_validate(
        {"batch": {"currentUri": "runs:/abc/x.csv"}, "reference": {"datasetUri": "s3://b/r.csv"}}
    )
    monitor = {"metadata": {"name": "m", "namespace": "team-b", "uid": "u", "generation": 1}}
    problem = ("ModelOwnedElsewhere", "run abc belongs to namespace team-a")
    out = drift_decide(spec, DriftFacts(monitor=monitor, problem=problem), {}, NOW)
    ready = conditions.get(out.status["conditions"], "Ready")
    assert ready is not None and (ready["reason"], ready["message"]) == problem
    assert out.actions == ()
    assert [e.reason for e in out.events].count("ModelOwnedElsewhere") >= 1
