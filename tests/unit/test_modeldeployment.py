"""ModelDeployment builders, rollout decisions and status: table-driven, plain data."""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

import pytest

from modelworks import conditions
from modelworks.api import MODEL_DEPLOYMENT
from modelworks.api.modeldeployment import Analysis, ModelDeploymentSpec
from modelworks.builders.modeldeployment import (
    ServerConfig,
    build_deployment,
    build_hpa,
    build_pdb,
    build_service,
    desired_hash,
    fixed_replicas,
    url,
)
from modelworks.conditions import Event
from modelworks.names import HASH_ANNOTATION
from modelworks.prommath import histogram_quantile
from modelworks.status.common import typed
from modelworks.status.decision import Decision
from modelworks.status.modeldeployment import (
    Action,
    AnalysisFacts,
    ApplyCanary,
    ApplyStable,
    CanaryState,
    Cond,
    DeleteCanary,
    DeploymentState,
    EnsureHPA,
    EnsurePDB,
    EnsureService,
    Facts,
    Plan,
    RolloutState,
    Target,
    actions,
    analyse,
    analysed,
    analysis_facts,
    canary_replicas,
    canary_step,
    decide,
    failed,
    first_rollout,
    last_resolved,
    pin,
    pod_failure,
    promoting,
    roll_back,
    rolling_update,
    steady,
    summarise,
)

T0 = "2026-01-01T00:00:00Z"
T1 = "2026-01-01T00:00:30Z"
T2 = "2026-01-01T00:02:00Z"
SERVER = ServerConfig("modelworks:0.1.0", "IfNotPresent", "http://mlflow:5000")
URL = "http://churn.ml.svc.cluster.local"


def mdep(
    spec: dict[str, Any], status: dict[str, Any] | None = None, generation: int = 1
) -> dict[str, Any]:
    obj: dict[str, Any] = {
        "apiVersion": "modelworks.dev/v1alpha1",
        "kind": "ModelDeployment",
        "metadata": {"name": "churn", "namespace": "ml", "uid": "u-1", "generation": generation},
        "spec": spec,
    }
    if status is not None:
        obj["status"] = status
    return obj


def parse(spec: dict[str, Any]) -> ModelDeploymentSpec:
    return ModelDeploymentSpec.model_validate(spec)


ALIAS = {"model": {"name": "churn", "alias": "champion"}}
CANARY = {
    **ALIAS,
    "rollout": {
        "strategy": "Canary",
        "steps": [{"weight": 25, "pauseSeconds": 60}, {"weight": 50, "pauseSeconds": 60}],
        "analysis": {"maxErrorRate": 0.05, "maxLatencyRatio": 2.0, "minRequests": 10},
    },
}


def state(
    version: str | None,
    *,
    replicas: int = 2,
    ready: int | None = None,
    complete: bool = True,
    deadline: bool = False,
) -> DeploymentState:
    ready_n = replicas if ready is None else ready
    return DeploymentState(
        version=version,
        replicas=replicas,
        ready=ready_n,
        updated=replicas if complete else 0,
        total=replicas,
        available=ready_n,
        current=True,
        deadline_exceeded=deadline,
    )


def target(version: str) -> Target:
    return Target(
        version, run_id=f"run{version}", source=f"runs:/run{version}/model", alias="champion"
    )


def crashing_pod(version: str) -> dict[str, Any]:
    return {
        "metadata": {
            "name": f"churn-{version}-x",
            "labels": {"modelworks.dev/model-version": version},
        },
        "status": {
            "containerStatuses": [
                {
                    "restartCount": 2,
                    "state": {"waiting": {"reason": "CrashLoopBackOff", "message": "back-off"}},
                    "lastState": {"terminated": {"exitCode": 1, "reason": "Error"}},
                }
            ]
        },
    }


def serving(version: str, generation: int = 1, **extra: Any) -> dict[str, Any]:
    """The status of a deployment that serves ``version`` (before the next pass)."""
    return {
        "observedGeneration": generation,
        "stableVersion": version,
        "history": [{"version": version, "since": T0, "reason": "initial"}],
        **extra,
    }


@dataclass(frozen=True)
class Pass:
    """One decision, with what each Deployment runs read off its actions."""

    decision: Decision[Action]

    @property
    def status(self) -> dict[str, Any]:
        return self.decision.status

    @property
    def events(self) -> list[Event]:
        return self.decision.events

    @property
    def requeue_after(self) -> float | None:
        return self.decision.requeue_after

    @property
    def stable_version(self) -> str | None:
        found = [a.version for a in self.decision.actions if isinstance(a, ApplyStable)]
        return found[0] if found else None

    @property
    def canary_version(self) -> str | None:
        found = [a.version for a in self.decision.actions if isinstance(a, ApplyCanary)]
        return found[0] if found else None

    @property
    def canary_replicas(self) -> int:
        found = [a.replicas for a in self.decision.actions if isinstance(a, ApplyCanary)]
        return found[0] if found else 0


def run(
    spec: dict[str, Any],
    facts: Facts,
    status: dict[str, Any] | None = None,
    now: str = T1,
    generation: int = 1,
) -> Pass:
    facts = replace(facts, generation=generation, url=URL)
    decision = decide(parse(spec), facts, status or {}, now)
    assert typed(MODEL_DEPLOYMENT, decision.status) == decision.status
    return Pass(decision)


def cond(decision: Pass, type_: str) -> dict[str, Any]:
    found = conditions.get(decision.status["conditions"], type_)
    assert found is not None, type_
    return found


def reasons(decision: Pass) -> list[str]:
    return [e.reason for e in decision.events]


# --- builders ----------------------------------------------------------------------


