"""Children are trusted by owner uid, never by name alone.

Every child a pass reads by its deterministic name goes through :func:`get_owned`: an
object of that name whose ownerReferences do not include the parent's uid (a leftover of a
deleted parent of the same name, or a user's object) is never read as the parent's own,
never applied over (server-side apply would take its fields over) and never deleted.
:class:`NameTaken` stops the pass; the kind's status then says which name is taken.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from modelworks.clients.kube import Kube


class NameTaken(Exception):
    """A child's name is held by an object this parent does not own."""

    def __init__(self, child: Mapping[str, Any], owner: Mapping[str, Any]) -> None:
        meta, owner_meta = child.get("metadata") or {}, owner["metadata"]
        self.message = (
            f"{child.get('kind', 'object')} {meta.get('name')} exists and is not owned by this "
            f"{owner.get('kind', 'object')} (uid {owner_meta['uid']}): delete or rename it"
        )
        super().__init__(self.message)


def owned(child: Mapping[str, Any], uid: str) -> bool:
    """``child`` names ``uid`` among its ownerReferences."""
    refs = (child.get("metadata") or {}).get("ownerReferences") or []
    return any(ref.get("uid") == uid for ref in refs)


def own(child: dict[str, Any] | None, owner: Mapping[str, Any]) -> dict[str, Any] | None:
    """``child`` when ``owner`` owns it, None when there is none; NameTaken otherwise."""
    if child is None or owned(child, owner["metadata"]["uid"]):
        return child
    raise NameTaken(child, owner)


def get_owned(
    kube: Kube, api_version: str, kind: str, owner: Mapping[str, Any], name: str
) -> dict[str, Any] | None:
    """The child ``name`` of ``owner`` (in its namespace), None when it does not exist."""
    found = kube.get(api_version, kind, owner["metadata"]["namespace"], name)
    return own(found, owner)


def owned_only(items: Iterable[dict[str, Any]], uid: str) -> list[dict[str, Any]]:
    """The ``items`` owned by ``uid`` (what a label selector found may be anyone's)."""
    return [item for item in items if owned(item, uid)]
