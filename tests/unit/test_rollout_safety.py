"""ModelDeployment rollout safety: bad metrics, canary size, template changes, model renames,
the switch to autoscaling. Pure decisions over plain data."""

from __future__ import annotations

import math

import pytest

from modelworks.api.modeldeployment import Autoscaling
from modelworks.prommath import histogram_quantile
from modelworks.status.modeldeployment import (
    AnalysisFacts,
    ApplyStable,
    Facts,
    analysis_facts,
    kept_replicas,
)
from tests.unit.test_modeldeployment import ALIAS, CANARY, T0, reasons, run, serving, state, target

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