def test_deployment_is_restricted_pinned_and_probed() -> None:
    spec = parse({**ALIAS, "workers": 2, "env": [{"name": "A", "value": "1"}]})
    dep = build_deployment(mdep({}), spec, SERVER, version="3", track="stable", replicas=None)
    pod = dep["spec"]["template"]
    container = pod["spec"]["containers"][0]
    assert "replicas" not in dep["spec"], "the HPA owns replicas"
    assert container["args"] == [
        "serve",
        "--model-uri",
        "models:/churn/3",
        "--port",
        "8080",
        "--workers",
        "2",
    ]
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert env["MLFLOW_TRACKING_URI"] == "http://mlflow:5000" and env["A"] == "1"
    sc = container["securityContext"]
    assert sc["allowPrivilegeEscalation"] is False and sc["capabilities"] == {"drop": ["ALL"]}
    assert sc["readOnlyRootFilesystem"] is True
    assert pod["spec"]["securityContext"]["runAsNonRoot"] is True
    assert pod["spec"]["automountServiceAccountToken"] is False
    assert container["readinessProbe"]["httpGet"]["path"] == "/ping"
    assert container["livenessProbe"]["httpGet"]["path"] == "/version"
    assert pod["metadata"]["labels"]["modelworks.dev/model-version"] == "3"
    assert pod["metadata"]["labels"]["modelworks.dev/track"] == "stable"
    assert dep["spec"]["selector"]["matchLabels"]["modelworks.dev/track"] == "stable"
    assert dep["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"] == 0
    # A leaving pod answers until its endpoint is gone, then drains within the grace period.
    assert container["lifecycle"]["preStop"] == {"sleep": {"seconds": 5}}
    assert pod["spec"]["terminationGracePeriodSeconds"] >= 5 + 25
    assert dep["metadata"]["ownerReferences"][0]["uid"] == "u-1"


@pytest.mark.parametrize(
    ("spec", "name", "replicas"),
    [
        (ALIAS, "churn", 1),
        ({**ALIAS, "replicas": 3}, "churn", 3),
        ({**ALIAS, "replicas": 0}, "churn", 0),
        ({**ALIAS, "autoscaling": {"maxReplicas": 4}}, "churn", None),
    ],
)
def test_fixed_replicas(spec: dict[str, Any], name: str, replicas: int | None) -> None:
    parsed = parse(spec)
    assert fixed_replicas(parsed) == replicas
    dep = build_deployment(
        mdep(spec), parsed, SERVER, version="1", track="stable", replicas=replicas
    )
    assert dep["metadata"]["name"] == name
    assert dep["spec"].get("replicas") == replicas


def test_canary_deployment_has_its_own_name_and_track() -> None:
    dep = build_deployment(mdep({}), parse(ALIAS), SERVER, version="4", track="canary", replicas=1)
    assert dep["metadata"]["name"] == "churn-canary"
    assert dep["spec"]["replicas"] == 1
    assert dep["spec"]["selector"]["matchLabels"]["modelworks.dev/track"] == "canary"


def test_service_selects_both_tracks() -> None:
    svc = build_service(mdep({}), parse({**ALIAS, "service": {"port": 8000, "type": "NodePort"}}))
    assert "modelworks.dev/track" not in svc["spec"]["selector"]
    assert svc["spec"]["type"] == "NodePort"
    assert svc["spec"]["ports"][0] == {
        "name": "http",
        "port": 8000,
        "targetPort": "http",
        "protocol": "TCP",
    }


@pytest.mark.parametrize(
    ("scaling", "metrics"),
    [
        ({"maxReplicas": 3}, ["cpu"]),
        ({"maxReplicas": 3, "targetMemoryUtilization": 70}, ["cpu", "memory"]),
    ],
)
def test_hpa(scaling: dict[str, Any], metrics: list[str]) -> None:
    hpa = build_hpa(mdep({}), parse({**ALIAS, "autoscaling": scaling}))
    assert hpa is not None
    assert hpa["spec"]["scaleTargetRef"]["name"] == "churn"
    assert [m["resource"]["name"] for m in hpa["spec"]["metrics"]] == metrics
    assert build_hpa(mdep({}), parse(ALIAS)) is None


FAST = {"stabilizationWindowSeconds": 0}
PODS = {"type": "Pods", "value": 2, "periodSeconds": 15}


@pytest.mark.parametrize(
    ("behavior", "expected"),
    [
        (None, None),
        ({}, {}),
        ({"scaleUp": FAST}, {"scaleUp": FAST}),
        (
            {"scaleDown": {"stabilizationWindowSeconds": 30, "policies": [PODS]}},
            {"scaleDown": {"stabilizationWindowSeconds": 30, "policies": [PODS]}},
        ),
        (
            {"scaleUp": {"selectPolicy": "Disabled"}, "scaleDown": FAST},
            {"scaleUp": {"selectPolicy": "Disabled"}, "scaleDown": FAST},
        ),
        (
            {
                "scaleUp": {
                    "policies": [PODS, {"type": "Percent", "value": 200, "periodSeconds": 60}]
                }
            },
            {
                "scaleUp": {
                    "policies": [PODS, {"type": "Percent", "value": 200, "periodSeconds": 60}]
                }
            },
        ),
    ],
)
def test_hpa_behavior(behavior: dict[str, Any] | None, expected: dict[str, Any] | None) -> None:
    scaling: dict[str, Any] = {"maxReplicas": 3}
    if behavior is not None:
        scaling["behavior"] = behavior
    hpa = build_hpa(mdep({}), parse({**ALIAS, "autoscaling": scaling}))
    assert hpa is not None
    assert hpa["spec"].get("behavior") == expected


@pytest.mark.parametrize(
    ("spec", "wanted"),
    [
        (ALIAS, False),
        ({**ALIAS, "replicas": 2}, True),
        ({**ALIAS, "autoscaling": {"minReplicas": 1, "maxReplicas": 5}}, False),
        ({**ALIAS, "autoscaling": {"minReplicas": 2, "maxReplicas": 5}}, True),
    ],
)
def test_pdb_only_when_two_always_run(spec: dict[str, Any], wanted: bool) -> None:
    assert (build_pdb(mdep({}), parse(spec)) is not None) == wanted


