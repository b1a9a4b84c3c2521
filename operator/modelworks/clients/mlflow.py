"""MLflow, as the reconcilers need it: tracking runs and the Model Registry.

The only module that imports mlflow. The client is created on first use so that an
operator whose MLflow server is down still starts and reports the outage as a
condition instead of crash-looping. Every side effect is found again by a key before it
is created (a run by its ``modelworks.dev/source`` tag, a version by its run id), so a
pass that crashed half way and runs again creates nothing twice.
"""

from __future__ import annotations

import os
import sys
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

from modelworks.clients.guard import DependencyUnavailable, Guard
from modelworks.names import NAMESPACE_TAG, OWNER_TAG, SOURCE_TAG

# The operator must notice an outage in seconds, not after MLflow's default minutes of
# retries; the reconcile loop does its own backoff.
os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "1")
os.environ.setdefault("MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR", "1")
os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "15")
# An operator does not phone home (and MLflow 3's usage telemetry can fail requests).
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")

T = TypeVar("T")


class TrackingUnavailable(Exception):
    """The tracking server did not answer, or answered with a server error: try again later."""


# MLflow refused the request itself (a value over a limit, a name taken, no permission):
# sent again unchanged, it gets the same answer.
REJECTED = (
    "INVALID_PARAMETER_VALUE",
    "RESOURCE_ALREADY_EXISTS",
    "RESOURCE_DOES_NOT_EXIST",
    "BAD_REQUEST",
    "PERMISSION_DENIED",
    "UNAUTHENTICATED",
)


def rejection(exc: BaseException) -> str | None:
    """MLflow's own words (one line, bounded) when ``exc`` is MLflow refusing a request for
    good; None for anything else (an outage is :class:`TrackingUnavailable`)."""
    exceptions = sys.modules.get("mlflow.exceptions")  # never imported: not MLflow's error
    if exceptions is None or not isinstance(exc, exceptions.MlflowException):
        return None
    code = str(getattr(exc, "error_code", ""))
    return f"{code}: {_short(exc)}" if code in REJECTED else None


class ArtifactMissing(Exception):
    """The run has no model at the requested artifact path: retrying will not help."""


class ModelOwnedElsewhere(Exception):
    """Another namespace owns the registered model: this one may not write to it."""

    def __init__(self, model: str, owner: str) -> None:
        super().__init__(f"model {model} belongs to namespace {owner}")
        self.owner = owner


@dataclass(frozen=True)
class Ownership:
    """A registered model's owner and the namespaces the operator's settings share it with.

    ``owner`` is the model's owner tag; on a model registered before ownership existed
    (``tagged`` False), the namespace its first version came from (None: no such model, or
    nothing says)."""

    exists: bool
    owner: str | None
    sharing: frozenset[str] = frozenset()
    tagged: bool = False


@dataclass(frozen=True)
class RunInfo:
    experiment_id: str
    run_id: str
    status: str
    metrics: dict[str, float]
    artifact_uri: str


@dataclass(frozen=True)
class VersionInfo:
    name: str
    version: str
    run_id: str | None
    source: str
    aliases: tuple[str, ...]
    tags: dict[str, str]


