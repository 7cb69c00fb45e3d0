"""The shared-memory hub: this node's pool and the shared-memory state of each link.

Owns (``_lock``): the node's :class:`~easymesh.shm.pool.Pool` (one memfd arena, created when
the first link is asked or the first large message is encoded) and, per link, a
:class:`_LinkShm`: whether we asked (``SHM_ASK``) and the peer offered to map our memory
(``SHM_OFFER``), whether we answered its ask, the :class:`~easymesh.shm.release.Ledger` of the blocks it holds and
whether our arena was announced to it (sending side), the
:class:`~easymesh.shm.release.Remote` of the arenas it shared with us (receiving side). Other
parts reach this state only through the methods below; nothing here reaches into theirs.

Negotiation, once per link and direction, when the first large message wants it. A link
carries shared memory only where both ends can: this node was built with ``shm=True``, the OS
has ``memfd_create`` and seals (Linux), the node's codec is pickle, the link is a Unix socket
(so on this host). The sender's first large message for such a link goes through the socket
and sends ``SHM_ASK`` (:meth:`accepts`; it creates the arena first, and a node whose kernel
refuses it never asks); a receiver that can map answers ``SHM_OFFER`` and
from then on reads with ``recvmsg_into``; the sender answers that with ``SHM_ARENA`` and the
arena's fd, and sends ``pickle-shm`` frames after it; the receiver maps the arena and reads
with plain ``recv_into`` again. Why the round trip: a read that can receive descriptors
(``recvmsg_into``) costs about 4,500 more instructions than ``recv_into``, paid on every read
of every same-host link, and the kernel drops fds that reach a plain read; so a link reads
that way only while an fd is on its way, and a link that never carries a large message (most
of them: requests, small topics) never pays. Until the arena went, and on every other link,
messages take the socket path, silently.

Path of a large message (see docs/architecture.md): the publisher asks :meth:`accepts` for the
links it chose (True only once ``SHM_ARENA`` and a dup of the arena's read-only fd were
queued on the link, by :meth:`_announce` on the peer's offer: no message can overtake it),
encodes once (:meth:`encode`: pickle 5, buffers of at least ``threshold`` bytes out of band
into the pool: one copy, none for a loan) and calls :meth:`send` per link: the ledger takes
one reference per block, and
the frame (the same descriptor buffers for every link: fan-out copies nothing) is handed to
the connection; a frame the connection drops or refuses gives its references back. The
receiver's I/O thread :meth:`resolve`-s the body into views of the mapping; when the last
object made from them is gone, ``SHM_RELEASE`` goes back, written by the thread that dropped
it when the link's outbox is free at once (:meth:`_wake`), else by the I/O thread
(:meth:`_flush`), and the sender's ledger frees the block. A link that closes gives back what
its peer held.

Where a frame's time went, and why the paths are as they are (``scripts/bench/shm_stages.py``,
8,294,400 B loaned, 30 Hz, 2026-12-01 22:41, load average 2.1): the sender's ``send`` took
~760 µs (of which ``pickle.dumps`` only to learn the array is large: ~30 µs in a quiet loop,
now skipped by a type check), the receiver's I/O thread read the frame ~250 µs after the write
began and resolved it in ~130 µs, the hand-off to the worker took ~160 µs, decoding ~60 µs;
then the release took another wake-up of the receiver's I/O thread (~100 µs) before it went
back. The hand-offs are the floor: the hand-written ring has one wake-up (its receiver), a
node two (its I/O thread, then the worker that runs the callback), since user code never runs
on the I/O thread.
"""

from __future__ import annotations

import logging
import os
import pickle
import sys
import threading
import weakref
from collections import deque
from collections.abc import Callable
from typing import Any

from easymesh.counters import Counter
from easymesh.errors import FrameTooLarge, ProtocolError
from easymesh.protocol.frames import (
    HEADER,
    SHM_ARENA,
    SHM_ASK,
    SHM_OFFER,
    SHM_RELEASE,
    TOPIC,
    Frame,
    encode_frame,
    frame_bytes,
)
from easymesh.shm.large import SCAN_DEPTH, Large, ndarray_type, scan, stopper
from easymesh.transport.connection import OPEN

log = logging.getLogger("easymesh.node")

__all__ = ["ShmHub", "shm_available"]