def test_desired_hash_is_stable_and_changes_with_the_version() -> None:
    spec = parse(ALIAS)
    a = build_deployment(mdep({}), spec, SERVER, version="1", track="stable", replicas=1)
    b = build_deployment(mdep({}), spec, SERVER, version="1", track="stable", replicas=1)
    c = build_deployment(mdep({}), spec, SERVER, version="2", track="stable", replicas=1)
    assert desired_hash(a) == desired_hash(b) != desired_hash(c)
    assert a["metadata"]["annotations"][HASH_ANNOTATION] == desired_hash(a)
    assert desired_hash(None) is None


@pytest.mark.parametrize(
    ("service", "expected"),
    [(None, URL), ({"port": 8080}, URL + ":8080")],
)
def test_url(service: dict[str, Any] | None, expected: str) -> None:
    spec = {**ALIAS, **({"service": service} if service else {})}
    assert url(mdep(spec), parse(spec)) == expected


# --- observations ------------------------------------------------------------------


def test_deployment_state_of_an_object() -> None:
    obj = {
        "metadata": {"generation": 3},
        "spec": {
            "replicas": 2,
            "template": {"metadata": {"labels": {"modelworks.dev/model-version": "5"}}},
        },
        "status": {
            "observedGeneration": 3,
            "replicas": 2,
            "updatedReplicas": 2,
            "readyReplicas": 2,
            "availableReplicas": 2,
            "conditions": [
                {"type": "Progressing", "status": "True", "reason": "NewReplicaSetAvailable"}
            ],
        },
    }
    s = DeploymentState.of(obj)
    assert s is not None and s.version == "5" and s.complete("5") and not s.complete("4")
    assert not s.deadline_exceeded
    stale = DeploymentState.of({**obj, "metadata": {"generation": 4}})
    assert stale is not None and not stale.complete("5")
    assert DeploymentState.of(None) is None


@pytest.mark.parametrize(
    ("waiting", "restarts", "last", "reason"),
    [
        ("CrashLoopBackOff", 1, {}, "CrashLoopBackOff"),
        ("ImagePullBackOff", 0, {}, "ImagePullBackOff"),
        (None, 0, {"reason": "OOMKilled", "exitCode": 137}, "OOMKilled"),
        (None, 3, {"reason": "Error", "exitCode": 1}, "CrashLoop"),
        (None, 1, {"reason": "Error", "exitCode": 1}, None),
        ("ContainerCreating", 0, {}, None),
    ],
)
def test_pod_failure(
    waiting: str | None, restarts: int, last: dict[str, Any], reason: str | None
) -> None:
    cs: dict[str, Any] = {"restartCount": restarts, "state": {}, "lastState": {}}
    if waiting:
        cs["state"] = {"waiting": {"reason": waiting}}
    if last:
        cs["lastState"] = {"terminated": last}
    pod = {
        "metadata": {"name": "p", "labels": {"modelworks.dev/model-version": "2"}},
        "status": {"containerStatuses": [cs]},
    }
    found = pod_failure([pod], "2")
    assert (found[0] if found else None) == reason
    assert pod_failure([pod], "1") is None, "only pods of the version in question count"


@pytest.mark.parametrize(
    ("buckets", "q", "expected"),
    [
        ([(0.1, 50.0), (0.2, 100.0), (float("inf"), 100.0)], 0.5, 0.1),
        ([(0.1, 0.0), (0.2, 100.0), (float("inf"), 100.0)], 0.99, 0.199),
        ([(0.1, 0.0), (float("inf"), 10.0)], 0.99, 0.1),
        ([], 0.99, None),
        ([(0.1, 0.0), (float("inf"), 0.0)], 0.99, None),
    ],
)
def test_histogram_quantile(
    buckets: list[tuple[float, float]], q: float, expected: float | None
) -> None:
    got = histogram_quantile(q, buckets)
    assert got == pytest.approx(expected) if expected is not None else got is None


def test_analysis_facts_sum_pods_per_track() -> None:
    req = "modelworks_serving_requests_total"
    bucket = "modelworks_serving_request_duration_seconds_bucket"
    canary = [
        [(req, {"code": "200"}, 90.0), (req, {"code": "500"}, 10.0)],
        [
            (bucket, {"le": "0.01"}, 0.0),
            (bucket, {"le": "0.1"}, 100.0),
            (bucket, {"le": "+Inf"}, 100.0),
        ],
    ]
    stable = [[(bucket, {"le": "0.01"}, 100.0), (bucket, {"le": "+Inf"}, 100.0)]]
    facts = analysis_facts(canary, stable)
    assert (facts.canary_requests, facts.canary_errors) == (100, 10)
    assert facts.canary_p99 == pytest.approx(0.0991)
    assert facts.stable_p99 == pytest.approx(0.0099)


@pytest.mark.parametrize(
    ("facts", "rules", "verdict"),
    [
        (None, Analysis(min_requests=10), "Inconclusive"),
        (None, Analysis(min_requests=0), "Pass"),
        (AnalysisFacts(5, 0, 0.01, 0.01), Analysis(min_requests=10), "Inconclusive"),
        (AnalysisFacts(100, 1, 0.01, 0.01), Analysis(), "Pass"),
        (AnalysisFacts(100, 10, 0.01, 0.01), Analysis(), "Fail"),
        (AnalysisFacts(100, 0, 0.05, 0.01), Analysis(max_latency_ratio=2.0), "Fail"),
        (AnalysisFacts(100, 0, 0.05, None), Analysis(), "Pass"),
        # A p99 over fewer than 100 requests is their maximum: latency waits, errors do not.
        (AnalysisFacts(40, 0, 0.05, 0.01), Analysis(), "Inconclusive"),
        (AnalysisFacts(40, 0, 0.011, 0.01), Analysis(), "Inconclusive"),
        (AnalysisFacts(40, 10, 0.011, 0.01), Analysis(), "Fail"),
        (AnalysisFacts(40, 0, 0.05, None), Analysis(), "Pass"),
    ],
)
def test_analyse(facts: AnalysisFacts | None, rules: Analysis, verdict: str) -> None:
    assert analyse(facts, rules)[0] == verdict


