"""ModelDeployment rollout safety: bad metrics, canary size, template changes, model renames,
the switch to autoscaling. Pure decisions over plain data."""

from __future__ import annotations

import math
from dataclasses import replace
from typing import Any

import pytest
from pydantic import ValidationError

from modelworks.api.modeldeployment import Autoscaling
from modelworks.builders.modeldeployment import build_deployment
from modelworks.prommath import histogram_quantile
from modelworks.status.modeldeployment import (
    AnalysisFacts,
    ApplyStable,
    DeploymentState,
    Facts,
    analysis_facts,
    canary_replicas,
    kept_replicas,
    pod_failure,
)
from tests.unit.test_modeldeployment import (
    ALIAS,
    CANARY,
    SERVER,
    T0,
    T2,
    cond,
    crashing_pod,
    mdep,
    parse,
    reasons,
    run,
    serving,
    state,
    target,
)

REQ = "modelworks_serving_requests_total"
BUCKET = "modelworks_serving_request_duration_seconds_bucket"
NAN, INF = math.nan, math.inf


def good_pod(requests: float = 100.0) -> list[tuple[str, dict[str, str], float]]:
    return [
        (REQ, {"code": "200"}, requests),
        (BUCKET, {"le": "0.1"}, requests),
        (BUCKET, {"le": "+Inf"}, requests),
    ]


@pytest.mark.parametrize(
    "bad",
    [
        [(REQ, {"code": "200"}, NAN)],
        [(REQ, {"code": "500"}, INF)],
        [(REQ, {"code": "200"}, 10.0), (BUCKET, {"le": "0.1"}, NAN)],
        [(REQ, {"code": "200"}, 10.0), (BUCKET, {"le": "+Inf"}, -INF)],
    ],
)
def test_a_pod_with_non_finite_samples_is_unusable_not_fatal(
    bad: list[tuple[str, dict[str, str], float]],
) -> None:
    facts = analysis_facts([good_pod(), bad], [good_pod(), bad])
    assert (facts.canary_requests, facts.canary_errors) == (100, 0)
    assert facts.unreachable == 1
    assert facts.canary_p99 is not None and math.isfinite(facts.canary_p99)
    assert facts.stable_p99 is not None and math.isfinite(facts.stable_p99)


@pytest.mark.parametrize(
    "buckets",
    [[(0.1, NAN), (INF, 10.0)], [(0.1, 5.0), (INF, NAN)], [(NAN, 5.0), (INF, 10.0)]],
)
def test_histogram_quantile_ignores_non_finite_counts(buckets: list[tuple[float, float]]) -> None:
    got = histogram_quantile(0.99, buckets)
    assert got is None or math.isfinite(got)


def test_canary_whose_metrics_stay_unusable_is_rolled_back_after_the_deadline() -> None:
    """Analysis that never gets usable numbers may not hold the canary forever."""
    ready = state("2", replicas=1)
    start = run(CANARY, Facts(target("2"), stable=state("1"), canary=ready), serving("1"), now=T0)
    hold = run(CANARY, Facts(target("2"), stable=state("1"), canary=ready), start.status, now=T0)
    unusable = AnalysisFacts(0, 0, None, None, unreachable=1)
    facts = Facts(target("2"), stable=state("1"), canary=ready, analysis=unusable)
    waiting = run(CANARY, facts, hold.status, now="2026-01-01T00:02:00Z")
    assert waiting.canary_version == "2" and "unusable" in waiting.status["canary"]["message"]
    # pause 60 s + progressDeadlineSeconds 600 s after the step started
    late = run(CANARY, facts, waiting.status, now="2026-01-01T00:11:01Z")
    assert late.canary_version is None and late.stable_version == "1"
    assert late.status["rollback"]["reason"] == "AnalysisFailed"
    assert "metrics" in late.status["rollback"]["message"]
    assert "RolledBack" in reasons(late)


@pytest.mark.parametrize(
    ("running", "bounds", "kept"),
    [
        (5, (2, 10), 5),
        (1, (2, 10), 2),
        (40, (2, 10), 10),
        (0, (1, 3), 1),
        (5, None, None),
    ],
)
def test_kept_replicas_hand_the_running_count_to_the_hpa(
    running: int, bounds: tuple[int, int] | None, kept: int | None
) -> None:
    scaling = (
        None if bounds is None else Autoscaling(min_replicas=bounds[0], max_replicas=bounds[1])
    )
    assert kept_replicas(state("1", replicas=running), scaling) == kept
    assert kept_replicas(None, scaling) is None


