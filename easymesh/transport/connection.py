"""A non-blocking stream connection: reads into the frame decoder, writes through a
bounded outbox (:mod:`easymesh.transport.outbox`: the write path and its bound).

States: CONNECTING -> HANDSHAKE -> OPEN -> CLOSED. Frames may be queued from the
moment the object exists; they leave once the handshake has succeeded.

Sending: :meth:`Connection.send` *is* the outbox's ``send`` (bound once, no extra
call on the hot path). Every frame queued towards the peer counts against
``max_pending``; a peer that stops reading while must-deliver frames pile up past it
is disconnected with a ConnectionLost that says so (see the outbox).

Reading. Only the I/O thread reads: ``recv_into`` the decoder's buffer (for a
large body, straight into the body's own storage), then hands the complete
frames to ``on_frames``. A protocol error, a failed handshake, a handshake
that does not finish in time, or a peer that goes away during the handshake
closes the connection and is logged once, with the peer's address (for a Unix
socket: the peer's pid and uid). Until the handshake is done the decoder reads
into a small buffer and accepts only handshake frames, so an unauthenticated
peer costs little memory and nothing it sends is decoded. A write that fails (EPIPE: the
peer closed) loses nothing the peer sent first: a Unix socket keeps it readable, so it is read
and delivered (up to ``DRAIN_LIMIT`` bytes) before the link closes.

Descriptors. A Unix link built with ``carry_fds`` has an ``fdq``; while its owner expects
descriptors (:meth:`Connection.expect_fds`) it reads with ``recvmsg_into`` and queues the fds
that arrive (stream order) before decoding that read's frames (see :mod:`easymesh.shm.fdpass`).
Otherwise, and on every other link, it reads with ``recv_into``, which costs less per read; the
kernel closes fds sent to such a read (the shm hub asks for them first: ``SHM_ASK``).

Stalls. A partial frame that receives no byte for ``stall_timeout`` seconds (the
owner passes its heartbeat timeout, four heartbeat intervals) closes the link: a
peer that announces a frame and stops half-way cannot hold its buffers forever. A
timer is armed only while a frame is partial (one at most), so an idle link costs nothing.
(The decoder also grows a large body's storage only as its bytes arrive, or to the size of
the link's previous large body, so the wait is cheap in memory too.)

Refusing. :meth:`close_when_flushed` lets an owner send an ERROR frame and close
once it has left (the coordinator refusing a registration): frames the peer sends
meanwhile are read and discarded.

Every peer-supplied text that reaches a log line or an exception here (ERROR reasons,
the label an owner built from a peer's name) goes through
:func:`easymesh.escape.printable`.
"""

from __future__ import annotations

import errno
import logging
import socket
import time
from collections.abc import Callable
from typing import Any

from easymesh.config import (
    DEFAULT_HEARTBEAT_INTERVAL,
    HANDSHAKE_TIMEOUT,
    HEARTBEAT_TIMEOUT_FACTOR,
)
from easymesh.errors import AuthenticationError, ConnectionLost, ProtocolError
from easymesh.escape import printable
from easymesh.protocol.auth import ClientHandshake, ServerHandshake, error_frame
from easymesh.protocol.frames import (
    ERROR,
    HANDSHAKE_BUFFER_SIZE,
    HANDSHAKE_MAX_BODY,
    HANDSHAKE_MAX_NAME,
    HANDSHAKE_TYPES,
    SESSION_TYPES,
    Frame,
    FrameDecoder,
)
from easymesh.shm.fdpass import FdQueue, recv_into_with_fds
from easymesh.transport.listener import describe_link, format_peer, peer_credentials, tune_stream
from easymesh.transport.loop import READ, WRITE, IOLoop
from easymesh.transport.outbox import Outbox

log = logging.getLogger("easymesh.transport")

