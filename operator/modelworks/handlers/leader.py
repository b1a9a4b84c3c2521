"""Leader election on a coordination.k8s.io Lease: one replica runs passes, the others stand by.

Every replica watches and keeps the latest bodies (a standby takes over with a warm cache);
only the holder of the Lease hands work to its workers. The holder renews every
``renew_seconds``; a replica that could not renew for ``deadline_seconds`` (shorter than the
lease) stops taking work before anyone else may take the lease over. Whether another
holder's lease has expired is judged on this replica's own monotonic clock, from when it
last saw that holder's record change (as client-go does), so clock skew between nodes does
not matter. On shutdown the holder gives the lease up so a standby takes over at once.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from modelworks.clients.kube import Kube, KubeError

LEASE_API = "coordination.k8s.io/v1"
log = logging.getLogger("modelworks.leader")


def micro_time(t: datetime) -> str:
    return t.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def next_lease(
    spec: Mapping[str, Any] | None, me: str, now: datetime, duration: int, record_age: float
) -> dict[str, Any] | None:
    """The Lease spec to write to hold the lease now, or None while another holder's is valid.

    ``record_age`` is how long, on this replica's clock, the holder's record has stood
    unchanged: another holder's lease is valid until that exceeds its duration.
    """
    spec = spec or {}
    holder = spec.get("holderIdentity") or ""
    held_for = int(spec.get("leaseDurationSeconds") or duration)
    if holder and holder != me and record_age < held_for:
        return None
    mine = holder == me
    return {
        "holderIdentity": me,
        "leaseDurationSeconds": duration,
        "acquireTime": spec.get("acquireTime") if mine else micro_time(now),
        "renewTime": micro_time(now),
        "leaseTransitions": int(spec.get("leaseTransitions") or 0) + (0 if mine else 1),
    }


@dataclass
class LeaderElector:
    kube: Kube
    namespace: str
    name: str
    identity: str
    duration_seconds: int = 15
    deadline_seconds: float = 10.0
    renew_seconds: float = 2.0
    # Called before this replica starts taking work as leader (e.g. to drop objects deleted
    # while it stood by); an error there is logged, not fatal.
    on_lead: Callable[[], object] = field(default=lambda: None)

    def __post_init__(self) -> None:
        self.leading = threading.Event()
        self._stop = threading.Event()
        self._renewed = float("-inf")
        self._record: tuple[str, str] | None = None  # (holder, renewTime) last seen
        self._record_seen = time.monotonic()
        self._api = self.kube.bounded(max(1.0, self.deadline_seconds - self.renew_seconds) / 2)
        self._thread = threading.Thread(target=self._run, name="leader-election", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        """Stop renewing and give the lease up (best effort: it expires anyway)."""
        self._stop.set()
        self._thread.join(timeout=self.renew_seconds + 5)
        if self.leading.is_set():
            self.leading.clear()
            self._release()

    def _run(self) -> None:
        while not self._stop.is_set():
            self._try_once()
            self._stop.wait(self.renew_seconds)

    def _try_once(self) -> None:
        started = time.monotonic()  # the renewal counts from before it was asked for
        try:
            held: bool | None = self._acquire_or_renew()
        except Exception as exc:  # no answer: keep leading until the deadline, no longer
            log.warning("lease %s/%s: %s", self.namespace, self.name, exc)
            held = None
        if held:
            self._renewed = started
            if not self.leading.is_set():
                self._lead()
        elif self.leading.is_set() and (
            held is False or time.monotonic() - self._renewed > self.deadline_seconds
        ):
            log.warning("lost lease %s/%s: standing by", self.namespace, self.name)
            self.leading.clear()

    def _lead(self) -> None:
        try:
            self.on_lead()
        except Exception:
            log.exception("preparing to lead failed")
        log.info("leading: %s holds lease %s/%s", self.identity, self.namespace, self.name)
        self.leading.set()

    def _acquire_or_renew(self) -> bool:
        lease = self._api.get(LEASE_API, "Lease", self.namespace, self.name)
        spec_now = (lease or {}).get("spec") or {}
        record = (str(spec_now.get("holderIdentity") or ""), str(spec_now.get("renewTime") or ""))
        if record != self._record:
            self._record, self._record_seen = record, time.monotonic()
        spec = next_lease(
            spec_now,
            self.identity,
            datetime.now(UTC),
            self.duration_seconds,
            time.monotonic() - self._record_seen,
        )
        if spec is None:
            return False
        if lease is None:
            self._api.create(self._lease(spec))
        else:
            self._api.replace({**self._lease(spec), "metadata": lease["metadata"]})
        return True

    def _lease(self, spec: dict[str, Any]) -> dict[str, Any]:
        return {
            "apiVersion": LEASE_API,
            "kind": "Lease",
            "metadata": {"name": self.name, "namespace": self.namespace},
            "spec": spec,
        }

    def _release(self) -> None:
        try:
            lease = self._api.get(LEASE_API, "Lease", self.namespace, self.name)
            if lease is None or (lease.get("spec") or {}).get("holderIdentity") != self.identity:
                return
            spec = {**lease["spec"], "holderIdentity": "", "leaseDurationSeconds": 1}
            self._api.replace({**lease, "spec": spec})
        except (KubeError, OSError) as exc:
            log.warning("could not release lease %s/%s: %s", self.namespace, self.name, exc)
