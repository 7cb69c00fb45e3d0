"""The coordinator: keeps the mesh topology and tells every node where the others are.

Data never passes through it: nodes register (name, id, endpoints, topics,
services), the coordinator broadcasts every change as a diff, and nodes then
talk to each other directly.

Design notes:

* One I/O thread does everything (accept, handshake, register, broadcast,
  heartbeats); there is no user code to protect it from.
* Each node gets only the records it needs (issue 15): the nodes that listen to a
  topic it sends to or waits for, or provide a service it calls or waits for, or
  the whole mesh if it watches ``all`` (tools) or predates watches
  (:mod:`easymesh.protocol.interest`). A join storm of nodes that need nothing of
  each other costs each join its own Welcome and nothing else.
* Changes are coalesced: the first change after a quiet spell goes out at once (on
  the next loop turn); while changes keep coming, at most one broadcast per
  ``COALESCE`` seconds carries everything that changed meanwhile. Each distinct
  diff is encoded once for every node that gets the same bytes, from the records'
  cached encodings. ``bytes_sent`` counts the topology bytes the coordinator sent
  (Welcomes and diffs), for the scale bench.
* Liveness: nodes send PING every heartbeat interval and the coordinator
  answers PONG. A connection that delivers no complete frame for
  ``heartbeat_timeout`` (default four intervals) is closed and its node
  removed: that catches half-open peers (a frozen process, a cut cable) that
  a socket alone never reports, and a peer that drips a frame one byte at a
  time. A connection that has not registered ``REGISTER_TIMEOUT`` seconds
  after it was accepted is closed too: every legitimate peer registers at once.
  The coordinator also PINGs a registered node it has not heard from for half
  the timeout (at least one interval; two by default: a node's own heartbeat
  normally arrives first, so a healthy mesh costs no extra PING/PONG), so a
  node whose own interval is longer (``easymesh --heartbeat-interval 0.2`` with
  nodes at the default 1 s) is kept alive by
  its PONGs instead of being dropped and re-registering every second; a
  frozen node answers nothing and is dropped as before. (Nodes answer the
  coordinator's PING from the version that handles it; older ones ignore it.)
* Log lines name the peer: who registered (name, id, pid, host, address), who
  failed the handshake and from where (transport), who was dropped and why.
* The topology is kept honest (every rule is checked on what a key holder
  sends, see :mod:`easymesh.protocol.limits`): one Register per connection (a
  second one is refused); a record lives exactly as long as the connection that
  registered it; a Register for an id that is live on another connection is
  accepted only with the secret that id first registered with (a node that
  reconnects after a half-open link gets its id back and its old connection is
  closed; anyone else is refused and the live record stays); endpoints must point
  at the node itself; ids, names, topics, services, records and the whole topology
  are bounded. A refusal is an ERROR frame whose reason starts with ``refused:``,
  then the connection closes. The coordinator keeps only a hash of each secret.
* A joining node gets the topology as one or more Welcome parts, each under the
  control body limit, built from the records' cached encodings (shared between
  every joining node's queue, not copied per node). A broadcast diff too large for
  one frame is split the same way.
* Every peer-supplied text in a log line (names, ids, host names, reasons) goes
  through :func:`easymesh.escape.printable`: a newline cannot forge a log line.
* Control messages are msgpack, never pickle: the coordinator decodes nothing
  that can run code, and with an authkey it decodes nothing at all from a
  peer that has not authenticated.
* Listening beyond loopback without an authkey (the default host is every
  interface) lets anyone who can reach the port join the mesh, publish and call
  services: :meth:`Coordinator.start` logs a warning then (judged from the
  address actually bound, so a name that resolves to loopback is not warned about).
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import threading
import time
from typing import Any

from easymesh import signals
from easymesh.config import (
    DEFAULT_HEARTBEAT_INTERVAL,
    DEFAULT_PORT,
    HANDSHAKE_TIMEOUT,
    HEARTBEAT_TIMEOUT_FACTOR,
    authkey_bytes,
    format_address,
    is_loopback,
)
from easymesh.errors import ConnectionLost, ProtocolError
from easymesh.escape import printable
from easymesh.protocol.auth import error_frame
from easymesh.protocol.frames import CONTROL, PING, PONG, Frame, encode_frame_parts
from easymesh.protocol.interest import Audience
from easymesh.protocol.limits import Limits, record_problem, tcp_key, topology_problem
from easymesh.protocol.messages import (
    MAX_CONTROL_BODY,
    WATCH_ALL,
    WELCOME_PART_BYTES,
    Bye,
    NodeInfo,
    Register,
    Update,
    Watch,
    decode_control,
    diff_bodies,
    record_bytes,
    welcome_part_bodies,
)
from easymesh.protocol.topology import Topology
from easymesh.transport.connection import OPEN, Connection
from easymesh.transport.keepalive import PING_FRAME, answer_ping
from easymesh.transport.listener import Listener, tcp_server_socket
from easymesh.transport.loop import IOLoop

log = logging.getLogger("easymesh.coordinator")

#: Seconds from accept to Register before the coordinator closes a connection.
REGISTER_TIMEOUT = 2 * HANDSHAKE_TIMEOUT
#: Seconds between two broadcasts while changes keep coming (a storm).
COALESCE = 0.002
#: Accept queue (the kernel caps it at somaxconn): 1,000 joins at once overflowed 512 (issue 15).
ACCEPT_BACKLOG = 4096


class Coordinator:
    """The mesh coordinator. ``start()`` it (or use it as a context manager), or call
    :meth:`serve_forever`.

    ``host``: bind address ('' = all interfaces); ``port``: TCP port (0 = pick a
    free one, see :attr:`port`); ``authkey``: shared secret (bytes/str; default
    ``$EASYMESH_AUTHKEY``; None = no authentication); ``limits``: bounds on node
    records and the topology (:class:`~easymesh.protocol.limits.Limits`);
    ``welcome_part_bytes``: the size of one Welcome part or diff frame.

    Raises MeshError from ``start()`` if it cannot listen.
    """

    def __init__(
        self,
        host: str = "",
        port: int = DEFAULT_PORT,
        authkey: bytes | str | None = None,
        *,
        heartbeat_interval: float = DEFAULT_HEARTBEAT_INTERVAL,
        heartbeat_timeout: float | None = None,
        log_heartbeats: bool = False,
        max_pending_bytes: int = 64 * 1024 * 1024,
        limits: Limits | None = None,
        welcome_part_bytes: int = WELCOME_PART_BYTES,
    ) -> None:
        self.host = host
        self.requested_port = port
        self.authkey = authkey_bytes(authkey)
        self.heartbeat_interval = heartbeat_interval
        self.heartbeat_timeout = heartbeat_timeout or heartbeat_interval * HEARTBEAT_TIMEOUT_FACTOR
        # A node heard from within half the timeout is not asked for a PONG: nodes send
        # their own heartbeat every interval (1 s by default), and asking after one
        # interval crossed it: about one extra PING and PONG per node per second (in a
        # 1,000-node mesh, 1,000 more I/O-thread wake-ups a second in the nodes). Half
        # the timeout still leaves a node with a longer interval time to answer.
        self._ping_after = max(self.heartbeat_interval, self.heartbeat_timeout / 2)
        self.log_heartbeats = log_heartbeats
        self.max_pending_bytes = max_pending_bytes
        self.limits = limits or Limits()
        self.welcome_part_bytes = min(welcome_part_bytes, MAX_CONTROL_BODY // 2)
        # What nodes send (Register, Update, Bye) holds 4 containers and two name lists:
        # decoding stops early past that (a record beyond the limits is still decoded far
        # enough to be refused with its reason).
        self._max_array = 2 * max(self.limits.max_topics, self.limits.max_services) + 16
        self.topology = Topology()
        self._secrets: dict[str, bytes] = {}  # node id -> sha256 of its register secret
        self._loop = IOLoop("coordinator")
        self._listener: Listener | None = None
        self._conns: dict[Connection, float] = {}  # -> when accepted
        self._node_of: dict[Connection, str] = {}
        self._conn_of: dict[str, Connection] = {}
        self._tcp_owner: dict[tuple[str, int], str] = {}  # tcp_key(endpoint) -> node id
        self.audience = Audience()
        self._changed: set[str] = set()  # ids changed since the last broadcast
        self._broadcast_due = False
        self._last_broadcast = 0.0
        self.bytes_sent = 0  # topology bytes sent (Welcomes and diffs)
        self._closed = threading.Event()
        self._started = False
        self.port = 0

    # -- lifecycle ---------------------------------------------------------------------------

    def start(self) -> Coordinator:
        if self._started:
            return self
        sock = tcp_server_socket(self.host, self.requested_port, backlog=ACCEPT_BACKLOG)
        self.port = sock.getsockname()[1]
        warning = unprotected_warning(sock.getsockname()[0], self.authkey, self.port)
        if warning:
            log.warning("%s", warning)
        self._listener = Listener(self._loop, sock, self._on_accept)
        self._started = True
        self._loop.call_soon(self._listener.start)
        self._loop.call_later(self.heartbeat_interval / 2, self._sweep)
        self._loop.start()
        log.debug("easymesh coordinator listening on %s", self.address)
        return self

    @property
    def address(self) -> str:
        return format_address(self.host or "0.0.0.0", self.port)

    def close(self) -> None:
        """Stop serving (idempotent, bounded, any thread)."""
        if self._closed.is_set():
            return
        self._closed.set()
        if self._started:
            self._loop.stop(timeout=5.0)

    def serve_forever(self) -> None:
        """Start (if needed) and serve until :meth:`close`, SIGINT or SIGTERM."""
        self.start()
        restore = signals.install(lambda signum: self.close())
        try:
            while not self._closed.wait(signals.WAIT_SLICE):
                pass
        except KeyboardInterrupt:
            pass
        finally:
            restore()
            self.close()

    def __enter__(self) -> Coordinator:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.close()

    # -- connections (I/O thread) ------------------------------------------------------------

    def _on_accept(self, sock: Any, addr: Any) -> None:
        conn = Connection(
            self._loop,
            authkey=self.authkey,
            is_client=False,
            max_body=MAX_CONTROL_BODY,
            max_pending=self.max_pending_bytes,
            on_frames=self._on_frames,
            on_close=self._on_close,
            label="node",
            stall_timeout=self.heartbeat_timeout,
        )
        self._conns[conn] = time.monotonic()
        conn.start_server(sock, addr)

    def _on_close(self, conn: Connection, exc: BaseException | None) -> None:
        self._conns.pop(conn, None)
        node_id = self._node_of.pop(conn, None)
        if node_id is None:
            return
        if self._conn_of.get(node_id) is conn:
            del self._conn_of[node_id]
            self._secrets.pop(node_id, None)
            node = self.topology.nodes.get(node_id)
            self._own_tcp(node_id, None)
            self.audience.drop(node_id)
            self._change(node_id, self.topology.remove(node_id) is not None)
            if node is not None and not self._closed.is_set():
                log.info("%s left: %s", _describe(node), printable(exc or "closed"))

    def _on_frames(self, conn: Connection, frames: list[Frame]) -> None:
        for frame in frames:
            if conn.state != OPEN:
                return  # closed by an earlier frame of this batch (bye, or an error)
            ftype = frame.type
            if ftype == PING:
                if self.log_heartbeats:
                    log.info("heartbeat from %s", self._who(conn))
                answer_ping(conn, frame)
            elif ftype == CONTROL:
                try:
                    msg = decode_control(
                        frame.name, frame.body, max_containers=16, max_array_len=self._max_array
                    )
                    self._on_control(conn, msg)
                except ProtocolError as exc:
                    log.warning(
                        "%s: bad control message, closing: %s", self._who(conn), printable(exc)
                    )
                    conn.close(exc)
                    return
                except Refused as exc:
                    self._refuse(conn, str(exc))
                    return
            elif ftype == PONG:
                pass
            else:
                log.warning(
                    "%s: unexpected frame type %d on the coordinator link, closing", self._who(conn), ftype
                )
                conn.close(ProtocolError(f"unexpected frame type {ftype}"))
                return

    def _on_control(self, conn: Connection, msg: Any) -> None:
        if isinstance(msg, Register) and not isinstance(msg, Update):
            self._register(conn, msg)
        elif isinstance(msg, Update):
            if self._node_of.get(conn) != msg.node.id:
                raise ProtocolError("update for a node this connection did not register")
            encoded = self._admit(msg)
            self._own_tcp(msg.node.id, msg.node)
            self._watch(msg)
            self._put(msg.node, encoded)
        elif isinstance(msg, Bye):
            conn.close()  # on_close removes the node and broadcasts
        else:
            raise ProtocolError(f"unexpected control message {type(msg).__name__}")

    def _register(self, conn: Connection, msg: Register) -> None:
        """A node joins: check the record and the claim on its id, then welcome it."""
        node = msg.node
        if conn in self._node_of:
            raise Refused("this connection has already registered a node")
        encoded = self._admit(msg)
        digest = hashlib.sha256(msg.secret.encode("utf-8")).digest()
        old = self._conn_of.get(node.id)
        if old is not None:
            known = self._secrets.get(node.id, b"")
            if not (msg.secret and known and hmac.compare_digest(known, digest)):
                raise Refused(f"node id {node.id} is registered from another connection")
            # The same node, back after a half-open link: the new connection wins.
            self._node_of.pop(old, None)
            del self._conn_of[node.id]
            old.close(ConnectionLost("the node registered again on a new connection"))
            log.info("%s registered again; closing its old connection", _describe(node))
        self._conn_of[node.id] = conn
        self._node_of[conn] = node.id
        self._secrets[node.id] = digest
        self._own_tcp(node.id, node)
        self._watch(msg, answered=True)
        self._put(node, encoded)
        watch = self.audience.watches[node.id]
        ids = self.audience.welcome(node.id)
        records = [self.topology.record(i) for i in ids]
        ack = None if msg.watch is None else watch.seq
        for pieces in welcome_part_bodies(self.topology.version, records, self.welcome_part_bytes, ack):
            bufs, nbytes = encode_frame_parts(CONTROL, b"welcome", pieces)
            self.bytes_sent += nbytes
            conn.send(bufs, nbytes, droppable=False)
        if log.isEnabledFor(logging.INFO):  # (a thousand joins at once: skip the formatting)
            log.info("%s registered from %s", _describe(node), conn.peer_address)

    def _watch(self, msg: Register, answered: bool = False) -> None:
        """Take the node's watch (none sent: the whole mesh; sizes checked by _admit)."""
        watch: Watch = msg.watch or WATCH_ALL
        self.audience.watch(msg.node.id, watch, answered=answered)
        if not answered:
            self._change(msg.node.id, False)  # a Diff carries the answer

    def _put(self, node: NodeInfo, encoded: bytes) -> None:
        changed = self.topology.upsert(node, encoded) is not None
        if changed:
            self.audience.put(node)
        self._change(node.id, changed)

    def _admit(self, msg: Register) -> bytes:
        """The record's encoding if the coordinator takes it (and its watch); raises
        Refused otherwise."""
        node = msg.node
        watch = msg.watch or WATCH_ALL
        if len(watch.topics) > self.limits.max_topics or len(watch.services) > self.limits.max_services:
            raise Refused("the watch names more topics or services than the per-node limits")
        encoded = record_bytes(node)
        why = record_problem(node, self.limits, len(encoded))
        owner = self._tcp_owner.get(tcp_key(node.tcp) or ("", 0))
        if why is None and owner is not None and owner != node.id:
            why = "the tcp endpoint is another node's (a record may only point at its own node)"
        if why is None:
            known = node.id in self.topology.nodes
            size = self.topology.total_bytes + len(encoded)
            if known:
                size -= len(self.topology.record(node.id))
            why = topology_problem(len(self.topology) + (not known), size, self.limits)
        if why is not None:
            raise Refused(why)
        return encoded

    def _own_tcp(self, node_id: str, node: NodeInfo | None) -> None:
        """Record which live node advertises which TCP endpoint (``node``: its new record;
        None: it left)."""
        old = self.topology.nodes.get(node_id)
        old_key = tcp_key(old.tcp) if old is not None else None
        if old_key is not None and self._tcp_owner.get(old_key) == node_id:
            del self._tcp_owner[old_key]
        new_key = tcp_key(node.tcp) if node is not None else None
        if new_key is not None:
            self._tcp_owner[new_key] = node_id

    def _refuse(self, conn: Connection, why: str) -> None:
        """Tell the peer why (an ERROR frame), log it, and close the connection."""
        reason = f"refused: {why}"
        log.warning("%s: %s", self._who(conn), printable(reason))
        conn.send([error_frame(reason)], len(error_frame(reason)), droppable=False)
        self._closing_after_error(conn, ConnectionLost(reason))

    def _closing_after_error(self, conn: Connection, exc: ConnectionLost) -> None:
        """Close once the ERROR frame has been handed to the kernel (or at once if it
        cannot be): the peer reads the reason before the end of the stream."""
        conn.close_when_flushed(exc)

    def _who(self, conn: Connection) -> str:
        node_id = self._node_of.get(conn)
        node = self.topology.nodes.get(node_id) if node_id else None
        if node is None:
            return f"connection from {conn.peer_address}"
        return f"{_describe(node)} at {conn.peer_address}"

    # -- broadcasting ------------------------------------------------------------------------

    def _change(self, node_id: str, changed: bool) -> None:
        """Schedule a broadcast (coalesced, see the module docstring)."""
        if changed:
            self._changed.add(node_id)
        if self._broadcast_due:
            return
        self._broadcast_due = True
        wait = self._last_broadcast + COALESCE - time.monotonic()
        if wait > 0:
            self._loop.call_later(wait, self._broadcast)
        else:
            self._loop.call_soon(self._broadcast)

    def _broadcast(self) -> None:
        self._broadcast_due = False
        self._last_broadcast = time.monotonic()
        changed, self._changed = self._changed, set()
        deltas = self.audience.deltas(changed)
        groups: dict[tuple[tuple[str, ...], tuple[str, ...], int | None], list[str]] = {}
        for wid, (ups, rem, ack) in deltas.items():
            if ups or rem or ack is not None:
                groups.setdefault((tuple(ups), tuple(rem), ack), []).append(wid)
        topo = self.topology
        for (up_ids, rem_ids, ack_seq), wids in groups.items():
            records = [topo.record(i) for i in up_ids]
            bodies = diff_bodies(topo.version, records, list(rem_ids), ack_seq, self.welcome_part_bytes)
            wids = self.audience.by_process(wids)  # (its docstring says why)
            for pieces in bodies:
                bufs, nbytes = encode_frame_parts(CONTROL, b"diff", pieces)
                if len(wids) > 1:  # to many: one buffer, a send each (diff_write.py: -6 % CPU)
                    bufs = [b"".join(bufs)]
                for wid in wids:
                    conn = self._conn_of.get(wid)
                    if conn is not None and conn.state == OPEN:
                        self.bytes_sent += nbytes
                        conn.send(bufs, nbytes, False)

    # -- heartbeats --------------------------------------------------------------------------

    def _sweep(self) -> None:
        now = time.monotonic()
        for conn, accepted in list(self._conns.items()):
            silent = now - conn.last_frame
            if silent > self.heartbeat_timeout:
                why = (
                    f"no complete message for {silent:.1f} s "
                    f"(heartbeat timeout {self.heartbeat_timeout:g} s)"
                )
                log.warning("dropping %s: %s", self._who(conn), why)
                conn.close(ConnectionLost(why))
            elif conn not in self._node_of and now - accepted > REGISTER_TIMEOUT:
                why = f"did not register within {REGISTER_TIMEOUT:g} s"
                log.warning("dropping %s: %s", self._who(conn), why)
                conn.close(ConnectionLost(why))
            elif silent > self._ping_after and conn.state == OPEN and conn in self._node_of:
                conn.send(PING_FRAME, 16, droppable=False)  # its PONG proves it alive
        if not self._closed.is_set():
            self._loop.call_later(self.heartbeat_interval / 2, self._sweep)

    # -- introspection -----------------------------------------------------------------------

    def nodes(self) -> list[Any]:
        """A snapshot of the registered nodes (NodeInfo records)."""
        return list(self.topology.nodes.values())


def unprotected_warning(bound_host: str, authkey: bytes | None, port: int) -> str | None:
    """The warning for a coordinator bound to ``bound_host`` (a numeric address, as
    ``getsockname`` gives it) without a key, when that address is not loopback; else None."""
    if authkey or is_loopback(bound_host):
        return None
    where = "every interface" if bound_host in ("0.0.0.0", "::") else bound_host
    return (
        f"easymesh: the coordinator listens on {where} (port {port}) without an authkey: "
        "anyone who can reach this port can join the mesh, send on every topic and call "
        "every service. Give a key (EASYMESH_AUTHKEY or --authkey-file FILE) or listen "
        "on 127.0.0.1 (--host 127.0.0.1)."
    )


class Refused(Exception):
    """A registration or update the coordinator does not take (the reason is sent)."""


def _describe(node: NodeInfo) -> str:
    """'node 'cam' (3f2a..., pid 12 on host)', every peer-supplied part escaped."""
    return (
        f"node {printable(node.name)!r} ({printable(node.id)}, pid {node.pid} "
        f"on {printable(node.hostname)})"
    )
