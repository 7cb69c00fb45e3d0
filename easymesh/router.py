"""The router: this node's links to its peers, and what arrives on them.

**Which link reaches which node.** Traffic for node X goes only over a link this
node *dialled* to X's advertised endpoint (the one the coordinator lists for X):
``links[X]``. A link someone else opened to us is never used to reach anybody; on
it we only answer (replies go back on the link their request came in on, to whoever
opened it). So a peer cannot take over another node's traffic by claiming its id
on a link it opened: claims are labels for logs and stats, never routing. The
price is a second link when two nodes both send to each other (one each way);
measured, a link costs a socket pair and a 16 KiB read buffer until it carries
large messages.

**Retry.** A link that closes before its handshake finished puts its peer on a
backoff (:class:`~easymesh.backoff.Backoff`, 0.25 s doubling to 5 s, jittered):
until then sends to that peer are refused at once and counted, so a dead peer
costs nothing per message. A link that opened resets it.

**Retire.** When a node leaves the mesh its link leaves ``links`` at once (nothing
new goes there) but stays open for ``PEER_RETIRE_GRACE`` seconds, so that what it
sent just before leaving is still read; then it is closed unless the node came back.

**Inbound** (I/O thread): consecutive TOPIC frames of one topic go to the topic's
registry entry in one batch; REQUEST frames to the service host; REPLY,
REPLY_ERROR and PONG to the caller; PINGs are answered here. Frames in a codec
this node does not accept are dropped and counted (see decoder.py).

**Shared memory** (:mod:`easymesh.shmhub`): links are built to carry fds when the hub is
enabled; the hub hears of every link opening and closing, takes the SHM_* frames, and turns
each ``pickle-shm`` body into views of the peer's memory before it is delivered (a body that
points outside what the peer shared closes the link like any bad frame).

Lock: ``_lock`` guards ``links``, ``_conns`` and ``_retry``; ``links`` is also
read without it on the send path (a dict lookup is atomic).
"""

from __future__ import annotations

import logging
import socket
import threading
import time
from collections.abc import Callable
from typing import Any

from easymesh import allocator, config
from easymesh.backoff import Backoff
from easymesh.config import format_address
from easymesh.counters import Counter
from easymesh.decoder import Decoder
from easymesh.errors import ConnectionLost, MeshError, NodeClosed, ProtocolError
from easymesh.escape import printable
from easymesh.protocol.codecs import PICKLE_SHM_ID
from easymesh.protocol.frames import (
    CONTROL,
    ERROR,
    PING,
    PONG,
    REPLY,
    REPLY_ERROR,
    REQUEST,
    SHM_ARENA,
    SHM_ASK,
    SHM_OFFER,
    SHM_RELEASE,
    TOPIC,
    Frame,
    encode_frame,
)
from easymesh.protocol.messages import Ident, NodeInfo, decode_control, encode_control
from easymesh.shmhub import ShmHub
from easymesh.transport.connection import OPEN, Connection
from easymesh.transport.keepalive import answer_ping
from easymesh.transport.listener import (
    Listener,
    tcp_address,
    tcp_server_socket,
    unix_address,
    unix_server_socket,
)
from easymesh.transport.loop import IOLoop
from easymesh.workers import TopicEntry

log = logging.getLogger("easymesh.node")

__all__ = ["Router", "control_frame", "PEER_RETIRE_GRACE"]

#: Seconds a link to a node that left the mesh stays open, so that what it sent before
#: leaving can still be read.
PEER_RETIRE_GRACE = 5.0


def control_frame(msg: Any) -> tuple[list[Any], int]:
    name, body = encode_control(msg)
    return encode_frame(CONTROL, name, body), 16 + len(name) + len(body)


