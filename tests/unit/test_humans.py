"""What `modelworks status` and `modelworks watch` show: lineage, tables, bars, outcomes.

Plain dicts in, strings and plain structures out; one status comes from the operator's own
status code, so the shapes cannot drift apart.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import pytest

from modelworks.api.trainingjob import GateRule, TrainingJobSpec
from modelworks.humans import common, lineage, tables, watch
from modelworks.names import MONITOR_LABEL, RETRAIN_OF_LABEL
from modelworks.status.trainingjob import Registration, RunFacts, TrainingFacts, decide

NOW = datetime(2026, 1, 1, 12, 0, 0, tzinfo=UTC)
T0 = "2026-01-01T00:00:00Z"


def cond(type_: str, status: str, reason: str, message: str = "") -> dict[str, Any]:
    return {
        "type": type_,
        "status": status,
        "reason": reason,
        "message": message,
        "lastTransitionTime": T0,
    }


def tj(
    name: str,
    *,
    model: str | None = "churn",
    phase: str = "Succeeded",
    version: str | None = None,
    alias: str | None = "champion",
    succeeded: tuple[str, str, str] = ("True", "ModelRegistered", "registered"),
    labels: dict[str, str] | None = None,
    ns: str = "ml",
    **status: Any,
) -> dict[str, Any]:
    st: dict[str, Any] = {
        "observedGeneration": 1,
        "phase": phase,
        "conditions": [cond("Succeeded", *succeeded)],
        **status,
    }
    if version:
        st["registeredModel"] = {"name": model, "version": version, "alias": alias}
    spec: dict[str, Any] = {"image": "trainer:1"}
    if model:
        spec["model"] = {"name": model, "alias": alias}
    return {
        "apiVersion": "modelworks.dev/v1alpha1",
        "kind": "TrainingJob",
        "metadata": {"name": name, "namespace": ns, "generation": 1, "labels": labels or {}},
        "spec": spec,
        "status": st,
    }


def mdep(
    name: str,
    *,
    model: str = "churn",
    stable: str | None = None,
    resolved: str | None = None,
    alias: str | None = "champion",
    phase: str = "Available",
    ready: tuple[str, str, str] = ("True", "Available", ""),
    ns: str = "ml",
    **status: Any,
) -> dict[str, Any]:
    st: dict[str, Any] = {"phase": phase, "conditions": [cond("Ready", *ready)], **status}
    if stable:
        st["stableVersion"] = stable
    if resolved or stable:
        st["resolved"] = {"version": resolved or stable, "alias": alias}
    return {
        "kind": "ModelDeployment",
        "metadata": {"name": name, "namespace": ns},
        "spec": {"model": {"name": model, "alias": alias}},
        "status": st,
    }


def dmon(name: str, target: str | None, *, ns: str = "ml", **status: Any) -> dict[str, Any]:
    spec: dict[str, Any] = (
        {"target": {"modelDeployment": {"name": target}}}
        if target
        else {"batch": {"currentUri": "s3://x"}}
    )
    return {
        "kind": "DriftMonitor",
        "metadata": {"name": name, "namespace": ns},
        "spec": spec,
        "status": status,
    }


# --- lineage ---------------------------------------------------------------------------


def test_full_loop_lineage() -> None:
    """train -> v1 -> served -> watched; drift -> retrain -> v2 -> canary."""
    tree = lineage.build(
        [
            tj("churn-train", version="1"),
            tj(
                "churn-drift-r1",
                version="2",
                labels={
                    MONITOR_LABEL: "churn-drift",
                    RETRAIN_OF_LABEL: "churn-train",
                },
            ),
        ],
        [
            mdep(
                "churn",
                stable="1",
                resolved="2",
                phase="Progressing",
                ready=("False", "Progressing", ""),
                canary={"version": "2", "weight": 25},
            )
        ],
        [dmon("churn-drift", "churn", verdict="Drift", driftedShare=0.6, servedVersion="1")],
    )
    assert [m["name"] for m in tree["models"]] == ["churn"]
    v1, v2 = tree["models"][0]["versions"]
    assert v1["version"] == "1" and [t["name"] for t in v1["trainingJobs"]] == ["churn-train"]
    assert [(d["name"], d["role"]) for d in v1["deployments"]] == [("churn", "stable")]
    assert [m["name"] for m in v1["deployments"][0]["driftMonitors"]] == ["churn-drift"]
    assert v2["trainingJobs"][0]["retrainOf"] == "churn-train"
    assert v2["trainingJobs"][0]["driftMonitor"] == "churn-drift"
    assert [(d["name"], d["role"]) for d in v2["deployments"]] == [("churn", "canary")]
    assert v2["deployments"][0]["driftMonitors"] == []
    # The alias is where the deployment last resolved it, not where a TrainingJob once set it.
    assert (v1["aliases"], v2["aliases"]) == ([], ["champion"])
    assert tree["unattached"] == {"trainingJobs": [], "driftMonitors": []}
    json.dumps(tree)  # plain data all the way down


@pytest.mark.parametrize(
    ("name", "status", "expected"),
    [
        ("nothing-yet", {"phase": "Pending"}, [(None, "unresolved")]),
        ("serving", {"stableVersion": "3", "resolved": {"version": "3"}}, [("3", "stable")]),
        (
            "rolling",
            {"phase": "Progressing", "stableVersion": "3", "resolved": {"version": "4"}},
            [("3", "stable"), ("4", "rolling out")],
        ),
        (
            "canary",
            {"stableVersion": "3", "resolved": {"version": "4"}, "canary": {"version": "4"}},
            [("3", "stable"), ("4", "canary")],
        ),
        (
            "rolled-back",
            {"phase": "Degraded", "stableVersion": "3", "resolved": {"version": "4"}},
            [("3", "stable"), ("4", "target")],
        ),
        (
            "first-rollout",
            {"phase": "Progressing", "resolved": {"version": "1"}},
            [("1", "rolling out")],
        ),
    ],
)
def test_deployment_placements(name: str, status: dict[str, Any], expected: list[Any]) -> None:
    dep = lineage.model_deployment({"metadata": {"name": name}, "spec": {}, "status": status})
    assert lineage.placements(dep) == expected


def test_unregistered_and_unattached_objects() -> None:
    tree = lineage.build(
        [
            tj("running", phase="Running", succeeded=("Unknown", "Training", "")),
            tj("tracking-only", model=None),
        ],
        [mdep("waiting", phase="Failed", ready=("False", "AliasNotFound", "no @champion"))],
        [dmon("lost", "gone"), dmon("batchy", None), dmon("fresh", "waiting")],
    )
    (model,) = tree["models"]
    (pending,) = model["versions"]
    assert pending["version"] is None
    assert [t["name"] for t in pending["trainingJobs"]] == ["running"]
    assert [(d["name"], d["role"]) for d in pending["deployments"]] == [("waiting", "unresolved")]
    # A monitor of a deployment that resolved nothing still hangs under it.
    assert [m["name"] for m in pending["deployments"][0]["driftMonitors"]] == ["fresh"]
    assert [t["name"] for t in tree["unattached"]["trainingJobs"]] == ["tracking-only"]
    assert [m["name"] for m in tree["unattached"]["driftMonitors"]] == ["batchy", "lost"]


def test_monitor_missing_every_status_field_is_fine() -> None:
    mon = lineage.drift_monitor({"metadata": {"name": "m"}, "spec": {}})
    assert mon["verdict"] is None and mon["condition"] is None and mon["phase"] is None
    assert tables.drift_monitor_notes(mon, NOW) == ["no verdict yet"]


def test_models_and_versions_sort_numerically_and_namespaces_are_kept_apart() -> None:
    tree = lineage.build(
        [
            tj("b10", model="b", version="10"),
            tj("b9", model="b", version="9"),
            tj("a1", model="a", version="1"),
        ],
        [mdep("same", model="b", stable="9", ns="x"), mdep("same", model="b", stable="10", ns="y")],
        [dmon("watch", "same", ns="y")],
    )
    assert [m["name"] for m in tree["models"]] == ["a", "b"]
    b9, b10 = tree["models"][1]["versions"]
    assert (b9["version"], b10["version"]) == ("9", "10")
    assert b9["deployments"][0]["driftMonitors"] == []  # the monitor is in namespace y
    assert [m["name"] for m in b10["deployments"][0]["driftMonitors"]] == ["watch"]
    assert lineage.model_versions(tree) == [("a", "1"), ("b", "9"), ("b", "10")]


def test_aliases_without_a_deployment_follow_the_newest_claim() -> None:
    tree = lineage.build([tj("t1", version="1"), tj("t2", version="2")], [], [])
    assert [v["aliases"] for v in tree["models"][0]["versions"]] == [[], ["champion"]]


def test_registry_facts_win_over_what_objects_saw() -> None:
    facts = {
        ("churn", "1"): {"runId": "r1", "aliases": ["champion"], "metrics": {"val_auc": 0.9}},
        ("churn", "2"): {"runId": "r2", "aliases": [], "metrics": {}},
    }
    tree = lineage.build([tj("t1", version="1"), tj("t2", version="2")], [], [], registry=facts)
    v1, v2 = tree["models"][0]["versions"]
    assert v1["aliases"] == ["champion"] and v2["aliases"] == []
    assert v1["mlflow"] == {"runId": "r1", "metrics": {"val_auc": 0.9}}


# --- the table ---------------------------------------------------------------------------


def loop_tree() -> dict[str, Any]:
    return lineage.build(
        [
            tj(
                "churn-train",
                version="1",
                qualityGate={"passed": True, "summary": "auc=0.9 >= 0.8"},
            ),
            tj(
                "churn-drift-r1",
                version="2",
                labels={
                    MONITOR_LABEL: "churn-drift",
                    RETRAIN_OF_LABEL: "churn-train",
                },
            ),
            tj(
                "churn-bad",
                phase="Failed",
                succeeded=("False", "OOMKilled", "pod churn-bad-0: container trainer was killed"),
            ),
        ],
        [mdep("churn", stable="2", replicas=2, readyReplicas=2)],
        [
            dmon(
                "churn-drift",
                "churn",
                phase="Monitoring",
                verdict="NoDrift",
                driftedShare=0.0,
                lastCheckTime="2026-01-01T11:57:00Z",
                conditions=[cond("Ready", "True", "Checked")],
            )
        ],
    )


def test_table_reads_as_lineage() -> None:
    text = tables.status_table(loop_tree(), now=NOW)
    lines = text.splitlines()
    assert lines[0].split() == ["MODEL", "VERSION", "OBJECT", "PHASE", "CONDITION", "NOTES"]
    body = "\n".join(lines[1:])
    assert lines[1].split()[:5] == ["churn", "1", "tj/churn-train", "Succeeded", "Succeeded=True"]
    assert "gate passed: auc=0.9 >= 0.8" in lines[1]
    row = next(line for line in lines if "tj/churn-drift-r1" in line)
    assert row.split()[:2] == ["2", "@champion"]  # the model is shown once per group
    assert "retrain of tj/churn-train by dmon/churn-drift" in body
    mdep_row = next(line for line in lines if "mdep/churn" in line)
    assert "\\_ mdep/churn" in mdep_row and "Available" in mdep_row and "Ready=True" in mdep_row
    assert "stable, 2/2 ready" in mdep_row
    dmon_row = next(line for line in lines if "dmon/churn-drift" in line and "\\_" in line)
    assert dmon_row.index("\\_") > mdep_row.index("\\_")  # one level deeper
    assert "NoDrift, 0% of features drifted" in body and "checked 3m ago" in body
    bad = next(line for line in lines if "tj/churn-bad" in line)
    assert bad.split()[0] == "-" and "OOMKilled: pod churn-bad-0" in body
    # Lineage order: v1's producer, the deployment under v2, the failed run last.
    order = [
        body.index(s) for s in ("tj/churn-train", "tj/churn-drift-r1", "mdep/churn", "tj/churn-bad")
    ]
    assert order == sorted(order)


@pytest.mark.parametrize(("width", "namespaces"), [(80, False), (100, True), (120, True)])
def test_table_fits_its_width(width: int, namespaces: bool) -> None:
    """Long names are cut and notes wrap (with -A, 100 columns are the least that fit)."""
    long = "a-rather-long-training-job-name-that-goes-on-and-on-for-a-while"
    gate = {"passed": False, "summary": "val_auc=0.7 >= 0.8, val_loss=0.9 <= 0.5, f1=0.2 >= 0.6"}
    trees = [
        lineage.build(
            [
                tj(
                    long,
                    version="7",
                    model="customer-churn-prediction-gradient-boosting",
                    qualityGate=gate,
                )
            ],
            [],
            [],
        ),
        loop_tree(),
    ]
    for tree in trees:
        text = tables.status_table(tree, now=NOW, width=width, namespaces=namespaces)
        assert all(len(line) <= width for line in text.splitlines()), text
        assert "tj/" in text and "Succeeded" in text
    text = tables.status_table(trees[0], now=NOW, width=width, namespaces=namespaces)
    assert "gate failed:" in text
    if width >= 100:
        assert "f1=0.2 >= 0.6" in text  # wrapped, not lost


def test_table_with_namespaces_has_the_column() -> None:
    text = tables.status_table(loop_tree(), now=NOW, namespaces=True)
    assert text.splitlines()[0].split()[0] == "NAMESPACE"
    assert text.splitlines()[1].split()[0] == "ml"


def test_empty_table_is_empty() -> None:
    assert tables.status_table(lineage.build([], [], []), now=NOW) == ""


def test_mlflow_row_shows_run_and_metrics() -> None:
    facts = {
        ("churn", "1"): {
            "runId": "0123456789abcdef",
            "aliases": ["prod"],
            "metrics": {"val_auc": 0.91234},
        }
    }
    tree = lineage.build([tj("t1", version="1")], [], [], registry=facts)
    text = tables.status_table(tree, now=NOW)
    row = text.splitlines()[1]
    assert row.split()[:2] == ["churn", "1"] and "@prod" in row
    assert "mlflow run 0123456789ab" in row and "val_auc=0.9123" in row


@pytest.mark.parametrize(
    ("parts", "width", "expected"),
    [
        (["a", "b"], 20, ["a; b"]),
        (["aaaa", "bbbb"], 6, ["aaaa;", "bbbb"]),
        (["one two three four"], 9, ["one two", "three", "four"]),
        (["x" * 5] * 5, 6, ["xxxxx;", "xxxxx;", "xxx..."]),
        ([], 10, [""]),
    ],
)
def test_wrap_notes(parts: list[str], width: int, expected: list[str]) -> None:
    assert tables.wrap_notes(parts, width) == expected


@pytest.mark.parametrize(
    ("when", "expected"),
    [
        ("2026-01-01T11:59:58Z", "2s ago"),
        ("2026-01-01T11:57:00Z", "3m ago"),
        ("2026-01-01T09:00:00+00:00", "3h ago"),
        ("2025-12-29T12:00:00Z", "3d ago"),
        ("2026-01-01T12:00:05Z", "just now"),
        ("yesterday", "yesterday"),
    ],
)
def test_ago(when: str, expected: str) -> None:
    assert common.ago(when, NOW) == expected


@pytest.mark.parametrize(
    ("value", "expected"),
    [(3, "3"), (3.0, "3"), (0.912345, "0.9123"), (1234567.8, "1.235e+06"), (True, "True")],
)
def test_number(value: Any, expected: str) -> None:
    assert common.number(value) == expected


def test_key_metrics_order() -> None:
    metrics = {"loss": 0.3, "val_loss": 0.4, "val_auc": 0.9, "epoch": 3, "progress": 0.5, "acc": 1}
    assert [k for k, _ in common.key_metrics(metrics, prefer=["acc"], limit=3)] == [
        "acc",
        "val_auc",
        "val_loss",
    ]
    assert [k for k, _ in common.key_metrics(metrics)] == ["val_auc", "val_loss", "acc", "loss"]


# --- watch ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("percent", "expected"),
    [
        (None, "[------------------------]      ?"),
        (0, "[------------------------]   0.0%"),
        (37.5, "[#########---------------]  37.5%"),
        (99.9, "[#######################-]  99.9%"),
        (100, "[########################] 100.0%"),
        (250, "[########################] 100.0%"),
        (-3, "[------------------------]   0.0%"),
        ("half", "[------------------------]      ?"),
    ],
)
def test_progress_bar(percent: Any, expected: str) -> None:
    assert watch.progress_bar(percent) == expected


def test_progress_bar_width() -> None:
    assert watch.progress_bar(50, width=10) == "[#####-----]  50.0%"


def test_watch_line_shows_phase_progress_and_metrics() -> None:
    obj = tj(
        "t",
        phase="Running",
        succeeded=("Unknown", "Training", ""),
        progress={"percent": 50.0, "epoch": 4},
        metrics={"loss": 0.25, "val_auc": 0.8765, "epoch": 4},
    )
    obj["spec"]["qualityGate"] = [{"metric": "loss", "op": "<", "value": 1}]
    line = watch.watch_line(obj)
    assert line.startswith("tj/t  Running  ")
    assert "[############------------]  50.0%" in line
    assert line.endswith("epoch 4  loss=0.25 val_auc=0.8765")  # the gate's metric first


@pytest.mark.parametrize(
    ("status", "generation", "fragment"),
    [
        ({}, 1, "tj/t  (no status yet: is the operator running?)  [---"),
        (
            {"phase": "Pending", "conditions": [cond("Succeeded", "Unknown", "CreatingRun")]},
            1,
            "Pending (CreatingRun)",
        ),
        (
            {"phase": "Succeeded", "observedGeneration": 1},
            2,
            "Succeeded (spec changed: waiting for the operator)",
        ),
    ],
)
def test_watch_line_states(status: dict[str, Any], generation: int, fragment: str) -> None:
    obj = {"metadata": {"name": "t", "generation": generation}, "spec": {}, "status": status}
    assert fragment in watch.watch_line(obj)


@pytest.mark.parametrize(
    ("status", "generation", "code"),
    [
        ({"phase": "Running"}, 1, None),
        ({"phase": "Suspended"}, 1, None),
        ({"phase": "Succeeded", "observedGeneration": 1}, 1, 0),
        ({"phase": "Failed", "observedGeneration": 1}, 1, 1),
        ({"phase": "Succeeded", "observedGeneration": 1}, 2, None),  # the old run's outcome
        ({"phase": "Failed"}, 2, 1),  # no observedGeneration: trust the phase
        ({}, 1, None),
    ],
)
def test_finished(status: dict[str, Any], generation: int, code: int | None) -> None:
    obj = {"metadata": {"name": "t", "generation": generation}, "status": status}
    assert watch.finished(obj) == code


def test_finished_when_deleted() -> None:
    assert watch.finished(None) == 1
    assert watch.outcome_lines(None, name="t") == ["Failed: tj/t was deleted"]


# The outcome of statuses the operator itself computes.
SPEC = TrainingJobSpec.model_validate(
    {
        "image": "trainer:1",
        "model": {"name": "churn", "alias": "champion"},
        "qualityGate": [{"metric": "val_auc", "op": ">=", "value": 0.8}],
    }
)
DONE_JOB = {
    "spec": {"completions": 1},
    "status": {"succeeded": 1, "conditions": [{"type": "Complete", "status": "True"}]},
}
RUN = RunFacts(
    "7", "abc123", url="http://mlflow/#/experiments/7/runs/abc123", metrics={"val_auc": 0.93}
)


def computed(facts: TrainingFacts, spec: TrainingJobSpec = SPEC) -> dict[str, Any]:
    obj = {"metadata": {"name": "churn-train", "namespace": "ml", "generation": 1}, "spec": {}}
    return {**obj, "status": decide(spec, facts, {}, T0).status}


def gated(value: float) -> TrainingJobSpec:
    return SPEC.model_copy(update={"quality_gate": [GateRule(metric="val_auc", value=value)]})


def test_outcome_of_a_registered_model() -> None:
    obj = computed(
        TrainingFacts(
            "j",
            generation=1,
            job=DONE_JOB,
            run=RUN,
            baselines={},
            registration=Registration("churn", "4", "runs:/abc123/model", ("champion",)),
        )
    )
    assert watch.finished(obj) == 0
    assert watch.outcome_lines(obj) == [
        "Succeeded: registered churn version 4 as @champion",
        "  quality gate passed: val_auc=0.93 >= 0.8",
        "  metrics: val_auc=0.93",
        "  MLflow run: http://mlflow/#/experiments/7/runs/abc123",
    ]


def test_outcome_of_a_failed_gate() -> None:
    obj = computed(
        TrainingFacts("j", generation=1, job=DONE_JOB, run=RUN, baselines={}), gated(0.95)
    )
    assert watch.finished(obj) == 1
    lines = watch.outcome_lines(obj)
    assert lines[0].startswith("Failed: QualityGateFailed: quality gate failed: val_auc=0.93")
    assert lines[1].startswith("  quality gate failed: val_auc=0.93")


def test_outcome_of_a_crashed_trainer() -> None:
    failed_job = {
        "status": {
            "conditions": [{"type": "Failed", "status": "True", "reason": "BackoffLimitExceeded"}]
        }
    }
    pod = {
        "metadata": {"name": "churn-train-0"},
        "status": {
            "containerStatuses": [
                {
                    "name": "trainer",
                    "state": {
                        "terminated": {"exitCode": 1, "message": "Traceback\nValueError: bad"}
                    },
                }
            ]
        },
    }
    obj = computed(TrainingFacts("j", generation=1, job=failed_job, pods=[pod], run=RUN))
    assert watch.finished(obj) == 1
    assert watch.outcome_lines(obj)[0] == (
        "Failed: Error: BackoffLimitExceeded: pod churn-train-0: container trainer exited "
        "with code 1: ValueError: bad"
    )


def test_outcome_without_registration() -> None:
    obj = tj(
        "t",
        model=None,
        succeeded=("True", "Completed", "training completed; no model registration was requested"),
    )
    assert watch.outcome_lines(obj) == [
        "Succeeded: training completed; no model registration was requested"
    ]


def test_timeout_lines() -> None:
    obj = tj("t", phase="Running", succeeded=("Unknown", "Training", ""))
    (line,) = watch.timeout_lines(obj, 30.0)
    assert line.startswith("Timed out after 30s: tj/t  Running")
    assert watch.timeout_lines(None, 5) == ["Timed out after 5s: the TrainingJob does not exist"]


def test_clip() -> None:
    assert common.clip("abcdef", 10) == "abcdef"
    assert common.clip("abcdefghijk", 8) == "abcde..."
    assert common.clip("abcdef", 2) == "ab"
    assert common.clip("abcdef", 0) == ""