#: Largest arena a peer may share with us (its pool size): 4 GiB.
MAX_PEER_ARENA = 4 * 1024 * 1024 * 1024
_OFFER = encode_frame(SHM_OFFER)
_ASK = encode_frame(SHM_ASK)
_new_frame = tuple.__new__
_dumps = pickle.dumps
_NO_BODY: tuple[None] = (None,)  # inband(): large, and no ordinary body made
#: Streams remembered as carrying large buffers (beyond: a new one is pickled in band first).
LARGE_STREAMS_MAX = 10_000


def _encode_lazily(obj: Any, pool: Any, threshold: int) -> Any:
    from easymesh.shm.encoding import encode

    return encode(obj, pool, threshold)


def _resolve_lazily(raw: Any, remote: Any) -> Any:
    """(a node without shared memory) an inline-only pickle-shm body, as it is, or
    ProtocolError."""
    from easymesh.shm.body import resolve

    return resolve(raw, remote)


def shm_available() -> bool:
    """Whether this OS has what the shared-memory path needs (Linux: memfd, seals, fd passing)."""
    if not sys.platform.startswith("linux") or not hasattr(os, "memfd_create"):
        return False
    try:
        import easymesh.shm.body  # noqa: F401  (arena: libc mmap, fcntl seals)
    except (ImportError, AttributeError, OSError):
        return False
    return True


class _LinkShm:
    """Shared-memory state of one link (owned by the hub)."""

    __slots__ = (
        "conn",
        "asked",
        "ledger",
        "announced",
        "remote",
        "lock",
        "flush_due",
        "unsent",
        "__weakref__",
    )

    def __init__(self, conn: Any) -> None:
        self.conn = conn
        self.asked = False  # sender side: we sent SHM_ASK
        self.ledger: Any = None  # sender side, once the peer offered: blocks the peer holds
        self.announced = False  # our arena's fd went to the peer: we may send pickle-shm
        self.remote: Any = None  # receiver side, once we answered an ask: what it shared
        self.lock = threading.Lock()  # asking, announcing the arena
        self.flush_due = False  # a release flush is scheduled on the I/O thread
        self.unsent: deque[bytes] = deque()  # releases a finalizer could not write at once

    def close(self) -> None:
        if self.ledger is not None:
            self.ledger.close()
        if self.remote is not None:
            self.remote.close()


def _weak_wake(hub: ShmHub, st: _LinkShm) -> Callable[[], None]:
    """The finalizers' wake-up, holding the hub and the link weakly. A view the user keeps
    reaches its Remote through its finalizer; were the Remote to hold the hub (and through it
    the node and the user's callback), an array kept by that callback would close a cycle
    through a numpy array, which the garbage collector cannot see into: node and mapping
    would never be freed."""
    hub_ref, st_ref = weakref.ref(hub), weakref.ref(st)

    def wake() -> None:
        h, link = hub_ref(), st_ref()
        if h is not None and link is not None:
            h._wake(link)

    return wake


