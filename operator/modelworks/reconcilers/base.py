"""The shape every kind's pass takes: validate the spec, then observe -> decide -> act.

A kind declares one :class:`KindReconciler`: ``shortcut`` (a settled or not-yet-due object
answers without reading anything), ``observe`` (reads only), ``decide`` (pure, in
``status/<kind>.py``) and ``act`` (idempotent writes of the decided actions). The work
queue's workers run :meth:`KindReconciler.reconcile` and store the status it returns.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from modelworks import conditions
from modelworks.api import Kind
from modelworks.api.common import ApiModel
from modelworks.api.validate import parse_spec
from modelworks.builders.events import build_event
from modelworks.builders.modeldeployment import ServerConfig
from modelworks.clients import datasets, prometheus, scrape
from modelworks.clients.http import Limits
from modelworks.clients.kube import Kube, KubeError
from modelworks.clients.mlflow import Registry
from modelworks.clients.mlflow import rejection as mlflow_rejection
from modelworks.conditions import Event
from modelworks.drift.engine import MAX_CELLS
from modelworks.reconcilers.children import NameTaken
from modelworks.status.common import StatusInvalid, invalid_spec, merge_patch, name_taken, typed
from modelworks.status.decision import Decision, rejected

MESSAGE_LIMIT = 500  # characters of the API server's answer kept in a condition
SpecT = TypeVar("SpecT", bound=ApiModel)
FactsT = TypeVar("FactsT")
ActionT = TypeVar("ActionT")


class Gone(Exception):
    """The object this pass was computed for no longer exists (or its name now belongs to
    another uid): nothing may be written for it."""


class Learned(Exception):
    """``act`` found what ``observe`` could not know (the API refused a write): the pass
    decides again on ``amend(facts)`` and acts on that (the writes made are idempotent)."""

    def __init__(self, amend: Callable[[Any], Any]) -> None:
        super().__init__("act learned a fact")
        self.amend = amend


def _exists(obj: Mapping[str, Any]) -> bool:
    return True


@dataclass(frozen=True)
class Bounds:
    """What a tenant's endpoints and inputs may cost one pass (``MODELWORKS_*`` limits)."""

    metrics: Limits = scrape.LIMITS
    prometheus: Limits = prometheus.LIMITS
    profile: Limits = datasets.PROFILE_LIMITS
    calibration_cells: int = MAX_CELLS


@dataclass(frozen=True)
class Context:
    """What a pass may use besides the object: the clients, the operator's own settings, and
    what this object's earlier passes kept in memory (lost on restart by design), and
    ``exists``: whether the object (this uid) still exists, asked before a pass writes."""

    kube: Kube
    registry: Registry
    server: ServerConfig
    memory: dict[str, Any] = field(default_factory=dict)
    bounds: Bounds = Bounds()
    exists: Callable[[Mapping[str, Any]], bool] = _exists


def _no_shortcut(obj: Mapping[str, Any], spec: Any, now: str) -> Decision[Any] | None:
    return None


