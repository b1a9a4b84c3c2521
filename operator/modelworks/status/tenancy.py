"""Who may use a registered model or a run: the tenancy rules every kind applies. Pure.

A namespace owns the models it registered first (the model's ``modelworks.dev/namespace``
tag). Only the owner registers versions and moves aliases; the owner and the namespaces
a cluster admin shared the model with (``MODELWORKS_SHARED_MODELS``) resolve it. A version
or a run names the namespace it came from in the same tag; one from a namespace other
than the owner's is never resolved. See docs/tenancy.md.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass

OWNED_ELSEWHERE = "ModelOwnedElsewhere"  # the reason of every refusal below
EVERYONE = "*"  # in a sharing list: every namespace


@dataclass(frozen=True)
class MlflowRef:
    """What an MLflow URI in a spec points at: a run, or a model (version or alias)."""

    run_id: str | None = None
    model: str | None = None
    version: str | None = None
    alias: str | None = None


def parse_ref(uri: str) -> MlflowRef | None:
    """The run or model a ``runs:/`` or ``models:/`` URI names; None for any other URI.

    ``models:/<name>/<version>``, ``models:/<name>@<alias>``, ``models:/<name>/<stage>``
    and ``models:/<logged model id>`` (MLflow 3; the id is looked up as a model name,
    which it is not, so the reconciler finds no owner and checks its run instead).
    """
    if uri.startswith("runs:/"):
        run_id = uri.removeprefix("runs:/").lstrip("/").split("/", 1)[0]
        return MlflowRef(run_id=run_id) if run_id else None
    if not uri.startswith("models:/"):
        return None
    ref = uri.removeprefix("models:/").lstrip("/")
    head = ref.split("/", 1)[0]
    if "@" in head:
        name, _, alias = head.partition("@")
        return MlflowRef(model=name, alias=alias) if name else None
    version = ref.split("/", 2)[1] if "/" in ref else None
    return MlflowRef(model=head, version=version or None) if head else None


def shared_with(namespace: str, sharing: Collection[str]) -> bool:
    return namespace in sharing or EVERYONE in sharing


def write_refusal(namespace: str, model: str, owner: str | None) -> str | None:
    """Why ``namespace`` may not register a version of ``model`` or move its aliases
    (None: it may; an unowned model is claimed by the namespace that writes it first)."""
    if owner is None or owner == namespace:
        return None
    return f"model {model} belongs to namespace {owner}"


def read_refusal(
    namespace: str, model: str, owner: str | None, sharing: Collection[str]
) -> str | None:
    """Why ``namespace`` may not resolve ``model`` at all (None: its own, shared with it,
    or unowned)."""
    if owner is None or owner == namespace or shared_with(namespace, sharing):
        return None
    return f"model {model} belongs to namespace {owner} and is not shared with {namespace}"


def version_refusal(
    namespace: str, model: str, owner: str | None, version: str, version_namespace: str | None
) -> str | None:
    """Why ``version`` of ``model`` is not served: it came from a namespace other than the
    model's owner (than ``namespace`` itself when the model has no owner yet). A version
    another namespace slipped in is never resolved, wherever an alias points."""
    expected = owner or namespace
    if version_namespace is None or version_namespace == expected:
        return None
    return (
        f"version {version} of model {model} was registered from namespace "
        f"{version_namespace}, not by the model's owner {expected}"
    )


def resolve_refusal(
    namespace: str,
    model: str,
    owner: str | None,
    sharing: Collection[str],
    version: str,
    version_namespace: str | None,
) -> str | None:
    """Why ``namespace`` may not resolve ``version`` of ``model`` (None: it may)."""
    return read_refusal(namespace, model, owner, sharing) or version_refusal(
        namespace, model, owner, version, version_namespace
    )


def run_refusal(namespace: str, run_id: str, run_namespace: str | None) -> str | None:
    """Why ``namespace`` may not read run ``run_id`` (None: it may; a run no namespace
    claims, one made outside the operator, is readable)."""
    if run_namespace is None or run_namespace == namespace:
        return None
    return f"run {run_id} belongs to namespace {run_namespace}"