# --- decisions ---------------------------------------------------------------------


def test_first_rollout_waits_then_serves() -> None:
    waiting = run(ALIAS, Facts(target("1")))
    assert (waiting.stable_version, waiting.canary_version) == ("1", None)
    assert waiting.status["phase"] == "Pending"
    assert cond(waiting, "Progressing")["status"] == "True"
    assert cond(waiting, "Ready")["status"] == "False"
    assert waiting.requeue_after == 5.0

    done = run(ALIAS, Facts(target("1"), stable=state("1")), status=waiting.status, now=T2)
    assert done.status["stableVersion"] == "1"
    assert done.status["phase"] == "Available"
    assert cond(done, "Ready")["status"] == "True" and cond(done, "Ready")["reason"] == "Serving"
    assert done.status["history"] == [
        {
            "version": "1",
            "model": "churn",
            "since": T2,
            "reason": "alias champion points at version 1",
        }
    ]
    assert done.status["resolved"] == {
        "version": "1",
        "runId": "run1",
        "source": "runs:/run1/model",
        "alias": "champion",
    }
    assert done.status["url"] == URL
    assert "Serving" in reasons(done)
    assert done.requeue_after == 30.0, "an alias is polled"


def test_settled_pass_changes_nothing() -> None:
    first = run(ALIAS, Facts(target("1"), stable=state("1")), status=serving("1"))
    again = run(ALIAS, Facts(target("1"), stable=state("1")), status=first.status, now=T2)
    assert again.status == first.status
    assert again.events == []


def test_first_rollout_that_crashes_fails_with_nothing_to_roll_back_to() -> None:
    d = run(
        ALIAS,
        Facts(target("1"), stable=state("1", ready=0, complete=False), pods=[crashing_pod("1")]),
    )
    assert d.stable_version == "1"
    assert d.status["phase"] == "Failed"
    assert cond(d, "Degraded")["reason"] == "CrashLoopBackOff"
    assert "CrashLoopBackOff" in reasons(d)


def test_alias_move_rolls_the_stable_deployment() -> None:
    d = run(ALIAS, Facts(target("2"), stable=state("1")), status=serving("1"))
    assert d.stable_version == "2"
    assert d.status["phase"] == "Progressing"
    assert "RolloutStarted" in reasons(d)
    done = run(ALIAS, Facts(target("2"), stable=state("2")), status=d.status, now=T2)
    assert done.status["stableVersion"] == "2"
    assert [h["version"] for h in done.status["history"]] == ["1", "2"]
    assert done.status["history"][0]["until"] == T2
    assert "RolledOut" in reasons(done)
    assert cond(done, "Ready")["status"] == "True"


@pytest.mark.parametrize(
    ("observed", "pods", "reason"),
    [
        (state("2", ready=0, complete=False), [crashing_pod("2")], "CrashLoopBackOff"),
        (state("2", ready=0, complete=False, deadline=True), [], "ProgressDeadlineExceeded"),
    ],
)
def test_a_version_that_never_gets_ready_is_rolled_back_and_pinned(
    observed: DeploymentState, pods: list[dict[str, Any]], reason: str
) -> None:
    d = run(ALIAS, Facts(target("2"), stable=observed, pods=pods), status=serving("1"))
    assert d.stable_version == "1", "the last good version is applied again"
    rb = d.status["rollback"]
    assert (rb["fromVersion"], rb["toVersion"], rb["reason"]) == ("2", "1", reason)
    assert d.status["phase"] == "Degraded"
    assert cond(d, "Degraded")["status"] == "True"
    assert cond(d, "Ready")["status"] == "False"
    assert any(e.reason == "RolledBack" and e.type == "Warning" for e in d.events)

    # Next pass: the alias still points at 2, the spec is the same: 1 stays pinned.
    pinned = run(ALIAS, Facts(target("2"), stable=state("1")), status=d.status, now=T2)
    assert pinned.stable_version == "1"
    assert pinned.status["stableVersion"] == "1"
    assert pinned.status["phase"] == "Degraded"
    assert cond(pinned, "Available")["status"] == "True"
    assert pinned.events == []

    # The alias moves on: the pin is released and 3 rolls out.
    moved = run(ALIAS, Facts(target("3"), stable=state("1")), status=pinned.status, now=T2)
    assert moved.stable_version == "3" and "rollback" not in moved.status

    # The spec changes (a new generation): version 2 is tried again.
    edited = run(ALIAS, Facts(target("2"), stable=state("1")), status=pinned.status, generation=2)
    assert edited.stable_version == "2"


def test_without_auto_rollback_a_failure_is_reported_not_undone() -> None:
    spec = {**ALIAS, "rollout": {"autoRollback": False}}
    d = run(
        spec,
        Facts(target("2"), stable=state("2", ready=0, complete=False), pods=[crashing_pod("2")]),
        status=serving("1"),
    )
    assert d.stable_version == "2"
    assert "rollback" not in d.status
    assert cond(d, "Degraded")["reason"] == "CrashLoopBackOff"


def canary_facts(
    stable: DeploymentState, canary: DeploymentState | None, analysis: AnalysisFacts | None = None
) -> Facts:
    return Facts(target("2"), stable=stable, canary=canary, analysis=analysis)