@dataclass(frozen=True)
class KindReconciler(Generic[SpecT, FactsT, ActionT]):
    """One kind's pass: observe -> decide -> act, after the shared spec validation."""

    kind: Kind
    observe: Callable[[Mapping[str, Any], SpecT, Context], FactsT]
    decide: Callable[[SpecT, FactsT, Mapping[str, Any], str], Decision[ActionT]]
    act: Callable[[Mapping[str, Any], SpecT, Sequence[ActionT], Context], None]
    shortcut: Callable[[Mapping[str, Any], SpecT, str], Decision[Any] | None] = _no_shortcut

    def reconcile(self, obj: Mapping[str, Any], ctx: Context, now: str) -> Decision[Any]:
        parsed, refused = validate(self.kind, obj, now)
        if refused is not None:
            return refused
        spec: SpecT = parsed  # type: ignore[assignment]
        quick = self.shortcut(obj, spec, now)
        if quick is not None:
            return quick
        old = obj.get("status") or {}
        try:
            facts = self.observe(obj, spec, ctx)
            decision = self.decide(spec, facts, old, now)
            if decision.actions and not ctx.exists(obj):
                raise Gone(obj["metadata"]["uid"])
            return self._act(obj, spec, facts, decision, ctx, now)
        except NameTaken as taken:
            return name_taken(self.kind, obj, taken.message, now)

    def _act(
        self,
        obj: Mapping[str, Any],
        spec: SpecT,
        facts: FactsT,
        decision: Decision[Any],
        ctx: Context,
        now: str,
    ) -> Decision[Any]:
        """Make the decided writes (deciding again on what act learned); a write refused for
        good becomes the decision that says so, a transient failure is raised."""
        old = obj.get("status") or {}
        try:
            try:
                self.act(obj, spec, decision.actions, ctx)
            except Learned as learned:
                decision = self.decide(spec, learned.amend(facts), old, now)
                self.act(obj, spec, decision.actions, ctx)
        except (NameTaken, Gone, Learned):
            raise
        except Exception as exc:
            refusal = classify(exc)
            if refusal is None:
                raise  # transient: the work queue backs off and tries again
            return rejected(self.kind, old, decision, *refusal, now)
        return decision

    def run(
        self,
        obj: Mapping[str, Any],
        *,
        kube: Kube,
        registry: Registry,
        now: str,
        server: ServerConfig | None = None,
        memory: dict[str, Any] | None = None,
        bounds: Bounds | None = None,
    ) -> Decision[Any]:
        """One pass with the clients given one by one (tests and tools; workers use reconcile)."""
        server = server or ServerConfig(
            image="", pull_policy="", tracking_uri=registry.tracking_uri
        )
        ctx = Context(kube, registry, server, {} if memory is None else memory, bounds or Bounds())
        return self.reconcile(obj, ctx, now)


def classify(exc: BaseException) -> tuple[str, str] | None:
    """(reason, message) when ``exc`` is a write refused for good, None when it may pass:
    the one place that sorts permanent errors from transient ones, for every kind."""
    if isinstance(exc, KubeError) and exc.permanent:
        text = f"{exc.status} {exc.reason}: {exc.message}"[:MESSAGE_LIMIT]
        return "ChildRejected", f"the API server refused a write: {text}"
    said = mlflow_rejection(exc)
    if said is not None:
        return "MLflowRejected", f"MLflow refused a write: {said}"
    return None


def validate(
    kind: Kind, obj: Mapping[str, Any], now: str
) -> tuple[ApiModel | None, Decision[Any] | None]:
    """The parsed spec, or a Decision that reports the invalid spec (posting the Event once)."""
    spec, errors = parse_spec(kind, obj)
    if spec is not None:
        return spec, None
    status = invalid_spec(kind, obj, errors, now)
    before = conditions.get((obj.get("status") or {}).get("conditions"), kind.summary)
    already = (
        before is not None
        and before.get("reason") == "InvalidSpec"
        and before.get("observedGeneration") == status.get("observedGeneration")
    )
    events = [] if already else [Event("InvalidSpec", "; ".join(errors), "Warning")]
    return None, Decision(status=status, events=events, result="invalid")


def status_changes(kind: Kind, old: Mapping[str, Any], new: Mapping[str, Any]) -> dict[str, Any]:
    """The merge patch that stores ``new`` (checked against the kind's model) over ``old``."""
    if new == old:
        return {}  # the stored status stands, whatever an older operator wrote into it
    return merge_patch(old, typed(kind, new))


def store_status(
    kube: Kube, kind: Kind, obj: Mapping[str, Any], status: Mapping[str, Any]
) -> dict[str, Any] | None:
    """Store ``status`` whole, guarded by the resourceVersion ``obj`` was read at; the stored
    object, or None when nothing changed (no write). A stale ``obj`` raises 409."""
    changes = status_changes(kind, obj.get("status") or {}, status)
    if not changes:
        return None
    return kube.patch_status(obj, changes)


def post_events(
    kube: Kube, obj: Mapping[str, Any], events: Sequence[Event], now: str, instance: str
) -> None:
    """Post each Event about ``obj``."""
    for event in events:
        kube.create(build_event(obj, event, now, instance))


__all__ = [
    "Context",
    "Decision",
    "Gone",
    "KindReconciler",
    "Learned",
    "NameTaken",
    "StatusInvalid",
    "post_events",
    "status_changes",
    "store_status",
    "validate",
]
