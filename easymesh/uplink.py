"""Node internals, part 1: the topology and the link to the coordinator. A mixin of
:class:`easymesh.node.Node`; all state lives on the node (see Node.__init__).

The node connects (retrying for ``connect_timeout``), authenticates, starts its TCP
listener on the address it uses to reach the coordinator, registers, and waits for
the Welcome (the whole topology). Afterwards diffs keep its copy current. It sends a
heartbeat every interval and treats a coordinator silent for four intervals as lost;
then it reconnects with backoff and registers again, and keeps talking to the peers
it knows meanwhile.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from typing import Any

from easymesh import config
from easymesh.config import format_address
from easymesh.errors import (
    AuthenticationError,
    ConnectionLost,
    CoordinatorUnavailable,
    MeshError,
    ProtocolError,
    RequestTimeout,
)
from easymesh.nodebase import NodeBase
from easymesh.peers import control_frame
from easymesh.protocol.frames import (
    CONTROL,
    ERROR,
    PING,
    PONG,
    Frame,
    encode_frame,
)
from easymesh.protocol.messages import (
    MAX_CONTROL_BODY,
    Diff,
    NodeInfo,
    Register,
    Update,
    Welcome,
    decode_control,
)
from easymesh.transport.connection import CLOSED, OPEN, Connection
from easymesh.transport.listener import (
    Listener,
    tcp_address,
    tcp_server_socket,
)

log = logging.getLogger("easymesh.node")

_PING = encode_frame(PING)
#: Seconds a link to a node that left the mesh stays open, so that what it sent before
#: leaving can still be read.
PEER_RETIRE_GRACE = 5.0
_PONG = encode_frame(PONG)


class CoordinatorLink(NodeBase):
    """Topology and coordinator link (mixin of Node)."""

    def _self_info(self) -> NodeInfo:
        return NodeInfo(
            id=self.id,
            name=self.name,
            hostname=self._hostname,
            host_key=self._host_key,
            tcp=self._tcp_endpoint,
            unix=self._unix_endpoint,
            topics=frozenset(e.topic for e in self._topics.values() if e.sinks),
            services=frozenset(s.name for s in self._services.values()),
            pid=os.getpid(),
            publishes=self._published,
        )

    def _publish_self(self) -> None:
        """(under self._lock) Record our own record locally and tell the coordinator."""
        info = self._self_info()
        with self._topo_cond:
            self._topology.set_local(info)
            self._topo_cond.notify_all()
        self._loop.call_soon(self._send_update)
        if self._latched:
            self._loop.call_soon(self._check_latched)

    def _wait_topology(self, found: Callable[[], Any], timeout: float | None, what: str) -> None:
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._topo_cond:
            while not found():
                self._check_open()
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    raise RequestTimeout(f"{what} after {timeout:g} s")
                self._topo_cond.wait(left)

    def _apply_topology(self, msg: Welcome | Diff) -> None:
        """(I/O thread) Apply a coordinator message; retire links to nodes that left."""
        with self._topo_cond:
            self._topology.apply(msg)  # keeps our own record as set by _publish_self
            self._topo_cond.notify_all()
        self._check_latched(msg.remove if isinstance(msg, Diff) else ())
        if isinstance(msg, Diff):
            for node_id in msg.remove:
                self._retry_after.pop(node_id, None)
                with self._lock:
                    self._peers.pop(node_id, None)  # nothing new goes there
                # Messages it sent just before leaving may still be in our socket: read
                # them first. A node that really left closes its side (EOF) long before;
                # a frozen one is cut off after the grace period.
                self._loop.call_later(PEER_RETIRE_GRACE, self._retire_links, node_id)

    def _retire_links(self, node_id: str) -> None:
        """(I/O thread) Close what is left of the links to a node that left the mesh."""
        if node_id in self._topology.nodes:
            return  # it came back (a coordinator restart reported it gone for a moment)
        for conn in list(self._conns):
            if conn.peer_id == node_id:
                conn.close(ConnectionLost("the node left the mesh"))

    # -- coordinator link (I/O thread unless noted) --------------------------------------------

    def _connect(self, connect_timeout: float) -> None:
        """(user thread) Reach the coordinator, register, wait for the topology."""
        host, port = config.parse_address(self.coordinator)
        deadline = time.monotonic() + connect_timeout
        delay = 0.05
        last: BaseException | None = None
        while True:
            left = deadline - time.monotonic()
            if self._coord_sockaddr is None:
                try:
                    self._coord_sockaddr = tcp_address(format_address(host, port))
                except OSError as exc:
                    last = exc
            if self._coord_sockaddr is not None:
                self._attempt_done.clear()
                self._attempt_error = None
                self._loop.call_soon(self._open_coordinator)
                if not self._attempt_done.wait(max(0.5, min(left, config.HANDSHAKE_TIMEOUT + 1))):
                    self._attempt_error = ConnectionLost("no answer")
                if self._welcomed:
                    return
                last = self._attempt_error
                if isinstance(last, AuthenticationError):
                    raise AuthenticationError(f"coordinator {self.coordinator}: {last}") from None
                if isinstance(last, ProtocolError):
                    raise CoordinatorUnavailable(
                        self.coordinator, f"not an easymesh coordinator? {last}"
                    )
            left = deadline - time.monotonic()
            if left <= 0:
                raise CoordinatorUnavailable(self.coordinator, str(last or "timed out"))
            self._closed.wait(min(delay, left))
            delay = min(delay * 2, 1.0)

    def _open_coordinator(self) -> None:
        if self._closing or self._coord_sockaddr is None:
            return
        if self._coord is not None and self._coord.state != CLOSED:
            return
        conn = Connection(
            self._loop,
            authkey=self._authkey,
            is_client=True,
            max_body=MAX_CONTROL_BODY,
            max_pending=64 * 1024 * 1024,
            on_frames=self._on_coord_frames,
            on_open=self._on_coord_open,
            on_close=self._on_coord_close,
            label="coordinator",
        )
        self._coord = conn
        self._coord_ready = False
        family, addr = self._coord_sockaddr
        conn.start_connect(family, addr)

    def _on_coord_open(self, conn: Connection) -> None:
        if self._tcp is None:
            self._start_tcp(conn)
        with self._lock:
            info = self._self_info()
            with self._topo_cond:
                self._topology.set_local(info)
            bufs, n = control_frame(Register(info))
            self._coord_ready = True
        conn.send(bufs, n, droppable=False)

    def _start_tcp(self, conn: Connection) -> None:
        ip = self._bind_host or (
            conn.sock.getsockname()[0] if conn.sock is not None else "127.0.0.1"
        )
        try:
            sock = tcp_server_socket(ip, 0)
        except MeshError as exc:
            log.warning(
                "node %r: no TCP listener (%s); only same-host peers can reach it", self.name, exc
            )
            return
        self._tcp = Listener(self._loop, sock, self._on_accept)
        self._tcp.start()
        self._tcp_endpoint = format_address(ip, sock.getsockname()[1])

    def _send_update(self) -> None:
        conn = self._coord
        if conn is not None and self._coord_ready and conn.state == OPEN and not self._closing:
            with self._lock:
                bufs, n = control_frame(Update(self._self_info()))
            conn.send(bufs, n, droppable=False)

    def _on_coord_frames(self, conn: Connection, frames: list[Frame]) -> None:
        for frame in frames:
            if frame.type == CONTROL:
                try:
                    msg = decode_control(frame.name, frame.body)
                except ProtocolError as exc:
                    log.warning("node %r: bad message from the coordinator: %s", self.name, exc)
                    conn.close(exc)
                    return
                if isinstance(msg, (Welcome, Diff)):
                    self._apply_topology(msg)
                    if isinstance(msg, Welcome):
                        if self._welcomed and self._reconnect_delay > 0.1:
                            log.warning(
                                "node %r: registered again with the coordinator at %s",
                                self.name,
                                self.coordinator,
                            )
                        self._welcomed = True
                        self._reconnect_delay = 0.1
                        self._attempt_done.set()
            elif frame.type == PING:  # the coordinator checks on a node it has not heard from
                conn.send(_PONG, 16, droppable=False)
            elif frame.type == ERROR:
                reason = bytes(frame.body[:200]).decode("utf-8", "replace")
                log.warning("node %r: the coordinator closed the link: %s", self.name, reason)

    def _on_coord_close(self, conn: Connection, exc: BaseException | None) -> None:
        if conn is not self._coord:
            return
        self._coord_ready = False
        if not self._welcomed:
            self._attempt_error = exc
            self._attempt_done.set()
            return
        if self._closing:
            return
        log.warning(
            "node %r: lost the coordinator at %s (%s); reconnecting in %.1f s",
            self.name,
            self.coordinator,
            exc,
            self._reconnect_delay,
        )
        self._loop.call_later(self._reconnect_delay, self._open_coordinator)
        self._reconnect_delay = min(self._reconnect_delay * 2, 2.0)

    def _heartbeat(self) -> None:
        if self._closing:
            return
        conn = self._coord
        if conn is not None and conn.state == OPEN:
            silent = time.monotonic() - conn.last_received
            if silent > self.heartbeat_timeout:
                conn.close(ConnectionLost(f"coordinator silent for {silent:.1f} s"))
            else:
                conn.send(_PING, 16, droppable=False)
        elif conn is not None and conn.state == CLOSED and self._welcomed:
            pass  # a reconnect is scheduled
        self._loop.call_later(self.heartbeat_interval, self._heartbeat)