class Router:
    """Links to peers (thread-safe)."""

    def __init__(
        self,
        *,
        loop: IOLoop,
        node_name: str,
        node_id: str,
        authkey: bytes | None,
        use_unix: bool,
        host_key: str,
        max_message_size: int,
        max_pending_bytes: int,
        socket_dir: str | None,
        stall_timeout: float,
        decoder: Decoder,
        entry: Callable[[bytes], TopicEntry | None],
        on_requests: Callable[[Connection, list[Frame]], None],
        on_answers: Callable[[Connection, list[Frame]], None] = lambda link, frames: None,
        on_link_closed: Callable[[Connection, BaseException], None] = lambda link, exc: None,
        shm: ShmHub | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.loop = loop
        self.node_name = node_name
        self.node_id = node_id
        self._authkey = authkey
        self._use_unix = use_unix
        self._host_key = host_key
        self.max_message_size = max_message_size
        self.max_pending_bytes = max_pending_bytes
        self._decoder = decoder
        self._stall_timeout = stall_timeout
        self._allowed = decoder.allowed
        self._entry = entry
        self._on_requests = on_requests
        self._on_answers = on_answers
        self._on_link_closed = on_link_closed
        self._shm = shm if shm is not None and shm.enabled else None
        self._clock = clock
        self._lock = threading.Lock()
        #: node id -> the link this node dialled to it (read lock-free by senders)
        self.links: dict[str, Connection] = {}
        self._conns: set[Connection] = set()
        self._opened: set[Connection] = set()  # links whose handshake succeeded
        self._retry: dict[str, tuple[float, Backoff]] = {}
        self._closing = False
        self.unroutable = Counter()
        self.dropped = Counter()  # topic frames a link dropped from its queue (closed links)
        self._socket_dir = socket_dir
        self._unix: Listener | None = None
        self._tcp: Listener | None = None
        self.unix_endpoint = ""
        self.tcp_endpoint = ""

    def start(self) -> None:
        """Bind the Unix socket peers on this host dial (raises MeshError/OSError)."""
        sock, endpoint, path = unix_server_socket(self.node_id, config.socket_dir(self._socket_dir))
        self._unix = Listener(self.loop, sock, self._on_accept, path)
        self.unix_endpoint = endpoint
        self.loop.call_soon(self._unix.start)

    def start_tcp(self, ip: str) -> None:
        """(I/O thread) Listen for TCP peers on ``ip`` (the address this machine uses to
        reach the coordinator, or the node's ``host``)."""
        if self._tcp is not None:
            return
        try:
            sock = tcp_server_socket(ip, 0)
        except MeshError as exc:
            log.warning(
                "node %s: no TCP listener (%s); only same-host peers can reach it",
                printable(self.node_name),
                exc,
            )
            return
        self._tcp = Listener(self.loop, sock, self._on_accept)
        self._tcp.start()
        self.tcp_endpoint = format_address(ip, sock.getsockname()[1])

    # -- outbound --------------------------------------------------------------------------

    def link_to(self, node: NodeInfo) -> Connection | None:
        """(any thread) The link to ``node``, dialling it if needed; None if it failed
        recently (backoff), it has no endpoint we can use, or the node is closing."""
        with self._lock:
            conn = self.links.get(node.id)
            if conn is not None:
                return conn
            if self._closing:
                return None
            retry = self._retry.get(node.id)
            if retry is not None and self._clock() < retry[0]:
                return None
            target = self._address_of(node)
            if target is None:
                return None
            first, _ = control_frame(Ident(self.node_id, self.node_name))
            conn = self._new_conn(True, f"node {printable(node.name)!r}", b"".join(first))
            conn.peer_id, conn.peer_name = node.id, node.name
            self.links[node.id] = conn
        self.loop.call_soon(conn.start_connect, *target)
        return conn

    def _address_of(self, node: NodeInfo) -> tuple[int, Any] | None:
        try:
            if node.unix and node.host_key == self._host_key and self._use_unix:
                return socket.AF_UNIX, unix_address(node.unix)
            if node.tcp:
                return tcp_address(node.tcp, numeric=True)  # nodes advertise IPs
        except (OSError, ValueError):
            pass
        return None

    def _new_conn(self, is_client: bool, label: str, first: bytes | None = None) -> Connection:
        conn = Connection(
            self.loop,
            authkey=self._authkey,
            is_client=is_client,
            max_body=self.max_message_size,
            max_pending=self.max_pending_bytes,
            on_frames=self._on_frames,
            on_open=self._on_open,
            on_close=self._on_close,
            label=label,
            first_frames=[first] if first else None,
            socket_buffer=config.PEER_SOCKET_BUFFER,
            stall_timeout=self._stall_timeout,
            carry_fds=self._shm is not None,
        )
        self._conns.add(conn)
        return conn

    def _on_accept(self, sock: socket.socket, addr: Any) -> None:
        if self._closing:
            sock.close()
            return
        with self._lock:
            conn = self._new_conn(False, "peer")
        conn.start_server(sock, addr)

    def _on_open(self, conn: Connection) -> None:
        with self._lock:
            self._opened.add(conn)
            if conn.is_client and conn.peer_id:
                self._retry.pop(conn.peer_id, None)
        if self._shm is not None:
            self._shm.on_open(conn)

    def _on_close(self, conn: Connection, exc: BaseException | None) -> None:
        """(I/O thread) A link closed: forget it; fail what went out on it."""
        self.dropped.add(conn.dropped)
        conn.dropped = 0
        if self._shm is not None:
            self._shm.on_close(conn)
        with self._lock:
            self._conns.discard(conn)
            opened = conn in self._opened
            self._opened.discard(conn)
            if conn.is_client and conn.peer_id and self.links.get(conn.peer_id) is conn:
                del self.links[conn.peer_id]
                if not opened and not self._closing:
                    self._back_off(conn.peer_id)
                    log.info(
                        "node %s: cannot reach %s: %s",
                        printable(self.node_name),
                        conn.label,
                        printable(exc),
                    )
        if isinstance(exc, MeshError) and not isinstance(exc, NodeClosed):
            err: BaseException = exc
        elif isinstance(exc, Exception) and not isinstance(exc, NodeClosed):
            err = ConnectionLost(printable(exc))
        else:
            err = ConnectionLost(f"connection to {conn.label} closed")
        self._on_link_closed(conn, err)

    def _back_off(self, node_id: str) -> None:
        """(lock held) Refuse sends to ``node_id`` for a while."""
        old = self._retry.get(node_id)
        backoff = old[1] if old is not None else Backoff(0.25, 5.0)
        self._retry[node_id] = (self._clock() + backoff.next(), backoff)

    def forget(self, node_id: str) -> None:
        """(I/O thread) ``node_id`` left the mesh: nothing new goes to it; its links close
        after the grace period unless it comes back (``still_gone``)."""
        with self._lock:
            self.links.pop(node_id, None)
            self._retry.pop(node_id, None)

    def retire(self, node_id: str, gone: bool = True) -> None:
        """(I/O thread) Close what is left of the links to a node that left the mesh: all
        of them while it is ``gone``; if it came back, only the links dialled to it before
        it left (nothing uses them any more; its own links to us and a link dialled since
        stay)."""
        with self._lock:
            current = self.links.get(node_id)
            back = current is not None or not gone
            doomed = [
                c
                for c in self._conns
                if c.peer_id == node_id and c is not current and (c.is_client or not back)
            ]
        for conn in doomed:
            conn.close(ConnectionLost("the node left the mesh"))

    # -- inbound (I/O thread) --------------------------------------------------------------

    def answers_to(
        self,
        on_answers: Callable[[Connection, list[Frame]], None],
        on_link_closed: Callable[[Connection, BaseException], None],
    ) -> None:
        """Where answers and closed links go, for an owner that builds their taker after the
        router (it needs the router's links): wired before start, then read on the I/O thread."""
        self._on_answers = on_answers
        self._on_link_closed = on_link_closed

    def _on_frames(self, conn: Connection, frames: list[Frame]) -> None:
        # Consecutive TOPIC frames of one topic (the usual batch) go to its entry in one
        # call; order within a topic is kept, and topics do not wait on each other.
        # Requests and answers of one read go on in one call each (one hand-off to a
        # service's workers, one to the futures thread), in the order they came.
        allowed = self._allowed
        last = b""
        items: list[tuple[Frame, int]] = []
        requests: list[Frame] = []
        answers: list[Frame] = []
        for f in frames:
            ftype = f[0]
            if f[1] == PICKLE_SHM_ID or ftype >= SHM_OFFER:
                try:
                    resolved = self._shm_frame(conn, f)
                except ProtocolError as exc:  # what came before is delivered, then we close
                    self._flush_read(conn, last, items, requests, answers)
                    conn.reject(exc)
                    return
                if resolved is None:
                    if conn.state != OPEN:
                        break
                    continue
                f = resolved
            if ftype == TOPIC:
                if not allowed[f[1]]:
                    self._decoder.refuse(conn, f[1], "a topic message")
                    continue
                name = f[2]
                if name != last:
                    if items:
                        self._deliver(last, items)
                        items = []
                    last = name
                n = len(f[4])
                if n >= allocator.LARGE_MESSAGE:
                    allocator.tune()
                items.append((f, n))
            elif ftype == REPLY or ftype == REPLY_ERROR or ftype == PONG:
                answers.append(f)
            elif ftype == REQUEST:
                requests.append(f)
            elif ftype == PING:
                if requests:  # immediate error replies to earlier requests go out first
                    self._on_requests(conn, requests)
                    requests = []
                answer_ping(conn, f)
            elif ftype == CONTROL or ftype == ERROR:
                # Rare (a control frame comes once per link), and either may close the link,
                # which fails what waits on it: what came before goes on first.
                self._flush_read(conn, last, items, requests, answers)
                last, items, requests, answers = b"", [], [], []
                if ftype == ERROR:
                    self._on_error(conn, f)
                    return
                self._on_control(conn, f)
        self._flush_read(conn, last, items, requests, answers)

    def _flush_read(
        self,
        conn: Connection,
        last: bytes,
        items: list[tuple[Frame, int]],
        requests: list[Frame],
        answers: list[Frame],
    ) -> None:
        """Hand on what :meth:`_on_frames` gathered from one read."""
        if items:
            self._deliver(last, items)
        if requests:
            self._on_requests(conn, requests)
        if answers:
            self._on_answers(conn, answers)

    def _shm_frame(self, conn: Connection, f: Frame) -> Frame | None:
        """A pickle-shm frame resolved into views, or None once an SHM_* frame was taken.
        ProtocolError for a bad one (the caller closes the link)."""
        shm = self._shm
        try:
            if shm is None:
                if f[0] in (SHM_ASK, SHM_OFFER):
                    return None  # a peer that would share (or map ours); we do neither
                if f[0] in (SHM_ARENA, SHM_RELEASE):
                    raise ProtocolError("shared memory on a link that did not offer it")
                return f  # inline-only pickle-shm (e.g. a recording): decoded as it is
            if f[0] in (SHM_OFFER, SHM_ARENA, SHM_RELEASE, SHM_ASK):
                shm.on_frame(conn, f)
                return None
            return shm.resolve(conn, f)
        except (OSError, ValueError) as exc:
            # like a bad frame from the decoder: logged, an ERROR to the peer, link closed
            raise ProtocolError(str(exc)) from exc

    def _deliver(self, name: bytes, items: list[tuple[Frame, int]]) -> None:
        entry = self._entry(name)
        if entry is None:
            self.unroutable.add(len(items))
        else:
            entry.deliver(items)

    def _on_error(self, conn: Connection, frame: Frame) -> None:
        """The peer closes the link and says why (what came before it was handed on)."""
        reason = printable(frame[4])
        log.warning(
            "node %s: %s closed the link: %s", printable(self.node_name), conn.label, reason
        )
        conn.close(ConnectionLost(reason))

    def _on_control(self, conn: Connection, frame: Frame) -> None:
        try:
            # Peers send only an Ident here (one map of two strings): a tight budget.
            msg = decode_control(frame.name, frame.body, max_containers=4, max_array_len=16)
        except ProtocolError as exc:
            log.warning(
                "node %s: bad control message from %s: %s",
                printable(self.node_name),
                conn.peer_address,
                printable(exc),
            )
            conn.close(exc)
            return
        if isinstance(msg, Ident) and not conn.is_client and not conn.peer_id:
            # A claim, not a proof: used for labels and stats only, never for routing.
            conn.peer_id, conn.peer_name = msg.id, msg.name
            conn.label = f"node {printable(msg.name)!r}"

    # -- whole-node operations -------------------------------------------------------------

    def wait_flushed(self, deadline: float) -> bool:
        """(not the I/O thread) Wait until every link's queue was written, or
        ``deadline`` (``time.monotonic()``). True if all left."""
        with self._lock:
            conns = list(self._conns)
        ok = True
        for conn in conns:
            ok = conn.wait_flushed(max(0.0, deadline - time.monotonic())) and ok
        return ok

    def begin_close(self) -> None:
        """No new links from now on."""
        with self._lock:
            self._closing = True

    def close_listeners(self) -> None:
        """(I/O thread, or after the loop ended) Close the listening sockets."""
        for lst in (self._unix, self._tcp):
            if lst is not None:
                lst.close()

    def stats(self) -> dict[str, Any]:
        with self._lock:
            conns = list(self._conns)
        peers = {}
        for c in conns:
            key = f"{printable(c.peer_name or '?')}:{c.peer_id or c.peer_address}"
            if not c.is_client:
                key += " (in)"
            peers[key] = {
                "state": c.state,
                "pending_bytes": c.pending_bytes,
                "dropped": c.dropped,
                "frames_in": c.frames_in,
                "frames_out": c.frames_out,
                "reads_fds": c.reads_fds,  # a shared-memory arena is on its way (shmhub)
            }
        return peers

    def dropped_outbound(self) -> int:
        with self._lock:
            conns = list(self._conns)
        return self.dropped.value + sum(c.dropped for c in conns)

    def open_links(self) -> int:
        return sum(1 for c in list(self._conns) if c.state == OPEN)
