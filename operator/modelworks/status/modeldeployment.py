"""ModelDeployment: decide the rollout and compute the status from what was observed. Pure.

One pass sees: the version the spec resolves to (the target), the stable and canary
Deployments as they are, the serving pods, and (during a canary step) what analysis of
the canary's metrics found. :func:`decide` returns the whole new status, the Events to
post and the writes (:data:`Action`) that make each Deployment run what it must. The state
that must survive a restart of the operator lives in the status (:class:`RolloutState`):
``stableVersion`` (the last version that served all traffic), ``canary`` (step, weight,
when the step's pause began) and ``rollback`` (the version rolled back from, pinned away
while the spec is unchanged). Each kind of pass is one small function returning a
:class:`Plan`: first rollout, steady, rolling update, canary (its steps: waiting for pods,
holding, analysed, promoting) and rollback.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, NamedTuple

from modelworks import conditions
from modelworks.api import MODEL_DEPLOYMENT
from modelworks.api.modeldeployment import (
    MODELS_SCHEME,
    Analysis,
    Autoscaling,
    ModelDeploymentSpec,
    split_ref,
    version_ref,
)
from modelworks.conditions import Event
from modelworks.names import (
    MODEL_URI_ENV,
    SERVING_LATENCY_BUCKET,
    SERVING_REQUESTS_METRIC,
    VERSION_LABEL,
)
from modelworks.names import seconds_between as _seconds_between
from modelworks.prommath import histogram_quantile
from modelworks.status import capture
from modelworks.status.capture import CapturePod
from modelworks.status.decision import Decision, StatusBuilder

HISTORY_LIMIT = 20
# Container states that will not fix themselves: the version is broken.
BROKEN_WAITING = frozenset(
    {
        "CrashLoopBackOff",
        "ImagePullBackOff",
        "ErrImagePull",
        "InvalidImageName",
        "CreateContainerConfigError",
        "CreateContainerError",
        "RunContainerError",
    }
)
RESTARTS_BROKEN = 3
ACTIVE_POLL = 5.0  # seconds between passes while a rollout is in progress
LATENCY_MIN_REQUESTS = 100  # canary requests before its p99 is compared with stable's
ALIAS_POLL = 30.0  # how often a settled deployment that follows an alias asks the registry


@dataclass(frozen=True)
class Target:
    """The registered version the spec resolves to."""

    version: str
    run_id: str | None = None
    source: str | None = None
    alias: str | None = None


@dataclass(frozen=True)
class DeploymentState:
    """One serving Deployment, as observed."""

    version: str | None  # of its pod template
    replicas: int  # desired (spec.replicas, as the HPA set it)
    ready: int
    updated: int
    total: int  # status.replicas: old and new pods
    available: int
    current: bool  # the controller has seen the latest spec
    deadline_exceeded: bool
    deleting: bool = False  # it has a deletionTimestamp
    applied: str | None = None  # the desired-hash annotation it carries (observe reads it)
    model: str | None = None  # the registered model its pods serve (None: not named)

    @classmethod
    def of(cls, obj: Mapping[str, Any] | None) -> DeploymentState | None:
        if obj is None:
            return None
        spec = obj.get("spec") or {}
        status = obj.get("status") or {}
        labels = ((spec.get("template") or {}).get("metadata") or {}).get("labels") or {}
        progressing = conditions.get(status.get("conditions"), "Progressing") or {}
        return cls(
            model=served_model((spec.get("template") or {}).get("spec")),
            version=labels.get(VERSION_LABEL),
            replicas=int(spec.get("replicas", 1) if spec.get("replicas") is not None else 1),
            ready=int(status.get("readyReplicas") or 0),
            updated=int(status.get("updatedReplicas") or 0),
            total=int(status.get("replicas") or 0),
            available=int(status.get("availableReplicas") or 0),
            current=int(status.get("observedGeneration") or 0)
            >= int((obj.get("metadata") or {}).get("generation") or 0),
            deadline_exceeded=progressing.get("reason") == "ProgressDeadlineExceeded",
            deleting=bool((obj.get("metadata") or {}).get("deletionTimestamp")),
        )

    def complete(self, version: str) -> bool:
        """Rolled out: every pod runs ``version`` and is available (kubectl rollout status)."""
        return (
            self.version == version
            and self.current
            and self.updated >= self.replicas
            and self.total == self.updated
            and self.available >= self.updated
            and (self.replicas == 0 or self.ready > 0)
        )


def served_model(pod_spec: Mapping[str, Any] | None) -> str | None:
    """The registered model a model server pod (or pod template) serves, by its model URI."""
    for container in (pod_spec or {}).get("containers") or []:
        for env in container.get("env") or []:
            value = str(env.get("value") or "")
            if env.get("name") == MODEL_URI_ENV and value.startswith(MODELS_SCHEME):
                return split_ref(value, "")[0] or None
    return None


@dataclass(frozen=True)
class AnalysisFacts:
    """What the canary's and the stable pods' /metrics said (cumulative since pod start)."""

    canary_requests: int
    canary_errors: int
    canary_p99: float | None
    stable_p99: float | None
    unreachable: int = 0  # canary pods whose /metrics did not answer


@dataclass(frozen=True)
class Facts:
    target: Target | None
    resolve_reason: str = (
        ""  # why there is no target: ModelNotFound, AliasNotFound, MLflowUnavailable
    )
    resolve_message: str = ""
    stable: DeploymentState | None = None
    canary: DeploymentState | None = None
    pods: Sequence[Mapping[str, Any]] = field(default_factory=tuple)
    analysis: AnalysisFacts | None = None
    generation: int | None = None  # metadata.generation of the ModelDeployment
    url: str = ""  # where its Service answers
    capture: tuple[CapturePod, ...] = ()  # the serving pods, when spec.dataCapture is set


# ---- the writes act makes: each idempotent, applied only where it differs -----------


@dataclass(frozen=True)
class ApplyStable:
    """The stable Deployment runs ``version`` (``applied``: its digest as observed).
    ``keep_replicas``: an HPA owns the count, and before a write that leaves it out the count
    running now (within the HPA's bounds) is handed over, so it is not reset to 1."""

    version: str
    applied: str | None = None
    keep_replicas: int | None = None


@dataclass(frozen=True)
class ApplyCanary:
    """The canary Deployment runs ``replicas`` pods of ``version``."""

    version: str
    replicas: int
    applied: str | None = None


@dataclass(frozen=True)
class DeleteCanary:
    """No canary: the canary Deployment that is there goes."""


@dataclass(frozen=True)
class EnsureService:
    """The Service as the spec says; ``force``: the spec changed, write even if it looks the
    same (act always reads it first: one of that name not owned is never written over)."""

    force: bool


@dataclass(frozen=True)
class EnsureHPA:
    """The HorizontalPodAutoscaler when the spec asks for one; ``force``: write it (or
    delete a leftover this object owns) even if it looks the same."""

    force: bool


@dataclass(frozen=True)
class EnsurePDB:
    """The PodDisruptionBudget when two pods always run; ``force`` as for :class:`EnsureHPA`."""

    force: bool


Action = ApplyStable | ApplyCanary | DeleteCanary | EnsureService | EnsureHPA | EnsurePDB


# ---- the rollout: what the old status remembers, and what one pass plans -------------


@dataclass(frozen=True)
class CanaryState:
    """The canary as the old status remembers it."""

    version: str | None
    step: int
    step_started: str | None  # absent until the step's pause begins
    replicas: int | None

    @classmethod
    def read(cls, canary: Mapping[str, Any] | None, current: str = "") -> CanaryState | None:
        if not canary:
            return None
        return cls(
            version=_ref_in(canary.get("version"), canary.get("model"), current),
            step=int(canary.get("step") or 1),
            step_started=canary.get("stepStarted"),
            replicas=canary.get("replicas"),
        )


@dataclass(frozen=True)
class RolloutState:
    """What survives a restart of the operator: read from the old status."""

    stable: str | None  # stableVersion: the last version that served all traffic
    history: tuple[Mapping[str, Any], ...] = ()
    rollback: Mapping[str, Any] | None = None
    canary: CanaryState | None = None

    @classmethod
    def read(cls, old: Mapping[str, Any], current: str = "") -> RolloutState:
        """Versions become :func:`version_ref` identities relative to the spec's model
        ``current``; a version stored without its model is one of ``current``."""
        rollback = old.get("rollback")
        return cls(
            stable=_ref_in(old.get("stableVersion"), old.get("stableModel"), current),
            history=tuple(_refs_in(h, ("version",), current) for h in old.get("history") or ()),
            rollback=None if rollback is None else _refs_in(rollback, REFS_IN_ROLLBACK, current),
            canary=CanaryState.read(old.get("canary"), current),
        )


REFS_IN_ROLLBACK = ("fromVersion", "toVersion")


def _model_key(key: str) -> str:
    return key.removesuffix("Version") + "Model" if key != "version" else "model"


def _ref_in(version: str | None, model: str | None, current: str) -> str | None:
    return None if version is None else version_ref(model, str(version), current)


def _refs_in(entry: Mapping[str, Any], keys: Sequence[str], current: str) -> dict[str, Any]:
    """A stored entry with its (model, version) pairs as identities."""
    out = {k: v for k, v in entry.items() if k not in {_model_key(key) for key in keys}}
    for key in keys:
        out[key] = _ref_in(entry.get(key), entry.get(_model_key(key)), current)
    return out


def refs_out(entry: Mapping[str, Any], keys: Sequence[str], current: str) -> dict[str, Any]:
    """An entry for the status: each identity stored as its model and version number."""
    out = dict(entry)
    for key in keys:
        if out.get(key) is not None:
            out[_model_key(key)], out[key] = split_ref(str(out[key]), current)
    return out


class Cond(NamedTuple):
    """A condition's value, reason and message."""

    value: bool
    reason: str
    message: str


COMPLETE = Cond(False, "RolloutComplete", "")
AS_EXPECTED = Cond(False, "AsExpected", "")


@dataclass(frozen=True)
class Plan:
    """What one pass decided about the rollout: what each Deployment runs, what the status
    remembers, and how the rollout stands."""

    stable: str | None  # the stableVersion to record
    run_stable: str | None  # what the stable Deployment runs (None: nothing to serve yet)
    history: tuple[Mapping[str, Any], ...] = ()
    rollback: Mapping[str, Any] | None = None
    canary: Mapping[str, Any] | None = None  # the canary's status fields
    canary_version: str | None = None  # what the canary Deployment runs (None: no canary)
    canary_replicas: int = 0
    progressing: Cond = COMPLETE
    degraded: Cond = AS_EXPECTED
    failed_first: bool = False  # the first version failed: nothing to fall back to
    poll: bool = False  # a rollout is under way: look again soon
    events: tuple[Event, ...] = ()

    def say(self, *events: Event) -> Plan:
        return replace(self, events=self.events + events)


@dataclass(frozen=True)
class CanaryMove:
    """Where one canary step stands after this pass."""

    fields: Mapping[str, Any]  # the canary's status fields
    run_stable: str
    replicas: int
    progressing: Cond
    verdict: tuple[str, str] | None = None  # the analysis, once the step's pause is over
    promoted: bool = False  # every step passed and the stable pods run the version
    events: tuple[Event, ...] = ()


def pod_failure(
    pods: Sequence[Mapping[str, Any]], version: str, current: str = ""
) -> tuple[str, str] | None:
    """Why the pods of ``version`` (a :func:`version_ref` relative to model ``current``) are
    broken (a state that will not fix itself), if they are."""
    for pod in pods:
        if _pod_ref(pod, current) != version or (pod.get("metadata") or {}).get(
            "deletionTimestamp"
        ):
            continue
        for cs in (pod.get("status") or {}).get("containerStatuses") or []:
            state = cs.get("state") or {}
            waiting = state.get("waiting") or {}
            last = (cs.get("lastState") or {}).get("terminated") or {}
            name = pod["metadata"]["name"]
            if waiting.get("reason") in BROKEN_WAITING:
                detail = waiting.get("message") or last.get("reason") or ""
                return waiting["reason"], f"pod {name}: {waiting['reason']} {detail}".strip()
            if last.get("reason") == "OOMKilled":
                return "OOMKilled", f"pod {name}: the model server ran out of memory"
            if int(cs.get("restartCount") or 0) >= RESTARTS_BROKEN:
                return "CrashLoop", (
                    f"pod {name}: restarted {cs['restartCount']} times "
                    f"(last exit {last.get('exitCode', '?')} {last.get('reason', '')})".strip()
                )
    return None


def _pod_ref(pod: Mapping[str, Any], current: str) -> str | None:
    labels = (pod.get("metadata") or {}).get("labels") or {}
    number = labels.get(VERSION_LABEL)
    if number is None or not current:
        return number
    return version_ref(served_model(pod.get("spec")), str(number), current)


def deadline_failure(
    state: DeploymentState | None, version: str, spec: ModelDeploymentSpec
) -> tuple[str, str] | None:
    """The Deployment running ``version`` gave up: no progress within the deadline."""
    if state is None or state.version != version or not state.deadline_exceeded:
        return None
    seconds = _deadline(spec)
    return (
        "ProgressDeadlineExceeded",
        f"pods of version {version} did not become ready within {seconds}s",
    )


def analyse(facts: AnalysisFacts | None, rules: Analysis) -> tuple[str, str]:
    """``(verdict, message)``: verdict Pass, Fail or Inconclusive for one canary step."""
    if facts is None or (facts.canary_requests < rules.min_requests):
        seen = 0 if facts is None else facts.canary_requests
        if rules.min_requests == 0:
            return "Pass", "no analysis required (minRequests 0)"
        return "Inconclusive", f"{seen} of {rules.min_requests} requests needed for analysis"
    rate = facts.canary_errors / facts.canary_requests if facts.canary_requests else 0.0
    if rate > rules.max_error_rate:
        return "Fail", (
            f"error rate {rate:.1%} over {facts.canary_requests} requests "
            f"(at most {rules.max_error_rate:.1%})"
        )
    ratio = latency_ratio(facts)
    if ratio is not None and facts.canary_requests < LATENCY_MIN_REQUESTS:
        # A p99 of fewer requests is their maximum: one slow request would decide.
        return "Inconclusive", (
            f"error rate {rate:.1%}; {facts.canary_requests} of {LATENCY_MIN_REQUESTS} "
            "requests needed for the p99 latency comparison"
        )
    if ratio is not None and ratio > rules.max_latency_ratio:
        return "Fail", (
            f"p99 latency {ratio:.2f}x the stable version's (at most {rules.max_latency_ratio}x)"
        )
    shown = "n/a" if ratio is None else f"{ratio:.2f}x"
    return (
        "Pass",
        f"error rate {rate:.1%}, p99 latency {shown} stable, {facts.canary_requests} requests",
    )


def unusable_metrics(
    outcome: tuple[str, str], facts: AnalysisFacts | None, overdue: bool
) -> tuple[str, str]:
    """An inconclusive step whose canary pods' /metrics did not answer or were not finite
    says so; past the deadline it fails instead of waiting for ever."""
    verdict, message = outcome
    if verdict != "Inconclusive" or facts is None or facts.unreachable == 0:
        return outcome
    why = f"metrics of {facts.unreachable} canary pod(s) unusable (no answer, or NaN/Inf samples)"
    if overdue:
        return "Fail", f"{why} past the progress deadline; {message}"
    return verdict, f"{message}; {why}"


def _deadline(spec: ModelDeploymentSpec) -> int:
    return spec.rollout.progress_deadline_seconds if spec.rollout else 600


def latency_ratio(facts: AnalysisFacts | None) -> float | None:
    if facts is None or not facts.canary_p99 or not facts.stable_p99:
        return None
    return facts.canary_p99 / facts.stable_p99


def _with_history(
    history: Sequence[Mapping[str, Any]], version: str, now: str, reason: str
) -> tuple[dict[str, Any], ...]:
    out = [dict(h) for h in history]
    for entry in out:
        if entry.get("until") is None:
            entry["until"] = now
    out.append({"version": version, "since": now, "reason": reason})
    return tuple(out[-HISTORY_LIMIT:])


def _why(target: Target | None, generation: int | None) -> str:
    if target is not None and target.alias:
        return f"alias {target.alias} points at version {target.version}"
    return f"spec (generation {generation}) asks for version {target.version if target else '?'}"


def decide(
    spec: ModelDeploymentSpec, facts: Facts, old: Mapping[str, Any], now: str
) -> Decision[Action]:
    """The next step of the rollout, the whole new status and the writes that make it so."""
    current = spec.model.name
    state = RolloutState.read(with_stable_model(old, facts.stable), current)
    facts = relative(facts, current)
    rollback, pinned = pin(state.rollback, facts.target, facts.generation)
    plan = plan_rollout(spec, facts, replace(state, rollback=rollback), pinned, now)
    stable, canary = facts.stable, facts.canary
    ready = (stable.ready if stable else 0) + (canary.ready if canary else 0)
    b = StatusBuilder(MODEL_DEPLOYMENT, old, facts.generation, now)
    b.set(
        resolved=_resolved(facts.target, old, facts.generation),
        replicas=(stable.replicas if stable else 0) + plan.canary_replicas,
        readyReplicas=ready,
        url=facts.url,
        **_versions_out(plan, current),
    )
    _put_conditions(b, spec, facts, plan)
    _put_capture(b, spec, facts, old)
    summary, phase, waiting = summarise(facts, plan, ready)
    b.put("Ready", *summary)
    b.set(phase=phase)
    decided = b.decide(
        actions=actions(plan, facts, old, autoscaling=spec.autoscaling),
        requeue_after=_requeue(spec, facts, plan.poll or waiting),
        result="retry" if facts.resolve_reason == "MLflowUnavailable" else "ok",
    )
    news = _news(old.get("conditions"), decided.status["conditions"])
    return replace(decided, events=[*plan.events, *news])


def with_stable_model(old: Mapping[str, Any], stable: DeploymentState | None) -> Mapping[str, Any]:
    """A status that names no model for ``stableVersion`` (written before models were named,
    or by a CRD that prunes the field): the model the stable Deployment serves, when it
    serves that version."""
    if old.get("stableModel") or old.get("stableVersion") is None or stable is None:
        return old
    if stable.model is None or stable.version != str(old["stableVersion"]):
        return old
    return {**old, "stableModel": stable.model}


def relative(facts: Facts, current: str) -> Facts:
    """The Deployments' versions as :func:`version_ref` identities relative to ``current``."""

    def rel(state: DeploymentState | None) -> DeploymentState | None:
        if state is None or state.version is None:
            return state
        return replace(state, version=version_ref(state.model, state.version, current))

    return replace(facts, stable=rel(facts.stable), canary=rel(facts.canary))


def _versions_out(plan: Plan, current: str) -> dict[str, Any]:
    """The status fields that name versions, each with its model."""
    stable = split_ref(plan.stable, current) if plan.stable is not None else (None, None)
    canary = _present(plan.canary)
    return {
        "stableVersion": stable[1],
        "stableModel": stable[0],
        "canary": None if canary is None else refs_out(canary, ("version",), current),
        "history": [refs_out(h, ("version",), current) for h in plan.history] or None,
        "rollback": None
        if plan.rollback is None
        else refs_out(plan.rollback, REFS_IN_ROLLBACK, current),
    }


def pin(
    rollback: Mapping[str, Any] | None, target: Target | None, generation: int | None
) -> tuple[Mapping[str, Any] | None, bool]:
    """``(rollback, pinned)``: a rollback pins its version away while the spec and the target
    stay; when either moved on, the pin is released (kept while nothing resolves)."""
    pinned = (
        rollback is not None
        and target is not None
        and rollback.get("fromVersion") == target.version
        and rollback.get("observedGeneration") == generation
    )
    if rollback is not None and target is not None and not pinned:
        return None, False
    return rollback, pinned


def plan_rollout(
    spec: ModelDeploymentSpec, facts: Facts, state: RolloutState, pinned: bool, now: str
) -> Plan:
    """Which kind of pass this is, and what it plans."""
    target = facts.target
    desired = state.stable if (target is None or pinned) else target.version
    plan = Plan(
        stable=state.stable,
        run_stable=state.stable,
        history=state.history,
        rollback=state.rollback,
    )
    if desired is None:
        return replace(plan, run_stable=None)  # nothing resolved and nothing ever served
    if state.stable is None:
        return first_rollout(spec, facts, plan, desired, now)
    if desired == state.stable:
        return steady(facts, plan, state.canary, pinned, spec=spec)
    if spec.rollout is None or spec.rollout.strategy != "Canary":
        return rolling_update(spec, facts, plan, desired, now)
    return canary_rollout(spec, facts, plan, state.canary, desired, now)


def first_rollout(
    spec: ModelDeploymentSpec, facts: Facts, plan: Plan, desired: str, now: str
) -> Plan:
    """Nothing served yet, so nothing to fall back to: start ``desired`` and wait for it."""
    plan = replace(plan, run_stable=desired)
    if facts.stable is not None and facts.stable.complete(desired):
        served = _adopt(plan, desired, facts, now)
        return served.say(Event("Serving", f"Version {desired} is serving", "Normal"))
    failure = pod_failure(facts.pods, desired, spec.model.name) or deadline_failure(
        facts.stable, desired, spec
    )
    if failure is not None:
        return replace(
            plan,
            failed_first=True,
            progressing=Cond(False, "RolloutFailed", failure[1]),
            degraded=Cond(True, *failure),
        )
    return replace(
        plan, progressing=Cond(True, "RollingOut", f"starting version {desired}"), poll=True
    )


def steady(
    facts: Facts,
    plan: Plan,
    canary: CanaryState | None,
    pinned: bool,
    *,
    spec: ModelDeploymentSpec | None = None,
) -> Plan:
    """The target is what serves (or is pinned away): keep it; a canary of another version
    is aborted; a change of the pod template rolling out is watched like a new version."""
    stable_version = plan.stable
    assert stable_version is not None
    if canary is not None and canary.version not in (None, stable_version):
        plan = plan.say(
            Event(
                "RolloutAborted",
                f"Version {canary.version} is no longer the target; "
                f"version {stable_version} keeps all traffic",
                "Normal",
            )
        )
    stable = facts.stable
    if stable is not None and stable.version == stable_version:
        plan = replace(plan, poll=not stable.complete(stable_version))  # e.g. rolling back
        plan = template_rollout(spec, facts, plan, stable)
    if pinned:
        assert plan.rollback is not None
        message = (
            f"version {plan.rollback.get('fromVersion')} was rolled back "
            f"({plan.rollback.get('message') or plan.rollback.get('reason')}); version "
            f"{stable_version} stays pinned until the spec or the alias changes"
        )
        plan = replace(
            plan,
            degraded=Cond(True, "RolledBack", message),
            progressing=Cond(False, "RolledBack", message),
        )
    return plan


def template_rollout(
    spec: ModelDeploymentSpec | None, facts: Facts, plan: Plan, stable: DeploymentState
) -> Plan:
    """The stable version's pods are being replaced (a change of image, env, resources...):
    the rollout is Progressing, and new pods that will not get ready make it Degraded. The
    old pods keep answering (maxUnavailable 0) until the spec is fixed."""
    version = stable.version
    assert version is not None
    if stable.complete(version):
        return plan
    current = spec.model.name if spec is not None else ""
    failure = pod_failure(facts.pods, version, current)
    if failure is None and spec is not None:
        failure = deadline_failure(stable, version, spec)
    if failure is not None:
        message = f"the new pods of version {version} are failing: {failure[1]}"
        return replace(
            plan,
            progressing=Cond(False, "RolloutFailed", message),
            degraded=Cond(True, failure[0], message),
        )
    if stable.current and stable.updated >= stable.total:
        return plan  # scaling, not a new pod template
    message = f"replacing the pods of version {version} (the pod template changed)"
    return replace(plan, progressing=Cond(True, "RollingOut", message))


def rolling_update(
    spec: ModelDeploymentSpec, facts: Facts, plan: Plan, desired: str, now: str
) -> Plan:
    """RollingUpdate: the stable Deployment moves to the new version; maxUnavailable 0 keeps
    the old pods answering until new ones are ready."""
    plan = replace(plan, run_stable=desired)
    stable = facts.stable
    if stable is not None and stable.complete(desired):
        done = plan.say(Event("RolledOut", f"Version {desired} replaced {plan.stable}", "Normal"))
        return _adopt(done, desired, facts, now)
    if not (stable is not None and stable.version == desired):
        plan = plan.say(
            Event(
                "RolloutStarted",
                f"Rolling out version {desired} (was {plan.stable}): "
                f"{_why(facts.target, facts.generation)}",
                "Normal",
            )
        )
    plan = replace(plan, poll=True)
    failure = pod_failure(facts.pods, desired, spec.model.name) or deadline_failure(
        stable, desired, spec
    )
    if failure is not None:
        return failed(spec, facts, plan, desired, failure, now)
    return replace(plan, progressing=Cond(True, "RollingOut", f"rolling out version {desired}"))


def canary_rollout(
    spec: ModelDeploymentSpec,
    facts: Facts,
    plan: Plan,
    canary: CanaryState | None,
    desired: str,
    now: str,
) -> Plan:
    """Canary: the step decides what runs; a failure or a failed analysis rolls back; the
    last step's pods settling promotes the version."""
    assert plan.stable is not None
    move = canary_step(spec, facts, desired, plan.stable, canary, now)
    plan = replace(
        plan.say(*move.events),
        run_stable=move.run_stable,
        canary=move.fields,
        canary_version=desired,
        canary_replicas=move.replicas,
        progressing=move.progressing,
        poll=True,
    )
    failure = (
        pod_failure(facts.pods, desired, spec.model.name)
        or deadline_failure(facts.canary, desired, spec)
        or deadline_failure(facts.stable, desired, spec)
    )
    if failure is None and move.verdict is not None and move.verdict[0] == "Fail":
        failure = ("AnalysisFailed", move.verdict[1])
    if failure is not None:
        return failed(spec, facts, plan, desired, failure, now)
    if not move.promoted:
        return plan
    promoted = replace(
        plan.say(Event("Promoted", f"Version {desired} promoted; it serves all traffic", "Normal")),
        run_stable=desired,
        canary=None,
        canary_version=None,
        canary_replicas=0,
        progressing=Cond(False, "RolloutComplete", f"version {desired} promoted"),
    )
    return _adopt(promoted, desired, facts, now)


def failed(
    spec: ModelDeploymentSpec,
    facts: Facts,
    plan: Plan,
    version: str,
    failure: tuple[str, str],
    now: str,
) -> Plan:
    """``version`` will not get ready: roll back to the stable version, or (autoRollback
    off) say so and leave it."""
    if spec.rollout is None or spec.rollout.auto_rollback:
        return roll_back(plan, version, failure, facts.generation, now)
    return replace(
        plan, progressing=Cond(False, "RolloutFailed", failure[1]), degraded=Cond(True, *failure)
    )


def roll_back(
    plan: Plan, failed_version: str, failure: tuple[str, str], generation: int | None, now: str
) -> Plan:
    """The stable version takes all traffic again and ``failed_version`` is pinned away."""
    stable = plan.stable
    assert stable is not None
    reason, message = failure
    said = f"version {failed_version} was rolled back: {message}"
    rolled = replace(
        plan,
        rollback={
            "reason": reason,
            "message": message,
            "fromVersion": failed_version,
            "toVersion": stable,
            "at": now,
            "observedGeneration": generation,
        },
        run_stable=stable,
        canary=None,
        canary_version=None,
        progressing=Cond(False, "RolledBack", said),
        degraded=Cond(True, "RolledBack", said),
    )
    return rolled.say(
        Event(
            "RolledBack", f"Version {failed_version} rolled back to {stable}: {message}", "Warning"
        )
    )


def _adopt(plan: Plan, version: str, facts: Facts, now: str) -> Plan:
    """``version`` now serves all traffic: it is the stable version, with a history entry."""
    why = _why(facts.target, facts.generation)
    return replace(plan, stable=version, history=_with_history(plan.history, version, now, why))


# ---- one canary step ------------------------------------------------------------------


def canary_step(
    spec: ModelDeploymentSpec,
    facts: Facts,
    desired: str,
    stable_version: str,
    old: CanaryState | None,
    now: str,
) -> CanaryMove:
    """Where the canary of ``desired`` stands: a new canary starts at step 1; past the last
    step it is promoting."""
    assert spec.rollout is not None
    steps = spec.rollout.steps or []
    if old is not None and old.version == desired:
        if old.step > len(steps):
            return promoting(facts, desired, old)
        return step_at(spec, facts, desired, stable_version, old, old.step, now)
    if steps[0].weight >= 100:
        return promoting(facts, desired, CanaryState(desired, len(steps) + 1, None, None))
    started = Event(
        "RolloutStarted",
        f"Canary of version {desired} (stable {stable_version}): "
        f"step 1/{len(steps)} at {steps[0].weight}%",
        "Normal",
    )
    move = step_at(spec, facts, desired, stable_version, None, 1, now)
    return replace(move, events=(started, *move.events))


def promoting(facts: Facts, desired: str, old: CanaryState) -> CanaryMove:
    """Every step passed: the stable Deployment takes the new version; the canary stays up
    (at full weight) until the stable pods of the new version are all ready."""
    fields = {
        **_canary_fields(old, desired, old.step, 100, None, facts),
        "message": f"promoting version {desired}",
    }
    if facts.stable is not None and facts.stable.complete(desired):
        return CanaryMove(fields, desired, 0, COMPLETE, promoted=True)
    return CanaryMove(
        fields,
        desired,
        facts.canary.replicas if facts.canary else 1,
        Cond(True, "Promoting", f"promoting version {desired} to stable"),
    )


def step_at(
    spec: ModelDeploymentSpec,
    facts: Facts,
    desired: str,
    stable_version: str,
    old: CanaryState | None,
    step: int,
    now: str,
) -> CanaryMove:
    """Step ``step``: wait for its canary pods, then hold its weight for its pause (measured
    from ``stepStarted``, set when the pods are ready), then analyse."""
    assert spec.rollout is not None
    steps = spec.rollout.steps or []
    current = steps[step - 1]
    replicas = canary_replicas(facts.stable, current.weight, spec.rollout.max_canary_replicas)
    observed = facts.canary
    if not (
        observed is not None
        and observed.version == desired
        and observed.current
        and observed.ready >= replicas
    ):
        fields = {
            **_canary_fields(old, desired, step, current.weight, None, facts),
            "replicas": replicas,
            "message": f"waiting for {replicas} canary pod(s) of version {desired}",
        }
        starting = f"step {step}/{len(steps)}: starting {replicas} canary pod(s)"
        return CanaryMove(fields, stable_version, replicas, Cond(True, "CanaryStep", starting))
    started = old.step_started if old is not None and old.step_started is not None else now
    elapsed = _seconds_between(started, now)
    fields = {
        **_canary_fields(old, desired, step, current.weight, started, facts),
        "replicas": replicas,
    }
    if elapsed < current.pause_seconds:
        fields["message"] = (
            f"holding {current.weight}% for {int(current.pause_seconds - elapsed)}s more "
            f"({replicas} canary pod(s), {share(replicas, facts.stable)}% of the pods)"
        )
        holding = f"step {step}/{len(steps)}: {current.weight}% of traffic"
        return CanaryMove(fields, stable_version, replicas, Cond(True, "CanaryStep", holding))
    overdue = elapsed >= current.pause_seconds + _deadline(spec)
    return analysed(spec, facts, desired, stable_version, step, fields, overdue=overdue)


def analysed(
    spec: ModelDeploymentSpec,
    facts: Facts,
    desired: str,
    stable_version: str,
    step: int,
    fields: Mapping[str, Any],
    *,
    overdue: bool = False,
) -> CanaryMove:
    """The step's pause is over: the analysis passes it (on to the next step, or promote
    after the last), fails it, or has too little to say yet. Too little to say because
    canary pods' metrics are unusable fails the step once ``overdue`` (the progress
    deadline after the pause)."""
    assert spec.rollout is not None
    steps = spec.rollout.steps or []
    replicas = int(fields["replicas"])
    verdict, message = unusable_metrics(
        analyse(facts.analysis, spec.rollout.analysis or Analysis()), facts.analysis, overdue
    )
    if verdict != "Pass":
        return CanaryMove(
            {**fields, "message": message},
            stable_version,
            replicas,
            Cond(True, "CanaryStep", f"step {step}/{len(steps)}: {message}"),
            verdict=(verdict, message),
        )
    passed = Cond(True, "CanaryStep", f"step {step}/{len(steps)} passed: {message}")
    nxt = {**fields, "step": step + 1, "stepStarted": None, "message": message}
    if step < len(steps) and steps[step].weight < 100:
        event = Event(
            "CanaryStep",
            f"Version {desired}: step {step + 1}/{len(steps)} at {steps[step].weight}% ({message})",
            "Normal",
        )
        return CanaryMove(
            nxt, stable_version, replicas, passed, (verdict, message), False, (event,)
        )
    last = {
        **nxt,
        "step": len(steps) + 1,
        "weight": 100,
        "message": f"analysis passed ({message}); promoting",
    }
    return CanaryMove(last, desired, replicas, passed, (verdict, message))


def canary_replicas(stable: DeploymentState | None, weight: int, cap: int | None = None) -> int:
    """Canary pods for ``weight`` percent of the pods (so of the traffic) next to the stable
    pods, never more than the stable pods nor ``cap`` (rollout.maxCanaryReplicas): past half
    of the traffic the share stays at most a half until promotion."""
    stable_size = max(stable.replicas if stable else 1, 1)
    limit = stable_size if cap is None else min(stable_size, cap)
    if weight >= 100:
        return limit
    return min(max(1, math.ceil(stable_size * weight / (100 - weight))), limit)


def share(canary: int, stable: DeploymentState | None) -> int:
    """The percent of the serving pods that are canary pods."""
    total = canary + max(stable.replicas if stable else 1, 1)
    return round(100 * canary / total)


def _canary_fields(
    old: CanaryState | None,
    version: str,
    step: int,
    weight: int,
    started: str | None,
    facts: Facts,
) -> dict[str, Any]:
    fields: dict[str, Any] = {
        "version": version,
        "step": step,
        "weight": weight,
        "stepStarted": started,
        "replicas": old.replicas if old is not None else None,
        "readyReplicas": facts.canary.ready if facts.canary else 0,
    }
    analysis = facts.analysis
    if analysis is not None:
        fields["requests"] = analysis.canary_requests
        fields["errorRate"] = (
            round(analysis.canary_errors / analysis.canary_requests, 4)
            if analysis.canary_requests
            else 0.0
        )
        ratio = latency_ratio(analysis)
        fields["latencyRatio"] = round(ratio, 3) if ratio is not None else None
    return fields


# ---- the status, the writes, the next pass ----------------------------------------------


def _present(fields: Mapping[str, Any] | None) -> dict[str, Any] | None:
    return None if fields is None else {k: v for k, v in fields.items() if v is not None}


def last_resolved(
    spec: ModelDeploymentSpec, old: Mapping[str, Any], generation: int | None
) -> Target | None:
    """The target the last pass resolved for this very spec (its generation, its alias or
    version), to go on with while the registry cannot be asked; None when there is none."""
    last = old.get("resolved") or {}
    if old.get("observedGeneration") != generation or not last.get("version"):
        return None
    if last.get("alias") != spec.model.alias:
        return None
    if spec.model.version is not None and str(last["version"]) != spec.model.version:
        return None
    return Target(str(last["version"]), last.get("runId"), last.get("source"), spec.model.alias)


def _resolved(
    target: Target | None, old: Mapping[str, Any], generation: int | None
) -> dict[str, Any] | None:
    if target is None:
        # The last version resolved while the registry is down, as long as the spec is the
        # one it was resolved for.
        same = old.get("observedGeneration") == generation
        return old.get("resolved") if same else None
    resolved = {
        "version": target.version,
        "runId": target.run_id,
        "source": target.source,
        "alias": target.alias,
    }
    return {k: v for k, v in resolved.items() if v is not None}


def _put_conditions(b: StatusBuilder, spec: ModelDeploymentSpec, facts: Facts, plan: Plan) -> None:
    target = facts.target
    if target is not None and facts.resolve_reason:
        message = f"{facts.resolve_message}; version {target.version}, resolved last, is kept"
        b.put("ModelResolved", False, facts.resolve_reason, message)
    elif target is not None:
        b.put("ModelResolved", True, "Resolved", f"{spec.model.name} version {target.version}")
    else:
        b.put("ModelResolved", False, facts.resolve_reason or "Unresolved", facts.resolve_message)
    stable_ready = facts.stable.ready if facts.stable else 0
    if stable_ready > 0:
        b.put("Available", True, "MinimumReplicasAvailable", f"{stable_ready} ready")
    else:
        b.put("Available", False, "NoReplicasAvailable", "no serving pod is ready")
    b.put("Progressing", *plan.progressing)
    b.put("Degraded", *plan.degraded)


def _put_capture(
    b: StatusBuilder, spec: ModelDeploymentSpec, facts: Facts, old: Mapping[str, Any]
) -> None:
    """DataCaptureHealthy and the dropped rows it compares with next time (only with
    spec.dataCapture)."""
    if spec.data_capture is None:
        b.drop(conditions.DATA_CAPTURE_HEALTHY)
        return
    before = int((old.get("dataCapture") or {}).get("rowsDropped") or 0)
    found, dropped = capture.health(spec, facts.capture, before)
    b.put(conditions.DATA_CAPTURE_HEALTHY, *found)
    b.set(dataCapture={"rowsDropped": dropped})


def summarise(facts: Facts, plan: Plan, ready: int) -> tuple[Cond, str, bool]:
    """``(Ready, phase, waiting)``: the summary condition, the phase, and whether the pass
    waits for serving pods (and looks again soon)."""
    target, stable_version = facts.target, plan.stable
    stable_ready = facts.stable.ready if facts.stable else 0
    reason = facts.resolve_reason or "Unresolved"
    progressing, degraded = plan.progressing, plan.degraded
    serving_target = target is not None and stable_version == target.version
    if serving_target and stable_ready > 0 and not progressing.value and not degraded.value:
        alias = f" (alias {target.alias})" if target and target.alias else ""
        message = f"version {stable_version}{alias} on {ready} ready replica(s) at {facts.url}"
        return Cond(True, "Serving", message), "Available", False
    if target is None and stable_version is None:
        phase = "Failed" if facts.resolve_reason not in ("MLflowUnavailable", "") else "Pending"
        return Cond(False, reason, facts.resolve_message), phase, False
    if degraded.value:
        summary = Cond(False, degraded.reason, degraded.message)
        return summary, "Failed" if plan.failed_first else "Degraded", False
    if progressing.value:
        phase = "Pending" if stable_version is None else "Progressing"
        return Cond(False, "Progressing", progressing.message), phase, False
    if target is None:
        # Serving the last resolved version while the registry cannot be asked.
        message = f"version {stable_version} keeps serving; {facts.resolve_message}"
        serves = stable_ready > 0
        summary = Cond(serves, "Serving" if serves else reason, message)
        return summary, "Available" if serves else "Pending", False
    return Cond(False, "Pending", "waiting for serving pods to become ready"), "Pending", True


NEWS = ("Degraded", "ModelResolved", conditions.DATA_CAPTURE_HEALTHY)
OWN_EVENTS = ("AsExpected", "Resolved", "RolledBack")  # a recovery or a rollback has its own


def _news(
    before: Sequence[Mapping[str, Any]] | None, after: Sequence[Mapping[str, Any]]
) -> list[Event]:
    """Events for the transitions of Degraded and ModelResolved; the other conditions'
    transitions are told by the rollout's own Events."""
    return [
        Event(reason, message, type_)
        for type_, reason, message in conditions.transitions(
            [c for c in before or () if c.get("type") in NEWS],
            [c for c in after if c.get("type") in NEWS],
        )
        if reason not in OWN_EVENTS
    ]


def kept_replicas(stable: DeploymentState | None, autoscaling: Autoscaling | None) -> int | None:
    """The count an autoscaled stable Deployment keeps while the HPA takes it over: what runs
    now, within the HPA's bounds (None: fixed replicas, or no Deployment yet)."""
    if autoscaling is None or stable is None:
        return None
    return min(max(stable.replicas, autoscaling.min_replicas), autoscaling.max_replicas)


def actions(
    plan: Plan, facts: Facts, old: Mapping[str, Any], *, autoscaling: Autoscaling | None = None
) -> tuple[Action, ...]:
    """The writes: each Deployment as planned (act skips one whose digest is already there),
    the Service, HPA and PDB (written when the spec changed, else only when they differ),
    and no canary Deployment when none is planned."""
    out: list[Action] = []
    stable, canary = facts.stable, facts.canary
    if plan.run_stable is not None:
        spec_changed = old.get("observedGeneration") != facts.generation
        keep = kept_replicas(stable, autoscaling)
        out += [
            ApplyStable(plan.run_stable, stable.applied if stable else None, keep),
            EnsureService(force=spec_changed),
            EnsureHPA(force=spec_changed or stable is None),
            EnsurePDB(force=spec_changed or stable is None),
        ]
    if plan.canary_version is not None:
        applied = canary.applied if canary else None
        out.append(ApplyCanary(plan.canary_version, plan.canary_replicas, applied))
    elif canary is not None and not canary.deleting:
        out.append(DeleteCanary())
    return tuple(out)


def _requeue(spec: ModelDeploymentSpec, facts: Facts, active: bool) -> float | None:
    if active:
        return ACTIVE_POLL
    if spec.model.alias or facts.target is None:
        return ALIAS_POLL  # follow the alias; or ask the registry again
    if spec.data_capture is not None:
        return capture.CAPTURE_POLL  # read the pods' capture counters again
    return None


SampleTuple = tuple[str, Mapping[str, str], float]


def usable(samples: Sequence[SampleTuple]) -> bool:
    """A pod's samples can be summed: none is NaN or infinite (a ``+Inf`` bucket *edge* is
    a label, not a value)."""
    return all(math.isfinite(value) for _, _, value in samples)


def _totals(pods: Sequence[Sequence[SampleTuple]]) -> tuple[int, int, float | None]:
    requests = errors = 0.0
    buckets: dict[float, float] = {}
    for samples in pods:
        for name, labels, value in samples:
            if name == SERVING_REQUESTS_METRIC:
                requests += value
                if str(labels.get("code", "")).startswith("5"):
                    errors += value
            elif name == SERVING_LATENCY_BUCKET:
                le = float(labels.get("le", "inf"))
                buckets[le] = buckets.get(le, 0.0) + value
    p99 = histogram_quantile(0.99, list(buckets.items()))
    return int(requests), int(errors), p99


def analysis_facts(
    canary: Sequence[Sequence[SampleTuple]],
    stable: Sequence[Sequence[SampleTuple]],
    unreachable: int = 0,
) -> AnalysisFacts:
    """Sum the pods' request counters and latency histograms per track. A pod whose samples
    are not all finite is left out (missing data) and counted with the unreachable ones."""
    good_canary = [p for p in canary if usable(p)]
    c_requests, c_errors, c_p99 = _totals(good_canary)
    _, _, s_p99 = _totals([p for p in stable if usable(p)])
    bad = len(canary) - len(good_canary)
    return AnalysisFacts(c_requests, c_errors, c_p99, s_p99, unreachable + bad)
