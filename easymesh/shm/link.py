"""A minimal blocking shm link: the parts of this package wired end to end, without the Node.

This is the phase-1 prototype the tests and ``scripts/bench/large.py`` run between real
processes; phase 2 puts the same parts into the node's Connection and send path instead.
It has its own tiny framing (u8 type, u32 length, body), so it depends on nothing that the
node's rework is changing:

    1 ARENA    descriptor.encode_arena, with the arena fd attached (SCM_RIGHTS)
    2 MESSAGE  descriptor MESSAGE body
    3 RELEASE  descriptor RELEASE body (receiver -> sender)

:class:`Publisher` sends each message to every receiver socket: the data is copied into the
pool once (or not at all for a loan) and only the descriptor is written K times.
:class:`Subscriber` reads frames (``recvmsg_into``, fds in stream order through
:class:`~easymesh.shm.fdpass.FdQueue`), maps arenas read-only, decodes, and writes RELEASEs for
views that are gone before it blocks for the next message.
"""

from __future__ import annotations

import select
import socket
import struct
from typing import Any

from easymesh.errors import ConnectionLost, ProtocolError
from easymesh.shm.descriptor import decode_arena, decode_message, decode_release, encode_arena
from easymesh.shm.encoding import DEFAULT_THRESHOLD, decode, encode
from easymesh.shm.fdpass import FdQueue, recv_into_with_fds, send_with_fds
from easymesh.shm.pool import Pool
from easymesh.shm.release import Ledger, Remote

ARENA, MESSAGE, RELEASE = 1, 2, 3
_FRAME = struct.Struct("<BI")
MAX_FRAME = 1 << 31
READ_SIZE = 256 * 1024


def _send_all(sock: socket.socket, buffers: list[Any], fds: list[int] | None = None) -> None:
    views = [memoryview(b).cast("B") for b in buffers]
    while views:
        n = send_with_fds(sock, views, fds) if fds else sock.sendmsg(views)
        fds = None  # the fds left with the first byte
        while views and n >= views[0].nbytes:
            n -= views[0].nbytes
            views.pop(0)
        if views and n:
            views[0] = views[0][n:]


class _Out:
    def __init__(self, sock: socket.socket, pool: Pool) -> None:
        self.sock = sock
        self.ledger = Ledger(pool)
        self.inbuf = bytearray()


class Publisher:
    """One sender to many receivers over connected Unix stream sockets (it owns them).

    ``fallback``: when the pool is full, send the buffers inline (True) or drop the message
    and count it in ``dropped`` (False)."""

    def __init__(
        self,
        pool: Pool,
        socks: list[socket.socket],
        threshold: int = DEFAULT_THRESHOLD,
        fallback: bool = True,
    ) -> None:
        self.pool = pool
        self.threshold = threshold
        self.fallback = fallback
        self.links = [_Out(s, pool) for s in socks]
        self.dropped = 0
        self.inline = 0

    def send(self, obj: Any) -> bool:
        """Send ``obj`` to every live receiver; False if it was dropped. Blocks on the sockets."""
        enc = encode(obj, self.pool, self.threshold, fallback=False)
        if enc is None:  # the pool is full: take back what receivers released, try again
            self.poll()
            enc = encode(obj, self.pool, self.threshold, fallback=self.fallback)
            if enc is None:
                self.dropped += 1
                return False
        if len(enc.blocks) < len(enc.entries):
            self.inline += 1
        with enc:
            head = _FRAME.pack(MESSAGE, enc.nbytes)
            for link in list(self.links):
                try:
                    if enc.uses_shm and not link.ledger.announced:
                        body = encode_arena(self.pool.arena_id, self.pool.size)
                        arena = self.pool.arena
                        assert arena is not None
                        _send_all(link.sock, [_FRAME.pack(ARENA, len(body)), body], [arena.fd])
                        link.ledger.announced = True
                    link.ledger.sent(enc.blocks)
                    _send_all(link.sock, [head, *enc.buffers])
                except OSError:
                    self._drop(link)
        self.poll()  # releases: after the message left, off its latency
        return True

    def poll(self, timeout: float = 0.0) -> int:
        """Read what receivers sent (RELEASEs) without blocking longer than ``timeout``;
        returns the number of live links. A link that closed or sent garbage is dropped."""
        if not self.links:
            return 0
        if timeout > 0:
            ready = select.select([lk.sock for lk in self.links], [], [], timeout)[0]
        else:  # the hot path: one non-blocking recv per link, no select
            ready = [lk.sock for lk in self.links]
        for link in [lk for lk in self.links if lk.sock in ready]:
            try:
                data = link.sock.recv(READ_SIZE, socket.MSG_DONTWAIT)
                if not data:
                    raise ConnectionLost("receiver closed the link")
                link.inbuf += data
                for kind, body in _frames(link.inbuf):
                    if kind != RELEASE:
                        raise ProtocolError(f"unexpected frame type {kind} from a receiver")
                    link.ledger.released(decode_release(body))
            except BlockingIOError:
                continue
            except (OSError, ProtocolError, ConnectionLost):
                self._drop(link)
        return len(self.links)

    def _drop(self, link: _Out) -> None:
        if link in self.links:
            self.links.remove(link)
            link.ledger.close()
            link.sock.close()

    def close(self) -> None:
        for link in list(self.links):
            self._drop(link)


