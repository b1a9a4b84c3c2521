"""Data validation before training: the checks, the decision, the Job, the carry-over."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from modelworks import conditions, datacheck
from modelworks.api.driftmonitor import DriftMonitorSpec
from modelworks.api.trainingjob import DataValidation, TrainingJobSpec
from modelworks.builders.driftmonitor import build_retrain
from modelworks.builders.modeldeployment import ServerConfig
from modelworks.builders.trainingjob import build_validation_job, job_name, validation_job_name
from modelworks.status.trainingjob import (
    RemoveStaleJobs,
    StartRun,
    StartValidation,
    TrainingFacts,
    Validation,
    decide,
)
from modelworks.validation import Accumulator, compact, judge, listed_columns

NOW = "2026-01-01T00:00:00Z"
SERVER = ServerConfig("modelworks:1", "IfNotPresent", "http://mlflow:5000")


def observed(columns: dict[str, list[Any]], label: str | None = None) -> Any:
    table = pa.table(columns)
    acc = Accumulator(table.schema, label)
    for batch in table.to_batches(max_chunksize=2):  # several chunks per column
        acc.add_batch(batch)
    return acc.result()


def rules(config: dict[str, Any], columns: dict[str, list[Any]]) -> list[tuple[str, str | None]]:
    dv = DataValidation.model_validate(config)
    label = dv.label.column if dv.label else None
    verdict = judge(dv, observed(columns, label), listed_columns(dv))
    return [(f.rule, f.column) for f in verdict.failures]


DATA = {
    "age": [30.0, 41.0, None, 25.0, float("nan"), 52.0, 33.0, 28.0],
    "city": ["a", "b", "a", None, "c", "a", "b", "a"],
    "n": [1, 2, 3, 4, 5, 6, 7, 8],
    "y": [0, 1, 0, 0, 1, 0, 0, 0],
}


@pytest.mark.parametrize(
    ("config", "expected"),
    [
        ({"minRows": 8}, []),
        ({"minRows": 9}, [("minRows", None)]),
        ({"maxMissingShare": 0.25}, []),  # age: a null and a NaN = 25%
        ({"maxMissingShare": 0.2}, [("maxMissingShare", "age")]),
        (
            {
                "maxMissingShare": 0.1,
                "missingByColumn": [{"column": "age", "maxMissingShare": 0.3}],
            },
            [("maxMissingShare", "city")],
        ),
        (
            {"missingByColumn": [{"column": "age", "maxMissingShare": 0.1}]},
            [("missingByColumn", "age")],
        ),
        (
            {"missingByColumn": [{"column": "zip", "maxMissingShare": 0.1}]},
            [("missingByColumn", "zip")],
        ),
        (
            {
                "schema": {
                    "columns": [
                        {"name": "age", "type": "numeric"},
                        {"name": "n", "type": "integer"},
                    ]
                }
            },
            [],
        ),
        ({"schema": {"columns": [{"name": "age", "type": "integer"}]}}, [("schema", "age")]),
        ({"schema": {"columns": [{"name": "city", "type": "numeric"}]}}, [("schema", "city")]),
        ({"schema": {"columns": [{"name": "zip", "type": "categorical"}]}}, [("schema", "zip")]),
        ({"schema": {"columns": [{"name": "city", "type": "categorical"}]}}, []),
        (
            {
                "schema": {
                    "columns": [{"name": "age", "type": "numeric"}],
                    "allowExtraColumns": False,
                },
                "label": {"column": "y"},
            },
            [("schema", "city"), ("schema", "n")],
        ),
        ({"label": {"column": "y", "classes": ["0", "1"]}}, []),
        ({"label": {"column": "y", "classes": ["0", "1", "2"]}}, [("label.classes", "y")]),
        ({"label": {"column": "y", "minClassShare": 0.3}}, [("label.minClassShare", "y")]),
        ({"label": {"column": "y", "maxClassShare": 0.7}}, [("label.maxClassShare", "y")]),
        ({"label": {"column": "y", "minClassShare": 0.25, "maxClassShare": 0.75}}, []),
        ({"label": {"column": "target"}}, [("label", "target")]),
    ],
)
def test_checks(config: dict[str, Any], expected: list[tuple[str, str | None]]) -> None:
    assert rules(config, DATA) == expected


def test_failure_says_by_how_much() -> None:
    dv = DataValidation.model_validate({"maxMissingShare": 0.1})
    verdict = judge(dv, observed(DATA)).to_json()
    age = next(f for f in verdict["failures"] if f.get("column") == "age")
    assert age == {
        "rule": "maxMissingShare",
        "column": "age",
        "message": "column age: 25.0% missing, over the 10.0% allowed",
        "value": 0.25,
        "limit": 0.1,
    }
    assert verdict["passed"] is False and verdict["rows"] == 8


def test_float_labels_name_classes_as_integers() -> None:
    got = observed({"y": [1.0, 0.0, None, 1.0]}, "y")
    assert got.classes == {"0": 1, "1": 2}


def test_verdict_is_compacted_to_fit_a_termination_message() -> None:
    many = {f"c{i}": [None, None] for i in range(500)}
    verdict = judge(DataValidation.model_validate({"maxMissingShare": 0.0}), observed(many))
    out = compact(verdict.to_json())
    assert len(json.dumps(out, separators=(",", ":"))) <= 3500
    assert out["moreFailures"] + len(out["failures"]) == 500


def test_job_exit_codes_and_message(tmp_path: Path) -> None:
    """The Job's own entry point: 0 passed, 2 data verdict (JSON), 1 an error (text)."""
    pq.write_table(pa.table(DATA), tmp_path / "d.parquet")
    (tmp_path / "d.csv").write_text("age,y\n1,0\n2,1\n")
    log = tmp_path / "term"
    assert datacheck.main(str(tmp_path / "d.parquet"), '{"minRows":8}', termination_log=log) == 0
    assert json.loads(log.read_text())["passed"] is True
    assert datacheck.main(f"file://{tmp_path}/d.csv", '{"minRows":3}', termination_log=log) == 2
    assert json.loads(log.read_text())["failures"][0]["rule"] == "minRows"
    assert datacheck.main(str(tmp_path / "gone.parquet"), '{"minRows":1}', termination_log=log) == 1
    assert log.read_text().startswith("FileNotFoundError")