class Registry:
    """One MLflow tracking server and its Model Registry."""

    def __init__(
        self,
        tracking_uri: str,
        ui_url: str | None = None,
        shared_models: Mapping[str, frozenset[str]] | None = None,
        guard: Guard | None = None,
    ) -> None:
        self.tracking_uri = tracking_uri
        self.ui_url = (ui_url or tracking_uri).rstrip("/")
        self.shared_models = dict(shared_models or {})
        self.guard = guard or Guard("MLflow")
        self._client: Any = None
        self._lock = threading.Lock()
        self._experiments: dict[str, str] = {}  # name -> id; an experiment id never changes

    @property
    def configured(self) -> bool:
        return bool(self.tracking_uri)

    @property
    def client(self) -> Any:
        """The ``mlflow.MlflowClient`` for this server (created once, lazily)."""
        if not self.configured:
            raise TrackingUnavailable(
                "no MLflow tracking URI is configured (MODELWORKS_MLFLOW_TRACKING_URI)"
            )
        with self._lock:
            if self._client is None:
                import mlflow
                from mlflow import MlflowClient

                # MLflow 3 builds internal clients from the process-global URI in places
                # (listing a run's LoggedModel artifacts), ignoring the explicit one below;
                # the operator talks to one tracking server, so make them agree.
                mlflow.set_tracking_uri(self.tracking_uri)
                mlflow.set_registry_uri(self.tracking_uri)
                self._client = MlflowClient(
                    tracking_uri=self.tracking_uri, registry_uri=self.tracking_uri
                )
            return self._client

    def _call(self, fn: Callable[[], T]) -> T:
        """Run one client call inside MLflow's bulkhead, sorting its failures into transient
        (:class:`TrackingUnavailable`, counted by the circuit breaker) and permanent."""
        try:
            with self.guard.call() as outcome:
                try:
                    return fn()
                except TrackingUnavailable:
                    outcome(False)
                    raise
                except Exception as exc:
                    transient = _transient(exc)
                    if transient is None:
                        raise
                    outcome(False)
                    raise transient from exc
        except DependencyUnavailable as exc:
            raise TrackingUnavailable(str(exc)) from exc

    def run_url(self, experiment_id: str, run_id: str) -> str:
        return f"{self.ui_url}/#/experiments/{experiment_id}/runs/{run_id}"

    # --- tracking ------------------------------------------------------------------

    def ensure_experiment(self, name: str, tags: Mapping[str, str] | None = None) -> str:
        """The id of the experiment called ``name``, created when missing."""
        from mlflow.exceptions import MlflowException

        found = self._call(lambda: self.client.get_experiment_by_name(name))
        if found is not None:
            if found.lifecycle_stage == "deleted":
                self._call(lambda: self.client.restore_experiment(found.experiment_id))
            return str(found.experiment_id)
        try:
            return str(
                self._call(lambda: self.client.create_experiment(name, tags=dict(tags or {})))
            )
        except MlflowException as exc:  # created meanwhile by someone else
            if "RESOURCE_ALREADY_EXISTS" not in str(getattr(exc, "error_code", "")):
                raise
            again = self._call(lambda: self.client.get_experiment_by_name(name))
            return str(again.experiment_id)

    def experiment_id(self, name: str) -> str | None:
        """The id of the live experiment called ``name``; None when it is missing or deleted."""
        found = self._call(lambda: self.client.get_experiment_by_name(name))
        if found is None or found.lifecycle_stage == "deleted":
            return None
        return str(found.experiment_id)

    def find_run(self, experiment_id: str, source: str) -> RunInfo | None:
        """The run tagged ``modelworks.dev/source=<source>``, if one exists."""
        runs = self._call(
            lambda: self.client.search_runs(
                [experiment_id], filter_string=f"tags.`{SOURCE_TAG}` = '{source}'", max_results=2
            )
        )
        return _run_info(runs[0]) if runs else None

    def ensure_run(
        self,
        experiment_id: str,
        source: str,
        *,
        run_name: str,
        tags: Mapping[str, str],
        params: Mapping[str, Any],
    ) -> RunInfo:
        """Find the run for ``source`` or create it, tagged and with its params logged."""
        run = self.find_run(experiment_id, source)
        if run is None:
            created = self._call(
                lambda: self.client.create_run(
                    experiment_id, tags={**tags, SOURCE_TAG: source}, run_name=run_name
                )
            )
            run = _run_info(created)
        if params:
            from mlflow.entities import Param

            batch = [Param(k, _param_text(v)) for k, v in sorted(params.items())]
            self._call(lambda: self.client.log_batch(run.run_id, params=batch))
        return run

    def get_run(self, run_id: str) -> RunInfo:
        return _run_info(self._call(lambda: self.client.get_run(run_id)))

    def run_namespace(self, run_id: str) -> str | None:
        """The namespace a run belongs to: its namespace tag, else its experiment's (None:
        neither has one, or there is no such run)."""

        run = self._or_none(lambda: self.client.get_run(run_id))
        if run is None:
            return None
        tag = (run.data.tags or {}).get(NAMESPACE_TAG)
        if tag:
            return str(tag)
        exp = self._call(lambda: self.client.get_experiment(run.info.experiment_id))
        found = (getattr(exp, "tags", None) or {}).get(NAMESPACE_TAG)
        return str(found) if found else None

    def logged_model_run(self, model_id: str) -> str | None:
        """The run that logged MLflow 3 LoggedModel ``model_id`` (None: no such model)."""

        model = self._or_none(lambda: self.client.get_logged_model(model_id))
        if model is None:
            return None
        return str(model.source_run_id) if model.source_run_id else None

    def end_run(self, run_id: str, status: str) -> None:
        """Mark a run FINISHED or FAILED unless the trainer already ended it."""
        run = self.get_run(run_id)
        if run.status in ("RUNNING", "SCHEDULED"):
            self._call(lambda: self.client.set_terminated(run_id, status=status))

    # --- registry ------------------------------------------------------------------

    def _or_none(self, fetch: Callable[[], T]) -> T | None:
        """What ``fetch`` returns, or None when what it asks for does not exist."""
        from mlflow.exceptions import MlflowException

        try:
            return self._call(fetch)
        except MlflowException as exc:
            if str(getattr(exc, "error_code", "")) in _MISSING:
                return None
            raise

    def _version_or_none(self, fetch: Callable[[], Any]) -> VersionInfo | None:
        """The version ``fetch`` returns, or None when the model or version does not exist."""
        found = self._or_none(fetch)
        return None if found is None else _version_info(found)

    def ownership(self, name: str) -> Ownership:
        """Who owns registered model ``name`` and who it is shared with."""
        from mlflow.exceptions import MlflowException

        sharing = self.shared_models.get(name, frozenset())
        try:
            model = self._call(lambda: self.client.get_registered_model(name))
        except MlflowException as exc:
            if str(getattr(exc, "error_code", "")) in _MISSING:
                return Ownership(False, None, sharing)
            raise
        owner = (getattr(model, "tags", None) or {}).get(OWNER_TAG)
        if owner:
            return Ownership(True, str(owner), sharing, tagged=True)
        return Ownership(True, self._first_namespace(name), sharing)

    def _first_namespace(self, name: str) -> str | None:
        """The namespace the lowest-numbered version of ``name`` was registered from."""
        first = self._call(
            lambda: self.client.search_model_versions(
                f"name = '{name}'", max_results=1, order_by=["version_number ASC"]
            )
        )
        found = (getattr(first[0], "tags", None) or {}).get(NAMESPACE_TAG) if first else None
        return str(found) if found else None

    def claim(self, name: str, namespace: str) -> None:
        """Make ``namespace`` the owner of ``name``: create the model with its owner tag, or
        tag an untagged one whose first version came from ``namespace`` (or from nowhere
        known). Raises ModelOwnedElsewhere when another namespace owns it (read again after
        tagging: of two claims at once, the last tag wins and the loser sees it)."""
        from mlflow.exceptions import MlflowException

        try:
            self._call(
                lambda: self.client.create_registered_model(name, tags={OWNER_TAG: namespace})
            )
            return
        except MlflowException as exc:
            if "ALREADY_EXISTS" not in str(getattr(exc, "error_code", "")):
                raise
        found = self.ownership(name)
        owner = found.owner or namespace
        if not found.tagged and owner == namespace:
            self._call(lambda: self.client.set_registered_model_tag(name, OWNER_TAG, namespace))
            owner = self.ownership(name).owner or namespace
        if owner != namespace:
            raise ModelOwnedElsewhere(name, owner)

    def version_by_alias(self, name: str, alias: str) -> VersionInfo | None:
        return self._version_or_none(lambda: self.client.get_model_version_by_alias(name, alias))

    def get_version(self, name: str, version: str) -> VersionInfo | None:
        """Version ``version`` of model ``name``, or None when either does not exist."""
        return self._version_or_none(lambda: self.client.get_model_version(name, version))

    def alias_metrics(self, name: str, alias: str) -> dict[str, float] | None:
        """The metrics of the run behind the version that holds ``alias``; None if none does."""
        mv = self.version_by_alias(name, alias)
        if mv is None or not mv.run_id:
            return None
        return self.get_run(mv.run_id).metrics

    def find_version(self, name: str, run_id: str) -> VersionInfo | None:
        """The version of ``name`` registered from ``run_id``, if there is one."""
        from mlflow.exceptions import MlflowException

        try:
            found = self._call(
                lambda: self.client.search_model_versions(
                    f"name = '{name}' and run_id = '{run_id}'"
                )
            )
        except MlflowException as exc:
            if str(getattr(exc, "error_code", "")) == "RESOURCE_DOES_NOT_EXIST":
                return None
            raise
        versions = sorted(found, key=lambda v: int(v.version))
        return _version_info(versions[0]) if versions else None

    def register(
        self,
        name: str,
        run: RunInfo,
        artifact_path: str,
        *,
        tags: Mapping[str, str],
        namespace: str | None = None,
    ) -> VersionInfo:
        """Register the model the run logged at ``artifact_path`` (once: found again by run id)."""
        existing = self.find_version(name, run.run_id)
        if existing is not None:
            return existing
        source, model_id = self.model_source(run, artifact_path)
        return self._create_version(name, run.run_id, source, model_id, tags, namespace)

    def create_version(
        self,
        name: str,
        run_id: str,
        source: str,
        model_id: str | None,
        *,
        tags: Mapping[str, str],
        namespace: str | None = None,
    ) -> VersionInfo:
        """Register ``source`` (found by :meth:`model_source`) as a version of ``name``, once:
        the version of ``run_id`` is looked for first. With ``namespace``, the model is
        claimed for it first (ModelOwnedElsewhere when another namespace owns it)."""
        existing = self.find_version(name, run_id)
        if existing is not None:
            return existing
        return self._create_version(name, run_id, source, model_id, tags, namespace)

    def _create_version(
        self,
        name: str,
        run_id: str,
        source: str,
        model_id: str | None,
        tags: Mapping[str, str],
        namespace: str | None,
    ) -> VersionInfo:
        from mlflow.exceptions import MlflowException

        if namespace is not None:
            self.claim(name, namespace)
        else:
            try:
                self._call(lambda: self.client.create_registered_model(name))
            except MlflowException as exc:
                if "ALREADY_EXISTS" not in str(getattr(exc, "error_code", "")):
                    raise
        mv = self._call(
            lambda: self.client.create_model_version(
                name,
                source,
                run_id=run_id,
                tags=dict(tags),
                model_id=model_id,
                await_creation_for=60,
            )
        )
        return _version_info(mv)

    def model_source(self, run: RunInfo, artifact_path: str) -> tuple[str, str | None]:
        """Where the model is: the run's LoggedModel (MLflow 3), or its artifacts (MLflow 2).

        The LoggedModel is looked for first: MLflow 3's artifact listing of a run merges in
        its logged models' files, so finding an MLmodel there does not prove the run's own
        artifacts hold it.
        """
        token = None
        while True:
            page = self._call(
                lambda page_token=token: self.client.search_logged_models(  # type: ignore[misc]
                    experiment_ids=[run.experiment_id],
                    filter_string=f"name = '{artifact_path}'",
                    page_token=page_token,
                )
            )
            for model in page:
                if model.source_run_id == run.run_id:
                    return f"models:/{model.model_id}", str(model.model_id)
            token = page.token
            if not token:
                break
        files = self._call(lambda: self.client.list_artifacts(run.run_id, artifact_path))
        if any(f.path.rsplit("/", 1)[-1] == "MLmodel" for f in files):
            return f"{run.artifact_uri.rstrip('/')}/{artifact_path}", None
        raise ArtifactMissing(
            f"run {run.run_id} logged no model at artifact path {artifact_path!r} "
            "(log one with mlflow.<flavor>.log_model(..., name=<artifactPath>))"
        )

    def set_alias(self, name: str, alias: str, version: str, namespace: str | None = None) -> None:
        """Point ``alias`` at ``version``; with ``namespace``, only on a model it owns (or
        claims: an unowned one)."""
        if namespace is not None:
            found = self.ownership(name)
            if found.owner not in (None, namespace):
                raise ModelOwnedElsewhere(name, str(found.owner))
            if not found.tagged:
                self.claim(name, namespace)
        current = self.version_by_alias(name, alias)
        if current is None or current.version != version:
            self._call(lambda: self.client.set_registered_model_alias(name, alias, version))

    # --- artifacts -----------------------------------------------------------------

    def json_artifact(self, run_id: str, path: str) -> Any | None:
        """A JSON artifact of a run (a reference profile, say), or None when it has none."""
        import json
        import tempfile
        from pathlib import Path

        from mlflow.exceptions import MlflowException

        def download(tmp: str) -> str | None:
            try:
                return str(self.client.download_artifacts(run_id, path, tmp))
            except FileNotFoundError:  # not an outage: the run has no such artifact
                return None

        with tempfile.TemporaryDirectory(prefix="modelworks-") as tmp:
            try:
                local = self._call(lambda: download(tmp))
            except MlflowException as exc:
                if str(getattr(exc, "error_code", "")) in (
                    "RESOURCE_DOES_NOT_EXIST",
                    "INVALID_PARAMETER_VALUE",
                ):
                    return None
                raise
            if local is None:
                return None
            try:
                return json.loads(Path(local).read_text())
            except (OSError, ValueError):
                return None


