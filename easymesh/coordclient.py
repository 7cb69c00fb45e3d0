"""The coordinator client: this node's link to the coordinator.

``connect()`` (the user's thread, inside ``Node()``) keeps trying for
``connect_timeout``: connect, authenticate, start the TCP listener on the address
this machine uses to reach the coordinator, register (the node's record), and
wait for the Welcome (the whole topology). Afterwards diffs keep the topology view
current (``on_topology``). Every ``heartbeat_interval`` (on a grid, see ``next_beat``)
the client sends a PING and treats a coordinator silent for ``heartbeat_timeout`` as
lost; then it reconnects
with backoff (:class:`~easymesh.backoff.Backoff`, 0.1 s doubling to 2 s, jittered)
and registers again, while the node keeps talking to the peers it knows.

Every change of the node's record (a new listener, service or published topic) or of
its watch (what it needs to know, see :mod:`easymesh.view`) is sent as an Update, from the I/O thread, with the record as it is *then*: updates
that pile up collapse into the newest.

State is touched on the I/O thread only, except for the few fields ``connect()``
reads (the attempt's outcome, set before the event that wakes it).

Shared decoding (issue 15): when one change concerns many nodes of a process, the
coordinator sends each of them the same diff bytes, and each node's link would decode and
validate them again (about 20 us each, a tenth of what applying a change cost a node
of a 1,000-node storm). :func:`decode_diff` keeps the last diff decoded in this process
and hands the same object to every node that receives the same bytes. That is safe only
because the value is immutable all the way down: a frozen ``Diff`` of tuples of frozen
``NodeInfo`` records whose sets are frozensets; a node copies what it keeps
(``Topology.apply`` builds its own dict and never changes a record; its own record comes
from ``set_local``, never from a diff). Decoding is a pure function of the bytes (the
coordinator link passes no per-link budget), so the memo cannot carry one node's state to
another; bytes that fail to decode are never kept (each link still raises and closes).
One entry, replaced as one tuple (atomic for any thread): it holds the last diff's body
and records only, until the next diff arrives.
"""

from __future__ import annotations

import logging
import math
import secrets
import threading
import time
from collections.abc import Callable
from typing import Any

from easymesh import config
from easymesh.backoff import Backoff
from easymesh.config import format_address
from easymesh.errors import (
    AuthenticationError,
    ConnectionLost,
    CoordinatorUnavailable,
    ProtocolError,
    RegistrationRefused,
)
from easymesh.escape import printable
from easymesh.protocol.frames import CONTROL, ERROR, PING, Frame
from easymesh.protocol.messages import (
    MAX_CONTROL_BODY,
    Bye,
    Diff,
    NodeInfo,
    Register,
    Update,
    Watch,
    Welcome,
    decode_control,
)
from easymesh.router import control_frame
from easymesh.transport.connection import CLOSED, OPEN, Connection
from easymesh.transport.keepalive import PING_FRAME, answer_ping
from easymesh.transport.listener import tcp_address
from easymesh.transport.loop import IOLoop

log = logging.getLogger("easymesh.node")

__all__ = ["CoordinatorClient"]

#: Heartbeats fall on a grid of this fraction of the interval (see next_beat).
BEAT_GRID = 10

_last_diff: tuple[bytes, Diff] | None = None  # see "Shared decoding" above


def decode_diff(body: bytes | bytearray) -> Diff:
    """The Diff in ``body`` (a CONTROL frame named ``diff``), decoded once per process for
    identical bytes. Raises ProtocolError as ``decode_control`` does."""
    global _last_diff
    last = _last_diff
    if last is not None and last[0] == body:
        return last[1]
    msg = decode_control(Diff.op, body)
    key = bytes(body) if not isinstance(body, bytes) else body
    _last_diff = (key, msg)
    return msg  # type: ignore[no-any-return]


def next_beat(interval: float, now: float) -> float:
    """Seconds from ``now`` (monotonic) to the next heartbeat: one ``interval``, to the
    nearest point of a grid of interval / BEAT_GRID on the monotonic clock (shared by
    every process of the machine). The nodes of a process share an I/O thread: on the
    grid, the heartbeats of about a tenth of them go out in one turn of it and their PONGs
    come back together, instead of a wake-up for each (100 nodes: ~200 wake-ups a second
    before; issue 15). A heartbeat is at most a twentieth of an interval early or late.

    The nearest point, not the next one: a timer fires a little after its deadline, just
    past a point of the grid, and one interval on from there rounded *up* is the point
    after the one due, so every heartbeat came 1.1 intervals after the last."""
    grid = interval / BEAT_GRID
    if not 0 < grid < math.inf:  # (nothing to round: as asked)
        return interval
    return max(0.0, round((now + interval) / grid) * grid - now)