def _frames(buf: bytearray) -> list[tuple[int, bytes]]:
    """Cut complete frames off the front of ``buf``."""
    out = []
    pos = 0
    while len(buf) - pos >= _FRAME.size:
        kind, n = _FRAME.unpack_from(buf, pos)
        if n > MAX_FRAME:
            raise ProtocolError(f"frame of {n} bytes")
        if len(buf) - pos - _FRAME.size < n:
            break
        out.append((kind, bytes(buf[pos + _FRAME.size : pos + _FRAME.size + n])))
        pos += _FRAME.size + n
    del buf[:pos]
    return out


class Subscriber:
    """The receiving end of one link (owns the socket)."""

    def __init__(self, sock: socket.socket, max_arena: int = 1 << 32) -> None:
        self.sock = sock
        self.remote = Remote()
        self.fds = FdQueue()
        self.max_arena = max_arena
        self._buf = bytearray()
        self._read = bytearray(READ_SIZE)
        self._ready: list[tuple[int, bytes]] = []
        self.closed = False

    def recv(self, timeout: float | None = None) -> Any:
        """The next object. Raises TimeoutError, ConnectionLost when the sender is gone,
        ProtocolError for a bad frame (the link is closed then)."""
        while True:
            while self._ready:
                kind, body = self._ready.pop(0)
                obj = self._handle(kind, body)
                if kind == MESSAGE:
                    return obj
            self.flush_releases()
            self._fill(timeout)

    def _handle(self, kind: int, body: bytes) -> Any:
        try:
            if kind == ARENA:
                arena, size = decode_arena(body, self.max_arena)
                self.remote.add_arena(arena, size, self.fds.pop())
                return None
            if kind == MESSAGE:
                return decode(decode_message(body, self.remote.arena_size), self.remote.view)
            raise ProtocolError(f"unexpected frame type {kind} from the sender")
        except ProtocolError:
            self.close()
            raise

    def _fill(self, timeout: float | None) -> None:
        if self.closed:
            raise ConnectionLost("link closed")
        try:
            try:  # data already waiting (a busy link): no select
                n, fds = recv_into_with_fds(self.sock, self._read, socket.MSG_DONTWAIT)
            except BlockingIOError:
                if timeout is not None and not select.select([self.sock], [], [], timeout)[0]:
                    raise TimeoutError("no message in time") from None
                n, fds = recv_into_with_fds(self.sock, self._read)
            self.fds.push(fds)
        except TimeoutError:
            raise
        except (OSError, ProtocolError) as exc:
            self.close()
            raise ConnectionLost(f"link failed: {exc}") from exc
        if n == 0:
            self.close()
            raise ConnectionLost("sender closed the link")
        self._buf += memoryview(self._read)[:n]
        try:
            self._ready.extend(_frames(self._buf))
        except ProtocolError:
            self.close()
            raise

    def flush_releases(self) -> None:
        bodies = self.remote.drain()
        if bodies and not self.closed:
            try:
                _send_all(
                    self.sock,
                    [b for body in bodies for b in (_FRAME.pack(RELEASE, len(body)), body)],
                )
            except OSError:
                pass

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        self.remote.close()
        self.fds.close()
        self.sock.close()