# --- the decision --------------------------------------------------------------------

SPEC = {
    "image": "trainer:1",
    "dataset": {"uri": "s3://data/train.parquet"},
    "model": {"name": "churn"},
    "dataValidation": {"minRows": 100, "label": {"column": "y", "classes": ["0", "1"]}},
}
OBJ = {
    "apiVersion": "modelworks.dev/v1alpha1",
    "kind": "TrainingJob",
    "metadata": {"name": "churn", "namespace": "ml", "uid": "u-1", "generation": 1},
    "spec": SPEC,
}
PARSED = TrainingJobSpec.model_validate(SPEC)
VJOB = validation_job_name(OBJ, PARSED)
PASSED = json.dumps({"passed": True, "rows": 500, "summary": "500 rows passed every check"})
FAILED = json.dumps(
    {
        "passed": False,
        "rows": 20,
        "summary": "20 rows, fewer than the 100 required",
        "failures": [{"rule": "minRows", "message": "20 rows, fewer than the 100 required"}],
    }
)


def facts(check: Validation | None, **extra: Any) -> TrainingFacts:
    return TrainingFacts(job_name(OBJ, PARSED), generation=1, validation=check, **extra)


def cond(status: dict[str, Any], type_: str = "DataValidated") -> tuple[str, str]:
    c = conditions.get(status["conditions"], type_) or {}
    return c.get("status", ""), c.get("reason", "")


