"""Node: the object a user holds. Topics, services, futures.

Threads (see STYLE.md): the node's I/O thread (``easymesh-<name>-io``) owns all
sockets; each listener and each service owns a worker pool that runs user
code; the user's own threads call :meth:`Node.send` / :meth:`Node.request`.

Hand-offs on the hot paths, counted (each costs tens of µs on a busy machine):

* ``send()``: the caller encodes once and writes the frame to the peer's
  socket itself when nothing is queued (connection.py); the receiver's I/O
  thread parses and queues it; the listener's worker decodes and calls back.
  One hand-off at each end, none when the kernel keeps up.
* ``request()``: the caller writes the request itself; the provider's I/O
  thread queues it for the service's worker, which runs the handler and writes
  the reply itself; the caller's I/O thread decodes the reply and completes
  the Future, waking the caller. Two hand-offs in all.

Routing: the topology (who listens to what) comes from the coordinator; a
peer on the same host (equal ``host_key``) is reached over its Unix socket,
others over TCP. One connection per peer pair is enough: a node that accepted
a connection also sends over it, and replies always go back on the
connection the request came in on.
"""

from __future__ import annotations

import itertools
import logging
import math
import os
import socket
import threading
import time
import traceback
import uuid
from collections import deque
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from typing import Any, Callable, NamedTuple

import msgpack

from easymesh import allocator, config
from easymesh.config import format_address
from easymesh.dispatch import Dispatcher
from easymesh.errors import (
    AuthenticationError,
    CodecError,
    ConnectionLost,
    CoordinatorUnavailable,
    MeshError,
    NodeClosed,
    NoProviderError,
    ProtocolError,
    RequestTimeout,
    ServiceError,
)
from easymesh.loadbalancing import resolve_load_balancer
from easymesh.protocol.codecs import codec_for_id, codec_id_of, resolve_codec
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
    MAX_CONTROL_BODY,
    Bye,
    Diff,
    Ident,
    NodeInfo,
    Register,
    Update,
    Welcome,
    decode_control,
    encode_control,
)
from easymesh.protocol.topology import Topology
from easymesh.subscription import Subscription
from easymesh.transport.connection import CLOSED, OPEN, Connection
from easymesh.transport.listener import (
    Listener,
    host_key,
    tcp_address,
    tcp_server_socket,
    unix_address,
    unix_server_socket,
)
from easymesh.transport.loop import IOLoop

log = logging.getLogger("easymesh.node")

_PING = encode_frame(PING)
_PONG = encode_frame(PONG)
_new_frame = tuple.__new__
_LOCAL = None  # reply target of a request this node made to itself
_SWEEP = 0.05  # seconds between sweeps of request deadlines: a timeout fires up to this late


class RawMessage(NamedTuple):
    """What a ``raw=True`` listener receives: the codec id and the encoded bytes."""

    codec: int
    data: bytes | bytearray


def _nbytes(bufs: list[Any]) -> int:
    return sum(b.nbytes if isinstance(b, memoryview) else len(b) for b in bufs)


def _control_frame(msg: Any) -> tuple[list[Any], int]:
    name, body = encode_control(msg)
    bufs = encode_frame(CONTROL, name, body)
    return bufs, 16 + len(name) + len(body)


class _Pending:
    __slots__ = ("future", "conn", "service", "node_id")

    def __init__(self, future: Future, conn: Connection | None, service: str, node_id: str) -> None:
        self.future = future
        self.conn = conn
        self.service = service
        self.node_id = node_id


class _TopicEntry:
    """Everything this node does with one topic: a listener and/or subscriptions."""

    __slots__ = ("topic", "listener", "subs", "sinks")

    def __init__(self, topic: str) -> None:
        self.topic = topic
        self.listener: _Listener | None = None
        self.subs: tuple[Subscription, ...] = ()
        self.sinks: tuple[Any, ...] = ()

    def refresh(self) -> None:
        self.sinks = ((self.listener.dispatcher,) if self.listener else ()) + self.subs

    def deliver(self, items: Any) -> None:
        for sink in self.sinks:
            sink.put_many(items)


class _Listener:
    """A topic callback and the worker pool that runs it."""

    def __init__(self, node: Node, topic: str, callback: Callable[[str, Any], Any], raw: bool,
                 workers: int, queue_size: int, queue_bytes: int) -> None:
        self.topic = topic
        self.callback = callback
        self.raw = raw
        self.node = node
        self.dispatcher = Dispatcher(
            f"easymesh-{node.name}-{topic}", self.run, workers=workers, queue_size=queue_size,
            queue_bytes=queue_bytes, describe=f"callback for topic {topic!r}",
            on_put=None if workers else node._spin_wake,
        )

    def run(self, frame: Frame) -> None:
        if self.raw:
            self.callback(self.topic, RawMessage(frame.codec, frame.body))
            return
        data = self.node._decode(frame.codec, frame.body, f"topic {self.topic!r}")
        if data is not _UNDECODABLE:
            self.callback(self.topic, data)


class _Service:
    """A service handler and the worker pool that runs it."""

    def __init__(self, node: Node, name: str, handler: Callable[[Any], Any], workers: int,
                 queue_size: int) -> None:
        self.name = name
        self.handler = handler
        self.node = node
        self.dispatcher = Dispatcher(
            f"easymesh-{node.name}-{name}", self.run, workers=workers, queue_size=queue_size,
            queue_bytes=1 << 62, drop="newest", describe=f"handler of service {name!r}",
            on_put=None if workers else node._spin_wake,
        )

    def run(self, item: Any) -> None:
        frame, reply_to = item
        self.node._serve(self, frame, reply_to)