def test_canary_walks_its_steps_and_promotes() -> None:
    start = run(CANARY, canary_facts(state("1"), None), status=serving("1"), now=T0)
    assert (start.stable_version, start.canary_version) == ("1", "2")
    assert start.canary_replicas == 1  # 25% next to 2 stable pods
    assert start.status["canary"]["step"] == 1 and start.status["canary"]["weight"] == 25
    assert "RolloutStarted" in reasons(start)

    ready = state("2", replicas=1)
    hold = run(CANARY, canary_facts(state("1"), ready), status=start.status, now=T0)
    assert hold.status["canary"]["stepStarted"] == T0
    assert "holding" in hold.status["canary"]["message"]

    good = AnalysisFacts(150, 0, 0.01, 0.01)
    step2 = run(CANARY, canary_facts(state("1"), ready, good), status=hold.status, now=T2)
    assert step2.status["canary"]["step"] == 2
    assert "CanaryStep" in reasons(step2)
    assert step2.stable_version == "1"

    # Step 2 at 50%: the canary grows to as many pods as stable.
    grow = run(CANARY, canary_facts(state("1"), ready, good), status=step2.status, now=T2)
    assert grow.canary_replicas == 2 and grow.status["canary"]["weight"] == 50
    ready2 = state("2", replicas=2)
    hold2 = run(CANARY, canary_facts(state("1"), ready2, good), status=grow.status, now=T0)
    last = run(CANARY, canary_facts(state("1"), ready2, good), status=hold2.status, now=T2)
    assert last.stable_version == "2", "promotion: the stable Deployment takes the version"
    assert last.canary_version == "2", "the canary serves until stable is rolled out"

    promoting = run(
        CANARY,
        canary_facts(state("2", complete=False, ready=1), ready2, good),
        status=last.status,
        now=T2,
    )
    assert promoting.status["phase"] == "Progressing"
    assert promoting.canary_version == "2"

    done = run(CANARY, canary_facts(state("2"), ready2, good), status=promoting.status, now=T2)
    assert done.canary_version is None and done.stable_version == "2"
    assert done.status["stableVersion"] == "2" and "canary" not in done.status
    assert "Promoted" in reasons(done)
    assert cond(done, "Ready")["status"] == "True"


def test_canary_waits_for_enough_requests() -> None:
    start = run(
        CANARY, canary_facts(state("1"), state("2", replicas=1)), status=serving("1"), now=T0
    )
    few = AnalysisFacts(3, 0, 0.01, 0.01)
    d = run(
        CANARY, canary_facts(state("1"), state("2", replicas=1), few), status=start.status, now=T2
    )
    assert d.status["canary"]["step"] == 1
    assert "3 of 10 requests" in d.status["canary"]["message"]


@pytest.mark.parametrize(
    "bad",
    [AnalysisFacts(100, 20, 0.01, 0.01), AnalysisFacts(100, 0, 0.5, 0.01)],
)
def test_canary_failing_analysis_is_rolled_back(bad: AnalysisFacts) -> None:
    start = run(
        CANARY, canary_facts(state("1"), state("2", replicas=1)), status=serving("1"), now=T0
    )
    d = run(
        CANARY, canary_facts(state("1"), state("2", replicas=1), bad), status=start.status, now=T2
    )
    assert d.canary_version is None and d.stable_version == "1"
    assert d.status["rollback"]["reason"] == "AnalysisFailed"
    assert "canary" not in d.status
    assert d.status["phase"] == "Degraded"


def test_canary_that_crashes_is_rolled_back() -> None:
    crashed = Facts(
        target("2"),
        stable=state("1"),
        canary=state("2", replicas=1, ready=0, complete=False),
        pods=[crashing_pod("2")],
    )
    d = run(CANARY, crashed, status=serving("1", canary={"version": "2", "step": 1, "weight": 25}))
    assert d.canary_version is None
    assert d.status["rollback"]["reason"] == "CrashLoopBackOff"


def test_alias_moving_back_aborts_the_canary() -> None:
    status = serving("1", canary={"version": "2", "step": 1, "weight": 25})
    d = run(
        CANARY,
        replace(canary_facts(state("1"), state("2", replicas=1)), target=target("1")),
        status=status,
    )
    assert d.canary_version is None and d.stable_version == "1"
    assert "RolloutAborted" in reasons(d)


@pytest.mark.parametrize(
    ("reason", "phase"),
    [("AliasNotFound", "Failed"), ("ModelNotFound", "Failed"), ("MLflowUnavailable", "Pending")],
)
def test_nothing_resolved_and_nothing_served(reason: str, phase: str) -> None:
    d = run(ALIAS, Facts(None, resolve_reason=reason, resolve_message="why"))
    assert d.stable_version is None
    assert d.status["phase"] == phase
    assert cond(d, "Ready")["reason"] == reason
    assert cond(d, "ModelResolved")["status"] == "False"
    assert d.requeue_after == 30.0


def test_registry_outage_keeps_the_served_version() -> None:
    facts = Facts(
        None, resolve_reason="MLflowUnavailable", resolve_message="down", stable=state("1")
    )
    d = run(ALIAS, facts, status={**serving("1"), "resolved": {"version": "1"}})
    assert d.stable_version == "1"
    assert d.status["resolved"] == {"version": "1"}
    assert cond(d, "Ready")["status"] == "True"
    assert any(e.reason == "MLflowUnavailable" and e.type == "Warning" for e in d.events)


# --- the rollout's small steps, one table each ----------------------------------------


def plan(stable: str | None = "1", **fields: Any) -> Plan:
    return Plan(stable=stable, run_stable=stable, **fields)


def test_rollout_state_reads_the_old_status() -> None:
    old = serving("1", canary={"version": "2", "step": 2, "stepStarted": T0, "replicas": 1})
    state_ = RolloutState.read(old)
    assert state_.stable == "1" and state_.rollback is None
    assert state_.canary == CanaryState("2", 2, T0, 1)
    assert RolloutState.read({}) == RolloutState(None)
    assert CanaryState.read({}) is None and CanaryState.read({"version": "2"}) == CanaryState(
        "2", 1, None, None
    )


RB = {"fromVersion": "2", "toVersion": "1", "reason": "CrashLoop", "observedGeneration": 1}


