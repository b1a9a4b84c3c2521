"""ModelDeployment: decide the rollout and compute the status from what was observed. Pure.

One pass sees: the version the spec resolves to (the target), the stable and canary
Deployments as they are, the serving pods, and (during a canary step) what analysis of
the canary's metrics found. :func:`decide` says what each Deployment must run next and
returns the whole new status with the Events to post. The state that must survive a
restart of the operator lives in the status: ``stableVersion`` (the last version that
served all traffic), ``canary`` (step, weight, when the step's pause began) and
``rollback`` (the version rolled back from, pinned away while the spec is unchanged).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from modelworks import conditions
from modelworks.api.modeldeployment import Analysis, ModelDeploymentSpec
from modelworks.conditions import Event
from modelworks.names import (
    SERVING_LATENCY_BUCKET,
    SERVING_REQUESTS_METRIC,
    VERSION_LABEL,
)
from modelworks.names import seconds_between as _seconds_between
from modelworks.prommath import histogram_quantile

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

    @classmethod
    def of(cls, obj: Mapping[str, Any] | None) -> DeploymentState | None:
        if obj is None:
            return None
        spec = obj.get("spec") or {}
        status = obj.get("status") or {}
        labels = ((spec.get("template") or {}).get("metadata") or {}).get("labels") or {}
        progressing = conditions.get(status.get("conditions"), "Progressing") or {}
        return cls(
            version=labels.get(VERSION_LABEL),
            replicas=int(spec.get("replicas", 1) if spec.get("replicas") is not None else 1),
            ready=int(status.get("readyReplicas") or 0),
            updated=int(status.get("updatedReplicas") or 0),
            total=int(status.get("replicas") or 0),
            available=int(status.get("availableReplicas") or 0),
            current=int(status.get("observedGeneration") or 0)
            >= int((obj.get("metadata") or {}).get("generation") or 0),
            deadline_exceeded=progressing.get("reason") == "ProgressDeadlineExceeded",
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


@dataclass(frozen=True)
class Decision:
    """What the Deployments must run next, and the new status."""

    stable_version: str | None  # None: nothing to serve yet
    canary_version: str | None
    canary_replicas: int
    status: dict[str, Any]
    events: list[Event]
    requeue_after: float | None


def pod_failure(pods: Sequence[Mapping[str, Any]], version: str) -> tuple[str, str] | None:
    """Why the pods of ``version`` are broken (a state that will not fix itself), if they are."""
    for pod in pods:
        labels = (pod.get("metadata") or {}).get("labels") or {}
        if labels.get(VERSION_LABEL) != version or (pod.get("metadata") or {}).get(
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


def deadline_failure(
    state: DeploymentState | None, version: str, spec: ModelDeploymentSpec
) -> tuple[str, str] | None:
    """The Deployment running ``version`` gave up: no progress within the deadline."""
    if state is None or state.version != version or not state.deadline_exceeded:
        return None
    seconds = spec.rollout.progress_deadline_seconds if spec.rollout else 600
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


def latency_ratio(facts: AnalysisFacts | None) -> float | None:
    if facts is None or not facts.canary_p99 or not facts.stable_p99:
        return None
    return facts.canary_p99 / facts.stable_p99


def _with_history(
    history: list[dict[str, Any]], version: str, now: str, reason: str
) -> list[dict[str, Any]]:
    out = [dict(h) for h in history]
    for entry in out:
        if entry.get("until") is None:
            entry["until"] = now
    out.append({"version": version, "since": now, "reason": reason})
    return out[-HISTORY_LIMIT:]


def _why(target: Target | None, generation: int | None) -> str:
    if target is not None and target.alias:
        return f"alias {target.alias} points at version {target.version}"
    return f"spec (generation {generation}) asks for version {target.version if target else '?'}"


def decide(
    obj: Mapping[str, Any], spec: ModelDeploymentSpec, facts: Facts, now: str, url: str
) -> Decision:
    """The next step of the rollout and the whole new status."""
    generation = (obj.get("metadata") or {}).get("generation")
    old = dict(obj.get("status") or {})
    events: list[Event] = []
    history: list[dict[str, Any]] = list(old.get("history") or [])
    stable_version: str | None = old.get("stableVersion")
    rollback: dict[str, Any] | None = old.get("rollback")
    canary_old: dict[str, Any] | None = old.get("canary")
    target = facts.target
    rollout = spec.rollout
    canary_strategy = rollout is not None and rollout.strategy == "Canary"
    auto_rollback = rollout.auto_rollback if rollout else True

    pinned = (
        rollback is not None
        and target is not None
        and rollback.get("fromVersion") == target.version
        and rollback.get("observedGeneration") == generation
    )
    if rollback is not None and target is not None and not pinned:
        rollback = None  # the spec or the alias moved on: the pin is released
    desired = stable_version if (target is None or pinned) else target.version

    run_stable = stable_version
    canary_version: str | None = None
    canary_replicas = 0
    canary_status: dict[str, Any] | None = None
    progressing: tuple[bool, str, str] = (False, "RolloutComplete", "")
    degraded: tuple[bool, str, str] = (False, "AsExpected", "")
    failed_first = False
    requeue: float | None = None

    def roll_back(failed: str, reason: str, message: str) -> None:
        nonlocal rollback, run_stable, canary_version, canary_status, progressing, degraded
        assert stable_version is not None
        rollback = {
            "reason": reason,
            "message": message,
            "fromVersion": failed,
            "toVersion": stable_version,
            "at": now,
            "observedGeneration": generation,
        }
        run_stable, canary_version, canary_status = stable_version, None, None
        progressing = (False, "RolledBack", f"version {failed} was rolled back: {message}")
        degraded = (True, "RolledBack", f"version {failed} was rolled back: {message}")
        events.append(
            Event(
                "RolledBack",
                f"Version {failed} rolled back to {stable_version}: {message}",
                "Warning",
            )
        )

    stable = facts.stable
    if desired is None:
        # Nothing resolved and nothing ever served.
        run_stable = None
    elif stable_version is None:
        # The first rollout: nothing to fall back to.
        run_stable = desired
        if stable is not None and stable.complete(desired):
            stable_version = desired
            history = _with_history(history, desired, now, _why(target, generation))
            events.append(Event("Serving", f"Version {desired} is serving", "Normal"))
        else:
            failure = pod_failure(facts.pods, desired) or deadline_failure(stable, desired, spec)
            if failure is not None:
                failed_first = True
                progressing = (False, "RolloutFailed", failure[1])
                degraded = (True, failure[0], failure[1])
            else:
                progressing = (True, "RollingOut", f"starting version {desired}")
                requeue = ACTIVE_POLL
    elif desired == stable_version:
        run_stable = stable_version
        if canary_old and canary_old.get("version") not in (None, stable_version):
            events.append(
                Event(
                    "RolloutAborted",
                    f"Version {canary_old.get('version')} is no longer the target; "
                    f"version {stable_version} keeps all traffic",
                    "Normal",
                )
            )
        if (
            stable is not None
            and stable.version == stable_version
            and not stable.complete(stable_version)
        ):
            requeue = ACTIVE_POLL  # e.g. the stable Deployment rolling back
        if pinned:
            assert rollback is not None
            degraded = (
                True,
                "RolledBack",
                f"version {rollback.get('fromVersion')} was rolled back "
                f"({rollback.get('message') or rollback.get('reason')}); version "
                f"{stable_version} stays pinned until the spec or the alias changes",
            )
            progressing = (False, "RolledBack", degraded[2])
    elif not canary_strategy:
        # RollingUpdate: the stable Deployment moves to the new version; maxUnavailable 0
        # keeps the old pods answering until new ones are ready.
        run_stable = desired
        if stable is not None and stable.complete(desired):
            events.append(
                Event("RolledOut", f"Version {desired} replaced {stable_version}", "Normal")
            )
            history = _with_history(history, desired, now, _why(target, generation))
            stable_version = desired
        else:
            if not (stable is not None and stable.version == desired):
                events.append(
                    Event(
                        "RolloutStarted",
                        f"Rolling out version {desired} (was {stable_version}): "
                        f"{_why(target, generation)}",
                        "Normal",
                    )
                )
            failure = pod_failure(facts.pods, desired) or deadline_failure(stable, desired, spec)
            if failure is not None and auto_rollback:
                roll_back(desired, failure[0], failure[1])
            elif failure is not None:
                progressing = (False, "RolloutFailed", failure[1])
                degraded = (True, failure[0], failure[1])
            else:
                progressing = (True, "RollingOut", f"rolling out version {desired}")
            requeue = ACTIVE_POLL
    else:
        canary_status, run_stable, canary_version, canary_replicas, progressing = _canary_step(
            spec, facts, desired, stable_version, canary_old, now, events
        )
        requeue = ACTIVE_POLL
        verdict = (canary_status or {}).pop("_verdict", None)
        failure = (
            pod_failure(facts.pods, desired)
            or deadline_failure(facts.canary, desired, spec)
            or deadline_failure(stable, desired, spec)
        )
        if failure is None and verdict is not None and verdict[0] == "Fail":
            failure = ("AnalysisFailed", verdict[1])
        if failure is not None and auto_rollback:
            roll_back(desired, failure[0], failure[1])
        elif failure is not None:
            progressing = (False, "RolloutFailed", failure[1])
            degraded = (True, failure[0], failure[1])
        elif canary_status is not None and canary_status.get("step") == "done":
            events.append(
                Event("Promoted", f"Version {desired} promoted; it serves all traffic", "Normal")
            )
            history = _with_history(history, desired, now, _why(target, generation))
            stable_version = desired
            run_stable, canary_version, canary_status, canary_replicas = desired, None, None, 0
            progressing = (False, "RolloutComplete", f"version {desired} promoted")

    # ---- the status -------------------------------------------------------------
    status: dict[str, Any] = {"observedGeneration": generation}
    if target is not None:
        resolved = {
            "version": target.version,
            "runId": target.run_id,
            "source": target.source,
            "alias": target.alias,
        }
        status["resolved"] = {k: v for k, v in resolved.items() if v is not None}
    elif "resolved" in old:
        status["resolved"] = old["resolved"]
    if stable_version is not None:
        status["stableVersion"] = stable_version
    ready = (stable.ready if stable else 0) + (facts.canary.ready if facts.canary else 0)
    replicas = (stable.replicas if stable else 0) + canary_replicas
    status["replicas"] = replicas
    status["readyReplicas"] = ready
    if canary_status is not None:
        status["canary"] = {k: v for k, v in canary_status.items() if v is not None}
    status["url"] = url
    if history:
        status["history"] = history
    if rollback is not None:
        status["rollback"] = rollback

    conds: list[dict[str, Any]] = [dict(c) for c in old.get("conditions") or []]
    conds = conditions.remove(conds, "Stalled")

    def put(type_: str, value: bool, reason: str, message: str) -> None:
        nonlocal conds
        conds = conditions.set_condition(
            conds, type_, value, reason, message, now=now, generation=generation
        )

    if target is not None:
        put("ModelResolved", True, "Resolved", f"{spec.model.name} version {target.version}")
    else:
        put("ModelResolved", False, facts.resolve_reason or "Unresolved", facts.resolve_message)
    stable_ready = stable.ready if stable else 0
    if stable_ready > 0:
        put("Available", True, "MinimumReplicasAvailable", f"{stable_ready} ready")
    else:
        put("Available", False, "NoReplicasAvailable", "no serving pod is ready")
    put("Progressing", progressing[0], progressing[1], progressing[2])
    put("Degraded", degraded[0], degraded[1], degraded[2])

    serving_target = target is not None and stable_version == target.version
    if serving_target and stable_ready > 0 and not progressing[0] and not degraded[0]:
        alias = f" (alias {target.alias})" if target and target.alias else ""
        put(
            "Ready",
            True,
            "Serving",
            f"version {stable_version}{alias} on {ready} ready replica(s) at {url}",
        )
        phase = "Available"
    elif target is None and stable_version is None:
        put("Ready", False, facts.resolve_reason or "Unresolved", facts.resolve_message)
        phase = "Failed" if facts.resolve_reason not in ("MLflowUnavailable", "") else "Pending"
    elif degraded[0]:
        put("Ready", False, degraded[1], degraded[2])
        phase = "Failed" if failed_first else "Degraded"
    elif progressing[0]:
        put("Ready", False, "Progressing", progressing[2])
        phase = "Pending" if stable_version is None else "Progressing"
    elif target is None:
        # Serving the last resolved version while the registry cannot be asked.
        put(
            "Ready",
            stable_ready > 0,
            "Serving" if stable_ready > 0 else (facts.resolve_reason or "Unresolved"),
            f"version {stable_version} keeps serving; {facts.resolve_message}",
        )
        phase = "Available" if stable_ready > 0 else "Pending"
    else:
        put("Ready", False, "Pending", "waiting for serving pods to become ready")
        phase = "Pending"
        requeue = ACTIVE_POLL
    status["phase"] = phase
    status["conditions"] = conds

    wanted = ("Degraded", "ModelResolved")
    for type_, reason, message in conditions.transitions(
        [c for c in old.get("conditions") or [] if c.get("type") in wanted],
        [c for c in conds if c.get("type") in wanted],
    ):
        if reason in ("AsExpected", "Resolved", "RolledBack"):
            continue  # a recovery or a rollback already has its own Event
        events.append(Event(reason, message, type_))

    if requeue is None and spec.model.alias:
        requeue = ALIAS_POLL
    if requeue is None and target is None:
        requeue = ALIAS_POLL  # ask the registry again
    return Decision(run_stable, canary_version, canary_replicas, status, events, requeue)


def _canary_step(
    spec: ModelDeploymentSpec,
    facts: Facts,
    desired: str,
    stable_version: str,
    old: Mapping[str, Any] | None,
    now: str,
    events: list[Event],
) -> tuple[dict[str, Any], str, str | None, int, tuple[bool, str, str]]:
    """Where the canary of ``desired`` stands: (canary status, stable version, canary
    version, canary replicas, Progressing). ``step == "done"`` means promote now."""
    assert spec.rollout is not None
    steps = spec.rollout.steps or []
    rules = spec.rollout.analysis or Analysis()
    stable = facts.stable
    stable_size = max(stable.replicas if stable else 1, 1)
    fresh = old is None or old.get("version") != desired
    step = 1 if fresh else int(old.get("step") or 1)  # type: ignore[union-attr]
    if fresh:
        events.append(
            Event(
                "RolloutStarted",
                f"Canary of version {desired} (stable {stable_version}): "
                f"step 1/{len(steps)} at {steps[0].weight}%",
                "Normal",
            )
        )
    promoting = step > len(steps)
    if promoting:
        # Every step passed: the stable Deployment takes the new version; the canary stays
        # up (at full weight) until the stable pods of the new version are all ready.
        if stable is not None and stable.complete(desired):
            return {"step": "done"}, desired, None, 0, (False, "RolloutComplete", "")
        canary = _canary_fields(old, desired, step, 100, None, facts)
        canary["message"] = f"promoting version {desired}"
        return (
            canary,
            desired,
            desired,
            facts.canary.replicas if facts.canary else 1,
            (True, "Promoting", f"promoting version {desired} to stable"),
        )
    current = steps[step - 1]
    replicas = (
        stable_size
        if current.weight >= 100
        else max(1, math.ceil(stable_size * current.weight / (100 - current.weight)))
    )
    observed = facts.canary
    ready = (
        observed is not None
        and observed.version == desired
        and observed.current
        and observed.ready >= replicas
    )
    started = None if fresh else old.get("stepStarted")  # type: ignore[union-attr]
    if not ready:
        fields = _canary_fields(
            old if not fresh else None, desired, step, current.weight, None, facts
        )
        fields["replicas"] = replicas
        fields["message"] = f"waiting for {replicas} canary pod(s) of version {desired}"
        return (
            fields,
            stable_version,
            desired,
            replicas,
            (True, "CanaryStep", f"step {step}/{len(steps)}: starting {replicas} canary pod(s)"),
        )
    if started is None:
        started = now
    elapsed = _seconds_between(started, now)
    fields = _canary_fields(old, desired, step, current.weight, started, facts)
    fields["replicas"] = replicas
    if elapsed < current.pause_seconds:
        fields["message"] = (
            f"holding {current.weight}% for {int(current.pause_seconds - elapsed)}s more"
        )
        return (
            fields,
            stable_version,
            desired,
            replicas,
            (True, "CanaryStep", f"step {step}/{len(steps)}: {current.weight}% of traffic"),
        )
    verdict, message = analyse(facts.analysis, rules)
    fields["message"] = message
    fields["_verdict"] = (verdict, message)
    if verdict == "Pass":
        nxt = step + 1
        if nxt <= len(steps):
            events.append(
                Event(
                    "CanaryStep",
                    f"Version {desired}: step {nxt}/{len(steps)} at {steps[nxt - 1].weight}% "
                    f"({message})",
                    "Normal",
                )
            )
        fields.update({"step": nxt, "stepStarted": None})
        if nxt > len(steps):
            fields["weight"] = 100
            fields["message"] = f"analysis passed ({message}); promoting"
        return (
            fields,
            desired if nxt > len(steps) else stable_version,
            desired,
            replicas,
            (True, "CanaryStep", f"step {step}/{len(steps)} passed: {message}"),
        )
    return (
        fields,
        stable_version,
        desired,
        replicas,
        (True, "CanaryStep", f"step {step}/{len(steps)}: {message}"),
    )


def _canary_fields(
    old: Mapping[str, Any] | None,
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
        "replicas": (old or {}).get("replicas"),
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


SampleTuple = tuple[str, Mapping[str, str], float]


def analysis_facts(
    canary: Sequence[Sequence[SampleTuple]],
    stable: Sequence[Sequence[SampleTuple]],
    unreachable: int = 0,
) -> AnalysisFacts:
    """Sum the pods' request counters and latency histograms per track."""

    def totals(pods: Sequence[Sequence[SampleTuple]]) -> tuple[int, int, float | None]:
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

    c_requests, c_errors, c_p99 = totals(canary)
    _, _, s_p99 = totals(stable)
    return AnalysisFacts(c_requests, c_errors, c_p99, s_p99, unreachable)