_UNDECODABLE = object()


class Node:
    """A member of the mesh. Connects, authenticates and registers before returning.

    Arguments (all but ``name`` keyword-only):

    ``name``: nodes that share a name form a load-balancing group.
    ``coordinator``: ``'host:port'`` or ``'host'`` (port 6374); default
    ``$EASYMESH_COORDINATOR``, else ``localhost:6374``.
    ``authkey``: bytes or str shared by the whole mesh; default ``$EASYMESH_AUTHKEY``.
    ``codec``: ``'pickle'`` (default), ``'msgpack'``, ``'json'``, ``'raw'`` or an
    object with ``encode``/``decode`` (see protocol/codecs.py).
    ``load_balancer``: ``'round-robin'`` (default), ``'random'``, ``None`` (every
    listener gets every message) or an object (see loadbalancing.py).
    ``connect_timeout``: seconds to keep trying to reach the coordinator (10).
    ``heartbeat_interval``: seconds between heartbeats to the coordinator (1).
    ``request_timeout``: what ``timeout=None`` means for requests (60 s).
    ``linger``: seconds ``close()`` waits for queued messages to leave (2).
    ``max_message_size``: largest frame body accepted from a peer (256 MiB).
    ``max_pending_bytes``: bound on bytes queued towards one peer (32 MiB).
    ``queue_size``: default bound of each listener's queue (10,000 messages).
    ``host``: IP to bind and advertise for TCP; default: the address this
    machine uses to reach the coordinator.
    ``socket_dir``: folder for the Unix socket (default: Linux abstract namespace).
    ``transport``: ``'auto'`` (Unix socket to peers on this host, TCP to others) or
    ``'tcp'`` (always TCP; for testing and benchmarks).

    Raises CoordinatorUnavailable (not reachable within ``connect_timeout``),
    AuthenticationError (wrong or missing key), ValueError/TypeError (bad arguments).
    """

    def __init__(
        self,
        name: str,
        *,
        coordinator: str | None = None,
        authkey: bytes | str | None = None,
        codec: Any = "pickle",
        load_balancer: Any = "round-robin",
        connect_timeout: float = config.DEFAULT_CONNECT_TIMEOUT,
        heartbeat_interval: float = config.DEFAULT_HEARTBEAT_INTERVAL,
        request_timeout: float = config.DEFAULT_REQUEST_TIMEOUT,
        linger: float = config.DEFAULT_LINGER,
        max_message_size: int = config.DEFAULT_MAX_MESSAGE_SIZE,
        max_pending_bytes: int = config.DEFAULT_MAX_PENDING_BYTES,
        queue_size: int = config.DEFAULT_QUEUE_SIZE,
        host: str | None = None,
        socket_dir: str | None = None,
        transport: str = "auto",
    ) -> None:
        if not isinstance(name, str) or not name or len(name) > 256:
            raise ValueError("a node name must be a non-empty string of at most 256 characters")
        self.name = name
        self.id = uuid.uuid4().hex[:16]
        self._codec = resolve_codec(codec)
        self._codec_id = codec_id_of(self._codec)
        self._balancer = resolve_load_balancer(load_balancer)
        host_, port = config.coordinator_address(coordinator)
        self.coordinator = format_address(host_, port)
        self._authkey = config.authkey_bytes(authkey)
        self.heartbeat_interval = heartbeat_interval
        self.heartbeat_timeout = heartbeat_interval * config.HEARTBEAT_TIMEOUT_FACTOR
        self.request_timeout = request_timeout
        self.linger = linger
        self.max_message_size = max_message_size
        self.max_pending_bytes = max_pending_bytes
        self.queue_size = queue_size
        self._bind_host = host
        if transport not in ("auto", "tcp"):
            raise ValueError("transport must be 'auto' or 'tcp'")
        self._use_unix = transport == "auto"
        self._host_key = host_key()
        self._hostname = socket.gethostname()

        allocator.tune()
        self._loop = IOLoop(name)
        self._lock = threading.RLock()  # registration tables, peer map, lifecycle
        self._topo_lock = threading.Lock()
        self._topo_cond = threading.Condition(self._topo_lock)
        self._topology = Topology()
        self._topics: dict[bytes, _TopicEntry] = {}
        self._services: dict[bytes, _Service] = {}
        self._peers: dict[str, Connection] = {}  # node id -> connection used to reach it
        self._conns: set[Connection] = set()
        self._retry_after: dict[str, float] = {}
        self._latched: dict[str, list[Any]] = {}  # topic -> [codec id, body, ids already served]
        self._latch_lock = threading.Lock()
        self._spinnable: list[Dispatcher] = []  # thread-less listeners and services
        self._spin_cond = threading.Condition(threading.Lock())
        self._pending: dict[int, _Pending] = {}
        self._rid = itertools.count(1)
        self._deadlines: dict[float, deque[tuple[float, int]]] = {}  # timeout -> (deadline, rid)
        self._sweep_armed = False
        self._closing = False
        self._closed = threading.Event()
        self._coord: Connection | None = None
        self._coord_ready = False  # Register sent on self._coord
        self._coord_sockaddr: tuple[int, Any] | None = None
        self._reconnect_delay = 0.1
        self._attempt_done = threading.Event()
        self._attempt_error: BaseException | None = None
        self._welcomed = False
        self._tcp: Listener | None = None
        self._tcp_endpoint = ""
        self._counters = {"sent": 0, "no_listener": 0, "dropped_outbound": 0, "unroutable": 0,
                          "decode_errors": 0, "requests": 0}

        sock, self._unix_endpoint, path = unix_server_socket(self.id, config.socket_dir(socket_dir))
        self._unix = Listener(self._loop, sock, self._on_accept, path)
        self._loop.call_soon(self._unix.start)
        self._loop.start()
        try:
            self._connect(connect_timeout)
        except BaseException:
            self._shutdown_loop()
            raise
        self._loop.call_later(self.heartbeat_interval, self._heartbeat)

    # -- public: lifecycle ---------------------------------------------------------------------

    def __enter__(self) -> Node:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<easymesh.Node {self.name!r} id={self.id} coordinator={self.coordinator}>"

    @property
    def closed(self) -> bool:
        return self._closing

    def close(self, linger: float | None = None) -> None:
        """Leave the mesh. Idempotent, bounded in time, safe from any thread (a callback too).

        Waits up to ``linger`` seconds (default: the node's ``linger``) for messages
        already sent to leave, then fails every pending request with NodeClosed,
        stops the listeners' workers (they finish what is queued, bounded) and the
        I/O thread.
        """
        with self._lock:
            already = self._closing
            self._closing = True
        on_own_thread = self._loop.in_loop_thread() or self._owns_current_thread()
        if already:
            if not on_own_thread:
                self._closed.wait(10.0)
            return
        linger = self.linger if linger is None else linger
        deadline = time.monotonic() + max(0.0, linger)
        if not self._loop.in_loop_thread():
            for conn in list(self._peers.values()):
                conn.wait_flushed(max(0.0, deadline - time.monotonic()))
        coord = self._coord
        if coord is not None and coord.state == OPEN:
            bufs, n = _control_frame(Bye())
            coord.send(bufs, n, droppable=False)
            if not self._loop.in_loop_thread():
                coord.wait_flushed(0.5)
        self._fail_pending(lambda p: True, NodeClosed(f"node {self.name!r} was closed"))
        with self._lock:
            entries = list(self._topics.values())
            services = list(self._services.values())
        for entry in entries:
            for sink in entry.sinks:
                sink.stop(timeout=2.0)
        for svc in services:
            svc.dispatcher.stop(timeout=2.0)
        self._shutdown_loop()
        with self._topo_cond:
            self._topo_cond.notify_all()
        self._spin_wake()
        self._closed.set()

    def _shutdown_loop(self) -> None:
        self._closing = True
        self._loop.stop(timeout=3.0)
        if not self._loop.running:
            self._unix.close()

    def _owns_current_thread(self) -> bool:
        with self._lock:
            dispatchers = [e.listener.dispatcher for e in self._topics.values() if e.listener]
            dispatchers += [s.dispatcher for s in self._services.values()]
        return any(d.owns_current_thread() for d in dispatchers)

    def forever(self) -> None:
        """Block until :meth:`close`, Ctrl-C (SIGINT) or SIGTERM; then close cleanly."""
        from easymesh.coordinator import _install_signal_handlers

        restore = _install_signal_handlers(self.close)
        try:
            while not self._closed.wait(3600):
                pass
        except KeyboardInterrupt:
            pass
        finally:
            restore()
            self.close()

    def _check_open(self) -> None:
        if self._closing:
            raise NodeClosed(f"node {self.name!r} is closed")

    # -- public: topics ------------------------------------------------------------------------

    def send(self, topic: str, data: Any, *, latch: bool = False) -> None:
        """Send ``data`` to the listeners of ``topic`` (at most once, never blocks).

        Encodes once; one member of each listening group gets it (see load
        balancing). Does nothing when nobody listens. With ``latch=True`` this node
        also keeps the value and gives it, at once, to every node that starts
        listening to ``topic`` later (like rospy's ``latch=True``); the value lives
        as long as this node does (see :meth:`clear_latch`).
        Raises NodeClosed after close(), CodecError if ``data`` cannot be encoded.
        """
        if self._closing:
            raise NodeClosed(f"node {self.name!r} is closed")
        if latch:
            self._send_latched(topic, data)
            return
        nodes = self._topology.listeners(topic)
        if not nodes:
            self._counters["no_listener"] += 1
            return
        try:
            body = self._codec.encode(data)
        except Exception as exc:
            raise CodecError(f"cannot encode data for topic {topic!r}: {exc}") from exc
        self._send_encoded(topic, nodes, self._codec_id, body)

    def send_raw(self, topic: str, codec: int, data: bytes | bytearray) -> None:
        """Send bytes already encoded with codec id ``codec`` (as a raw listener got them)."""
        self._check_open()
        nodes = self._topology.listeners(topic)
        if nodes:
            self._send_encoded(topic, nodes, codec, data)

    def _send_encoded(self, topic: str, nodes: Any, codec_id: int, body: Any) -> None:
        name = topic.encode("utf-8")
        bufs = encode_frame(TOPIC, name, body, codec_id)
        nbytes = 16 + len(name) + len(body)
        peers = self._peers
        for node in self._balancer.choose_nodes(topic, nodes):
            if node.id == self.id:
                self._deliver_local(name, codec_id, body)
                continue
            conn = peers.get(node.id) or self._peer_conn(node)
            if conn is None or not conn.send(bufs, nbytes, True):
                self._counters["dropped_outbound"] += 1
        self._counters["sent"] += 1

    def _deliver_local(self, name: bytes, codec_id: int, body: Any) -> None:
        entry = self._topics.get(name)
        if entry is not None:
            entry.deliver(((_new_frame(Frame, (TOPIC, codec_id, name, 0, body)), len(body)),))

    # -- latched topics ------------------------------------------------------------------------

    def _send_latched(self, topic: str, data: Any) -> None:
        try:
            body = self._codec.encode(data)
        except Exception as exc:
            raise CodecError(f"cannot encode data for topic {topic!r}: {exc}") from exc
        with self._latch_lock:
            nodes = self._topology.listeners(topic)
            self._latched[topic] = [self._codec_id, body, {n.id for n in nodes}]
        if nodes:
            self._send_encoded(topic, nodes, self._codec_id, body)
        else:
            self._counters["no_listener"] += 1

    def clear_latch(self, topic: str) -> None:
        """Forget the latched value of ``topic`` (late listeners no longer get it)."""
        with self._latch_lock:
            self._latched.pop(topic, None)

    def _check_latched(self) -> None:
        """After a topology change: give latched values to listeners that are new.
        Never called while holding self._lock (lock order: _latch_lock, then _lock)."""
        if not self._latched or self._closing:
            return
        todo = []
        with self._latch_lock:
            for topic, entry in self._latched.items():
                listeners = self._topology.listeners(topic)
                served = entry[2]
                todo.extend((topic, n, entry[0], entry[1]) for n in listeners if n.id not in served)
                entry[2] = {n.id for n in listeners}
        for topic, node, codec_id, body in todo:
            name = topic.encode("utf-8")
            if node.id == self.id:
                self._deliver_local(name, codec_id, body)
                continue
            conn = self._peers.get(node.id) or self._peer_conn(node)
            if conn is not None:
                conn.send(encode_frame(TOPIC, name, body, codec_id), 16 + len(name) + len(body), True)

    def listen(
        self,
        topic: str,
        callback: Callable[[str, Any], Any],
        *,
        queue_size: int | None = None,
        queue_bytes: int = config.DEFAULT_QUEUE_BYTES,
        workers: int = 1,
        raw: bool = False,
        threaded: bool = True,
    ) -> None:
        """Call ``callback(topic, data)`` for each message on ``topic``, in a worker thread
        owned by this listener (``easymesh-<node>-<topic>-1``).

        With ``threaded=False`` no thread is started: calls wait in the listener's
        queue until the owner runs them with :meth:`spin_once` / :meth:`spin`, in the
        owner's thread.

        ``queue_size``/``queue_bytes`` bound the messages waiting for the callback;
        past them the oldest are dropped and counted (``stats()``). With the default
        single worker, messages from one sender reach the callback in order.
        ``raw=True`` passes a :class:`RawMessage` (codec id, bytes) instead of decoding.
        Listening again to the same topic replaces the callback.
        Raises NodeClosed, ValueError/TypeError on bad arguments.
        """
        self._check_open()
        _check_name(topic, "topic")
        if not callable(callback):
            raise TypeError("callback must be callable as callback(topic, data)")
        listener = _Listener(self, topic, callback, raw, workers if threaded else 0,
                             queue_size or self.queue_size, queue_bytes)
        name = topic.encode("utf-8")
        with self._lock:
            entry = self._topics.get(name)
            if entry is None:
                entry = self._topics[name] = _TopicEntry(topic)
            old, entry.listener = entry.listener, listener
            entry.refresh()
            if not threaded:
                self._spinnable.append(listener.dispatcher)
            if old is not None and old.dispatcher in self._spinnable:
                self._spinnable.remove(old.dispatcher)
            self._publish_self()
        if old is not None:
            old.dispatcher.stop(timeout=1.0)

    def stop_listening(self, topic: str) -> None:
        """Stop the callback for ``topic`` (no-op if none). Messages already queued are
        still handled (bounded)."""
        name = topic.encode("utf-8")
        with self._lock:
            entry = self._topics.get(name)
            if entry is None or entry.listener is None:
                return
            old, entry.listener = entry.listener, None
            entry.refresh()
            if not entry.sinks:
                del self._topics[name]
            if old.dispatcher in self._spinnable:
                self._spinnable.remove(old.dispatcher)
            self._publish_self()
        old.dispatcher.stop(timeout=1.0)

    def listening_to(self) -> list[str]:
        """Topics this node listens to."""
        return sorted(e.topic for e in self._topics.values() if e.sinks)

    def has_listeners(self, topic: str) -> bool:
        """Whether any node in the mesh (this one included) listens to ``topic``."""
        return bool(self._topology.listeners(topic))

    def wait_for_listener(self, topic: str, timeout: float | None = None) -> None:
        """Block until some node listens to ``topic``. Raises RequestTimeout (a
        TimeoutError) after ``timeout`` seconds (None: wait forever), NodeClosed."""
        self._wait_topology(lambda: self._topology.listeners(topic), timeout,
                            f"no listener for topic {topic!r}")

    def topic(self, name: str, *, latch: bool = False) -> Topic:
        """A handle for sending to one topic often; ``latch=True`` latches every send."""
        _check_name(name, "topic")
        return Topic(self, name, latch)

    # -- public: control loops ---------------------------------------------------------------

    def subscribe(self, topic: str, queue_size: int = 1) -> Subscription:
        """Buffer the newest ``queue_size`` messages of ``topic`` for the caller to take
        (``latest()``, ``get()``, ``drain()``, iteration); never calls user code.
        Close it (or use ``with``) to stop. Raises NodeClosed, ValueError."""
        self._check_open()
        _check_name(topic, "topic")
        sub = Subscription(topic, queue_size, self._decode_or_raise, self._unsubscribe)
        name = topic.encode("utf-8")
        with self._lock:
            entry = self._topics.get(name)
            if entry is None:
                entry = self._topics[name] = _TopicEntry(topic)
            entry.subs += (sub,)
            entry.refresh()
            self._publish_self()
        return sub

    def _unsubscribe(self, sub: Subscription) -> None:
        name = sub.topic.encode("utf-8")
        with self._lock:
            entry = self._topics.get(name)
            if entry is None or sub not in entry.subs:
                return
            entry.subs = tuple(s for s in entry.subs if s is not sub)
            entry.refresh()
            if not entry.sinks:
                del self._topics[name]
            if not self._closing:
                self._publish_self()

    def wait_for_message(self, topic: str, timeout: float | None = None) -> Any:
        """The next message on ``topic`` (like rospy's ``wait_for_message``).
        Raises RequestTimeout (a TimeoutError) after ``timeout`` seconds (None: forever),
        NodeClosed / SubscriptionClosed if the node closes meanwhile."""
        with self.subscribe(topic, queue_size=1) as sub:
            return sub.get(timeout)

    def spin_once(self, timeout: float | None = 0.0) -> int:
        """Run the queued calls of ``threaded=False`` listeners and services in this
        thread; return how many ran. If none is queued, wait up to ``timeout`` seconds
        for one (0: do not wait; None: until one arrives or the node closes).
        Per listener, calls run in arrival order."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            ran = 0
            for d in list(self._spinnable):
                ran += d.run_queued()
            if ran or self._closing:
                return ran
            with self._spin_cond:
                while not any(d.queued for d in self._spinnable) and not self._closing:
                    left = None if deadline is None else deadline - time.monotonic()
                    if left is not None and left <= 0:
                        return 0
                    self._spin_cond.wait(left)

    def spin(self) -> None:
        """Run queued ``threaded=False`` calls in this thread until :meth:`close`."""
        while not self._closing:
            self.spin_once(timeout=None)

    def _spin_wake(self) -> None:
        with self._spin_cond:
            self._spin_cond.notify_all()

    # -- public: services ----------------------------------------------------------------------

    def add_service(
        self,
        name: str,
        handler: Callable[[Any], Any],
        *,
        workers: int = 4,
        queue_size: int = 1000,
        threaded: bool = True,
    ) -> None:
        """Serve requests for ``name``: ``handler(data) -> result`` runs in this service's
        own worker threads (``workers`` at once; a request made from inside a handler
        works). When ``queue_size`` requests wait, new ones are refused with a
        ServiceError ("overloaded"). Adding the same name again replaces the handler.
        With ``threaded=False`` requests wait until the owner calls :meth:`spin_once`
        / :meth:`spin`, and the handler runs in the owner's thread.
        Raises NodeClosed, ValueError/TypeError on bad arguments.
        """
        self._check_open()
        _check_name(name, "service")
        if not callable(handler):
            raise TypeError("handler must be callable as handler(data)")
        svc = _Service(self, name, handler, workers if threaded else 0, queue_size)
        with self._lock:
            old = self._services.get(name.encode("utf-8"))
            self._services[name.encode("utf-8")] = svc
            if not threaded:
                self._spinnable.append(svc.dispatcher)
            if old is not None and old.dispatcher in self._spinnable:
                self._spinnable.remove(old.dispatcher)
            self._publish_self()
        if old is not None:
            old.dispatcher.stop(timeout=1.0)

    def remove_service(self, name: str) -> None:
        """Stop providing ``name`` (no-op if not provided)."""
        with self._lock:
            svc = self._services.pop(name.encode("utf-8"), None)
            if svc is None:
                return
            if svc.dispatcher in self._spinnable:
                self._spinnable.remove(svc.dispatcher)
            self._publish_self()
        svc.dispatcher.stop(timeout=1.0)

    def has_service(self, name: str) -> bool:
        """Whether any node in the mesh (this one included) provides ``name``."""
        return bool(self._topology.providers(name))

    def wait_for_service(self, name: str, timeout: float | None = None) -> None:
        """Block until some node provides ``name``. Raises RequestTimeout (a TimeoutError)
        after ``timeout`` seconds (None: wait forever), NodeClosed."""
        self._wait_topology(lambda: self._topology.providers(name), timeout,
                            f"no provider for service {name!r}")

    def request(self, service: str, data: Any, timeout: float | None = None) -> Any:
        """Call ``service`` with ``data`` and return its result.

        ``timeout`` in seconds; None means the node's ``request_timeout`` (60 s);
        ``math.inf`` waits forever (a lost connection still fails the call).
        Raises NoProviderError (nobody provides it), RequestTimeout (a TimeoutError),
        ServiceError (the handler raised; see ``remote_traceback``), ConnectionLost
        (the provider went away), NodeClosed, CodecError.
        """
        t = self.request_timeout if timeout is None else timeout
        rid, future = self._start_request(service, data, None)
        try:
            return future.result(None if math.isinf(t) else t)
        except FutureTimeout:
            self._pending.pop(rid, None)
            if future.done() and not future.cancelled():
                return future.result()
            raise RequestTimeout(f"service {service!r} did not answer within {t:g} s") from None

    def request_future(self, service: str, data: Any, timeout: float | None = None) -> Future:
        """Start a request and return a ``concurrent.futures.Future`` for its result at once.

        The future fails with RequestTimeout after ``timeout`` seconds (None: the
        node's ``request_timeout``), or with the errors :meth:`request` raises.
        Done-callbacks run on the node's I/O thread: keep them short.
        Raises NoProviderError, NodeClosed, CodecError immediately.
        """
        t = self.request_timeout if timeout is None else timeout
        return self._start_request(service, data, t)[1]

    def service(self, name: str) -> Service:
        """A handle for calling one service often."""
        _check_name(name, "service")
        return Service(self, name)

    def _start_request(self, service: str, data: Any, timeout: float | None) -> tuple[int, Future]:
        if self._closing:
            raise NodeClosed(f"node {self.name!r} is closed")
        providers = self._topology.providers(service)
        if not providers:
            raise NoProviderError(f"no node provides service {service!r}")
        node = self._balancer.choose_node(service, providers)
        try:
            body = self._codec.encode(data)
        except Exception as exc:
            raise CodecError(f"cannot encode the request to {service!r}: {exc}") from exc
        rid = next(self._rid)
        future: Future = Future()
        name = service.encode("utf-8")
        self._counters["requests"] += 1
        if node.id == self.id:
            svc = self._services.get(name)
            if svc is None:
                raise NoProviderError(f"no node provides service {service!r}")
            self._pending[rid] = _Pending(future, None, service, self.id)
            svc.dispatcher.put((_new_frame(Frame, (REQUEST, self._codec_id, name, rid, body)), _LOCAL), 0)
        else:
            conn = self._peers.get(node.id) or self._peer_conn(node)
            if conn is None:
                raise ConnectionLost(f"cannot reach node {node.name!r} ({node.id}) providing {service!r}")
            self._pending[rid] = _Pending(future, conn, service, node.id)
            bufs = encode_frame(REQUEST, name, body, self._codec_id, rid)
            if not conn.send(bufs, 16 + len(name) + len(body), False):
                self._pending.pop(rid, None)
                raise ConnectionLost(f"connection to node {node.name!r} is closed")
        if timeout is not None and not math.isinf(timeout):
            # One deque per timeout value: deadlines arrive in order, and one sweep timer
            # (every _SWEEP s while any request waits) expires them: no Timer per request.
            q = self._deadlines.get(timeout)
            if q is None:
                q = self._deadlines.setdefault(timeout, deque())
            q.append((time.monotonic() + timeout, rid))
            if not self._sweep_armed:
                self._sweep_armed = True
                self._loop.call_later(min(_SWEEP, timeout), self._sweep)
        return rid, future

    def _sweep(self) -> None:
        """(I/O thread) Fail the requests whose deadline passed; re-arm while any wait."""
        now = time.monotonic()
        waiting = False
        for timeout, q in list(self._deadlines.items()):
            while q and q[0][0] <= now:
                self._expire(q.popleft()[1], timeout)
            while q and q[0][1] not in self._pending:
                q.popleft()  # answered already
            waiting = waiting or bool(q)
        self._sweep_armed = waiting and not self._closing
        if self._sweep_armed:
            self._loop.call_later(_SWEEP, self._sweep)
        elif any(self._deadlines.values()) and not self._closing:  # raced with a new request
            self._sweep_armed = True
            self._loop.call_later(_SWEEP, self._sweep)

    def _expire(self, rid: int, timeout: float) -> None:
        p = self._pending.pop(rid, None)
        if p is not None and not p.future.done():
            _set_exception(p.future, RequestTimeout(f"service {p.service!r} did not answer within {timeout:g} s"))

    def flush(self, timeout: float | None = None) -> bool:
        """Wait until every message already sent has been handed to the kernel (or its
        connection closed), up to ``timeout`` seconds (None: forever). True if all left.
        ``send()`` itself never waits; call this where you want back-pressure, e.g.
        before replaying a large file as fast as possible."""
        deadline = None if timeout is None else time.monotonic() + timeout
        for conn in list(self._peers.values()):
            left = 1e9 if deadline is None else max(0.0, deadline - time.monotonic())
            if not conn.wait_flushed(left):
                return False
        return True

    # -- public: introspection -----------------------------------------------------------------

    def ping(self, node: str, timeout: float = 5.0) -> float:
        """Round-trip time in seconds to ``node`` (a node id, or a name: one member of
        that group) over the mesh link, as the data would travel.

        Raises NoProviderError (no such node), RequestTimeout (no answer within
        ``timeout``), ConnectionLost, NodeClosed.
        """
        self._check_open()
        nodes = self._topology.nodes
        target = nodes.get(node) or next(
            (n for n in sorted(nodes.values(), key=lambda n: n.id) if n.name == node), None)
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
        self._pending[rid] = _Pending(future, conn, "<ping>", target.id)
        start = time.perf_counter()
        conn.send(encode_frame(PING, request_id=rid), 16, droppable=False)
        try:
            future.result(timeout)
        except FutureTimeout:
            self._pending.pop(rid, None)
            raise RequestTimeout(f"node {target.name!r} did not answer a ping within {timeout:g} s") from None
        return time.perf_counter() - start

    def nodes(self) -> list[NodeInfo]:
        """The mesh as this node knows it (NodeInfo records, this node included)."""
        return sorted(self._topology.nodes.values(), key=lambda n: (n.name, n.id))

    def stats(self) -> dict[str, Any]:
        """Counters: messages sent, dropped on the way out (per peer bound) or in
        (per listener bound), per topic, per service and per peer connection."""
        with self._lock:
            topics = {e.topic: e.listener.dispatcher.stats() for e in self._topics.values() if e.listener}
            services = {s.name: s.dispatcher.stats() for s in self._services.values()}
            conns = list(self._conns)
        peers = {}
        dropped_out = self._counters["dropped_outbound"]
        for c in conns:
            key = f"{c.peer_name or '?'}:{c.peer_id or c.peer_address}"
            peers[key] = {"state": c.state, "pending_bytes": c.pending_bytes, "dropped": c.dropped,
                          "frames_in": c.frames_in, "frames_out": c.frames_out}
            dropped_out += c.dropped
        return {
            "name": self.name,
            "id": self.id,
            "sent": self._counters["sent"],
            "requests": self._counters["requests"],
            "no_listener": self._counters["no_listener"],
            "dropped_outbound": dropped_out,
            "dropped_queue": sum(t["dropped"] for t in topics.values()),
            "received": sum(t["received"] for t in topics.values()),
            "decode_errors": self._counters["decode_errors"],
            "unroutable": self._counters["unroutable"],
            "topics": topics,
            "services": services,
            "peers": peers,
        }

    # -- topology (any thread) -----------------------------------------------------------------

    def _self_info(self) -> NodeInfo:
        return NodeInfo(
            id=self.id, name=self.name, hostname=self._hostname, host_key=self._host_key,
            tcp=self._tcp_endpoint, unix=self._unix_endpoint,
            topics=frozenset(e.topic for e in self._topics.values() if e.sinks),
            services=frozenset(s.name for s in self._services.values()), pid=os.getpid(),
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
        """(I/O thread) Apply a coordinator message; drop links to nodes that left."""
        with self._topo_cond:
            self._topology.apply(msg)  # keeps our own record as set by _publish_self
            self._topo_cond.notify_all()
        self._check_latched()
        if isinstance(msg, Diff):
            for node_id in msg.remove:
                self._retry_after.pop(node_id, None)
                conn = self._peers.get(node_id)
                if conn is not None:
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
                    raise CoordinatorUnavailable(self.coordinator, f"not an easymesh coordinator? {last}")
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
            self._loop, authkey=self._authkey, is_client=True, max_body=MAX_CONTROL_BODY,
            max_pending=64 * 1024 * 1024, on_frames=self._on_coord_frames,
            on_open=self._on_coord_open, on_close=self._on_coord_close, label="coordinator",
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
            bufs, n = _control_frame(Register(info))
            self._coord_ready = True
        conn.send(bufs, n, droppable=False)

    def _start_tcp(self, conn: Connection) -> None:
        ip = self._bind_host or (conn.sock.getsockname()[0] if conn.sock is not None else "127.0.0.1")
        try:
            sock = tcp_server_socket(ip, 0)
        except MeshError as exc:
            log.warning("node %r: no TCP listener (%s); only same-host peers can reach it", self.name, exc)
            return
        self._tcp = Listener(self._loop, sock, self._on_accept)
        self._tcp.start()
        self._tcp_endpoint = format_address(ip, sock.getsockname()[1])

    def _send_update(self) -> None:
        conn = self._coord
        if conn is not None and self._coord_ready and conn.state == OPEN and not self._closing:
            with self._lock:
                bufs, n = _control_frame(Update(self._self_info()))
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
                            log.warning("node %r: registered again with the coordinator at %s",
                                        self.name, self.coordinator)
                        self._welcomed = True
                        self._reconnect_delay = 0.1
                        self._attempt_done.set()
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
        log.warning("node %r: lost the coordinator at %s (%s); reconnecting in %.1f s",
                    self.name, self.coordinator, exc, self._reconnect_delay)
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

    # -- peer connections ----------------------------------------------------------------------

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
            try:
                if node.unix and node.host_key == self._host_key and self._use_unix:
                    family, addr = socket.AF_UNIX, unix_address(node.unix)
                elif node.tcp:
                    family, addr = tcp_address(node.tcp)
                else:
                    return None
            except OSError:
                return None
            ident, n = _control_frame(Ident(self.id, self.name))
            conn = self._new_conn(is_client=True, label=f"node {node.name!r}", first=ident)
            conn.peer_id, conn.peer_name = node.id, node.name
            self._peers[node.id] = conn
        self._loop.call_soon(conn.start_connect, family, addr)
        return conn

    def _new_conn(self, is_client: bool, label: str, first: list[Any] | None = None) -> Connection:
        conn = Connection(
            self._loop, authkey=self._authkey, is_client=is_client, max_body=self.max_message_size,
            max_pending=self.max_pending_bytes, on_frames=self._on_peer_frames,
            on_close=self._on_peer_close, label=label,
            first_frames=[b"".join(first)] if first else None,
            socket_buffer=config.PEER_SOCKET_BUFFER,
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

    def _fail_pending(self, match: Callable[[_Pending], bool], exc: BaseException) -> None:
        for rid, p in self._pending.copy().items():
            if match(p) and self._pending.pop(rid, None) is not None:
                _set_exception(p.future, exc)

    def _on_peer_frames(self, conn: Connection, frames: list[Frame]) -> None:
        groups: dict[bytes, list[tuple[Frame, int]]] = {}
        for f in frames:
            ftype = f[0]
            if ftype == TOPIC:
                g = groups.get(f[2])
                if g is None:
                    g = groups[f[2]] = []
                g.append((f, len(f[4])))
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
                return
        if groups:
            topics = self._topics
            for name, items in groups.items():
                entry = topics.get(name)
                if entry is None:
                    self._counters["unroutable"] += len(items)
                else:
                    entry.deliver(items)

    def _on_peer_control(self, conn: Connection, frame: Frame) -> None:
        try:
            msg = decode_control(frame.name, frame.body)
        except ProtocolError as exc:
            log.warning("node %r: bad control message from %s: %s", self.name, conn.peer_address, exc)
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
            self._reply_error(conn, frame.request_id, "no-service", "NoProviderError",
                              f"node {self.name!r} does not provide service {frame.name.decode('utf-8', 'replace')!r}")
            return
        before = svc.dispatcher.dropped
        svc.dispatcher.put((frame, conn), 0)
        if svc.dispatcher.dropped != before:
            self._reply_error(conn, frame.request_id, "overloaded", "ServiceOverloaded",
                              f"service {svc.name!r} on node {self.name!r} has too many requests waiting")

    def _serve(self, svc: _Service, frame: Frame, reply_to: Connection | None) -> None:
        """(service worker) Decode, run the handler, encode and send the reply."""
        rid = frame.request_id
        try:
            codec = self._codec if frame.codec == self._codec_id else codec_for_id(frame.codec)
            data = codec.decode(frame.body)
        except Exception as exc:
            self._reply_error(reply_to, rid, "decode", type(exc).__name__,
                              f"the request could not be decoded: {exc}")
            return
        try:
            result = svc.handler(data)
        except Exception as exc:
            self._reply_error(reply_to, rid, "error", type(exc).__name__, str(exc),
                              traceback.format_exc())
            return
        try:
            body = codec.encode(result)
        except Exception as exc:
            self._reply_error(reply_to, rid, "encode", type(exc).__name__,
                              f"the result of service {svc.name!r} could not be encoded: {exc}")
            return
        cid = codec_id_of(codec)
        if reply_to is None:
            self._complete(rid, REPLY, cid, body)
            return
        bufs = encode_frame(REPLY, b"", body, cid, rid)
        reply_to.send(bufs, 16 + len(body), False)

    def _reply_error(self, reply_to: Connection | None, rid: int, kind: str, etype: str,
                     message: str, tb: str = "") -> None:
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
                _set_exception(p.future, ServiceError(type(exc).__name__,
                                                      f"the reply could not be decoded: {exc}", "", p.service))
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
        if kind == "no-service":
            exc: MeshError = NoProviderError(message)
        else:
            exc = ServiceError(str(etype), str(message), str(tb), p.service)
        _set_exception(p.future, exc)

    def _decode_or_raise(self, codec_id: int, body: Any) -> Any:
        try:
            codec = self._codec if codec_id == self._codec_id else codec_for_id(codec_id)
            return codec.decode(body)
        except Exception as exc:
            self._counters["decode_errors"] += 1
            raise CodecError(f"cannot decode a message (codec {codec_id}): {exc}") from exc

    def _decode(self, codec_id: int, body: Any, where: str) -> Any:
        try:
            codec = self._codec if codec_id == self._codec_id else codec_for_id(codec_id)
            return codec.decode(body)
        except Exception as exc:
            self._counters["decode_errors"] += 1
            log.error("node %r: cannot decode a message on %s (codec %d): %s", self.name, where, codec_id, exc)
            return _UNDECODABLE


def _set_exception(future: Future, exc: BaseException) -> None:
    try:
        future.set_exception(exc)
    except Exception:  # already done or cancelled
        pass


def _check_name(name: Any, what: str) -> None:
    if not isinstance(name, str) or not name:
        raise ValueError(f"a {what} name must be a non-empty string")
    if len(name.encode("utf-8")) > 1024:
        raise ValueError(f"a {what} name must be at most 1024 bytes")


class Topic:
    """A handle on one topic of one node: ``send``, ``has_listeners``, ``wait_for_listener``."""

    def __init__(self, node: Node, name: str, latch: bool = False) -> None:
        self.node = node
        self.name = name
        self.latch = latch

    def send(self, data: Any) -> None:
        self.node.send(self.name, data, latch=self.latch)

    def has_listeners(self) -> bool:
        return self.node.has_listeners(self.name)

    def wait_for_listener(self, timeout: float | None = None) -> None:
        self.node.wait_for_listener(self.name, timeout)

    def __repr__(self) -> str:
        return f"<easymesh.Topic {self.name!r} of {self.node.name!r}>"


class Service:
    """A handle on one service: ``request``, ``request_future``, ``wait_for_provider``."""

    def __init__(self, node: Node, name: str) -> None:
        self.node = node
        self.name = name

    def request(self, data: Any, timeout: float | None = None) -> Any:
        return self.node.request(self.name, data, timeout)

    def request_future(self, data: Any, timeout: float | None = None) -> Future:
        return self.node.request_future(self.name, data, timeout)

    def __call__(self, data: Any, timeout: float | None = None) -> Any:
        return self.request(data, timeout)

    def has_provider(self) -> bool:
        return self.node.has_service(self.name)

    def wait_for_provider(self, timeout: float | None = None) -> None:
        self.node.wait_for_service(self.name, timeout)

    def __repr__(self) -> str:
        return f"<easymesh.Service {self.name!r} of {self.node.name!r}>"


def build_node(name: str, **kwargs: Any) -> Node:
    """``Node(name, **kwargs)`` (the seed's spelling)."""
    return Node(name, **kwargs)


build_mesh_node = build_node