@pytest.mark.parametrize(
    ("check", "phase", "validated", "actions"),
    [
        (Validation(VJOB), "Pending", ("Unknown", "Validating"), [StartValidation(None, None)]),
        (Validation(VJOB, "Active"), "Pending", ("Unknown", "Validating"), []),
        (
            Validation(VJOB, "Active", failed_pods=1, message="OSError: store down"),
            "Pending",
            ("Unknown", "Validating"),
            [],
        ),
        (
            Validation(VJOB, "Succeeded", message=PASSED),
            "Pending",
            ("True", "Passed"),
            [StartRun(None)],
        ),
        (Validation(VJOB, "Failed", message=FAILED), "Failed", ("False", "DataInvalid"), []),
        (
            Validation(VJOB, "Failed", message="OSError: store down", failed_pods=4),
            "Failed",
            ("False", "ValidationJobFailed"),
            [],
        ),
        (Validation(VJOB, "Succeeded", message=""), "Failed", ("False", "ValidationJobFailed"), []),
        (
            Validation(VJOB, refusal="model churn is owned by namespace other"),
            "Failed",
            ("False", "ModelOwnedElsewhere"),
            [],
        ),
    ],
)
def test_decision(
    check: Validation, phase: str, validated: tuple[str, str], actions: list[Any]
) -> None:
    d = decide(PARSED, facts(check), {}, NOW)
    assert d.status["phase"] == phase
    assert cond(d.status) == validated
    assert [a for a in d.actions if not isinstance(a, RemoveStaleJobs)] == actions


def test_a_failed_check_trains_nothing_and_warns_with_the_reasons() -> None:
    d = decide(PARSED, facts(Validation(VJOB, "Failed", message=FAILED)), {}, NOW)
    assert not any(isinstance(a, StartRun) for a in d.actions)
    assert cond(d.status, "Succeeded") == ("False", "DataInvalid")
    assert d.status["dataValidation"]["failures"] == [
        {"rule": "minRows", "message": "20 rows, fewer than the 100 required"}
    ]
    warning = [e for e in d.events if e.type == "Warning" and e.reason == "DataInvalid"]
    assert warning and "20 rows, fewer than the 100 required" in warning[0].message


def test_a_passed_check_is_not_run_again() -> None:
    first = decide(PARSED, facts(Validation(VJOB, "Succeeded", message=PASSED)), {}, NOW)
    assert first.status["dataValidation"]["passed"] is True
    again = decide(PARSED, facts(Validation(VJOB, "Missing")), first.status, NOW)
    assert not any(isinstance(a, StartValidation) for a in again.actions)
    assert cond(again.status) == ("True", "Passed")


def test_no_validation_without_the_field() -> None:
    plain = TrainingJobSpec.model_validate({k: v for k, v in SPEC.items() if k != "dataValidation"})
    d = decide(plain, facts(None), {}, NOW)
    assert conditions.get(d.status["conditions"], "DataValidated") is None
    assert StartRun(None) in d.actions


# --- the Job and the carry-over ------------------------------------------------------


def test_validation_job() -> None:
    job = build_validation_job(OBJ, PARSED, SERVER, profile_uri="runs:/r1/reference_profile.json")
    assert job["metadata"]["name"] == VJOB == job_name(OBJ, PARSED) + "-dv"
    assert len(VJOB) <= 63
    spec = job["spec"]
    rule = spec["podFailurePolicy"]["rules"][0]
    assert rule["action"] == "FailJob" and rule["onExitCodes"]["values"] == [2]
    assert spec["backoffLimit"] >= 1, "a check that could not run is retried"
    container = spec["template"]["spec"]["containers"][0]
    assert container["image"] == "modelworks:1"
    assert container["resources"]["limits"]["memory"]
    args = container["args"]
    assert args[:3] == ["validate-data", "--dataset", "s3://data/train.parquet"]
    assert json.loads(args[args.index("--config") + 1])["minRows"] == 100
    assert args[args.index("--profile") + 1] == "runs:/r1/reference_profile.json"


def test_retraining_carries_the_validation_over() -> None:
    template = {**SPEC, "dataValidation": {"schema": {"fromAlias": "champion"}, "minRows": 10}}
    monitor_spec = DriftMonitorSpec.model_validate(
        {"target": {"modelDeployment": {"name": "churn"}}, "retrain": {"template": template}}
    )
    assert monitor_spec.retrain is not None and monitor_spec.retrain.template is not None
    monitor = {"metadata": {"name": "m", "namespace": "ml", "uid": "u-9", "generation": 1}}
    monitor["kind"] = "DriftMonitor"
    tj = build_retrain(
        monitor,
        monitor_spec.retrain.template.wire(),
        key="k",
        trigger="drift",
        evidence={},
        source=None,
    )
    assert tj["spec"]["dataValidation"] == {
        "schema": {"fromAlias": "champion", "allowExtraColumns": True},
        "minRows": 10,
    }
    assert TrainingJobSpec.model_validate(tj["spec"]).data_validation is not None
