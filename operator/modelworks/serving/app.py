"""The ASGI app of ``modelworks serve``: MLflow's scoring app wrapped with metrics.

``/invocations``, ``/ping``, ``/health`` and ``/version`` are MLflow's own handlers,
so answers are the same as ``mlflow models serve`` for the same model and payload.
Added: ``/metrics`` (requests, errors and latency per model version, one set of
bucket counts per input feature, and one per model output — the predicted class or
value, a binary classifier's score — with the edges of the reference profile logged
with the model) and, when configured, the authenticated ``POST /feedback`` for ground
truth (:mod:`modelworks.serving.feedback`). A model that cannot load keeps the process up
and not ready: /ping and /health answer 503 with the reason, which is logged, and loading
is retried. Every
/invocations answer carries ``X-Request-Id`` (the client's kept, else one is made), and
with ``MODELWORKS_DATA_CAPTURE`` set a sample of requests and answers is captured
(:mod:`modelworks.serving.capture`).
"""

from __future__ import annotations

import asyncio
import contextvars
import inspect
import json
import logging
import os
import threading
import time
from collections.abc import Awaitable, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from modelworks.drift.profile import PROFILE_FILE, Profile, typical_row
from modelworks.names import CAPTURE_CONFIG_ENV, MODEL_URI_ENV, REQUEST_ID_HEADER
from modelworks.serving import capture, feedback, metrics

log = logging.getLogger("modelworks.serve")
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")  # a model server does not phone home
RETRY_SECONDS = 30.0


@dataclass(frozen=True)
class ModelIdentity:
    name: str
    version: str
    run_id: str | None


def identify(model_uri: str, client: Any) -> ModelIdentity:
    """Name, version and run of a ``models:/name/version`` or ``models:/name@alias`` URI."""
    if not model_uri.startswith("models:/"):
        return ModelIdentity("model", "", None)
    ref = model_uri.removeprefix("models:/")
    if "@" in ref:
        name, alias = ref.split("@", 1)
        mv = client.get_model_version_by_alias(name, alias)
    elif "/" in ref:
        name, version = ref.split("/", 1)
        mv = client.get_model_version(name, version)
    else:
        return ModelIdentity(ref, "", None)
    return ModelIdentity(str(mv.name), str(mv.version), mv.run_id)


def load_profile(identity: ModelIdentity, client: Any, dest: str) -> Profile | None:
    """The reference profile logged in the version's run, or None (said once in the log)."""
    if identity.run_id is None:
        log.info("no run behind %s: no feature histograms", identity.name)
        return None
    try:
        path = client.download_artifacts(identity.run_id, PROFILE_FILE, dest)
    except Exception as exc:  # MLflow raises several types for a missing artifact
        log.info("no %s in run %s (%s): no feature histograms", PROFILE_FILE, identity.run_id, exc)
        return None
    return Profile.from_json(json.loads(Path(path).read_text()))


class AnswerWatcher(Protocol):
    """Sees each scored batch with the model's answer (prediction counters, capture)."""

    def answered(self, data: Any, result: Any) -> None: ...


class ObservedModel:
    """A PyFuncModel that counts each batch into the feature histograms before predicting
    and shows inputs and answers to its watchers after."""

    def __init__(
        self,
        model: Any,
        observer: metrics.FeatureObserver | None,
        watchers: Sequence[AnswerWatcher] = (),
    ) -> None:
        self._model = model
        self._observer = observer
        self._watchers = tuple(watchers)
        self.metadata = model.metadata
        self._takes_params = "params" in inspect.signature(model.predict).parameters

    def predict(self, data: Any, params: dict[str, Any] | None = None) -> Any:
        if self._observer is not None:
            try:
                self._observer.observe(data)
            except Exception:  # observing must never fail a prediction
                log.exception("could not count the batch into the feature histograms")
        if self._takes_params:
            result = self._model.predict(data, params=params)
        else:
            result = self._model.predict(data)
        for watcher in self._watchers:
            try:
                watcher.answered(data, result)
            except Exception:  # neither must watching the answers
                log.exception("%s failed on an answer", type(watcher).__name__)
        return result

    def __getattr__(self, name: str) -> Any:
        return getattr(self._model, name)