@pytest.mark.parametrize(
    ("rollback", "target_", "generation", "kept", "pinned"),
    [
        (None, target("2"), 1, False, False),
        (RB, target("2"), 1, True, True),
        (RB, target("3"), 1, False, False),  # the alias moved on
        (RB, target("2"), 2, False, False),  # the spec changed
        (RB, None, 1, True, False),  # nothing resolves: the pin stays, unused
    ],
)
def test_pin(
    rollback: dict[str, Any] | None,
    target_: Target | None,
    generation: int,
    kept: bool,
    pinned: bool,
) -> None:
    assert pin(rollback, target_, generation) == (rollback if kept else None, pinned)


@pytest.mark.parametrize(
    ("stable", "pods", "serving_", "progressing", "degraded", "poll"),
    [
        (None, [], None, ("True", "RollingOut"), "AsExpected", True),
        (state("1", ready=0, complete=False), [], None, ("True", "RollingOut"), "AsExpected", True),
        (state("1"), [], "1", ("False", "RolloutComplete"), "AsExpected", False),
        (
            state("1", ready=0, complete=False),
            [crashing_pod("1")],
            None,
            ("False", "RolloutFailed"),
            "CrashLoopBackOff",
            False,
        ),
        (
            state("1", ready=0, complete=False, deadline=True),
            [],
            None,
            ("False", "RolloutFailed"),
            "ProgressDeadlineExceeded",
            False,
        ),
    ],
)
def test_first_rollout(
    stable: DeploymentState | None,
    pods: list[dict[str, Any]],
    serving_: str | None,
    progressing: tuple[str, str],
    degraded: str,
    poll: bool,
) -> None:
    facts = Facts(target("1"), stable=stable, pods=pods, generation=1)
    got = first_rollout(parse(ALIAS), facts, plan(None), "1", T1)
    assert got.run_stable == "1" and got.stable == serving_
    assert (str(got.progressing.value), got.progressing.reason) == progressing
    assert got.degraded.reason == degraded and got.failed_first == (degraded != "AsExpected")
    assert got.poll == poll
    assert [e.reason for e in got.events] == (["Serving"] if serving_ else [])
    assert [h["version"] for h in got.history] == ([serving_] if serving_ else [])


@pytest.mark.parametrize(
    ("stable", "canary", "pinned", "poll", "degraded", "events"),
    [
        (state("1"), None, False, False, "AsExpected", []),
        # new pods of the same version (a pod template change): Progressing
        (state("1", complete=False), None, False, True, "AsExpected", []),
        (state("1"), CanaryState("2", 1, None, 1), False, False, "AsExpected", ["RolloutAborted"]),
        (state("1"), CanaryState("1", 1, None, 1), False, False, "AsExpected", []),
        (state("1"), None, True, False, "RolledBack", []),
    ],
)
def test_steady(
    stable: DeploymentState,
    canary: CanaryState | None,
    pinned: bool,
    poll: bool,
    degraded: str,
    events: list[str],
) -> None:
    start = plan(rollback={**RB, "message": "it crashed"} if pinned else None)
    got = steady(Facts(target("2" if pinned else "1"), stable=stable), start, canary, pinned)
    assert (got.run_stable, got.canary_version, got.poll) == ("1", None, poll)
    assert got.degraded.reason == degraded
    assert got.progressing.value is (not stable.complete("1") and not pinned)
    assert [e.reason for e in got.events] == events
    if pinned:
        assert "stays pinned until the spec or the alias changes" in got.degraded.message


@pytest.mark.parametrize(
    ("spec", "stable", "pods", "run_stable", "progressing", "events"),
    [
        (ALIAS, state("1"), [], "2", "RollingOut", ["RolloutStarted"]),
        (ALIAS, state("2", complete=False), [], "2", "RollingOut", []),
        (ALIAS, state("2"), [], "2", "RolloutComplete", ["RolledOut"]),
        (ALIAS, state("2", complete=False), [crashing_pod("2")], "1", "RolledBack", ["RolledBack"]),
        (
            {**ALIAS, "rollout": {"autoRollback": False}},
            state("2", complete=False),
            [crashing_pod("2")],
            "2",
            "RolloutFailed",
            [],
        ),
    ],
)
def test_rolling_update(
    spec: dict[str, Any],
    stable: DeploymentState,
    pods: list[dict[str, Any]],
    run_stable: str,
    progressing: str,
    events: list[str],
) -> None:
    facts = Facts(target("2"), stable=stable, pods=pods, generation=1)
    got = rolling_update(parse(spec), facts, plan("1"), "2", T1)
    assert got.run_stable == run_stable and got.progressing.reason == progressing
    assert [e.reason for e in got.events] == events
    assert got.stable == ("2" if progressing == "RolloutComplete" else "1")
    assert got.poll == (progressing != "RolloutComplete")


@pytest.mark.parametrize(
    ("weight", "stable", "replicas"),
    [
        (25, state("1", replicas=2), 1),
        (50, state("1", replicas=2), 2),
        (100, None, 1),
        (10, state("1", replicas=9), 1),
        (90, state("1", replicas=3), 3),  # capped at the stable pods
    ],
)
def test_canary_replicas(weight: int, stable: DeploymentState | None, replicas: int) -> None:
    assert canary_replicas(stable, weight) == replicas


GOOD = AnalysisFacts(150, 0, 0.01, 0.01)


