"""The controller behind the kopf wiring: latest bodies, one work queue, a pool of workers.

kopf's watches feed :meth:`Controller.observed` (our objects) and :meth:`Controller.child`
(their Jobs and Deployments): both only record and enqueue. A bounded pool of worker
threads takes uids off the queue, one pass per object at a time, while this replica leads;
each pass stores the status it computed (guarded by the resourceVersion it was computed
from), posts its Events, and is queued again after ``requeue_after`` or the resync period.
Errors back off exponentially per object. Deleted objects are dropped for good, also when
a relist missed their DELETED event (:meth:`Controller.sweep`).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any

from modelworks import metrics
from modelworks.api import API_VERSION, KINDS, Kind
from modelworks.clients.http import Limits
from modelworks.clients.kube import Kube, KubeError
from modelworks.clients.mlflow import Registry
from modelworks.handlers.queue import WorkQueue
from modelworks.names import format_time
from modelworks.reconcilers.base import (
    Bounds,
    Context,
    Decision,
    Gone,
    StatusInvalid,
    post_events,
    store_status,
)
from modelworks.reconcilers.modeldeployment import ServerConfig
from modelworks.reconcilers.trainingjob import end_open_run
from modelworks.settings import Settings

Reconcile = Callable[[Mapping[str, Any], Context, str], Decision[Any]]
log = logging.getLogger("modelworks")


@dataclass
class Entry:
    kind: Kind
    body: dict[str, Any]
    seen: float  # monotonic time the body arrived
    written: tuple[str, ...] = ()  # resourceVersions of this operator's latest status writes


WRITES_KEPT = 8


@dataclass
class Controller:
    settings: Settings
    kube: Kube
    registry: Registry
    reconcilers: Mapping[str, Reconcile]
    leading: threading.Event = field(default_factory=threading.Event)
    queue: WorkQueue = field(default_factory=WorkQueue)
    identity: str = "modelworks"

    def __post_init__(self) -> None:
        self._entries: dict[str, Entry] = {}
        self._enders = ThreadPoolExecutor(max_workers=2, thread_name_prefix="end-run")
        self._memory: dict[str, dict[str, Any]] = {}
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._threads: list[threading.Thread] = []
        self._in_flight = 0
        self.server = ServerConfig(
            image=self.settings.image,
            pull_policy=self.settings.image_pull_policy,
            tracking_uri=self.settings.mlflow_tracking_uri,
        )
        self.bounds = bounds_of(self.settings)

    # -- fed by the watches ---------------------------------------------------------------

    def observed(self, kind: Kind, event_type: str | None, body: Mapping[str, Any]) -> None:
        """A watch event of one of our objects: keep its body, queue a pass (or drop it)."""
        uid = body["metadata"]["uid"]
        if event_type == "DELETED":
            self.forget(uid, body)
            return
        version = body["metadata"].get("resourceVersion")
        with self._lock:
            old = self._entries.get(uid)
            ours = old.written if old is not None else ()
            if version in ours:
                return  # the echo of our own status write: what we keep is as new or newer
            self._entries[uid] = Entry(kind, dict(body), time.monotonic(), ours)
        self.queue.add(uid)

    def child(self, body: Mapping[str, Any]) -> None:
        """A child changed: its controlling owner, if we know it, gets a pass."""
        for ref in body.get("metadata", {}).get("ownerReferences") or []:
            if ref.get("controller") and ref.get("uid") in self._entries:
                self.queue.add(ref["uid"])

    def forget(self, uid: str, last: Mapping[str, Any] | None = None) -> None:
        """The object is gone: no pass for it again, and nothing kept for it. ``last`` is
        its final body when the watch delivered one (else the kept body stands in)."""
        self.queue.drop(uid)
        with self._lock:
            entry = self._entries.pop(uid, None)
            self._memory.pop(uid, None)
        if entry is not None and entry.kind.kind == "TrainingJob":
            self._end_open_run(last or entry.body)
        if entry is not None:
            meta = entry.body["metadata"]
            metrics.forget_conditions(entry.kind.kind, meta)
            if entry.kind.kind == "DriftMonitor":
                metrics.forget_drift(meta)

    def _end_open_run(self, body: Mapping[str, Any]) -> None:
        """A deleted TrainingJob's open MLflow run ends KILLED, off the watch thread."""
        if not self.leading.is_set():
            return

        def end() -> None:
            try:
                run_id = end_open_run(body, self.registry)
            except Exception as exc:  # best effort: the run stays open, said in the log
                log.warning("%s: could not end its open run: %s", _name(body), exc)
                return
            if run_id:
                log.info("%s: deleted while run %s was open: run ended KILLED", _name(body), run_id)

        self._enders.submit(end)

    def known(self, uid: str) -> bool:
        return uid in self._entries

    # -- the workers ----------------------------------------------------------------------

    def start(self) -> None:
        for i in range(self.settings.workers):
            thread = threading.Thread(target=self._work, name=f"worker-{i}", daemon=True)
            thread.start()
            self._threads.append(thread)
        sweeper = threading.Thread(target=self._sweep_every_resync, name="sweep", daemon=True)
        sweeper.start()
        metrics.track_queue(self.queue.depth, self.queue.delayed, lambda: self._in_flight)

    def stop(self, timeout: float) -> bool:
        """No new passes; wait up to ``timeout`` for the running ones. True if all finished."""
        self._stopping.set()
        self.queue.shutdown()
        deadline = time.monotonic() + timeout
        for thread in self._threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        return not any(t.is_alive() for t in self._threads)

    def _work(self) -> None:
        while not self._stopping.is_set():
            if not self.leading.wait(timeout=1.0):
                continue
            item = self.queue.get(timeout=1.0)
            if item is None:
                continue
            uid, waited = item
            metrics.QUEUE_WAIT.observe(waited)
            try:
                if self.leading.is_set():
                    self.process(uid)
                else:  # lost the lease while waiting for work: the next leader runs it
                    self.queue.add(uid)
            except Exception:  # a worker outlives any one pass
                log.exception("pass of %s failed", uid)
                self.queue.add_rate_limited(uid)
            finally:
                self.queue.done(uid)

    # -- one pass -------------------------------------------------------------------------

    def process(self, uid: str) -> None:
        """One pass of one object, start to end: reconcile, store the status, post Events."""
        with self._lock:
            entry = self._entries.get(uid)
            memory = self._memory.setdefault(uid, {}) if entry is not None else {}
        if entry is None:
            return  # deleted since it was queued
        kind, obj = entry.kind, entry.body
        now = now_rfc3339()
        ctx = Context(
            self.kube, self.registry, self.server, memory, self.bounds, exists=self.exists
        )
        decision = self._reconcile(kind, obj, ctx, now)
        if decision is None:
            if self.known(uid):
                self.queue.add_rate_limited(uid)
            return
        if not self._store(uid, entry, decision):
            return
        if not self.known(uid):
            self.forget(uid)  # deleted while the pass ran: nothing of it may come back
            return
        self._report(kind, obj, decision, now)
        self.queue.forget(uid)
        self.queue.add_after(uid, self._next_pass(decision))

    def _reconcile(
        self, kind: Kind, obj: Mapping[str, Any], ctx: Context, now: str
    ) -> Decision[Any] | None:
        started = time.monotonic()
        with self._lock:
            self._in_flight += 1
        try:
            return self.reconcilers[kind.kind](obj, ctx, now)
        except Gone:
            log.info("%s %s: deleted (uid %s), nothing written", kind.kind, _name(obj), _uid(obj))
            self.forget(_uid(obj))
            return None
        except Exception as exc:
            metrics.RECONCILES.labels(kind.kind, "error").inc()
            metrics.RECONCILE_ERRORS.labels(kind.kind, type(exc).__name__).inc()
            log.exception("%s %s: pass failed", kind.kind, _name(obj))
            return None
        finally:
            with self._lock:
                self._in_flight -= 1
            metrics.RECONCILE_SECONDS.labels(kind.kind).observe(time.monotonic() - started)

    def _store(self, uid: str, entry: Entry, decision: Decision[Any]) -> bool:
        """Store the status; False (and the object queued or dropped) when it could not be."""
        kind, obj = entry.kind, entry.body
        try:
            stored = store_status(self.kube, kind, obj, decision.status)
        except KubeError as exc:
            if exc.status == 404:
                self.forget(uid)
                return False
            if exc.status == 409 and not self.exists(obj):  # a successor holds the name
                self.forget(uid)
                return False
            if exc.status == 409:  # computed from a stale body: the watch brings the new one
                metrics.RECONCILES.labels(kind.kind, "conflict").inc()
            else:
                metrics.RECONCILE_ERRORS.labels(kind.kind, "StatusWrite").inc()
                log.warning("%s %s: status not stored: %s", kind.kind, _name(obj), exc)
            self.queue.add_rate_limited(uid)
            return False
        except StatusInvalid:
            metrics.RECONCILE_ERRORS.labels(kind.kind, "StatusInvalid").inc()
            log.exception("%s %s: status not stored", kind.kind, _name(obj))
            self.queue.add_rate_limited(uid)
            return False
        if stored is not None:
            metrics.STATUS_WRITES.labels(kind.kind).inc()
            self.remember(uid, entry, stored)
        return True

    def remember(self, uid: str, read: Entry, stored: Mapping[str, Any]) -> None:
        """Keep the object as our status write stored it, unless the watch brought a newer
        body while the pass ran (that one stays); either way its echo will be ignored."""
        with self._lock:
            current = self._entries.get(uid)
            if current is None:
                return  # deleted meanwhile
            ours = (*current.written, stored["metadata"]["resourceVersion"])[-WRITES_KEPT:]
            if current is read:
                self._entries[uid] = Entry(current.kind, dict(stored), time.monotonic(), ours)
            else:
                self._entries[uid] = replace(current, written=ours)

    def exists(self, obj: Mapping[str, Any]) -> bool:
        """Whether ``obj`` (its uid, not just its name) still exists: asked before a pass
        writes anything, since a watch that relisted after a gap never told its deletion."""
        meta = obj["metadata"]
        found = self.kube.get(obj["apiVersion"], obj["kind"], meta.get("namespace"), meta["name"])
        return found is not None and found["metadata"]["uid"] == meta["uid"]

    def _report(
        self, kind: Kind, obj: Mapping[str, Any], decision: Decision[Any], now: str
    ) -> None:
        metrics.RECONCILES.labels(kind.kind, decision.result).inc()
        metrics.observe_conditions(kind.kind, obj["metadata"], decision.status.get("conditions"))
        if kind.kind == "DriftMonitor":
            metrics.observe_drift(obj["metadata"], obj.get("status") or {}, decision.status)
        try:
            post_events(self.kube, obj, decision.events, now, self.identity)
        except KubeError as exc:  # an Event is news, not state: the pass stands
            log.warning("%s %s: event not posted: %s", kind.kind, _name(obj), exc)
        for event in decision.events:
            metrics.EVENTS.labels(kind.kind, event.type, event.reason).inc()

    def _next_pass(self, decision: Decision[Any]) -> float:
        """The resync period is the longest gap between two passes of an object."""
        delay = self.settings.resync_seconds
        if decision.requeue_after is not None:
            delay = min(decision.requeue_after, delay)
        return max(delay, self.settings.min_requeue_seconds)

    # -- deletions a relist missed --------------------------------------------------------

    def sweep(self) -> int:
        """Drop every kept object the API server no longer has; how many were dropped.

        A watch that relists after a disconnect sees no DELETED event for what was deleted
        in between: one list per kind, each resync period, finds those.
        """
        dropped = 0
        for kind in KINDS:
            started = time.monotonic()
            present = self._present(kind)
            with self._lock:
                stale = [
                    uid
                    for uid, e in self._entries.items()
                    if e.kind is kind and uid not in present and e.seen < started
                ]
            for uid in stale:
                self.forget(uid)
            dropped += len(stale)
        return dropped

    def _present(self, kind: Kind) -> set[str]:
        uids: set[str] = set()
        for ns in self.settings.namespaces or (None,):
            items = self.kube.list(API_VERSION, kind.kind, ns)
            uids.update(item["metadata"]["uid"] for item in items)
        return uids

    def _sweep_every_resync(self) -> None:
        while not self._stopping.wait(self.settings.resync_seconds):
            if not self.leading.is_set():
                continue
            try:
                dropped = self.sweep()
            except Exception as exc:  # the next resync tries again
                log.warning("sweep for deleted objects failed: %s", exc)
                continue
            if dropped:
                log.info("dropped %d objects deleted while a watch was reconnecting", dropped)


def bounds_of(settings: Settings) -> Bounds:
    """The per-pass limits on tenants' endpoints and inputs, from the settings."""
    return Bounds(
        metrics=Limits(settings.metrics_deadline_seconds, settings.metrics_max_bytes),
        prometheus=Limits(settings.prometheus_deadline_seconds, settings.prometheus_max_bytes),
        profile=Limits(settings.profile_deadline_seconds, settings.profile_max_bytes),
        calibration_cells=settings.calibration_max_cells,
    )


def now_rfc3339() -> str:
    """The clock, read once per pass here: the pure layers take ``now`` as an argument."""
    return format_time(datetime.now(UTC))


def _uid(obj: Mapping[str, Any]) -> str:
    return str(obj["metadata"]["uid"])


def _name(obj: Mapping[str, Any]) -> str:
    meta = obj.get("metadata") or {}
    return f"{meta.get('namespace')}/{meta.get('name')}"