class ShmHub:
    """This node's shared memory (thread-safe). ``enabled`` False: every method is a no-op
    and :meth:`accepts` is always False."""

    def __init__(
        self,
        *,
        enabled: bool,
        threshold: int,
        pool_size: int,
        node_name: str,
        call_soon: Callable[..., None],
    ) -> None:
        self.enabled = enabled and shm_available()
        self.threshold = threshold
        self.pool_size = pool_size
        self._call_soon = call_soon
        self._lock = threading.Lock()
        self._links: dict[Any, _LinkShm] = {}
        #: Whether the publisher looks for large buffers (the pool works).
        self.ready = self.enabled
        self._early: weakref.WeakSet[Any] = weakref.WeakSet()  # asked before they opened
        self._stop = stopper(threshold)
        self._large_streams: set[str] = set()  # topics and services that carried a large buffer
        self.pool: Any = None
        self._encode: Any = _encode_lazily
        self._resolve_body: Any = _resolve_lazily
        #: ``numpy.ndarray`` once numpy is imported (looked up again when a loan is taken or
        #: a large buffer is found), for :meth:`inband`'s fast check.
        self._ndarray: Any = None
        self._sized: frozenset[type] = frozenset()  # types inband() sizes up without pickling
        self._see_numpy()
        if self.enabled:
            from easymesh.shm import body, encoding
            from easymesh.shm.pool import Pool

            self.pool = Pool(pool_size, name=f"easymesh-{node_name}"[:200])
            # bound once: an import statement per frame costs more than it looks right after
            # an 8 MB refill has pushed the interpreter out of the CPU caches
            self._encode = encoding.encode
            self._resolve_body = body.resolve
        self.sent = Counter()  # pickle-shm frames handed to links
        self.received = Counter()  # pickle-shm frames with shared buffers resolved

    # -- links (I/O thread) ----------------------------------------------------------------

    def on_open(self, conn: Any) -> None:
        """A link opened: if it can carry fds, shared memory may be negotiated on it."""
        if self.enabled and conn.fdq is not None:
            self._state(conn)
            with self._lock:
                early = conn in self._early
                self._early.discard(conn)
            if early:
                self.accepts(conn)  # a large message went before the link opened: ask now

    def _state(self, conn: Any) -> _LinkShm:
        with self._lock:
            st = self._links.get(conn)
            if st is None:
                st = self._links[conn] = _LinkShm(conn)
            return st

    def on_close(self, conn: Any) -> None:
        """A link closed: what its peer held is ours again; its mappings go with their views."""
        with self._lock:
            st = self._links.pop(conn, None)
            self._early.discard(conn)
        if st is not None:
            st.close()

    def on_frame(self, conn: Any, frame: Frame) -> None:
        """SHM_ASK / SHM_OFFER / SHM_ARENA / SHM_RELEASE. Raises ProtocolError (the link
        closes)."""
        ftype = frame[0]
        # only on a link that carries fds: a Unix link (this host), never TCP
        st = self._links.get(conn) if self.enabled and conn.fdq is not None else None
        if ftype == SHM_ASK:
            if st is not None and st.remote is None:  # a second ask is ignored
                from easymesh.shm.release import Remote

                st.remote = Remote(wake=_weak_wake(self, st))
                conn.expect_fds(True)  # before the offer leaves: the fd follows it
                conn.send(_OFFER, 16, False)
        elif ftype == SHM_OFFER:
            if st is not None and st.asked and st.ledger is None and self.pool is not None:
                from easymesh.shm.release import Ledger

                st.ledger = Ledger(self.pool)  # a second offer is ignored
                self._announce(st)
        elif ftype == SHM_ARENA:
            if st is None or st.remote is None:
                raise ProtocolError("SHM_ARENA on a link that did not offer shared memory")
            from easymesh.shm.descriptor import decode_arena

            arena, size = decode_arena(frame[4], MAX_PEER_ARENA)
            st.remote.add_arena(arena, size, conn.fdq.pop())
            if not len(conn.fdq):
                conn.expect_fds(False)  # the fd came: plain reads again
        elif ftype == SHM_RELEASE:
            if st is None or st.ledger is None:
                raise ProtocolError("SHM_RELEASE on a link that carries no shared memory")
            from easymesh.shm.descriptor import decode_release

            st.ledger.released(decode_release(frame[4]))

    def resolve(self, conn: Any, frame: Frame) -> Frame:
        """(I/O thread) A pickle-shm frame with its body validated against what the peer
        shared on ``conn`` and turned into views. ProtocolError if it points elsewhere."""
        st = self._links.get(conn)
        body = self._resolve_body(frame[4], st.remote if st is not None else None)
        if body is not frame[4]:  # an ShmBody: views of shared memory
            if len(body) > conn.max_body:  # the same limit as for a message in the socket
                raise FrameTooLarge(
                    f"frame body of {len(body)} bytes (shared memory included) exceeds the"
                    f" limit of {conn.max_body}"
                )
            self.received.incr()
        return _new_frame(Frame, (frame[0], frame[1], frame[2], frame[3], body))

    def _wake(self, st: _LinkShm) -> None:
        """(any thread, in a finalizer) A view died: send the releases from this thread if
        the link's outbox is free at once, else on the I/O thread.

        Sending here saves a wake-up of the I/O thread per frame (a worker drops the frame
        right after its callback). A finalizer may run under any lock, this outbox's
        included, so the write never waits for it (``try_send``); a flush already
        scheduled on the I/O thread takes this release too."""
        if st.flush_due:
            return
        remote = st.remote
        if remote is None:
            return
        for body in remote.drain():
            frame = frame_bytes(SHM_RELEASE, b"", body)
            if not st.conn.try_send(frame):
                st.unsent.append(frame)
                if not st.flush_due:
                    st.flush_due = True
                    self._call_soon(self._flush, st)

    def _flush(self, st: _LinkShm) -> None:
        """(I/O thread) Send the releases a finalizer could not write, and any queued since."""
        st.flush_due = False
        unsent = st.unsent
        while unsent:
            frame = unsent.popleft()
            st.conn.send([frame], len(frame), False)
        remote = st.remote
        if remote is None:
            return
        for body in remote.drain():
            st.conn.send(encode_frame(SHM_RELEASE, b"", body), 16 + len(body), False)

    # -- sending (any thread) --------------------------------------------------------------

    def for_link(
        self, conn: Any, data: Any, inline: bytes | None, encode: Callable[[Any], Any]
    ) -> tuple[Any, Any]:
        """(requests, replies) For ``data`` that :meth:`inband` found large (``inline`` is
        the body it made, or None): ``(None, Encoded)`` when ``conn`` takes shared memory
        (send it with :meth:`send`, then ``close()`` it), else ``(body, None)``, the
        ordinary body. Small messages never get here: the sender calls ``inband`` itself
        (while ``ready``), one Python call on the hot path instead of two."""
        if self.accepts(conn):
            return None, self.encode(data)
        return (encode(data) if inline is None else inline), None

    def inband(self, data: Any, key: str) -> bytes | tuple[bytes | None]:
        """The ordinary pickle body of ``data``; or, if it holds a buffer worth sharing, a
        1-tuple: the ordinary body if pickling made it anyway, else None. (A link that cannot
        take shared memory sends that body: a large message is not pickled twice on its way
        to a TCP peer.) ``key`` names the stream (the topic or the service).

        A plain numpy array, ``bytes`` or ``bytearray`` of at least ``threshold`` bytes is
        seen by its type, without pickling. Anything else is pickled once (protocol 5), as
        for any message. Once a stream has carried a large buffer, its messages are pickled
        with a ``buffer_callback`` that stops at the first out-of-band-capable buffer (numpy
        arrays, PickleBuffer) of at least ``threshold`` bytes, before it is copied; until
        then without one (the callback argument costs a small message about 500 machine
        instructions, 2-3 % of its whole cost), and a body that comes out large is
        ``scan``-ned for a large buffer (dict values, list/tuple items, attributes, three
        levels, the first 64 of each). Any body that comes out large turns the callback on
        for its stream, found or not by ``scan`` (an array in a namedtuple is not). So the
        first large message of a stream that wraps its array in a container is pickled in
        band once more than needed (it goes through the socket anyway: the first large
        message on a link asks for shared memory), and found only from the second one on
        where ``scan`` cannot see it.
        Raises what pickle raises."""
        t = type(data)
        if t in self._sized:  # a camera frame, a bytes: large by its size, no pickling to find out
            if t is self._ndarray:
                if data.nbytes >= self.threshold and not data.dtype.hasobject:
                    return _NO_BODY
            elif len(data) >= self.threshold:
                return _NO_BODY
        if key in self._large_streams:
            try:
                body = _dumps(data, 5, buffer_callback=self._stop)
            except Large:
                self._see_numpy()
                return _NO_BODY
        else:
            body = _dumps(data, 5)
        if len(body) >= self.threshold:
            # A large body: the stream gets the callback from now on, whatever scan() says
            # (it cannot see an array in a namedtuple, a slotted object, four levels down).
            if key not in self._large_streams and len(self._large_streams) < LARGE_STREAMS_MAX:
                self._large_streams.add(key)
            if scan(data, self.threshold, SCAN_DEPTH):
                self._see_numpy()
                return (body,)
        return body

    def _see_numpy(self) -> None:
        """Look up ``numpy.ndarray`` again (once numpy is imported, arrays are sized up by type)."""
        self._ndarray = ndarray_type()
        self._sized = frozenset(t for t in (bytes, bytearray, self._ndarray) if t is not None)

    def accepts(self, conn: Any) -> bool:
        """Whether ``conn``'s peer maps our shared memory (our arena went to it). (Any
        thread) Asked for a large message: the first time on a link that could, it asks the
        peer (``SHM_ASK``) and says no; the message takes the socket (see Negotiation)."""
        st = self._links.get(conn)
        if st is None or st.announced:
            return st is not None or self._ask_early(conn)
        if not st.asked and self.pool is not None:
            with st.lock:
                if not st.asked:
                    st.asked = True
                    # Only with an arena to pass: a peer that offers reads with recvmsg_into
                    # until its fd comes (the kernel refused it, the node closes: no ask).
                    if self.pool.open_arena() is not None:
                        st.conn.send(_ASK, 16, False)
                    else:
                        self.ready = False  # no arena ever: stop looking for large buffers
        return False

    def _ask_early(self, conn: Any) -> bool:
        """accepts() for a link that is not open yet: ask once it opens (if it carries fds)."""
        with self._lock:
            known = conn in self._links  # it opened meanwhile
            # (an open link the hub does not know carries no fds: TCP; nothing to remember)
            if not known and self.enabled and conn.state != OPEN:
                self._early.add(conn)
        return self.accepts(conn) if known else False

    def encode(self, obj: Any) -> Any:
        """Pickle ``obj`` once for every same-host link (an ``Encoded``: release it with
        ``close()`` once sent). Buffers that find no room in the pool go inline."""
        return self._encode(obj, self.pool, self.threshold)

    def send(
        self, conn: Any, name: bytes, codec_id: int, enc: Any, rid: int = 0, ftype: int = TOPIC
    ) -> bool:
        """Write one pickle-shm frame (TOPIC: droppable; REQUEST, REPLY: must-deliver) on
        ``conn``. False if the link refused it (its references are given back)."""
        droppable = ftype == TOPIC
        st = self._links.get(conn)
        if st is None or st.ledger is None:
            return False
        if enc.blocks and not st.announced:  # (callers asked accepts() first)
            return False
        ledger, blocks = st.ledger, enc.blocks
        head = HEADER.pack(ftype, codec_id, len(name), enc.nbytes, rid)
        bufs = [head + name, *enc.buffers]
        if not blocks:
            return bool(conn.send(bufs, 16 + len(name) + enc.nbytes, droppable))
        ledger.sent(blocks)  # before the write: the peer may release before send() returns
        on_drop: Any = (lambda: ledger.unsent(blocks)) if droppable else False
        if conn.send(bufs, 16 + len(name) + enc.nbytes, on_drop):
            self.sent.incr()
            return True
        ledger.unsent(blocks)
        return False

    def _announce(self, st: _LinkShm) -> None:
        """(I/O thread) The peer answered our ask: send our arena's fd (created when we
        asked), before any message that uses it. Nothing if the pool closed meanwhile (the
        node is closing): the link keeps the socket path."""
        from easymesh.shm.descriptor import encode_arena

        arena = self.pool.open_arena()
        with st.lock:
            if st.announced or arena is None:
                return
            body = encode_arena(self.pool.arena_id, self.pool.size)
            try:
                fd = os.dup(arena.fd)
            except OSError:  # the pool was closed meanwhile (the node is closing)
                return
            if st.conn.send_fd(encode_frame(SHM_ARENA, b"", body), 16 + len(body), fd):
                st.announced = True

    def loan(self, shape: Any, dtype: Any = None) -> Any:
        """A writable buffer in shared memory (see ``Node.loan``); an ordinary one when shm is
        off or the pool is full."""
        if dtype is not None:
            self._see_numpy()
        if self.pool is not None:
            out = self.pool.loan(shape, dtype)
            if out is not None:
                return out
        if dtype is None:
            return memoryview(bytearray(int(shape)))
        import numpy as np

        return np.empty(shape, dtype=dtype)

    def stats(self) -> dict[str, Any]:
        with self._lock:
            links = sum(1 for st in self._links.values() if st.announced)
        out: dict[str, Any] = {
            "enabled": self.enabled,
            "links": links,
            "sent": self.sent.value,
            "received": self.received.value,
        }
        if self.pool is not None:
            out.update(self.pool.stats())
        return out

    def close(self) -> None:
        """The node closed: refuse new blocks; the arena goes once no loan or peer maps it."""
        if self.pool is not None:
            self.pool.close()
