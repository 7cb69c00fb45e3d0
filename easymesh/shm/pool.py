"""The sender's pool: one bounded arena, blocks with reference counts, and loans.

A block's reference count is the number of holders that will each give it back once:

- the sender itself while it holds the block (the encoder between allocating and sending;
  a loan for as long as the user keeps the loaned array or any view of it);
- one per receiver the block was sent to (given back by that receiver's RELEASE, or all at
  once when its link closes: see :mod:`easymesh.shm.release`).

The block returns to the allocator when the count reaches zero; only then may it be reused.

Bounded, never blocking. The arena has a fixed size (``DEFAULT_POOL_SIZE``, 256 MiB). Pages
of a memfd are committed only when first written, and the allocator reuses the lowest free
blocks first, so the memory used is what is in flight, not the limit: a 1 MiB stream touches a
few MiB. 256 MiB holds eight 32 MiB point clouds or thirty 8.3 MB camera frames, enough for a
sender filling one frame while three receivers each hold the previous two, at 30 Hz, with no
fallback. When the receivers hold everything, :meth:`Pool.alloc` and :meth:`Pool.loan` return
None at once (counted in ``exhausted``); the caller falls back to the socket or drops.

An arena the kernel refuses (no memfd, seccomp, an address-space or memory limit: checked only
by creating it, on the first allocation) closes the pool, with one warning: every allocation
returns None from then on, so large messages take the socket and loans are ordinary buffers.
Shared memory is on by default; it may cost the speed-up, never a send.

Finalizers run on whatever thread drops the last reference, possibly while this pool's lock is
held by that same thread (a loan freed inside ``alloc``). They only append to a deque; the frees
are applied under the lock at the next pool operation.

Writing to a loan after sending it. The block is shared, not snapshotted: a receiver that still
holds the message sees whatever the sender writes afterwards, even half of a frame. The sender
must treat a sent loan as read-only and take a new loan for the next frame. (Write-protecting
the pages after send would turn such a write into a crash of the sender, and cost an
``mprotect`` and a TLB flush per send and per reuse; not done.)
"""

from __future__ import annotations

import ctypes
import logging
import threading
import weakref
from collections import deque
from typing import Any

from easymesh.shm.arena import Arena, buffer_address
from easymesh.shm.blocks import BlockAllocator, round_up

log = logging.getLogger("easymesh.node")

DEFAULT_POOL_SIZE = 256 * 1024 * 1024
ARENA_ID = 1