class Server:
    """Loads the model (retrying) and serves MLflow's app once it is loaded."""

    def __init__(self, model_uri: str) -> None:
        self.model_uri = model_uri
        self.identity = ModelIdentity("model", "", None)
        self.error: str | None = "loading"
        self.app: Any = None
        self.model: ObservedModel | None = None
        self.input_schema: Any = None
        self.capture: capture.Capture | None = None
        self._lock = threading.Lock()
        # Predictions run one at a time on one thread per worker process: a model's
        # predict holds the GIL for most of its time, so more threads only contend
        # (slower p99, no more throughput); the event loop stays free for /ping and
        # /metrics. More throughput comes from more worker processes (--workers).
        self.executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="predict")

    def load(self) -> bool:
        import tempfile

        import mlflow
        from mlflow import MlflowClient
        from mlflow.pyfunc import scoring_server

        started = time.monotonic()
        try:
            client = MlflowClient()
            self.identity = identify(self.model_uri, client)
            model = mlflow.pyfunc.load_model(self.model_uri)
            profile = load_profile(self.identity, client, tempfile.mkdtemp(prefix="profile-"))
        except Exception as exc:
            self.error = f"cannot load {self.model_uri}: {type(exc).__name__}: {exc}"
            log.error("%s (retrying in %.0fs)", self.error, RETRY_SECONDS)
            return False
        name, version = self.identity.name, self.identity.version
        schema = model.metadata.get_input_schema()
        if profile is not None:
            warm_up(model, schema, profile)
        observer = metrics.FeatureObserver(profile, name, version) if profile else None
        answers = (
            metrics.PredictionObserver(profile.outputs, name, version)
            if profile and profile.outputs
            else None
        )
        captured = capture.from_env(name, version, os.environ.get(CAPTURE_CONFIG_ENV))
        watchers = [w for w in (answers, captured) if w is not None]
        observed = ObservedModel(model, observer, watchers)
        app = scoring_server.init(observed)  # type: ignore[arg-type]
        with self._lock:
            self.app = app
            self.model = observed
            self.input_schema = schema
            self.capture = captured
            self.error = None
        metrics.LOADED.labels(name, version).set(1)
        log.info(
            "loaded %s (version %s) in %.1fs; feature histograms: %s; prediction histograms: %s",
            self.model_uri,
            version or "-",
            time.monotonic() - started,
            ", ".join(observer.feature_names) if observer else "none",
            ", ".join(answers.output_names) if answers else "none",
        )
        return True

    def load_until_loaded(self) -> None:
        while not self.load():
            time.sleep(RETRY_SECONDS)

    def stop(self) -> None:
        """Flush the captured rows still buffered (after in-flight requests drained)."""
        with self._lock:
            captured = self.capture
        if captured is not None:
            captured.close()


def warm_up(model: Any, schema: Any, profile: Profile) -> None:
    """One prediction of a typical row through MLflow's own request path, before ready.

    A model's first prediction is slow (lazy imports, first allocations, caches): paid
    here, not by the first real request, whose latency a canary analysis would count.
    Not counted in any metric; a row the model refuses is logged and skipped.
    """
    from mlflow.pyfunc import scoring_server

    integers = frozenset(
        str(col.name)
        for col in (schema.inputs if schema is not None and schema.has_input_names() else ())
        if str(getattr(col, "type", "")).lower() in ("datatype.long", "datatype.integer")
    )
    row = typical_row(profile, integers)
    payload = json.dumps({"dataframe_split": {"columns": list(row), "data": [list(row.values())]}})
    started = time.monotonic()
    try:
        result = scoring_server.invocations(payload, "application/json", model, schema)
    except Exception as exc:  # a warm-up must never keep a model from serving
        log.info("warm-up skipped: %s: %s", type(exc).__name__, exc)
        return
    log.info(
        "warm-up prediction in %.0f ms (status %s)",
        (time.monotonic() - started) * 1000,
        result.status,
    )


Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]


async def _plain(
    send: Send,
    status: int,
    body: bytes,
    content_type: str = "text/plain",
    headers: Sequence[tuple[bytes, bytes]] = (),
) -> None:
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", content_type.encode()),
                (b"content-length", str(len(body)).encode()),
                *headers,
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