CONNECTING, HANDSHAKE, OPEN, CLOSED = "connecting", "handshake", "open", "closed"
#: Seconds a partial frame may go without a byte when the owner does not say.
DEFAULT_STALL_TIMEOUT = DEFAULT_HEARTBEAT_INTERVAL * HEARTBEAT_TIMEOUT_FACTOR
#: Seconds close_when_flushed() waits for the last frames to leave.
LINGER_LIMIT = 2.0
#: Bytes read at most from a peer that closed, after a write to it failed (see Reading).
DRAIN_LIMIT = 64 * 1024 * 1024


class Connection:
    """One stream to a peer (TCP or Unix): construct it, then :meth:`start_connect` or
    :meth:`start_server` on the I/O thread. ``stall_timeout``: see Stalls (0: never)."""

    def __init__(
        self,
        loop: IOLoop,
        *,
        authkey: bytes | None,
        is_client: bool,
        max_body: int,
        max_pending: int,
        on_frames: Callable[[Connection, list[Frame]], None],
        on_open: Callable[[Connection], None] | None = None,
        on_close: Callable[[Connection, BaseException | None], None] | None = None,
        label: str = "",
        first_frames: list[bytes] | None = None,
        socket_buffer: int = 0,
        stall_timeout: float = DEFAULT_STALL_TIMEOUT,
        carry_fds: bool = False,
    ) -> None:
        self.loop = loop
        self.sock: socket.socket | None = None
        self.state = CONNECTING
        self.is_client = is_client
        self.label = label  # who the peer is, for log lines
        self.peer_address = ""
        self.max_body = max_body
        self.stall_timeout = stall_timeout
        self.on_frames = on_frames
        self.on_open = on_open
        self.on_close = on_close
        self.decoder = FrameDecoder(
            max_body=HANDSHAKE_MAX_BODY,
            allowed_types=HANDSHAKE_TYPES,
            buffer_size=HANDSHAKE_BUFFER_SIZE,
            max_name=HANDSHAKE_MAX_NAME,
        )
        self._hs: ClientHandshake | ServerHandshake = (
            ClientHandshake(authkey) if is_client else ServerHandshake(authkey)
        )
        self._hs_out = b""
        self._first = first_frames or []  # sent right after the handshake, before queued frames
        self.socket_buffer = socket_buffer
        self._outbox = outbox = Outbox(
            loop, max_pending, self._want_write, self._outbox_failed, lambda: self.peer_address
        )
        self.send = outbox.send  # (buffers, nbytes, droppable) -> bool: see the outbox
        self.wait_flushed = outbox.wait_flushed  # until every queued frame was written
        self.send_fd, self.try_send = outbox.send_fd, outbox.try_send  # try_send never waits
        self.carry_fds = carry_fds
        self.fdq: FdQueue | None = None  # fds received, stream order (Unix, carry_fds)
        self._fd_reads = False  # read with recvmsg_into (expect_fds)
        self._hs_timer: Any = None
        self._stall_timer: Any = None
        self._linger: BaseException | None = None  # close_when_flushed() was called
        self._close_reason: BaseException | None = None
        self.last_received = time.monotonic()  # any bytes
        self.last_frame = self.last_received  # a complete frame (a slow drip does not count)
        self.peer_id = ""  # set by the owner once the peer identifies itself
        self.peer_name = ""
        # counters (frames_out and dropped live in the outbox)
        self.frames_in = 0
        self.bytes_in = 0

    # -- the outbox's figures, under the names owners read ---------------------------------

    @property
    def max_pending(self) -> int:
        return self._outbox.max_pending

    @property
    def pending_bytes(self) -> int:
        return self._outbox.nbytes

    @property
    def close_reason(self) -> BaseException | None:
        """Why the connection closed, or why it is being closed (set at once, on the
        sending thread, when the peer stopped reading past the bound)."""
        return self._close_reason or self._outbox.failure

    @property
    def reads_fds(self) -> bool:  # see Descriptors
        return self._fd_reads

    @property
    def frames_out(self) -> int:
        return self._outbox.frames_out

    @property
    def dropped(self) -> int:
        return self._outbox.dropped

    @dropped.setter
    def dropped(self, value: int) -> None:
        self._outbox.dropped = value

    # -- construction ------------------------------------------------------------------------

    def start_connect(self, family: int, address: Any) -> None:
        """(I/O thread) Start a non-blocking connect to ``address``."""
        if self.state != CONNECTING:
            return
        if self.loop.stopping:
            self._fail(ConnectionLost("the node is closing"))
            return
        self.peer_address = format_peer(address)
        try:
            sock = socket.socket(family, socket.SOCK_STREAM)
        except OSError as exc:
            self._fail(ConnectionLost(f"cannot create socket: {exc}"))
            return
        sock.setblocking(False)
        tune_stream(sock, self.socket_buffer)
        self.sock = sock
        self.fdq = FdQueue() if self.carry_fds and family == socket.AF_UNIX else None
        try:
            err = sock.connect_ex(address)
        except OSError as exc:  # e.g. a bad abstract name
            err = exc.errno or errno.ECONNREFUSED
        if err in (0, errno.EISCONN):
            self.loop.register(sock, READ, self._on_event)
            self._begin_handshake()
        elif err in (errno.EINPROGRESS, errno.EAGAIN, errno.EWOULDBLOCK, errno.EALREADY):
            self.loop.register(sock, WRITE, self._on_connect_ready)
            self._arm_handshake_timer()
        else:
            self._fail(
                ConnectionLost(
                    f"cannot connect to {self.peer_address}: {errno.errorcode.get(err, err)}"
                )
            )

    def start_server(self, sock: socket.socket, address: Any) -> None:
        """(I/O thread) Adopt an accepted socket and wait for the client's HELLO."""
        self.sock = sock
        self.peer_address = format_peer(address) if address else peer_credentials(sock)
        self.fdq = FdQueue() if self.carry_fds and sock.family == socket.AF_UNIX else None
        sock.setblocking(False)
        tune_stream(sock, self.socket_buffer)
        self.state = HANDSHAKE
        self.loop.register(sock, READ, self._on_event)
        self._arm_handshake_timer()

    def _arm_handshake_timer(self) -> None:
        if self._hs_timer is None:
            self._hs_timer = self.loop.call_later(HANDSHAKE_TIMEOUT, self._handshake_timeout)

    def _handshake_timeout(self) -> None:
        if self.state in (CONNECTING, HANDSHAKE):
            why = "easymesh: %s: no handshake within %g s, closing"
            log.warning(why, self.describe(), HANDSHAKE_TIMEOUT)
            self._fail(ConnectionLost(f"handshake with {self.peer_address} timed out"))

    def _on_connect_ready(self, _mask: int) -> None:
        assert self.sock is not None
        err = self.sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
        if err:
            why = errno.errorcode.get(err, err)
            self._fail(ConnectionLost(f"cannot connect to {self.peer_address}: {why}"))
            return
        self.loop.modify(self.sock, READ, self._on_event)
        self._begin_handshake()

    def _begin_handshake(self) -> None:
        self.state = HANDSHAKE
        self._arm_handshake_timer()
        assert isinstance(self._hs, ClientHandshake)
        self._hs_out = self._hs.start()
        self._write_handshake()

    # -- I/O thread --------------------------------------------------------------------------

    def _want_write(self) -> None:
        if self.state == OPEN and self.sock is not None:
            self.loop.modify(self.sock, READ | WRITE, self._on_event)
            self._flush()

    def _on_event(self, mask: int) -> None:
        if mask & READ:
            self._read()
        if mask & WRITE and self.state != CLOSED:
            if self.state == HANDSHAKE:
                self._write_handshake()
            else:
                self._flush()

    def _write_handshake(self) -> None:
        sock = self.sock
        if not self._hs_out or sock is None:
            return
        try:
            n = sock.send(self._hs_out)
        except (BlockingIOError, InterruptedError):
            n = 0
        except OSError as exc:
            self._fail(ConnectionLost(f"write to {self.peer_address} failed: {exc}"))
            return
        self._hs_out = self._hs_out[n:]
        events = READ | WRITE if self._hs_out else READ
        self.loop.modify(sock, events, self._on_event)

    def _outbox_failed(self, exc: BaseException) -> None:
        """(I/O thread) The peer stopped reading past the bound, or a write failed: the peer
        is gone, but what it sent before is still readable, and is delivered first (Reading)."""
        if exc is self._outbox.failure and self.state != CLOSED:
            log.warning("easymesh: %s", exc)
        end, last = self.bytes_in + DRAIN_LIMIT, -1
        while exc is not self._outbox.failure and self.state == OPEN and last < self.bytes_in < end:
            last = self.bytes_in
            self._read()
        self._fail(exc)

    def _flush(self) -> None:
        """(I/O thread) Write the queue; stop watching for writability once it is empty."""
        sock = self.sock
        if sock is None or not self._outbox.flush():
            return  # still full (or failed); write interest stays registered
        if self._linger is not None:
            self._fail(self._linger)
        elif self.state == OPEN:
            self.loop.modify(sock, READ, self._on_event)

    def _read(self) -> None:
        sock = self.sock
        if sock is None:
            return
        decoder = self.decoder
        try:
            if not self._fd_reads:
                n = sock.recv_into(decoder.get_buffer())
            else:
                n, fds = recv_into_with_fds(sock, decoder.get_buffer())
                if fds:
                    self.fdq.push(fds)  # type: ignore[union-attr]  # before this read's frames
        except (BlockingIOError, InterruptedError):
            return
        except ProtocolError as exc:  # get_buffer() parsed a full buffer and found garbage
            self._reject(exc)
            return
        except OSError as exc:
            self._peer_gone(ConnectionLost(f"read from {self.peer_address} failed: {exc}"))
            return
        if n == 0:
            self._peer_gone(
                ConnectionLost(f"{self.label or self.peer_address} closed the connection")
            )
            return
        decoder.buffer_updated(n)
        self.bytes_in += n
        self.last_received = now = time.monotonic()
        try:
            if self.state == HANDSHAKE:
                self._handshake_frames()
                if self.state != OPEN:
                    return
            frames = decoder.frames()
        except (ProtocolError, AuthenticationError) as exc:
            self._reject(exc)
            return
        if decoder.partial and self._stall_timer is None and self.stall_timeout > 0:
            self._stall_timer = self.loop.call_later(self.stall_timeout, self._check_stall)
        if frames:
            self.last_frame = now
            self.frames_in += len(frames)
            if self._linger is None:  # a link being refused: what it sends is ignored
                self.on_frames(self, frames)

    def _check_stall(self) -> None:
        """(I/O thread, timer) Close the link if a partial frame stalled (see Stalls)."""
        self._stall_timer = None
        if self.state != OPEN:
            return
        self._read()  # whatever the kernel holds counts as progress (a busy loop is not a stall)
        if self.state != OPEN or not self.decoder.partial or self._stall_timer is not None:
            return  # closed, nothing pending, or the read got bytes and armed a fresh timer
        idle = time.monotonic() - self.last_received
        if idle < self.stall_timeout:
            self._stall_timer = self.loop.call_later(self.stall_timeout - idle, self._check_stall)
            return
        why = f"{self.describe()}: a partial frame received nothing for {idle:.1f} s "
        why += f"(stall timeout {self.stall_timeout:g} s); closing"
        log.warning("easymesh: %s", why)
        self._fail(ConnectionLost(why))

    def _peer_gone(self, exc: ConnectionLost) -> None:
        if self.state == HANDSHAKE and not self.is_client:
            log.info("easymesh: %s: closed by the peer during the handshake", self.describe())
        self._fail(exc)

    def _handshake_frames(self) -> None:
        decoder = self.decoder
        while self.state == HANDSHAKE:
            frame = decoder.next_frame()
            if frame is None:
                return
            if isinstance(self._hs, ClientHandshake):
                reply = self._hs.receive(frame)
                done = True
            else:
                reply, done = self._hs.receive(frame)
            if reply:
                self._hs_out += reply
                self._write_handshake()
            if done:
                self._opened()

    def _opened(self) -> None:
        self.state = OPEN
        # The last handshake bytes, then the first frames, leave before anything queued.
        prefix = ([self._hs_out] if self._hs_out else []) + self._first
        self._hs_out = b""
        self._first = []
        start = self._outbox.open(self.sock, prefix)
        self.last_frame = time.monotonic()
        self.decoder.set_limits(self.max_body, SESSION_TYPES)
        if self._hs_timer is not None:
            self._hs_timer.cancel()
            self._hs_timer = None
        if self.on_open is not None:
            self.on_open(self)
        if self.state == OPEN and start:
            self._want_write()

    def _reject(self, exc: BaseException) -> None:
        """Close after a protocol or auth failure; tell the peer why (one ERROR frame).
        An authentication failure is a warning on the accepting side only: on the
        connecting side the caller gets the exception (Node() raises it)."""
        text = printable(exc, 300)
        if isinstance(exc, AuthenticationError):
            auth = text.startswith("authentication failed")
            reason = text if auth else f"authentication failed: {text}"
            level = logging.DEBUG if self.is_client else logging.WARNING
            log.log(level, "easymesh: %s: %s", self.describe(), reason)
        else:
            log.warning("easymesh: %s: protocol error, closing: %s", self.describe(), text)
            reason = f"protocol error: {text}"
        with self._outbox.lock:
            # Only at a frame boundary: nothing half-written (a sender writes whole frames
            # under this lock; a partly written one stays at the head of the queue).
            if self.sock is not None and not self._hs_out and self._outbox.at_frame_boundary():
                try:
                    self.sock.send(error_frame(reason))
                except OSError:
                    pass
        self._fail(exc, log_it=False)

    reject = _reject  # (I/O thread) for owners that find a bad frame the decoder could not

    def expect_fds(self, on: bool) -> None:
        """(I/O thread) Read with ``recvmsg_into`` (descriptors may come) or not; see
        Descriptors. Only a link that carries fds (``fdq``) can turn it on."""
        self._fd_reads = on and self.fdq is not None

    # -- closing -----------------------------------------------------------------------------

    def close(self, reason: BaseException | None = None) -> None:
        """Close now (any thread). Queued frames are discarded; see wait_flushed()."""
        if self.loop.in_loop_thread():
            self._fail(reason)
        else:
            self.loop.call_soon(self._fail, reason)

    def close_when_flushed(self, reason: BaseException) -> None:
        """(I/O thread) Close once the queue left (``LINGER_LIMIT`` s at most); see Refusing."""
        if self.state == CLOSED:
            return
        self._linger = reason
        if not self._outbox.items:
            self._fail(reason)
        else:
            self.loop.call_later(LINGER_LIMIT, self._fail, reason)

    def abort(self) -> None:
        """(I/O thread) Close because the loop is stopping."""
        self._fail(ConnectionLost("the node is closing"))

    def _fail(self, exc: BaseException | None, log_it: bool = False) -> None:
        if self.state == CLOSED:
            return
        if log_it:
            log.warning("easymesh: %s: %s", self.describe(), printable(exc, 300))
        self.state = CLOSED
        self._close_reason = exc
        self._outbox.close()
        if self.fdq is not None:
            self.fdq.close()
        for timer in (self._hs_timer, self._stall_timer):
            if timer is not None:
                timer.cancel()
        sock, self.sock = self.sock, None
        if sock is not None:
            self.loop.unregister(sock)
            try:
                sock.close()
            except OSError:
                pass
        if self.on_close is not None:
            try:
                self.on_close(self, exc)
            except Exception:
                log.exception("easymesh: on_close handler failed")

    def describe(self) -> str:
        """Who is at the other end, for log lines ('connection from 10.0.0.7:50112')."""
        return describe_link(printable(self.label), self.is_client, self.peer_address)

    def __repr__(self) -> str:
        return f"<Connection {self.label or ''} {self.peer_address} {self.state}>"


__all__ = ["Connection", "CONNECTING", "HANDSHAKE", "OPEN", "CLOSED", "ERROR"]