class Pool:
    """Shared-memory blocks for one sending process (or Node). Thread-safe.

    The memfd is created on the first allocation. Raises ValueError for a bad size."""

    def __init__(self, size: int = DEFAULT_POOL_SIZE, name: str = "easymesh") -> None:
        self.size = round_up(size)
        self.name = name
        self.arena_id = ARENA_ID
        self._arena: Arena | None = None
        self._blocks = BlockAllocator(self.size)
        self._refs: dict[int, int] = {}
        self._freed: deque[int] = deque()  # blocks whose loan is gone (appended by finalizers)
        #: id(loaned numpy array) -> (weak reference to it, block): sending the very array a
        #: loan returned finds its block without reading the buffer's address (ctypes)
        self._loaned: dict[int, tuple[weakref.ref[Any], int]] = {}
        self._lock = threading.Lock()
        self._closed = False
        self.exhausted = 0  # allocations refused because the pool was full

    @property
    def arena(self) -> Arena | None:
        return self._arena

    def open_arena(self) -> Arena | None:
        """The arena, created now if no allocation did yet; None if the pool is closed (or
        the kernel refused the arena: see above)."""
        with self._lock:
            return self._open_locked()

    def _open_locked(self) -> Arena | None:
        if self._closed:
            return None
        if self._arena is None:
            try:
                self._arena = Arena(self.size, self.name)
            except OSError as exc:
                self._closed = True  # asked once: the socket path from now on
                log.warning(
                    "easymesh: no shared memory for %s (%d bytes): %s; large messages take"
                    " the socket",
                    self.name,
                    self.size,
                    exc,
                )
                return None
            # a pool dropped without close() still unmaps (a live loan holds the pool)
            weakref.finalize(self, self._arena.close)
        return self._arena

    def _drain(self) -> None:
        freed = self._freed
        while freed:
            self._release_locked(freed.popleft())

    def alloc(self, nbytes: int) -> int | None:
        """Offset of a new block of ``nbytes`` with one reference (the caller's), or None if the
        pool is full or closed. Never blocks."""
        with self._lock:
            self._drain()
            if self._open_locked() is None:
                return None
            off = self._blocks.alloc(nbytes)
            if off is None:
                self.exhausted += 1
                return None
            self._refs[off] = 1
            return off

    def retain(self, offset: int, count: int = 1) -> None:
        """Add ``count`` references to a live block. KeyError if none starts at ``offset``."""
        with self._lock:
            self._refs[offset] += count

    def release(self, offset: int, count: int = 1) -> None:
        """Drop ``count`` references; the block is freed at zero. KeyError/ValueError if the block
        is not live or has fewer references (a peer's bogus RELEASE is caught before this)."""
        with self._lock:
            self._drain()
            self._release_locked(offset, count)

    def _release_locked(self, offset: int, count: int = 1) -> None:
        left = self._refs[offset] - count
        if left < 0:
            raise ValueError(f"block {offset} released more often than held")
        if left:
            self._refs[offset] = left
            return
        del self._refs[offset]
        self._blocks.free(offset)

    def refs(self, offset: int) -> int:
        with self._lock:
            self._drain()
            return self._refs.get(offset, 0)

    def copy_in(self, offset: int, data: Any) -> None:
        """Copy a C-contiguous buffer into the block at ``offset`` (which the caller holds).

        ``memmove`` through ctypes releases the GIL for the copy (32 MiB take milliseconds),
        unlike a memoryview slice assignment. ValueError if it does not fit the block."""
        address, nbytes = buffer_address(data)
        arena = self._arena
        with self._lock:
            size = self._blocks.block_size(offset)
        if arena is None or size is None or nbytes > size:
            raise ValueError(f"{nbytes} bytes do not fit the block at {offset}")
        ctypes.memmove(arena.base + offset, address, nbytes)

    def loan(self, nbytes_or_shape: Any, dtype: Any = None) -> Any:
        """A writable buffer in shared memory, or None if the pool is full.

        ``loan(nbytes)`` returns a memoryview of bytes; ``loan(shape, dtype)`` a numpy array
        (needs numpy). The block stays the sender's until the returned object and everything
        derived from it are gone; sending it transfers no data, only a descriptor. See the module
        doc for writing to it after a send."""
        if dtype is None:
            shape: Any = None
            nbytes = int(nbytes_or_shape)
        else:
            import numpy as np

            dt = np.dtype(dtype)
            shape = (
                (nbytes_or_shape,) if isinstance(nbytes_or_shape, int) else tuple(nbytes_or_shape)
            )
            nbytes = int(np.prod(shape, dtype=np.int64)) * dt.itemsize
        if nbytes < 0:
            raise ValueError("cannot loan a negative size")
        off = self.alloc(nbytes)
        if off is None:
            return None
        arena = self._arena
        assert arena is not None
        view = arena.view(off, nbytes, readonly=False, on_release=lambda: self._freed.append(off))
        if dtype is None:
            return view
        import numpy as np

        array = np.frombuffer(view, dtype=dt).reshape(shape)
        key, loaned = id(array), self._loaned

        def gone(ref: weakref.ref[Any]) -> None:  # runs before the id can be reused
            if loaned.get(key, (None, 0))[0] is ref:
                del loaned[key]

        loaned[key] = (weakref.ref(array, gone), off)
        return array

    def hold_loan(self, array: Any) -> int | None:
        """The block of ``array`` with one more reference, if it is the very object a numpy
        :meth:`loan` returned (and still starts its block), else None."""
        entry = self._loaned.get(id(array))
        if entry is None or entry[0]() is not array:
            return None
        block = entry[1]
        with self._lock:
            if block not in self._refs:
                return None
            self._refs[block] += 1
        return block

    def find(self, buffer: Any) -> tuple[int, int] | None:
        """(block offset, offset) if ``buffer`` lies inside a live block of this pool, else None.
        Used to send a loaned buffer without copying it."""
        return self._locate(buffer, 0)

    def hold(self, buffer: Any) -> tuple[int, int] | None:
        """Like :meth:`find`, and takes one reference on the block in the same lock round:
        (block offset, offset) of a buffer that lies in a live block, else None."""
        return self._locate(buffer, 1)

    def _locate(self, buffer: Any, take: int) -> tuple[int, int] | None:
        arena = self._arena
        if arena is None:
            return None
        try:
            address, nbytes = buffer_address(buffer)
        except (BufferError, TypeError):
            return None
        offset = address - arena.base
        if offset < 0 or offset + nbytes > self.size:
            return None
        with self._lock:
            block = self._blocks.containing(offset, nbytes)
            if block is None or block not in self._refs:
                return None
            self._refs[block] += take
            return block, offset

    def stats(self) -> dict[str, int]:
        with self._lock:
            self._drain()
            return {
                "size": self.size,
                "used_bytes": self._blocks.used_bytes,
                "blocks": len(self._blocks),
                "exhausted": self.exhausted,
            }

    def close(self) -> None:
        """Refuse new allocations and unmap the arena once no loan is alive. Receivers keep their
        own mappings. Idempotent."""
        with self._lock:
            self._closed = True
            arena = self._arena
        if arena is not None:
            arena.close()

    def __enter__(self) -> Pool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
