"""Counters that several threads increment without losing counts.

``n += 1`` on a shared attribute is a read, an add and a write: two threads that
interleave there lose one increment, and a node's counters are bumped by the
user's sending threads, the I/O thread and the workers at once. A lock per
increment would be exact but costs a lock round on the hot send path.
:class:`Counter` increments with ``next()`` on an ``itertools.count``, which is
one C call under the GIL and therefore atomic, for about the price of an
attribute add. Bulk additions (rare: drops counted when a link closes) take a
small lock.
"""

from __future__ import annotations

import itertools
import threading

__all__ = ["Counter"]


class Counter:
    """An exact counter: ``incr()`` from any thread, ``add(n)``, read ``value``."""

    __slots__ = ("_count", "incr", "_extra", "_lock")

    def __init__(self) -> None:
        self._count = itertools.count()
        #: Add one (atomic; the fastest way to count from many threads).
        self.incr = self._count.__next__
        self._extra = 0
        self._lock = threading.Lock()

    def add(self, n: int) -> None:
        """Add ``n`` (any thread)."""
        if n:
            with self._lock:
                self._extra += n

    @property
    def value(self) -> int:
        # ``repr(count(5))`` is ``'count(5)'``: the next value is the number counted so far.
        return int(repr(self._count)[6:-1]) + self._extra

    def __int__(self) -> int:
        return self.value

    def __repr__(self) -> str:
        return f"<Counter {self.value}>"