def _transient(exc: Exception) -> TrackingUnavailable | None:
    """The outage ``exc`` means, or None when the server answered (a permanent error)."""
    from mlflow.exceptions import MlflowException

    if isinstance(exc, MlflowException):
        code = str(getattr(exc, "error_code", ""))
        text = str(exc).lower()
        if code in ("INTERNAL_ERROR", "TEMPORARILY_UNAVAILABLE", "REQUEST_LIMIT_EXCEEDED") or (
            "max retries" in text or "connection" in text
        ):
            return TrackingUnavailable(_short(exc))
        return None
    if isinstance(exc, OSError):  # requests' ConnectionError and timeouts are OSErrors
        return TrackingUnavailable(_short(exc))
    return None


_MISSING = ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE")


def _param_text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _short(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return (text[0] if text else type(exc).__name__)[:300]


def _run_info(run: Any) -> RunInfo:
    return RunInfo(
        experiment_id=str(run.info.experiment_id),
        run_id=str(run.info.run_id),
        status=str(run.info.status),
        metrics={k: float(v) for k, v in (run.data.metrics or {}).items()},
        artifact_uri=str(run.info.artifact_uri),
    )


def _version_info(mv: Any) -> VersionInfo:
    return VersionInfo(
        name=str(mv.name),
        version=str(mv.version),
        run_id=str(mv.run_id) if mv.run_id else None,
        source=str(mv.source),
        aliases=tuple(getattr(mv, "aliases", None) or ()),
        tags=dict(getattr(mv, "tags", None) or {}),
    )
