"""Leader election on a coordination.k8s.io Lease: one replica runs passes, the others stand by.

Every replica watches and keeps the latest bodies (a standby takes over with a warm cache);
only the holder of the Lease hands work to its workers. The holder renews every
``renew_seconds``; a replica that could not renew for ``deadline_seconds`` (shorter than the
lease) stops taking work before anyone else may take the lease over. On shutdown the holder
gives the lease up so a standby takes over at once.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from modelworks.clients.kube import Kube, KubeError

LEASE_API = "coordination.k8s.io/v1"
log = logging.getLogger("modelworks.leader")


def micro_time(t: datetime) -> str:
    return t.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _parse(text: str | None) -> datetime | None:
    if not text:
        return None
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def next_lease(
    spec: Mapping[str, Any] | None, me: str, now: datetime, duration: int
) -> dict[str, Any] | None:
    """The Lease spec to write to hold the lease now, or None while another holder's is valid."""
    spec = spec or {}
    holder = spec.get("holderIdentity") or ""
    renewed = _parse(spec.get("renewTime"))
    held_for = int(spec.get("leaseDurationSeconds") or duration)
    if holder and holder != me and renewed and now < renewed + timedelta(seconds=held_for):
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

    def __post_init__(self) -> None:
        self.leading = threading.Event()
        self._stop = threading.Event()
        self._renewed = float("-inf")
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
        try:
            held = self._acquire_or_renew()
        except (KubeError, OSError) as exc:
            log.warning("lease %s/%s: %s", self.namespace, self.name, exc)
            held = False
        if held:
            self._renewed = time.monotonic()
            if not self.leading.is_set():
                log.info("leading: %s holds lease %s/%s", self.identity, self.namespace, self.name)
                self.leading.set()
        elif self.leading.is_set() and time.monotonic() - self._renewed > self.deadline_seconds:
            log.warning("lost lease %s/%s: standing by", self.namespace, self.name)
            self.leading.clear()

    def _acquire_or_renew(self) -> bool:
        lease = self.kube.get(LEASE_API, "Lease", self.namespace, self.name)
        spec = next_lease(
            (lease or {}).get("spec"), self.identity, datetime.now(UTC), self.duration_seconds
        )
        if spec is None:
            return False
        if lease is None:
            self.kube.create(self._lease(spec))
        else:
            self.kube.replace({**self._lease(spec), "metadata": lease["metadata"]})
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
            lease = self.kube.get(LEASE_API, "Lease", self.namespace, self.name)
            if lease is None or (lease.get("spec") or {}).get("holderIdentity") != self.identity:
                return
            spec = {**lease["spec"], "holderIdentity": "", "leaseDurationSeconds": 1}
            self.kube.replace({**lease, "spec": spec})
        except (KubeError, OSError) as exc:
            log.warning("could not release lease %s/%s: %s", self.namespace, self.name, exc)