@pytest.mark.parametrize(
    ("old", "canary", "now", "step", "started", "run_stable", "events", "progressing"),
    [
        # A new canary: step 1, its pods are started; no stepStarted yet.
        (None, None, T0, 1, None, "1", ["RolloutStarted"], "starting 1 canary pod(s)"),
        # The pods are ready: the pause begins now.
        (None, state("2", replicas=1), T0, 1, T0, "1", ["RolloutStarted"], "25% of traffic"),
        # Still holding: the pause is measured from the step's own stepStarted.
        (CanaryState("2", 1, T0, 1), state("2", replicas=1), T1, 1, T0, "1", [], "25% of"),
        # Pause over, analysis passes: on to step 2, whose pause has not begun.
        (
            CanaryState("2", 1, T0, 1),
            state("2", replicas=1),
            T2,
            2,
            None,
            "1",
            ["CanaryStep"],
            "1/2 passed",
        ),
        # Step 2 needs 2 pods: waiting for them, no stepStarted.
        (CanaryState("2", 2, None, 1), state("2", replicas=1), T2, 2, None, "1", [], "starting 2"),
        # The last step passes: the stable Deployment takes the version.
        (CanaryState("2", 2, T0, 2), state("2", replicas=2), T2, 3, None, "2", [], "2/2 passed"),
        # A canary of an older target starts over.
        (CanaryState("3", 2, T0, 2), None, T2, 1, None, "1", ["RolloutStarted"], "starting 1"),
    ],
)
def test_canary_step(
    old: CanaryState | None,
    canary: DeploymentState | None,
    now: str,
    step: int,
    started: str | None,
    run_stable: str,
    events: list[str],
    progressing: str,
) -> None:
    facts = canary_facts(state("1"), canary, GOOD)
    move = canary_step(parse(CANARY), facts, "2", "1", old, now)
    assert (move.fields["step"], move.fields.get("stepStarted")) == (step, started)
    assert move.run_stable == run_stable and not move.promoted
    assert [e.reason for e in move.events] == events
    assert move.progressing.value is True and progressing in move.progressing.message


@pytest.mark.parametrize(
    ("analysis", "step", "verdict", "weight", "run_stable", "events"),
    [
        (GOOD, 1, "Pass", 25, "1", ["CanaryStep"]),
        (GOOD, 2, "Pass", 100, "2", []),
        (AnalysisFacts(3, 0, 0.01, 0.01), 1, "Inconclusive", 25, "1", []),
        (AnalysisFacts(100, 20, 0.01, 0.01), 1, "Fail", 25, "1", []),
    ],
)
def test_analysed(
    analysis: AnalysisFacts,
    step: int,
    verdict: str,
    weight: int,
    run_stable: str,
    events: list[str],
) -> None:
    fields = {"version": "2", "step": step, "weight": 25, "stepStarted": T0, "replicas": 1}
    facts = canary_facts(state("1"), state("2", replicas=1), analysis)
    move = analysed(parse(CANARY), facts, "2", "1", step, fields)
    assert move.verdict is not None and move.verdict[0] == verdict
    assert move.fields["step"] == (step + 1 if verdict == "Pass" else step)
    assert move.fields["stepStarted"] == (None if verdict == "Pass" else T0)
    assert move.fields["weight"] == weight and move.run_stable == run_stable
    assert [e.reason for e in move.events] == events


@pytest.mark.parametrize(
    ("stable", "promoted", "replicas", "progressing"),
    [
        (state("2"), True, 0, "RolloutComplete"),
        (state("2", complete=False, ready=1), False, 2, "Promoting"),
    ],
)
def test_promoting(
    stable: DeploymentState, promoted: bool, replicas: int, progressing: str
) -> None:
    facts = canary_facts(stable, state("2", replicas=2))
    move = promoting(facts, "2", CanaryState("2", 3, None, 2))
    assert (move.promoted, move.replicas, move.run_stable) == (promoted, replicas, "2")
    assert move.progressing.reason == progressing
    assert move.fields["weight"] == 100 and move.fields["message"] == "promoting version 2"


@pytest.mark.parametrize(
    ("spec", "progressing", "rollback"),
    [
        (ALIAS, "RolledBack", True),
        ({**ALIAS, "rollout": {"autoRollback": True}}, "RolledBack", True),
        ({**ALIAS, "rollout": {"autoRollback": False}}, "RolloutFailed", False),
    ],
)
def test_failed_rolls_back_unless_told_not_to(
    spec: dict[str, Any], progressing: str, rollback: bool
) -> None:
    got = failed(
        parse(spec), Facts(target("2"), generation=3), plan(), "2", ("OOMKilled", "oom"), T1
    )
    assert got.progressing == Cond(False, progressing, got.progressing.message)
    assert got.degraded.value is True and (got.rollback is not None) == rollback


def test_roll_back_pins_the_failed_version_and_keeps_the_stable_one() -> None:
    start = plan(canary={"version": "2"}, canary_version="2", canary_replicas=1)
    got = roll_back(start, "2", ("AnalysisFailed", "too many errors"), 4, T1)
    assert got.rollback == {
        "reason": "AnalysisFailed",
        "message": "too many errors",
        "fromVersion": "2",
        "toVersion": "1",
        "at": T1,
        "observedGeneration": 4,
    }
    assert (got.run_stable, got.canary, got.canary_version) == ("1", None, None)
    assert got.degraded == Cond(True, "RolledBack", "version 2 was rolled back: too many errors")
    assert [(e.reason, e.type) for e in got.events] == [("RolledBack", "Warning")]
    assert got.events[0].message == "Version 2 rolled back to 1: too many errors"


ROLLING = Cond(True, "RollingOut", "rolling out version 2")
DEGRADED = Cond(True, "CrashLoop", "pod p: restarted")