def test_switch_to_autoscaling_applies_the_running_count_first() -> None:
    spec = {**ALIAS, "autoscaling": {"minReplicas": 2, "maxReplicas": 10}}
    d = run(spec, Facts(target("1"), stable=state("1", replicas=5)), serving("1"))
    stable = [a for a in d.decision.actions if isinstance(a, ApplyStable)]
    assert [a.keep_replicas for a in stable] == [5]
    fixed = run({**ALIAS, "replicas": 5}, Facts(target("1"), stable=state("1")), serving("1"))
    assert [a.keep_replicas for a in fixed.decision.actions if isinstance(a, ApplyStable)] == [None]


# --- a renamed model is a new version to roll out -------------------------------------

OLD = "models:/old/3"


def on_model(name: str, s: DeploymentState) -> DeploymentState:
    return replace(s, model=name)


def renamed() -> Facts:
    """The spec now names model churn, version 3; model old's version 3 serves."""
    return Facts(target("3"), stable=on_model("old", state("3")))


def serving_old() -> dict[str, Any]:
    return serving("3", stableModel="old", history=[{"version": "3", "model": "old", "since": T0}])


def test_renaming_the_model_rolls_out_like_a_new_version() -> None:
    d = run(ALIAS, renamed(), serving_old())
    assert d.stable_version == "3" and d.status["stableModel"] == "old"
    assert "RolloutStarted" in reasons(d)
    assert cond(d, "Ready")["status"] == "False"
    assert d.status["phase"] == "Progressing"
    done = run(ALIAS, Facts(target("3"), stable=on_model("churn", state("3"))), d.status)
    assert (done.status["stableVersion"], done.status["stableModel"]) == ("3", "churn")
    assert [(h["model"], h["version"]) for h in done.status["history"]] == [
        ("old", "3"),
        ("churn", "3"),
    ]
    assert cond(done, "Ready")["status"] == "True"


def test_renaming_the_model_goes_through_the_canary() -> None:
    d = run(CANARY, renamed(), serving_old(), now=T0)
    assert d.canary_version == "3" and d.stable_version == OLD
    assert d.status["canary"]["model"] == "churn" and d.status["canary"]["version"] == "3"
    assert d.status["stableModel"] == "old"


def test_a_renamed_model_that_crashes_rolls_back_to_the_old_model() -> None:
    facts = Facts(
        target("3"),
        stable=on_model("churn", state("3", complete=False, ready=0)),
        pods=[crashing_pod("3")],
    )
    d = run(ALIAS, facts, serving_old())
    assert d.stable_version == OLD
    rollback = d.status["rollback"]
    assert (rollback["fromModel"], rollback["fromVersion"]) == ("churn", "3")
    assert (rollback["toModel"], rollback["toVersion"]) == ("old", "3")
    pinned = run(ALIAS, Facts(target("3"), stable=on_model("old", state("3"))), d.status)
    assert pinned.stable_version == OLD and cond(pinned, "Degraded")["reason"] == "RolledBack"


def test_a_status_without_model_names_belongs_to_the_current_model() -> None:
    """Status written before models were named: bare versions mean spec.model.name."""
    old = serving(
        "3",
        rollback={
            "fromVersion": "4",
            "toVersion": "3",
            "reason": "CrashLoop",
            "at": T0,
            "observedGeneration": 1,
        },
    )
    d = run(ALIAS, Facts(target("4"), stable=state("3")), old)
    assert d.stable_version == "3" and cond(d, "Degraded")["reason"] == "RolledBack"
    assert d.status["stableModel"] == "churn"
    assert d.status["rollback"]["fromModel"] == "churn"
    assert d.status["history"][0]["model"] == "churn"


def test_a_status_without_model_names_takes_the_model_the_stable_pods_serve() -> None:
    """An old status ("3", no model) while the stable pods serve models:/old/3 and the spec
    now names churn: the rename is seen, not mistaken for version 3 of churn."""
    d = run(ALIAS, renamed(), serving("3"))
    assert "RolloutStarted" in reasons(d) and d.stable_version == "3"
    assert d.status["stableModel"] == "old"


