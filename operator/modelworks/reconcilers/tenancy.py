"""The tenancy checks that need the registry: may this namespace read that MLflow URI?

The rules are :mod:`modelworks.status.tenancy`'s (pure); this module only reads what they
judge: a model's owner, a version's or a run's namespace. See docs/tenancy.md.
"""

from __future__ import annotations

from modelworks.clients.mlflow import Registry
from modelworks.names import NAMESPACE_TAG
from modelworks.status import tenancy


def uri_refusal(ns: str, uri: str, registry: Registry) -> str | None:
    """Why namespace ``ns`` may not read ``uri``: a ``runs:/`` URI of another namespace's
    run, or a ``models:/`` URI of a model it may not resolve. None for any other URI (the
    pod reading it needs its own credentials for those)."""
    ref = tenancy.parse_ref(uri)
    if ref is None:
        return None
    if ref.run_id is not None:
        return run_refusal(ns, ref.run_id, registry)
    assert ref.model is not None
    owner = registry.ownership(ref.model)
    if not owner.exists:  # models:/<logged model id> (MLflow 3): judge the run that logged it
        run_id = registry.logged_model_run(ref.model) if ref.version is None else None
        return run_refusal(ns, run_id, registry) if run_id else None
    if refused := tenancy.read_refusal(ns, ref.model, owner.owner, owner.sharing):
        return refused
    if ref.alias is not None:
        found = registry.version_by_alias(ref.model, ref.alias)
    elif ref.version is not None and ref.version.isdigit():
        found = registry.get_version(ref.model, ref.version)
    else:
        return None
    if found is None:
        return None
    origin = found.tags.get(NAMESPACE_TAG)
    return tenancy.version_refusal(ns, ref.model, owner.owner, found.version, origin)


def run_refusal(ns: str, run_id: str, registry: Registry) -> str | None:
    return tenancy.run_refusal(ns, run_id, registry.run_namespace(run_id))