@pytest.mark.parametrize(
    ("facts", "plan_", "ready", "phase", "waiting"),
    [
        (Facts(target("1"), stable=state("1")), plan(), ("True", "Serving"), "Available", False),
        (
            Facts(None, resolve_reason="AliasNotFound"),
            plan(None),
            ("False", "AliasNotFound"),
            "Failed",
            False,
        ),
        (
            Facts(None, resolve_reason="MLflowUnavailable"),
            plan(None),
            ("False", "MLflowUnavailable"),
            "Pending",
            False,
        ),
        (
            Facts(target("2"), stable=state("1")),
            plan(degraded=DEGRADED),
            ("False", "CrashLoop"),
            "Degraded",
            False,
        ),
        (
            Facts(target("1")),
            plan(None, degraded=DEGRADED, failed_first=True),
            ("False", "CrashLoop"),
            "Failed",
            False,
        ),
        (
            Facts(target("2"), stable=state("1")),
            plan(progressing=ROLLING),
            ("False", "Progressing"),
            "Progressing",
            False,
        ),
        (
            Facts(target("1")),
            plan(None, progressing=ROLLING),
            ("False", "Progressing"),
            "Pending",
            False,
        ),
        (Facts(None, stable=state("1")), plan(), ("True", "Serving"), "Available", False),
        (
            Facts(None, resolve_reason="MLflowUnavailable", stable=state("1", ready=0)),
            plan(),
            ("False", "MLflowUnavailable"),
            "Pending",
            False,
        ),
        (
            Facts(target("1"), stable=state("1", ready=0)),
            plan(),
            ("False", "Pending"),
            "Pending",
            True,
        ),
    ],
)
def test_summarise(
    facts: Facts, plan_: Plan, ready: tuple[str, str], phase: str, waiting: bool
) -> None:
    summary, got_phase, got_waiting = summarise(facts, plan_, 2)
    assert (str(summary.value), summary.reason) == ready
    assert (got_phase, got_waiting) == (phase, waiting)


APPLIED = replace(state("1"), applied="h1")


@pytest.mark.parametrize(
    ("plan_", "facts", "old", "expected"),
    [
        (plan(None), Facts(None), {}, []),
        (
            plan(),
            Facts(target("1"), stable=APPLIED, generation=1),
            {"observedGeneration": 1},
            [ApplyStable("1", "h1"), EnsureService(False), EnsureHPA(False), EnsurePDB(False)],
        ),
        (
            plan(),
            Facts(target("1"), generation=2),
            {"observedGeneration": 1},
            [ApplyStable("1", None), EnsureService(True), EnsureHPA(True), EnsurePDB(True)],
        ),
        (
            plan(canary_version="2", canary_replicas=3),
            Facts(
                target("2"), stable=APPLIED, canary=replace(state("2"), applied="h2"), generation=1
            ),
            {"observedGeneration": 1},
            [
                ApplyStable("1", "h1"),
                EnsureService(False),
                EnsureHPA(False),
                EnsurePDB(False),
                ApplyCanary("2", 3, "h2"),
            ],
        ),
        (
            plan(),
            Facts(target("1"), stable=APPLIED, canary=state("2"), generation=1),
            {"observedGeneration": 1},
            [
                ApplyStable("1", "h1"),
                EnsureService(False),
                EnsureHPA(False),
                EnsurePDB(False),
                DeleteCanary(),
            ],
        ),
        (
            plan(),
            Facts(
                target("1"), stable=APPLIED, canary=replace(state("2"), deleting=True), generation=1
            ),
            {"observedGeneration": 1},
            [ApplyStable("1", "h1"), EnsureService(False), EnsureHPA(False), EnsurePDB(False)],
        ),
    ],
)
def test_actions(plan_: Plan, facts: Facts, old: dict[str, Any], expected: list[Action]) -> None:
    assert list(actions(plan_, facts, old)) == expected


# --- the registry down in the middle of a rollout ------------------------------------------

LAST = {"version": "2", "runId": "run2", "source": "runs:/run2/model", "alias": "champion"}


@pytest.mark.parametrize(
    ("spec", "status", "generation", "expected"),
    [
        (ALIAS, {"observedGeneration": 1, "resolved": LAST}, 1, target("2")),
        (ALIAS, {"observedGeneration": 1, "resolved": LAST}, 2, None),  # another spec
        (ALIAS, {"observedGeneration": 1}, 1, None),  # never resolved
        (
            {"model": {"name": "churn", "alias": "challenger"}},
            {"observedGeneration": 1, "resolved": LAST},
            1,
            None,
        ),
        (
            {"model": {"name": "churn", "version": "2"}},
            {"observedGeneration": 1, "resolved": {"version": "2", "runId": "run2"}},
            1,
            Target("2", run_id="run2"),
        ),
        (
            {"model": {"name": "churn", "version": "3"}},
            {"observedGeneration": 1, "resolved": {"version": "2"}},
            1,
            None,
        ),
    ],
)
def test_last_resolved_target_is_kept_only_for_the_same_spec(
    spec: dict[str, Any], status: dict[str, Any], generation: int, expected: Target | None
) -> None:
    assert last_resolved(parse(spec), status, generation) == expected


def test_a_canary_fails_and_rolls_back_while_the_registry_is_down() -> None:
    status = {
        **serving("1", canary={"version": "2", "step": 1, "weight": 25, "stepStarted": T0}),
        "resolved": LAST,
    }
    facts = Facts(
        target("2"),
        resolve_reason="MLflowUnavailable",
        resolve_message="the MLflow registry did not answer: timed out",
        stable=state("1"),
        canary=state("2", replicas=1, ready=0, complete=False, deadline=True),
    )
    d = run(CANARY, facts, status=status)
    assert d.canary_version is None and d.stable_version == "1"
    assert d.status["rollback"]["reason"] == "ProgressDeadlineExceeded"
    assert "RolledBack" in reasons(d) and "RolloutAborted" not in reasons(d)
    resolved = cond(d, "ModelResolved")
    assert (resolved["status"], resolved["reason"]) == ("False", "MLflowUnavailable")
    assert "version 2, resolved last, is kept" in resolved["message"]
    assert d.status["resolved"] == LAST
    assert d.decision.result == "retry"


def test_a_registry_outage_after_a_spec_change_forgets_the_old_target() -> None:
    facts = Facts(None, resolve_reason="MLflowUnavailable", stable=state("1"))
    d = run(ALIAS, facts, status={**serving("1"), "resolved": LAST}, generation=2)
    assert "resolved" not in d.status
    assert d.stable_version == "1"
