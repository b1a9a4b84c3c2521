"""A delaying, deduplicating, rate-limited work queue of object uids (controller-runtime's shape).

- A key is queued once however often it is added; a key being processed that is added
  again is handed out again only after :meth:`WorkQueue.done`, so two workers never run the
  same object at once.
- :meth:`add_after` holds a key until it is due (the earliest due time wins);
  :meth:`add_rate_limited` does the same with a per-key exponential backoff that
  :meth:`forget` resets.
- :meth:`drop` removes a deleted object's key for good: queued, delayed and backoff state.
- :meth:`shutdown` wakes every waiting :meth:`get`, which then returns None.

Thread-safe; it takes its clock as an argument so that tests can drive time.
"""

from __future__ import annotations

import heapq
import itertools
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True)
class Backoff:
    """``base * 2**failures`` seconds, at most ``cap``."""

    base: float = 1.0
    cap: float = 300.0

    def delay(self, failures: int) -> float:
        return float(min(self.cap, self.base * 2 ** min(failures, 32)))


class WorkQueue:
    def __init__(
        self, backoff: Backoff | None = None, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._clock = clock
        self._backoff = backoff or Backoff()
        self._cond = threading.Condition()
        self._ready: deque[str] = deque()
        self._dirty: dict[str, float] = {}  # queued (or to requeue after done) -> since when
        self._processing: set[str] = set()
        self._due: dict[str, float] = {}  # delayed key -> its earliest due time
        self._heap: list[tuple[float, int, str]] = []
        self._seq = itertools.count()
        self._failures: dict[str, int] = {}
        self._gone: set[str] = set()  # dropped while being processed: no adds until done
        self._closed = False

    # -- adding -------------------------------------------------------------------------

    def add(self, key: str) -> None:
        with self._cond:
            self._add(key)

    def _add(self, key: str) -> None:
        if self._closed or key in self._dirty or key in self._gone:
            return
        self._dirty[key] = self._clock()
        self._due.pop(key, None)  # now beats later: the delayed entry is stale
        if key not in self._processing:
            self._ready.append(key)
            self._cond.notify()

    def add_after(self, key: str, delay: float) -> None:
        """Queue ``key`` in ``delay`` seconds (at once when <= 0); the earliest due time wins."""
        with self._cond:
            if delay <= 0:
                self._add(key)
                return
            if self._closed or key in self._dirty or key in self._gone:
                return
            due = self._clock() + delay
            if self._due.get(key, float("inf")) <= due:
                return
            self._due[key] = due
            heapq.heappush(self._heap, (due, next(self._seq), key))
            self._cond.notify()

    def add_rate_limited(self, key: str) -> float:
        """Queue ``key`` after its backoff, which doubles with each call until :meth:`forget`."""
        with self._cond:
            if key in self._gone:
                return 0.0
            failures = self._failures.get(key, 0)
            self._failures[key] = failures + 1
        delay = self._backoff.delay(failures)
        self.add_after(key, delay)
        return delay

    def forget(self, key: str) -> None:
        """The key succeeded: its next failure backs off from the start again."""
        with self._cond:
            self._failures.pop(key, None)

    def drop(self, key: str) -> None:
        """The object is gone: no pass for it, now or later (one already running finishes)."""
        with self._cond:
            self._dirty.pop(key, None)
            self._due.pop(key, None)
            self._failures.pop(key, None)
            if key in self._ready:
                self._ready.remove(key)
            if key in self._processing:
                self._gone.add(key)

    # -- taking -------------------------------------------------------------------------

    def get(self, timeout: float | None = None) -> tuple[str, float] | None:
        """The next key and how long it waited in the queue; None on shutdown or timeout."""
        deadline = None if timeout is None else self._clock() + timeout
        with self._cond:
            while True:
                self._promote_due()
                if self._closed:
                    return None
                if self._ready:
                    key = self._ready.popleft()
                    since = self._dirty.pop(key, self._clock())
                    self._processing.add(key)
                    return key, max(0.0, self._clock() - since)
                if deadline is not None and self._clock() >= deadline:
                    return None
                self._cond.wait(self._next_wait(deadline))

    def done(self, key: str) -> None:
        """The pass of ``key`` ended: if it was added meanwhile, it is ready again now."""
        with self._cond:
            self._processing.discard(key)
            self._gone.discard(key)
            if key in self._dirty:
                self._ready.append(key)
                self._cond.notify()

    def shutdown(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()

    # -- looking ------------------------------------------------------------------------

    def depth(self) -> int:
        """Keys ready to run (delayed ones and those being processed do not count)."""
        with self._cond:
            self._promote_due()
            return len(self._ready)

    def delayed(self) -> int:
        with self._cond:
            return len(self._due)

    # -- inside the lock ----------------------------------------------------------------

    def _promote_due(self) -> None:
        now = self._clock()
        while self._heap and self._heap[0][0] <= now:
            due, _, key = heapq.heappop(self._heap)
            if self._due.get(key) == due:
                del self._due[key]
                self._add(key)

    def _next_wait(self, deadline: float | None) -> float | None:
        now = self._clock()
        waits = [self._heap[0][0] - now] if self._heap else []
        if deadline is not None:
            waits.append(deadline - now)
        return max(0.0, min(waits)) if waits else None
