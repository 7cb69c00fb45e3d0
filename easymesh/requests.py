"""The request table: requests in flight, their deadlines, and who may answer them.

Pure bookkeeping, no I/O and no threads of its own: the caller part
(:mod:`easymesh.caller`) adds an entry when it sends a request, pops it when the
answer arrives, and asks for the expired ones on a timer. The clock is injected,
so the deadline rules are tested with a fake one.

* A request is keyed by its id (unique per node) and remembers the *link* it went
  out on: :meth:`RequestTable.pop` returns an entry only for the same link, so a
  reply or pong that arrives on any other link cannot complete it (a peer cannot
  answer requests it was never sent).
* Whoever pops an entry first completes it (the answer, a timeout, a lost link or
  close): ``dict.pop`` is atomic, so an entry is completed exactly once.
* Deadlines live in one heap for all requests (no timer per request). Entries of
  answered requests stay in the heap until their deadline and are dropped in bulk
  when the heap grows past twice the requests in flight.
* ``max_in_flight`` bounds the table: beyond it :meth:`add` raises
  :class:`~easymesh.errors.TooManyRequests` (a request nobody answers must not
  grow a node's memory without bound).
"""

from __future__ import annotations

import heapq
import itertools
import math
import threading
import time
from collections.abc import Callable
from typing import Any

from easymesh.errors import TooManyRequests

__all__ = ["Pending", "RequestTable"]


class Pending:
    """One request in flight."""

    __slots__ = ("future", "link", "service", "node_id", "timeout", "rid", "answer", "error")

    def __init__(
        self, future: Any, link: Any, service: str, node_id: str, timeout: float | None
    ) -> None:
        #: a concurrent.futures.Future, or a held lock a blocking caller sleeps on: who
        #: completes the request sets ``answer`` (or ``error``), then releases it
        self.future = future
        self.link = link  #: the connection it went out on (None: this node itself)
        self.service = service
        self.node_id = node_id
        self.timeout = timeout
        self.rid = 0  #: set by RequestTable.insert
        self.answer: tuple[int, int, Any] | None = None  #: (frame type, codec id, body)
        self.error: BaseException | None = None

    def __repr__(self) -> str:
        return f"<Pending {self.service!r} to {self.node_id}>"


class RequestTable:
    """Requests in flight (thread-safe)."""

    def __init__(
        self,
        clock: Callable[[], float] = time.monotonic,
        max_in_flight: int = 1_000_000,
        on_deadlines: Callable[[], None] | None = None,
    ) -> None:
        self._clock = clock
        self.max_in_flight = max_in_flight
        #: called (outside the lock) when a deadline arrives while no sweep is due: the owner
        #: schedules one :meth:`sweep` (which says whether to schedule the next)
        self.on_deadlines = on_deadlines
        self._pending: dict[int, Pending] = {}
        self._ids = itertools.count(1)
        self._heap: list[tuple[float, int]] = []
        self._sweeping = False  # a sweep is due (its owner was told, and not told to stop)
        self._lock = threading.Lock()  # the heap and _sweeping

    def __len__(self) -> int:
        return len(self._pending)

    def __contains__(self, rid: object) -> bool:
        return rid in self._pending

    def add(
        self, future: Any, link: Any, service: str, node_id: str, timeout: float | None = None
    ) -> int:
        """Record a request about to be sent; its id. ``timeout`` (seconds, None or inf:
        none) starts its deadline. Raises TooManyRequests past ``max_in_flight``."""
        return self.insert(Pending(future, link, service, node_id, timeout))

    def insert(self, p: Pending) -> int:
        """Record the request ``p`` (as :meth:`add`); its id, also set as ``p.rid``."""
        if len(self._pending) >= self.max_in_flight:
            raise TooManyRequests(
                f"{len(self._pending)} requests are already waiting for an answer"
                f" (max_in_flight={self.max_in_flight})"
            )
        p.rid = rid = next(self._ids)
        self._pending[rid] = p
        timeout = p.timeout
        if timeout is not None and timeout != math.inf:
            with self._lock:
                heapq.heappush(self._heap, (self._clock() + timeout, rid))
                if len(self._heap) > 2 * len(self._pending) + 1024:
                    pending = self._pending
                    self._heap = [e for e in self._heap if e[1] in pending]
                    heapq.heapify(self._heap)
                start, self._sweeping = not self._sweeping, True
            if start and self.on_deadlines is not None:
                self.on_deadlines()
        return rid

    def sweep(self, stop: bool = False) -> tuple[list[Pending], bool]:
        """The requests whose deadline passed (removed), and whether another sweep is due:
        while deadlines are left, unless ``stop``. When none is, the next deadline inserted
        calls ``on_deadlines`` again. (One lock for the heap and that flag: an insert and a
        sweep that race never leave a deadline without a sweep, nor start two.)"""
        out = self.expired()
        with self._lock:
            self._sweeping = again = bool(self._heap) and not stop
        return out, again

    def pop(self, rid: int, link: Any) -> Pending | None:
        """The entry for an answer to ``rid`` that arrived on ``link``, removed; None if
        there is none, it was completed already, or it went out on another link."""
        p = self._pending.get(rid)
        if p is None or p.link is not link:
            return None
        return p if self._pending.pop(rid, None) is p else None

    def discard(self, rid: int) -> Pending | None:
        """Remove ``rid`` whatever its link (the caller gave up on it)."""
        return self._pending.pop(rid, None)

    def expired(self) -> list[Pending]:
        """Remove and return the requests whose deadline has passed."""
        now = self._clock()
        out = []
        pending = self._pending
        with self._lock:
            heap = self._heap
            while heap and (heap[0][0] <= now or heap[0][1] not in pending):
                deadline, rid = heapq.heappop(heap)
                if deadline <= now:
                    p = pending.pop(rid, None)
                    if p is not None:
                        out.append(p)
        return out

    @property
    def deadline_entries(self) -> int:
        """Entries in the deadline heap (answered requests' included until pruned)."""
        return len(self._heap)

    def take_where(self, match: Callable[[Pending], bool]) -> list[Pending]:
        """Remove and return every entry that ``match`` accepts (a lost link, close)."""
        out = []
        for rid, p in list(self._pending.items()):
            if match(p) and self._pending.pop(rid, None) is p:
                out.append(p)
        return out