def test_deployment_state_reads_the_served_model() -> None:
    built = build_deployment(
        mdep(ALIAS), parse(ALIAS), SERVER, version=OLD, track="stable", replicas=1
    )
    container = built["spec"]["template"]["spec"]["containers"][0]
    assert "models:/old/3" in container["args"]
    assert built["spec"]["template"]["metadata"]["labels"]["modelworks.dev/model-version"] == "3"
    read = DeploymentState.of(built)
    assert read is not None and (read.model, read.version) == ("old", "3")
    assert (
        pod_failure(
            [{**crashing_pod("3"), "spec": built["spec"]["template"]["spec"]}], "3", "churn"
        )
        is None
    )


# --- a change of the pod template is watched like a new version --------------------------


def replacing(**fields: Any) -> DeploymentState:
    """The stable Deployment of version 1 with new pods (of a new template) on the way."""
    return replace(state("1"), **{"updated": 1, "total": 3, "ready": 2, "available": 2, **fields})


@pytest.mark.parametrize(
    ("stable", "pods", "ready", "reason", "phase"),
    [
        (replacing(), [], "False", "Progressing", "Progressing"),
        (replacing(), [crashing_pod("1")], "False", "CrashLoopBackOff", "Degraded"),
        (replacing(deadline_exceeded=True), [], "False", "ProgressDeadlineExceeded", "Degraded"),
        (
            replace(state("1"), updated=4, total=4, available=2, ready=2),
            [],
            "True",
            "Serving",
            "Available",
        ),  # scaled up: the same template
        (state("1"), [], "True", "Serving", "Available"),
    ],
)
def test_new_pods_of_the_serving_version_are_watched(
    stable: DeploymentState, pods: list[dict[str, Any]], ready: str, reason: str, phase: str
) -> None:
    d = run(ALIAS, Facts(target("1"), stable=stable, pods=pods), serving("1"))
    assert (cond(d, "Ready")["status"], cond(d, "Ready")["reason"]) == (ready, reason)
    assert d.status["phase"] == phase
    assert d.stable_version == "1" and d.canary_version is None
    if phase == "Degraded":
        assert cond(d, "Degraded")["reason"] == reason
        assert "new pods of version 1" in cond(d, "Degraded")["message"]


# --- the canary's size ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("weight", "stable", "cap", "replicas"),
    [
        (25, 2, None, 1),
        (50, 2, None, 2),
        (90, 3, None, 3),  # never more canary pods than stable ones
        (95, 200, None, 200),
        (95, 200, 10, 10),  # rollout.maxCanaryReplicas
        (50, 8, 3, 3),
        (10, 9, None, 1),
        (99, 1, None, 1),
    ],
)
def test_canary_replicas_are_capped(
    weight: int, stable: int, cap: int | None, replicas: int
) -> None:
    assert canary_replicas(state("1", replicas=stable), weight, cap) == replicas


WITH_100 = {
    **ALIAS,
    "rollout": {
        "strategy": "Canary",
        "steps": [{"weight": 25, "pauseSeconds": 60}, {"weight": 100, "pauseSeconds": 60}],
        "analysis": {"minRequests": 0},
    },
}


def test_a_step_at_weight_100_is_the_promotion() -> None:
    stable = state("1", replicas=4)
    ready = state("2", replicas=2)
    start = run(WITH_100, Facts(target("2"), stable=stable), serving("1"), now=T0)
    hold = run(WITH_100, Facts(target("2"), stable=stable, canary=ready), start.status, now=T0)
    passed = run(WITH_100, Facts(target("2"), stable=stable, canary=ready), hold.status, now=T2)
    assert passed.stable_version == "2", "weight 100: the stable Deployment takes the version"
    assert passed.canary_replicas <= 4


def test_only_a_step_at_weight_100_promotes_at_once() -> None:
    only = {**WITH_100, "rollout": {**WITH_100["rollout"], "steps": [{"weight": 100}]}}
    d = run(only, Facts(target("2"), stable=state("1", replicas=4)), serving("1"), now=T0)
    assert d.stable_version == "2" and d.canary_replicas <= 4


@pytest.mark.parametrize("cap", [0, -1, 1001])
def test_max_canary_replicas_is_bounded(cap: int) -> None:
    with pytest.raises(ValidationError, match="maxCanaryReplicas"):
        parse({**CANARY, "rollout": {**CANARY["rollout"], "maxCanaryReplicas": cap}})