def _resolve(endpoint: str) -> tuple[int, Any]:
    """The coordinator's address: an IP as it is (no resolver: the cheap case, and the
    common one in a join storm), else a name through the resolver."""
    try:
        return tcp_address(endpoint, numeric=True)
    except (OSError, ValueError):
        return tcp_address(endpoint)


class CoordinatorClient:
    """Register with the coordinator, keep the link alive, receive the topology."""

    def __init__(
        self,
        *,
        loop: IOLoop,
        address: str,
        authkey: bytes | None,
        node_name: str,
        heartbeat_interval: float,
        heartbeat_timeout: float,
        self_info: Callable[[], NodeInfo],
        watch: Callable[[], Watch],
        on_first_open: Callable[[Connection], None],
        on_topology: Callable[[Welcome | Diff], bool],
        stall_timeout: float,
    ) -> None:
        self.loop = loop
        self.address = address
        self._authkey = authkey
        self.node_name = node_name
        self.heartbeat_interval = heartbeat_interval
        self.heartbeat_timeout = heartbeat_timeout
        self._self_info = self_info
        self._watch = watch
        self._on_first_open = on_first_open
        self._on_topology = on_topology
        self._stall_timeout = stall_timeout
        # Sent in every Register: lets this node, and only it, reclaim its id after a
        # half-open link (the coordinator keeps a hash). 128 random bits.
        self._secret = secrets.token_hex(16)
        self._refused: str | None = None  # the last refusal logged after joining
        self._conn: Connection | None = None
        self._ready = False  # Register sent on self._conn
        self._sockaddr: tuple[int, Any] | None = None
        self._reconnect = Backoff(0.1, 2.0)
        self._attempt_done = threading.Event()
        self._attempt_error: BaseException | None = None
        self._stopped = threading.Event()
        self._update_queued = False
        self.welcomed = False

    # -- joining (the user's thread) -------------------------------------------------------

    def connect(self, timeout: float, start_loop: Callable[[], None] | None = None) -> None:
        """Reach the coordinator, register, wait for the topology. Raises
        CoordinatorUnavailable, AuthenticationError.

        ``start_loop``: starts the I/O thread; called once, right after the first attempt
        is queued (before any wait), so that the thread finds it waiting when it starts
        instead of going to sleep and being woken for it (one sleep and wake-up less per
        ``Node()``, see :meth:`Parts.start <easymesh.assembly.Parts.start>`)."""
        host, port = config.parse_address(self.address)
        deadline = time.monotonic() + timeout
        backoff = Backoff(0.05, 1.0)
        last: BaseException | None = None
        while True:
            if self._sockaddr is None:
                try:
                    self._sockaddr = _resolve(format_address(host, port))
                except OSError as exc:
                    last = exc
            if self._sockaddr is not None:
                last = self._attempt(deadline - time.monotonic(), start_loop)
                start_loop = None
                if self.welcomed:  # (the heartbeat was armed by _welcomed)
                    return
            if start_loop is not None:
                start_loop()
                start_loop = None
            left = deadline - time.monotonic()
            if left <= 0:
                raise CoordinatorUnavailable(self.address, str(last or "timed out"))
            if self._stopped.wait(min(backoff.next(), left)):
                raise CoordinatorUnavailable(self.address, "the node was closed")

    def _attempt(self, left: float, start_loop: Callable[[], None] | None) -> BaseException | None:
        self._attempt_done.clear()
        self._attempt_error = None
        self.loop.call_soon(self._open)
        if start_loop is not None:
            start_loop()
        if not self._attempt_done.wait(max(0.5, min(left, config.HANDSHAKE_TIMEOUT + 1))):
            self._attempt_error = ConnectionLost("no answer")
        if self.welcomed:
            return None
        last = self._attempt_error
        if isinstance(last, AuthenticationError):
            raise AuthenticationError(f"coordinator {self.address}: {last}") from None
        if isinstance(last, RegistrationRefused):
            raise last
        if isinstance(last, ProtocolError):
            raise CoordinatorUnavailable(self.address, f"not an easymesh coordinator? {last}")
        return last

    # -- the link (I/O thread) -------------------------------------------------------------

    def _open(self) -> None:
        if self._stopped.is_set() or self._sockaddr is None:
            return
        if self._conn is not None and self._conn.state != CLOSED:
            return
        conn = Connection(
            self.loop,
            authkey=self._authkey,
            is_client=True,
            max_body=MAX_CONTROL_BODY,
            max_pending=64 * 1024 * 1024,
            on_frames=self._on_frames,
            on_open=self._on_open,
            on_close=self._on_close,
            label="coordinator",
            stall_timeout=self._stall_timeout,
        )
        self._conn = conn
        self._ready = False
        conn.start_connect(*self._sockaddr)

    def _on_open(self, conn: Connection) -> None:
        self._on_first_open(conn)
        bufs, n = control_frame(Register(self._self_info(), self._secret, self._watch()))
        self._ready = True
        conn.send(bufs, n, droppable=False)

    def send_update(self) -> None:
        """(any thread) Tell the coordinator the node's record changed."""
        if not self._update_queued:
            self._update_queued = True
            self.loop.call_soon(self._send_update)

    def _send_update(self) -> None:
        self._update_queued = False
        conn = self._conn
        if conn is not None and self._ready and conn.state == OPEN and not self._stopped.is_set():
            bufs, n = control_frame(Update(self._self_info(), watch=self._watch()))
            conn.send(bufs, n, droppable=False)

    def _on_frames(self, conn: Connection, frames: list[Frame]) -> None:
        for frame in frames:
            if frame.type == CONTROL:
                try:
                    if frame.name == Diff.op:
                        msg = decode_diff(frame.body)
                    else:
                        msg = decode_control(frame.name, frame.body)
                    applied = isinstance(msg, (Welcome, Diff)) and self._on_topology(msg)
                except ProtocolError as exc:
                    log.warning(
                        "node %s: bad message from the coordinator: %s",
                        printable(self.node_name),
                        printable(exc),
                    )
                    conn.close(exc)
                    return
                if applied and isinstance(msg, Welcome):
                    self._welcomed()
            elif frame.type == PING:  # the coordinator checks on a node it has not heard from
                answer_ping(conn, frame)
            elif frame.type == ERROR:
                self._on_error(conn, printable(frame.body))
                return

    def _on_error(self, conn: Connection, reason: str) -> None:
        """The coordinator closed the link, saying why. A refusal ("refused: ...") of our
        registration makes ``Node()`` fail at once with it; after joining, it is logged
        (once per reason) and the node keeps retrying with backoff."""
        exc: BaseException
        if reason.startswith("refused"):
            exc = RegistrationRefused(f"coordinator {self.address}: {reason}")
            if self.welcomed and reason != self._refused:
                log.error("node %s: %s", printable(self.node_name), exc)
            self._refused = reason
        else:
            exc = ConnectionLost(f"the coordinator closed the link: {reason}")
            log.warning("node %s: %s", printable(self.node_name), exc)
        conn.close(exc)

    def _welcomed(self) -> None:
        if not self.welcomed:
            # Armed here, on the I/O thread, not by connect() once it wakes: a timer set
            # from another thread with an earlier deadline wakes the loop just to re-read
            # its timeout, one wake-up more per Node() in a join storm.
            self.loop.call_later(self._next_beat(), self._heartbeat)
        elif self._reconnect.attempts > 0:
            log.warning(
                "node %s: registered again with the coordinator at %s",
                printable(self.node_name),
                self.address,
            )
        self.welcomed = True
        self._reconnect.reset()
        self._attempt_done.set()

    def _on_close(self, conn: Connection, exc: BaseException | None) -> None:
        if conn is not self._conn:
            return
        self._ready = False
        if not self.welcomed:
            self._attempt_error = exc
            self._attempt_done.set()
            return
        if self._stopped.is_set():
            return
        delay = self._reconnect.next()
        log.warning(
            "node %s: lost the coordinator at %s (%s); reconnecting in %.1f s",
            printable(self.node_name),
            self.address,
            printable(exc),
            delay,
        )
        self.loop.call_later(delay, self._open)

    def _next_beat(self) -> float:
        return next_beat(self.heartbeat_interval, time.monotonic())

    def _heartbeat(self) -> None:
        if self._stopped.is_set():
            return
        conn = self._conn
        if conn is not None and conn.state == OPEN:
            silent = time.monotonic() - conn.last_received
            if silent > self.heartbeat_timeout:
                conn.close(ConnectionLost(f"coordinator silent for {silent:.1f} s"))
            else:
                conn.send(PING_FRAME, 16, droppable=False)
        self.loop.call_later(self._next_beat(), self._heartbeat)

    # -- leaving ---------------------------------------------------------------------------

    def leave(self, wait: bool) -> None:
        """Say Bye (the coordinator drops our record at once) and stop reconnecting;
        with ``wait``, give the Bye up to 0.5 s to leave."""
        self._stopped.set()
        conn = self._conn
        if conn is not None and conn.state == OPEN:
            bufs, n = control_frame(Bye())
            conn.send(bufs, n, droppable=False)
            if wait:
                conn.wait_flushed(0.5)

    def stop(self) -> None:
        """Stop trying (``connect`` gives up, no reconnect)."""
        self._stopped.set()
