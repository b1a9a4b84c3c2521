"""The one decision contract every kind follows, and the status builder they share. Pure.

A pass is ``observe(obj, spec, ctx) -> facts`` (reads), ``decide(spec, facts, old status,
now) -> Decision`` (this layer: no I/O, no clock), ``act(obj, spec, actions, ctx)``
(idempotent writes). :class:`StatusBuilder` owns what every kind's status has in common:
``observedGeneration``, conditions with their transition times, no ``Stalled`` for a spec
that could be parsed, the summary condition derived from the sub-conditions' polarity, and
the Events that condition transitions mean.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from modelworks import conditions
from modelworks.api import Kind
from modelworks.conditions import NEGATIVE, Event

ActionT = TypeVar("ActionT")


@dataclass(frozen=True)
class Decision(Generic[ActionT]):
    """What one pass decided.

    ``status`` is the whole new status (camelCase, as stored); ``actions`` are the writes
    ``act`` makes, each idempotent; ``requeue_after`` asks for another pass sooner than the
    resync period (seconds). ``result`` labels the reconcile metric (ok, invalid, waiting,
    settled, retry, suspended).
    """

    status: dict[str, Any]
    events: list[Event] = field(default_factory=list)
    actions: tuple[ActionT, ...] = ()
    requeue_after: float | None = None
    result: str = "ok"


def unchanged(old: Mapping[str, Any], requeue_after: float | None, result: str) -> Decision[Any]:
    """Nothing to do and nothing new to say: the stored status stands."""
    return Decision(status=dict(old), requeue_after=requeue_after, result=result)


class StatusBuilder:
    """One pass's status of one object, built field by field and condition by condition."""

    def __init__(
        self, kind: Kind, old: Mapping[str, Any], generation: int | None, now: str
    ) -> None:
        self.kind = kind
        self.now = now
        self.generation = generation
        self._old_conditions = list(old.get("conditions") or [])
        self._conditions = conditions.remove(self._old_conditions, "Stalled")
        self.fields: dict[str, Any] = {"observedGeneration": generation}

    def set(self, **fields: Any) -> None:
        """Status fields by their stored (camelCase) names; None leaves a field out."""
        for key, value in fields.items():
            if value is None:
                self.fields.pop(key, None)
            else:
                self.fields[key] = value

    def put(self, type_: str, value: bool | str, reason: str, message: str) -> None:
        """Set one condition; its transition time moves only when its status does."""
        self._conditions = conditions.set_condition(
            self._conditions,
            type_,
            value,
            reason,
            message,
            now=self.now,
            generation=self.generation,
        )

    def drop(self, type_: str) -> None:
        self._conditions = conditions.remove(self._conditions, type_)

    def condition(self, type_: str) -> dict[str, Any] | None:
        return conditions.get(self._conditions, type_)

    def summarise(self, order: Sequence[str], reason: str, message: str) -> None:
        """The summary condition from the sub-conditions in ``order``: the first one that is
        bad news (a positive condition not True, a negative one True) makes it False with
        that condition's reason and message; when none is, it is True with ``reason``."""
        for type_ in order:
            cond = self.condition(type_)
            if cond is None:
                continue
            bad = (cond["status"] == "True") if type_ in NEGATIVE else cond["status"] != "True"
            if bad:
                self.put(self.kind.summary, False, cond["reason"], cond["message"])
                return
        self.put(self.kind.summary, True, reason, message)

    def decide(
        self,
        *,
        events: Iterable[Event] = (),
        actions: Iterable[ActionT] = (),
        requeue_after: float | None = None,
        result: str = "ok",
    ) -> Decision[ActionT]:
        """The Decision: this status, the Events its condition transitions mean, then
        ``events`` (news no condition carries)."""
        status = {**self.fields, "conditions": self._conditions}
        news = [
            Event(reason, message, type_)
            for type_, reason, message in conditions.transitions(
                self._old_conditions, self._conditions
            )
        ]
        return Decision(
            status=status,
            events=news + list(events),
            actions=tuple(actions),
            requeue_after=requeue_after,
            result=result,
        )


REJECTED_REASONS = ("ChildRejected", "MLflowRejected")


def rejected(
    kind: Kind, old: Mapping[str, Any], decision: Decision[Any], reason: str, message: str, now: str
) -> Decision[Any]:
    """A write ``decision`` asked for was refused for good (the API server or MLflow said the
    request itself is wrong): the summary condition is False with ``reason``, the phase is
    Failed, and no pass comes sooner than the resync (a new generation gets one at once).

    The decision's own news is dropped (its writes did not all happen); the Events are the
    condition transitions from the stored status, so a retry refused alike says nothing new.
    """
    status = dict(decision.status)
    before = list(old.get("conditions") or [])
    prior = conditions.get(before, kind.summary)
    computed = status.get("conditions") or []
    kept = [prior if c.get("type") == kind.summary and prior else c for c in computed]
    after = conditions.set_condition(
        kept,
        kind.summary,
        False,
        reason,
        message,
        now=now,
        generation=status.get("observedGeneration"),
    )
    status.update(phase="Failed", conditions=after)
    events = [Event(r, m, t) for t, r, m in conditions.transitions(before, after)]
    return Decision(status=status, events=events, result="rejected")