async def _invoke(
    server: Server, scope: dict[str, Any], receive: Receive, inference: capture.Inference
) -> tuple[int, bytes, str]:
    """One scoring request through MLflow's own ``invocations()``, minus the web stack.

    The same function MLflow's FastAPI handler calls, with the same error mapping and
    timeout (MLFLOW_SCORING_SERVER_REQUEST_TIMEOUT), so the answers are MLflow's; what
    is skipped is routing and Starlette's per-request middleware. The predict thread
    runs in a copy of this request's context, where :data:`capture.CURRENT` is its id.
    """
    from mlflow.environment_variables import MLFLOW_SCORING_SERVER_REQUEST_TIMEOUT
    from mlflow.exceptions import MlflowException
    from mlflow.pyfunc import scoring_server

    chunks = []
    while True:
        message = await receive()
        chunks.append(message.get("body", b""))
        if not message.get("more_body"):
            break
    headers = dict(scope.get("headers") or [])
    content_type = headers.get(b"content-type", b"").decode("latin-1")
    context = contextvars.copy_context()
    context.run(capture.CURRENT.set, inference)
    try:
        result = await asyncio.wait_for(
            asyncio.get_running_loop().run_in_executor(
                server.executor,
                context.run,
                scoring_server.invocations,
                b"".join(chunks),
                content_type,
                server.model,
                server.input_schema,
            ),
            timeout=MLFLOW_SCORING_SERVER_REQUEST_TIMEOUT.get(),
        )
    except TimeoutError:
        return 504, b"Request processing time exceeded limit", "application/json"
    except MlflowException as exc:
        return exc.get_http_status_code(), exc.serialize_as_json().encode(), "application/json"
    body = result.response if isinstance(result.response, bytes) else str(result.response).encode()
    return int(result.status), body, str(result.mimetype)


ID_HEADER = REQUEST_ID_HEADER.encode()


def _inference(scope: dict[str, Any]) -> capture.Inference:
    """This request's inference id (the client's ``X-Request-Id`` kept) and arrival time."""
    client = next((v for k, v in scope.get("headers") or () if k.lower() == ID_HEADER), None)
    return capture.Inference(
        capture.inference_id(client.decode("latin-1") if client else None),
        int(time.time() * 1000),
    )


def create_app(
    model_uri: str | None = None,
) -> Callable[[dict[str, Any], Receive, Send], Awaitable[None]]:
    """The ASGI app (a uvicorn factory): metrics and readiness around MLflow's app."""
    server = Server(model_uri or os.environ[MODEL_URI_ENV])
    labels = feedback.Endpoint.from_env(os.environ)
    if not server.load():
        threading.Thread(target=server.load_until_loaded, daemon=True, name="model-loader").start()

    async def app(scope: dict[str, Any], receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                elif message["type"] == "lifespan.shutdown":
                    await asyncio.to_thread(server.stop)
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        if scope["type"] != "http":
            return
        path = scope.get("path", "")
        if path == "/metrics":
            body, content_type = metrics.render()
            await _plain(send, 200, body, content_type)
            return
        if path == feedback.PATH:  # labels need no model: taken while it loads
            reply = await labels.handle(scope, receive) if labels else feedback.not_configured()
            await _plain(send, reply.status, reply.body, reply.content_type, reply.headers)
            return
        inner = server.app
        if inner is None:  # not loaded (yet): not ready, and say why
            await _plain(send, 503, (server.error or "loading").encode() + b"\n")
            return
        if path != "/invocations" or scope.get("method") != "POST":
            await inner(scope, receive, send)  # MLflow's own routes and errors
            return
        name, version = server.identity.name, server.identity.version
        started = time.perf_counter()
        inference = _inference(scope)
        code = 500
        try:
            code, body, content_type = await _invoke(server, scope, receive, inference)
            await _plain(send, code, body, content_type, [(ID_HEADER, inference.id.encode())])
        finally:
            metrics.LATENCY.labels(name, version).observe(time.perf_counter() - started)
            metrics.REQUESTS.labels(name, version, str(code)).inc()

    return app
