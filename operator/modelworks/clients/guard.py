"""Bulkheads for the operator's dependencies: a concurrency limit and a circuit breaker.

A slow or silent dependency (an MLflow that accepts connections and never answers) must
not take every worker: at most ``slots`` calls may wait on it at once, a call that cannot
get a slot within ``slot_wait`` seconds fails at once, and after ``threshold`` failures in
a row the breaker opens and every call fails fast for ``cool_down`` seconds. Then one call
is let through to probe; its success closes the breaker, its failure opens it again.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

log = logging.getLogger("modelworks")


class DependencyUnavailable(Exception):
    """The call was not made: the dependency is busy (no free slot) or its breaker is open."""


@dataclass
class Breaker:
    """Consecutive failures open it for ``cool_down`` seconds; then one probe is let through."""

    threshold: int
    cool_down: float
    clock: Callable[[], float] = time.monotonic
    name: str = "dependency"
    failures: int = 0
    opened_at: float | None = None
    probing: bool = False
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def admit(self) -> float | None:
        """None when a call may go ahead; else the seconds until the next probe."""
        with self._lock:
            if self.opened_at is None:
                return None
            left = self.opened_at + self.cool_down - self.clock()
            if left > 0 or self.probing:
                return max(left, 0.0)
            self.probing = True
            return None

    def record(self, ok: bool) -> None:
        with self._lock:
            self.probing = False
            if ok:
                if self.opened_at is not None:
                    log.info("%s answers again: circuit closed", self.name)
                self.failures, self.opened_at = 0, None
                return
            self.failures += 1
            if self.failures >= self.threshold:
                if self.opened_at is None:
                    log.warning(
                        "%s failed %d times in a row: circuit open, calls fail fast for %.0fs",
                        self.name,
                        self.failures,
                        self.cool_down,
                    )
                self.opened_at = self.clock()

    def unprobe(self) -> None:
        """The admitted probe was not made: the next call may probe instead."""
        with self._lock:
            self.probing = False

    @property
    def open(self) -> bool:
        return self.opened_at is not None


@dataclass
class Guard:
    """One dependency's bulkhead: ``slots`` concurrent calls and a :class:`Breaker`."""

    name: str
    slots: int = 2
    slot_wait: float = 1.0
    threshold: int = 3
    cool_down: float = 15.0
    clock: Callable[[], float] = time.monotonic

    def __post_init__(self) -> None:
        self._slots = threading.BoundedSemaphore(self.slots)
        self.breaker = Breaker(self.threshold, self.cool_down, self.clock, self.name)

    @contextmanager
    def call(self) -> Iterator[Callable[[bool], None]]:
        """Hold a slot for one call; the block reports the call's outcome with the callable
        it is given (True: the dependency answered). Unreported counts as answered."""
        left = self.breaker.admit()
        if left is not None:
            raise DependencyUnavailable(
                f"{self.name} failed {self.breaker.failures} times in a row; "
                f"not asked again for {left:.0f}s"
            )
        if not self._slots.acquire(timeout=self.slot_wait):
            self.breaker.unprobe()
            raise DependencyUnavailable(
                f"{self.name} is busy: {self.slots} calls already wait on it"
            )
        outcome = [True]
        try:
            yield lambda ok: outcome.__setitem__(0, ok)
        finally:
            self._slots.release()
            self.breaker.record(outcome[0])
