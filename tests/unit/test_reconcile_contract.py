"""KindReconciler.reconcile with plain observe/decide/act functions: a child whose name is
taken, an object gone before the writes, and a fact only act could learn."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, cast

import pytest

from modelworks.api import MODEL_DEPLOYMENT
from modelworks.reconcilers.base import Context, Gone, KindReconciler, Learned
from modelworks.reconcilers.children import NameTaken, own, owned, owned_only
from modelworks.status.decision import Decision

NOW = "2026-01-01T00:00:00Z"
OBJ: dict[str, Any] = {
    "apiVersion": "modelworks.dev/v1alpha1",
    "kind": "ModelDeployment",
    "metadata": {"name": "m", "namespace": "ns", "uid": "u-1", "generation": 2},
    "spec": {"model": {"name": "churn", "version": "1"}},
}


def child(*uids: str) -> dict[str, Any]:
    refs = [{"uid": u, "kind": "ModelDeployment", "name": "m"} for u in uids]
    return {"kind": "Deployment", "metadata": {"name": "m", "ownerReferences": refs}}


@pytest.mark.parametrize(
    ("found", "mine"),
    [(child("u-1"), True), (child("u-0", "u-1"), True), (child(), False), (child("u-0"), False)],
)
def test_owned_is_by_uid(found: dict[str, Any], mine: bool) -> None:
    assert owned(found, "u-1") is mine
    assert owned_only([found], "u-1") == ([found] if mine else [])
    if mine:
        assert own(found, OBJ) is found
    else:
        with pytest.raises(NameTaken, match=r"Deployment m exists and is not owned by this "):
            own(found, OBJ)
    assert own(None, OBJ) is None


def run(
    observe: Any, decide: Any, exists: bool = True
) -> tuple[Decision[Any], list[Sequence[Any]], list[Mapping[str, Any]]]:
    acted: list[Sequence[Any]] = []
    asked: list[Mapping[str, Any]] = []

    def act(obj: Mapping[str, Any], spec: Any, actions: Sequence[Any], ctx: Context) -> None:
        acted.append(actions)
        if "learn" in actions:
            raise Learned(lambda facts: {**facts, "learned": True})

    def confirm(obj: Mapping[str, Any]) -> bool:
        asked.append(obj)
        return exists

    reconciler: KindReconciler[Any, Any, Any] = KindReconciler(
        kind=MODEL_DEPLOYMENT, observe=observe, decide=decide, act=act
    )
    ctx = Context(cast(Any, None), cast(Any, None), cast(Any, None), {}, exists=confirm)
    return reconciler.reconcile(OBJ, ctx, NOW), acted, asked


def decide_actions(*actions: str) -> Any:
    def decide(spec: Any, facts: Any, old: Any, now: str) -> Decision[Any]:
        if facts.get("learned"):
            return Decision(status={"phase": "Failed"}, actions=("after",))
        return Decision(status={"phase": "Progressing"}, actions=actions)

    return decide


def test_a_taken_name_stops_the_pass_with_a_condition() -> None:
    def observe(obj: Mapping[str, Any], spec: Any, ctx: Context) -> Any:
        raise NameTaken(child("u-0"), obj)

    out, acted, _ = run(observe, decide_actions("apply"))
    assert acted == []
    ready = out.status["conditions"][0]
    assert (ready["type"], ready["status"], ready["reason"]) == ("Ready", "False", "NameTaken")
    assert "(uid u-1)" in ready["message"] and out.status["phase"] == "Pending"
    assert out.status["observedGeneration"] == 2
    assert [e.reason for e in out.events] == ["NameTaken"] and out.requeue_after == 60.0
    again = {**OBJ, "status": out.status}
    reconciler: KindReconciler[Any, Any, Any] = KindReconciler(
        kind=MODEL_DEPLOYMENT, observe=observe, decide=decide_actions(), act=lambda *a: None
    )
    ctx = Context(cast(Any, None), cast(Any, None), cast(Any, None))
    assert reconciler.reconcile(again, ctx, NOW).events == []  # said once


def test_an_object_gone_before_the_writes_gets_none() -> None:
    out = None
    with pytest.raises(Gone):
        out, _, _ = run(lambda *a: {}, decide_actions("apply"), exists=False)
    assert out is None
    _, acted, asked = run(lambda *a: {}, decide_actions("apply"), exists=True)
    assert acted == [("apply",)] and len(asked) == 1
    _, acted, asked = run(lambda *a: {}, decide_actions(), exists=False)
    assert asked == [], "a pass that writes nothing asks nothing"


def test_what_act_learns_is_decided_again() -> None:
    out, acted, _ = run(lambda *a: {}, decide_actions("learn"))
    assert acted == [("learn",), ("after",)]
    assert out.status == {"phase": "Failed"} and out.actions == ("after",)
