"""Giving blocks back: the receiver's side of a link and the sender's ledger.

Receiver (:class:`Remote`, one per link): the peer's arenas, mapped read-only, and the views
handed to the user. Each shm entry of a message becomes a view whose ctypes exporter carries a
weakref callback (see :mod:`easymesh.shm.arena`): when the last numpy array or memoryview
derived from it is gone, on whatever thread that happens, the finalizer appends
``(arena, block)`` to a deque and calls ``wake`` (the hub's ``ShmHub._wake``, which
:meth:`Remote.drain`-s the deque into RELEASE frames and writes them from that very thread
when the link's outbox is free, else leaves them to the I/O thread). So several threads may
drain at once, each taking what the others did not. When the link closes, the mappings are closed: each is unmapped when its
last view is gone; views the user still holds stay readable until then, and their releases are
discarded (the sender already took everything back when it saw the link close).

The price of "a closed link gives everything back": if the *sender* lives on after the link
closed (the receiver closed it, or it was dropped for a protocol error), it may reuse those
blocks, and a view the receiver still holds then shows the new contents. It never faults and
never shows another process's memory, only later frames of the same sender. Phase 2 should
state it (keep a frame beyond the link: copy it) or keep a link open while views of it live.

Sender (:class:`Ledger`, one per link): which blocks this peer holds, and how often. A RELEASE
for a block the peer does not hold is a protocol error (a hostile or broken peer must not free
memory another receiver still reads). When the link closes, whatever the peer held is released.
"""

from __future__ import annotations

import os
import threading
import weakref
from collections import Counter, deque
from collections.abc import Callable, Iterable

from easymesh.errors import ProtocolError
from easymesh.shm.arena import Mapping
from easymesh.shm.descriptor import MAX_RELEASES, Entry, encode_release
from easymesh.shm.pool import Pool

#: Most arenas one peer may share with us, and the most bytes in all.
MAX_ARENAS = 8
MAX_SHARED_BYTES = 4 * 1024 * 1024 * 1024


class Remote:
    """What one peer shared with us over one link (receiver side). Thread-safe where it says."""

    def __init__(
        self,
        wake: Callable[[], None] | None = None,
        max_arenas: int = MAX_ARENAS,
        max_bytes: int = MAX_SHARED_BYTES,
    ) -> None:
        self._mappings: dict[int, Mapping] = {}
        self._released: deque[tuple[int, int]] = deque()
        self._wake = wake
        self.max_arenas = max_arenas
        self.max_bytes = max_bytes
        self._closed = False
        # a Remote dropped without close() still unmaps (no view can outlive it: views hold it)
        weakref.finalize(self, _close_mappings, self._mappings)

    def add_arena(self, arena: int, size: int, fd: int) -> None:
        """Map the peer's arena (takes ownership of ``fd``). ProtocolError if it is a duplicate,
        past the bounds, or not a sealed memfd of ``size`` bytes."""
        if (
            arena in self._mappings
            or len(self._mappings) >= self.max_arenas
            or size + sum(m.size for m in self._mappings.values()) > self.max_bytes
        ):
            os.close(fd)
            raise ProtocolError(f"peer shared arena {arena} again or past the limits")
        self._mappings[arena] = Mapping(fd, size)

    def arena_size(self, arena: int) -> int | None:
        m = self._mappings.get(arena)
        return None if m is None else m.size

    def view(self, entry: Entry) -> memoryview:
        """A read-only view of an shm entry (already validated by decode_message); its release
        is queued when it and everything derived from it are gone."""
        ref = (entry.arena, entry.block)
        return self._mappings[entry.arena].view(
            entry.offset, entry.length, readonly=True, on_release=lambda: self._gone(ref)
        )

    def _gone(self, ref: tuple[int, int]) -> None:  # finalizer: any thread, keep it tiny
        if not self._closed:
            self._released.append(ref)
            if self._wake is not None:
                self._wake()

    def drain(self) -> list[bytes]:
        """RELEASE bodies for everything given back since the last call. Any thread, several
        at once: the thread that dropped a view drains (``ShmHub._wake``) while another
        does, or the I/O thread flushes; each ref goes to exactly one of them."""
        refs: list[tuple[int, int]] = []
        q = self._released
        try:
            while q:
                refs.append(q.popleft())
        except IndexError:
            # another thread took the last ref between the test and the pop: uncaught, this
            # lost every ref this call had taken (their blocks never went back)
            pass
        return [
            encode_release(refs[i : i + MAX_RELEASES]) for i in range(0, len(refs), MAX_RELEASES)
        ]

    @property
    def pending(self) -> int:
        return len(self._released)

    def close(self) -> None:
        """The link closed: unmap every arena once its views are gone; stop queueing releases."""
        self._closed = True
        self._released.clear()
        _close_mappings(self._mappings)


def _close_mappings(mappings: dict[int, Mapping]) -> None:
    for m in mappings.values():
        m.close()


class Ledger:
    """The blocks of ``pool`` that one peer holds (sender side). Thread-safe."""

    def __init__(self, pool: Pool) -> None:
        self.pool = pool
        self._held: Counter[int] = Counter()
        self._lock = threading.Lock()
        self.announced = False  # ARENA sent on this link
        self._closed = False

    def sent(self, blocks: Iterable[int]) -> None:
        """A message using ``blocks`` (one reference each) went to this peer."""
        blocks = list(blocks)
        with self._lock:
            if self._closed:
                return
            for b in blocks:
                self.pool.retain(b)
                self._held[b] += 1

    def unsent(self, blocks: Iterable[int]) -> None:
        """A message counted by :meth:`sent` never reached the peer (its link dropped or
        refused the frame): give those references back. May run under the connection's lock
        (takes only this lock and the pool's)."""
        blocks = list(blocks)
        with self._lock:
            if self._closed:
                return  # close() gave everything back already
            for b in blocks:
                self._held[b] -= 1
                if not self._held[b]:
                    del self._held[b]
                self.pool.release(b)

    def released(self, refs: Iterable[tuple[int, int]]) -> None:
        """The peer gave these back. ProtocolError for one it does not hold (nothing freed)."""
        refs = list(refs)
        with self._lock:
            if self._closed:
                return
            if len(refs) == 1:  # one frame given back by one receiver: the common case
                arena, b = refs[0]
                if arena != self.pool.arena_id:
                    raise ProtocolError(f"RELEASE for arena {arena}, which we never shared")
                held = self._held.get(b, 0)
                if held < 1:
                    raise ProtocolError(f"RELEASE of block {b} the peer does not hold")
                if held == 1:
                    del self._held[b]
                else:
                    self._held[b] = held - 1
                self.pool.release(b)
                return
            want = Counter(b for _a, b in refs)
            for arena, _b in refs:
                if arena != self.pool.arena_id:
                    raise ProtocolError(f"RELEASE for arena {arena}, which we never shared")
            for b, n in want.items():
                if self._held[b] < n:
                    raise ProtocolError(f"RELEASE of block {b} the peer does not hold")
            for b, n in want.items():
                self._held[b] -= n
                if not self._held[b]:
                    del self._held[b]
                self.pool.release(b, n)

    @property
    def held(self) -> int:
        with self._lock:
            return sum(self._held.values())

    def close(self) -> None:
        """The link closed: release everything the peer held. Idempotent."""
        with self._lock:
            self._closed = True
            held, self._held = self._held, Counter()
        for b, n in held.items():
            self.pool.release(b, n)
