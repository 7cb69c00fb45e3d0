"""Node internals, part 2: links to other nodes, routing of what arrives on them, and
the request/reply plumbing. A mixin of :class:`easymesh.node.Node`; all state lives on
the node (see Node.__init__).

Routing (I/O thread): TOPIC frames are grouped by topic and handed to the topic's
entry in one batch; REQUEST frames go to the service's worker pool; REPLY frames
complete the caller's Future right here, on the I/O thread (one hand-off fewer).
Links: one per peer is enough; a peer that connected to us is reused for our own
sends once it said who it is (Ident). A link that fails before carrying anything
puts its peer on a short retry backoff so that sends to a dead node stay cheap.
"""

from __future__ import annotations

import heapq
import logging
import socket
import threading
import time
import traceback
from collections.abc import Callable
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from typing import Any

import msgpack

from easymesh import config
from easymesh.errors import (
    CodecError,
    ConnectionLost,
    MeshError,
    NodeClosed,
    NoProviderError,
    ProtocolError,
    RequestTimeout,
    ServiceError,
)
from easymesh.nodebase import NodeBase
from easymesh.protocol.codecs import codec_for_id, codec_id_of
from easymesh.protocol.frames import (
    CONTROL,
    ERROR,
    PING,
    PONG,
    REPLY,
    REPLY_ERROR,
    REQUEST,
    TOPIC,
    Frame,
    encode_frame,
)
from easymesh.protocol.messages import (
    Ident,
    NodeInfo,
    decode_control,
    encode_control,
)
from easymesh.transport.connection import Connection
from easymesh.transport.listener import (
    tcp_address,
    unix_address,
)
from easymesh.workers import ServiceEntry, TopicEntry

log = logging.getLogger("easymesh.node")

_PONG = encode_frame(PONG)
SWEEP = 0.05  # seconds between sweeps of request deadlines: a timeout fires up to this late


def control_frame(msg: Any) -> tuple[list[Any], int]:
    name, body = encode_control(msg)
    bufs = encode_frame(CONTROL, name, body)
    return bufs, 16 + len(name) + len(body)


class Waiter:
    """What a blocking ``request()`` waits on: a lock the completing thread releases.

    Lighter than a ``concurrent.futures.Future`` (which builds an RLock and a
    Condition per request) and offers the part of its interface that completion
    uses. Exactly one thread completes it: whoever pops the request from
    ``_pending`` first.
    """

    __slots__ = ("_lock", "result", "error", "_done")

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._lock.acquire()
        self.result: Any = None
        self.error: BaseException | None = None
        self._done = False

    def set_result(self, value: Any) -> None:
        self.result = value
        self._done = True
        self._lock.release()

    def set_exception(self, exc: BaseException) -> None:
        self.error = exc
        self._done = True
        self._lock.release()

    def done(self) -> bool:
        return self._done

    def wait(self, timeout: float | None) -> bool:
        return self._lock.acquire(timeout=-1 if timeout is None else timeout)


class Pending:
    __slots__ = ("future", "conn", "service", "node_id")

    def __init__(
        self, future: Future | Waiter, conn: Connection | None, service: str, node_id: str
    ) -> None:
        self.future = future
        self.conn = conn
        self.service = service
        self.node_id = node_id


class PeerLinks(NodeBase):
    """Links to peers, routing, requests and replies (mixin of Node)."""

    def _peer_conn(self, node: NodeInfo) -> Connection | None:
        """(any thread) The connection to ``node``, opening one if needed; None if it
        failed recently (retry backoff) or the node is closing."""
        with self._lock:
            conn = self._peers.get(node.id)
            if conn is not None:
                return conn
            if self._closing:
                return None
            retry = self._retry_after.get(node.id)
            if retry is not None and time.monotonic() < retry:
                return None
            family: int
            addr: Any
            try:
                if node.unix and node.host_key == self._host_key and self._use_unix:
                    family, addr = socket.AF_UNIX, unix_address(node.unix)
                elif node.tcp:
                    family, addr = tcp_address(node.tcp, numeric=True)  # nodes advertise IPs
                else:
                    return None
            except (OSError, ValueError):
                return None
            ident, n = control_frame(Ident(self.id, self.name))
            conn = self._new_conn(is_client=True, label=f"node {node.name!r}", first=ident)
            conn.peer_id, conn.peer_name = node.id, node.name
            self._peers[node.id] = conn
        self._loop.call_soon(conn.start_connect, family, addr)
        return conn

    def _new_conn(self, is_client: bool, label: str, first: list[Any] | None = None) -> Connection:
        conn = Connection(
            self._loop,
            authkey=self._authkey,
            is_client=is_client,
            max_body=self.max_message_size,
            max_pending=self.max_pending_bytes,
            on_frames=self._on_peer_frames,
            on_close=self._on_peer_close,
            label=label,
            first_frames=[b"".join(first)] if first else None,
            socket_buffer=config.PEER_SOCKET_BUFFER,
            stall_timeout=self.heartbeat_timeout,
        )
        self._conns.add(conn)
        return conn

    def _on_accept(self, sock: socket.socket, addr: Any) -> None:
        if self._closing:
            sock.close()
            return
        conn = self._new_conn(is_client=False, label="peer")
        conn.start_server(sock, addr)

    def _on_peer_close(self, conn: Connection, exc: BaseException | None) -> None:
        self._conns.discard(conn)
        self._counters["dropped_outbound"] += conn.dropped
        conn.dropped = 0
        with self._lock:
            if conn.peer_id and self._peers.get(conn.peer_id) is conn:
                del self._peers[conn.peer_id]
                if conn.frames_in == 0 and conn.is_client and not self._closing:
                    # never got anywhere: do not hammer a peer that is gone
                    self._retry_after[conn.peer_id] = time.monotonic() + 0.5
                    log.info("node %r: cannot reach %s: %s", self.name, conn.label, exc)
        if isinstance(exc, Exception) and not isinstance(exc, NodeClosed):
            err: MeshError = exc if isinstance(exc, MeshError) else ConnectionLost(str(exc))
        else:
            err = ConnectionLost(f"connection to {conn.label} closed")
        self._fail_pending(lambda p: p.conn is conn, err)

    def _fail_pending(self, match: Callable[[Pending], bool], exc: BaseException) -> None:
        for rid, p in self._pending.copy().items():
            if match(p) and self._pending.pop(rid, None) is not None:
                set_exception(p.future, exc)

    def _on_peer_frames(self, conn: Connection, frames: list[Frame]) -> None:
        # Consecutive TOPIC frames of one topic (the usual batch) go to its entry in one
        # call; order within a topic is kept, and topics do not wait on each other.
        topics = self._topics
        last = b""
        items: list[tuple[Frame, int]] = []
        for f in frames:
            ftype = f[0]
            if ftype == TOPIC:
                name = f[2]
                if name != last:
                    if items:
                        self._deliver_batch(topics.get(last), items)
                        items = []
                    last = name
                items.append((f, len(f[4])))
            elif ftype == REPLY or ftype == REPLY_ERROR:
                self._on_reply(f)
            elif ftype == REQUEST:
                self._on_request(conn, f)
            elif ftype == CONTROL:
                self._on_peer_control(conn, f)
            elif ftype == PING:
                pong = encode_frame(PONG, request_id=f[3]) if f[3] else _PONG
                conn.send(pong, 16, droppable=False)
            elif ftype == PONG:
                if f[3]:
                    self._complete(f[3], PONG, 0, b"")
            elif ftype == ERROR:
                reason = bytes(f.body[:200]).decode("utf-8", "replace")
                log.warning("node %r: %s closed the link: %s", self.name, conn.label, reason)
                conn.close(ConnectionLost(reason))
                break  # what came before the ERROR is still delivered
        if items:
            self._deliver_batch(topics.get(last), items)

    def _deliver_batch(self, entry: TopicEntry | None, items: list[tuple[Frame, int]]) -> None:
        if entry is None:
            self._counters["unroutable"] += len(items)
        else:
            entry.deliver(items)

    def _on_peer_control(self, conn: Connection, frame: Frame) -> None:
        try:
            msg = decode_control(frame.name, frame.body)
        except ProtocolError as exc:
            log.warning(
                "node %r: bad control message from %s: %s", self.name, conn.peer_address, exc
            )
            conn.close(exc)
            return
        if isinstance(msg, Ident):
            conn.peer_id, conn.peer_name = msg.id, msg.name
            conn.label = f"node {msg.name!r}"
            with self._lock:
                if msg.id not in self._peers and not self._closing:
                    self._peers[msg.id] = conn  # reuse this link for our own sends

    # -- services (I/O thread and service workers) ---------------------------------------------

    def _on_request(self, conn: Connection, frame: Frame) -> None:
        svc = self._services.get(frame.name)
        if svc is None:
            self._reply_error(
                conn,
                frame.request_id,
                "no-service",
                "NoProviderError",
                f"node {self.name!r} does not provide service {frame.name.decode('utf-8', 'replace')!r}",
            )
            return
        if not svc.dispatcher.put((frame, conn), 0):
            self._refuse(svc, frame.request_id, conn)

    def _refuse(self, svc: ServiceEntry, rid: int, reply_to: Connection | None) -> None:
        """A request the service's queue did not take (full, or the service is going)."""
        if svc.dispatcher.stopping:
            self._reply_error(
                reply_to,
                rid,
                "no-service",
                "NoProviderError",
                f"service {svc.name!r} on node {self.name!r} was removed",
            )
        else:
            self._reply_error(
                reply_to,
                rid,
                "overloaded",
                "ServiceOverloaded",
                f"service {svc.name!r} on node {self.name!r} has too many requests waiting",
            )

    def _discard_requests(self, svc: ServiceEntry, items: list[Any]) -> None:
        """(any thread) Requests queued for a service that stopped before running them."""
        for frame, reply_to in items:
            self._reply_error(
                reply_to,
                frame.request_id,
                "no-service",
                "NoProviderError",
                f"service {svc.name!r} on node {self.name!r} was removed before it ran",
            )

    def _serve(self, svc: ServiceEntry, frame: Frame, reply_to: Connection | None) -> None:
        """(service worker) Decode, run the handler, encode and send the reply."""
        rid = frame.request_id
        try:
            codec = self._codec if frame.codec == self._codec_id else codec_for_id(frame.codec)
            data = codec.decode(frame.body)
        except Exception as exc:
            self._reply_error(
                reply_to,
                rid,
                "decode",
                type(exc).__name__,
                f"the request could not be decoded: {_safe_str(exc)}",
            )
            return
        try:
            result = svc.handler(data)
        except BaseException as exc:  # SystemExit too: the caller gets an answer, the worker lives
            self._reply_error(
                reply_to, rid, "error", type(exc).__name__, _safe_str(exc), traceback.format_exc()
            )
            return
        try:
            body = codec.encode(result)
        except Exception as exc:
            self._reply_error(
                reply_to,
                rid,
                "encode",
                type(exc).__name__,
                f"the result of service {svc.name!r} could not be encoded: {_safe_str(exc)}",
            )
            return
        cid = codec_id_of(codec)
        if reply_to is None:
            self._complete(rid, REPLY, cid, body)
            return
        bufs = encode_frame(REPLY, b"", body, cid, rid)
        reply_to.send(bufs, 16 + len(body), False)

    def _reply_error(
        self,
        reply_to: Connection | None,
        rid: int,
        kind: str,
        etype: str,
        message: str,
        tb: str = "",
    ) -> None:
        body = msgpack.packb([kind, etype, message[:10000], tb[-20000:]], use_bin_type=True)
        if reply_to is None:
            self._complete(rid, REPLY_ERROR, 0, body)
        else:
            reply_to.send(encode_frame(REPLY_ERROR, b"", body, 0, rid), 16 + len(body), False)

    def _on_reply(self, frame: Frame) -> None:
        self._complete(frame.request_id, frame.type, frame.codec, frame.body)

    def _complete(self, rid: int, ftype: int, codec_id: int, body: Any) -> None:
        p = self._pending.pop(rid, None)
        if p is None or p.future.done():
            return  # timed out, cancelled, or a reply we never asked for
        if ftype == PONG:
            try:
                p.future.set_result(None)
            except Exception:
                pass
            return
        if ftype == REPLY:
            try:
                codec = self._codec if codec_id == self._codec_id else codec_for_id(codec_id)
                result = codec.decode(body)
            except Exception as exc:
                set_exception(
                    p.future,
                    ServiceError(
                        type(exc).__name__, f"the reply could not be decoded: {exc}", "", p.service
                    ),
                )
                return
            if not p.future.done():
                try:
                    p.future.set_result(result)
                except Exception:  # cancelled meanwhile
                    pass
            return
        try:
            kind, etype, message, tb = msgpack.unpackb(body, raw=False)
        except Exception:
            kind, etype, message, tb = "error", "ProtocolError", "malformed error reply", ""
        err: MeshError
        if kind == "no-service":
            err = NoProviderError(message)
        else:
            err = ServiceError(str(etype), str(message), str(tb), p.service)
        set_exception(p.future, err)

    def _decode_or_raise(self, codec_id: int, body: Any) -> Any:
        try:
            codec = self._codec if codec_id == self._codec_id else codec_for_id(codec_id)
            return codec.decode(body)
        except Exception as exc:
            self._counters["decode_errors"] += 1
            raise CodecError(f"cannot decode a message (codec {codec_id}): {exc}") from exc

    def _decode_failed(self, codec_id: int, exc: Exception, topic: str) -> None:
        """(listener worker) Count and log a message that could not be decoded."""
        self._counters["decode_errors"] += 1
        log.error(
            "node %r: cannot decode a message on topic %r (codec %d): %s",
            self.name,
            topic,
            codec_id,
            exc,
        )

    # -- request deadlines and ping ------------------------------------------------------

    def _arm_deadline(self, rid: int, timeout: float) -> None:
        """(any thread) Fail request ``rid`` with RequestTimeout after ``timeout`` s. One
        heap and one sweep timer (every SWEEP s while any request waits) for all requests:
        no Timer per request."""
        with self._deadline_lock:
            heap = self._deadlines
            heapq.heappush(heap, (time.monotonic() + timeout, rid, timeout))
            if len(heap) > 2 * len(self._pending) + 1024:
                # Entries of answered requests wait for their deadline; drop them in bulk.
                pending = self._pending
                self._deadlines = heap = [e for e in heap if e[1] in pending]
                heapq.heapify(heap)
            arm = not self._sweep_armed
            self._sweep_armed = True
        if arm:
            self._loop.call_later(min(SWEEP, timeout), self._sweep)

    def _sweep(self) -> None:
        """(I/O thread) Fail the requests whose deadline passed; re-arm while any wait."""
        now = time.monotonic()
        expired = []
        with self._deadline_lock:
            heap = self._deadlines
            pending = self._pending
            while heap and (heap[0][0] <= now or heap[0][1] not in pending):
                deadline, rid, timeout = heapq.heappop(heap)
                if deadline <= now:
                    expired.append((rid, timeout))
            self._sweep_armed = bool(heap) and not self._closing
            if self._sweep_armed:
                self._loop.call_later(SWEEP, self._sweep)
        for rid, timeout in expired:
            self._expire(rid, timeout)

    def _expire(self, rid: int, timeout: float) -> None:
        p = self._pending.pop(rid, None)
        if p is not None and not p.future.done():
            set_exception(
                p.future,
                RequestTimeout(f"service {p.service!r} did not answer within {timeout:g} s"),
            )

    def ping(self, node: str, timeout: float = 5.0) -> float:
        """Round-trip time in seconds to ``node`` (a node id, or a name: one member of
        that group) over the mesh link, as the data would travel.

        Raises NoProviderError (no such node), RequestTimeout (no answer within
        ``timeout``), ConnectionLost, NodeClosed.
        """
        self._check_open()
        nodes = self._topology.nodes
        target = nodes.get(node) or next(
            (n for n in sorted(nodes.values(), key=lambda n: n.id) if n.name == node), None
        )
        if target is None:
            raise NoProviderError(f"no node named or with id {node!r}")
        start = time.perf_counter()
        if target.id == self.id:
            return time.perf_counter() - start
        conn = self._peers.get(target.id) or self._peer_conn(target)
        if conn is None:
            raise ConnectionLost(f"cannot reach node {target.name!r} ({target.id})")
        rid = next(self._rid)
        future: Future = Future()
        self._pending[rid] = Pending(future, conn, "<ping>", target.id)
        start = time.perf_counter()
        conn.send(encode_frame(PING, request_id=rid), 16, droppable=False)
        try:
            future.result(timeout)
        except FutureTimeout:
            self._pending.pop(rid, None)
            raise RequestTimeout(
                f"node {target.name!r} did not answer a ping within {timeout:g} s"
            ) from None
        return time.perf_counter() - start


def set_exception(future: Future | Waiter, exc: BaseException) -> None:
    try:
        future.set_exception(exc)
    except Exception:  # already done or cancelled
        pass


def _safe_str(exc: BaseException) -> str:
    """``str(exc)``, or a stand-in when the exception's own ``__str__`` raises."""
    try:
        return str(exc)
    except Exception:
        return f"<{type(exc).__name__}: str() failed>"
