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
import math
import socket
import threading
import time
import uuid
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any

from easymesh import allocator, config
from easymesh.config import format_address
from easymesh.control import ControlLoops
from easymesh.errors import (
    CodecError,
    ConnectionLost,
    MeshError,
    NodeClosed,
    NoProviderError,
    RequestTimeout,
)
from easymesh.handles import RawMessage, Service, Topic  # noqa: F401 - RawMessage re-exported
from easymesh.loadbalancing import resolve_load_balancer
from easymesh.nodebase import check_name
from easymesh.peers import PeerLinks, Pending, Waiter, control_frame
from easymesh.protocol.codecs import codec_id_of, resolve_codec
from easymesh.protocol.frames import (
    HEADER,
    JOIN_LIMIT,
    REQUEST,
    TOPIC,
    Frame,
    encode_frame,
)
from easymesh.protocol.messages import (
    Bye,
    NodeInfo,
)
from easymesh.protocol.topology import Topology
from easymesh.transport.connection import OPEN
from easymesh.transport.listener import (
    Listener,
    host_key,
    unix_server_socket,
)
from easymesh.transport.loop import IOLoop
from easymesh.uplink import CoordinatorLink
from easymesh.workers import ServiceEntry, TopicEntry, TopicListener

_new_frame = tuple.__new__
_pack_header = HEADER.pack
_LOCAL = None  # reply target of a request this node made to itself


class Node(CoordinatorLink, PeerLinks, ControlLoops):
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
        # Peers are told an IP address, never a name, so that nobody resolves names on a
        # hot path; a name given here is resolved once, now.
        self._bind_host = (
            str(socket.getaddrinfo(host, None, type=socket.SOCK_STREAM)[0][4][0]) if host else None
        )
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
        self._topics = {}
        self._services = {}
        self._peers = {}  # node id -> connection used to reach it
        self._conns = set()
        self._retry_after = {}
        self._published = frozenset()  # topics sent on (replaced, never changed in place)
        self._latched = {}  # topic -> [codec id, body, ids already served]
        self._latch_lock = threading.Lock()
        self._spinnable = []  # thread-less listeners and services
        self._spin_cond = threading.Condition(threading.Lock())
        self._pending = {}
        self._rid = itertools.count(1)
        self._deadlines = []  # heap of (deadline, rid, timeout)
        self._deadline_lock = threading.Lock()
        self._sweep_armed = False
        self._closing = False
        self._closed = threading.Event()
        self._coord = None
        self._coord_ready = False  # Register sent on self._coord
        self._coord_sockaddr = None
        self._reconnect_delay = 0.1
        self._attempt_done = threading.Event()
        self._attempt_error = None
        self._welcomed = False
        self._tcp = None
        self._tcp_endpoint = ""
        self._counters = {
            "sent": 0,
            "no_listener": 0,
            "dropped_outbound": 0,
            "unroutable": 0,
            "decode_errors": 0,
            "requests": 0,
        }

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
            bufs, n = control_frame(Bye())
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
        listeners = [lst for lst in (self._unix, self._tcp) if lst is not None]
        if self._loop.in_loop_thread():
            for lst in listeners:  # also one paused (unregistered) after running out of fds
                lst.close()
        self._loop.stop(timeout=3.0)
        if not self._loop.running:
            for lst in listeners:
                lst.close()

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
        as long as this node does (see :meth:`clear_latch`). Once a topic is latched,
        every later send on it from this node updates the latched value.
        Raises NodeClosed after close(), CodecError if ``data`` cannot be encoded.
        """
        if self._closing:
            raise NodeClosed(f"node {self.name!r} is closed")
        if topic not in self._published:
            self._note_published(topic)
        if latch or (self._latched and topic in self._latched):
            self._send_latched(topic, data)  # a latched topic keeps its newest value
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
        if topic not in self._published:
            self._note_published(topic)
        nodes = self._topology.listeners(topic)
        if nodes:
            self._send_encoded(topic, nodes, codec, data)

    def _note_published(self, topic: str) -> None:
        """A first send on ``topic``: add it to our record. The record goes to the
        coordinator from the I/O thread, so send() never waits for it."""
        with self._lock:
            self._published = self._published | {topic}
        self._loop.call_soon(self._republish)

    def _republish(self) -> None:
        """(I/O thread) Record our own record locally and tell the coordinator."""
        if not self._closing:
            with self._lock:
                self._publish_self()

    def _send_encoded(self, topic: str, nodes: Any, codec_id: int, body: Any) -> None:
        if type(body) is not bytes:
            # A bytearray or memoryview could change after send() returns (it may sit in a
            # queue), and len() of a typed memoryview counts items, not bytes.
            body = bytes(body)
        name = topic.encode("utf-8")
        blen = len(body)
        if blen > self.max_message_size:
            raise MeshError(
                f"a message of {blen} bytes on topic {topic!r} is larger than max_message_size"
                f" ({self.max_message_size}); receivers would refuse it"
            )
        # The frame, built inline (this is the hot path; see protocol/frames.py for the layout).
        head = _pack_header(TOPIC, codec_id, len(name), blen, 0)
        bufs = [head + name + body] if blen < JOIN_LIMIT else [head + name, body]
        nbytes = 16 + len(name) + blen
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
        if type(body) is not bytes:
            body = bytes(body)
        # Sent while holding _latch_lock, like _check_latched's deliveries, so a late
        # joiner never gets an older latched value after a newer one.
        with self._latch_lock:
            nodes = self._topology.listeners(topic)
            entry = self._latched.get(topic)
            served = (entry[2] if entry else set()) | {n.id for n in nodes}
            self._latched[topic] = [self._codec_id, body, served]
            if nodes:
                self._send_encoded(topic, nodes, self._codec_id, body)
            else:
                self._counters["no_listener"] += 1

    def clear_latch(self, topic: str) -> None:
        """Forget the latched value of ``topic`` (late listeners no longer get it)."""
        with self._latch_lock:
            self._latched.pop(topic, None)

    def _check_latched(self, removed: tuple[str, ...] = ()) -> None:
        """After a topology change: give latched values to listeners that are new.
        ``removed``: ids of nodes that left the mesh (they count as new if they return).
        Never called while holding self._lock (lock order: _latch_lock, then _lock)."""
        if not self._latched or self._closing:
            return
        with self._latch_lock:
            present = self._topology.nodes
            for topic, entry in self._latched.items():
                codec_id, body, served = entry
                served.difference_update(removed)
                listeners = self._topology.listeners(topic)
                for node in listeners:
                    if node.id not in served:
                        self._send_one(topic, node, codec_id, body)
                # Nodes missing from the topology keep their mark (a restarted coordinator
                # lists nodes as they come back); nodes present but not listening lose it.
                entry[2] = {n.id for n in listeners} | {i for i in served if i not in present}

    def _send_one(self, topic: str, node: NodeInfo, codec_id: int, body: bytes) -> None:
        name = topic.encode("utf-8")
        if node.id == self.id:
            self._deliver_local(name, codec_id, body)
            return
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
        check_name(topic, "topic")
        if not callable(callback):
            raise TypeError("callback must be callable as callback(topic, data)")
        listener = TopicListener(
            self,
            topic,
            callback,
            raw,
            workers if threaded else 0,
            queue_size or self.queue_size,
            queue_bytes,
        )
        name = topic.encode("utf-8")
        with self._lock:
            entry = self._topics.get(name)
            if entry is None:
                entry = self._topics[name] = TopicEntry(topic)
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
        with self._lock:
            return sorted(e.topic for e in self._topics.values() if e.sinks)

    def has_listeners(self, topic: str) -> bool:
        """Whether any node in the mesh (this one included) listens to ``topic``."""
        return bool(self._topology.listeners(topic))

    def wait_for_listener(self, topic: str, timeout: float | None = None) -> None:
        """Block until some node listens to ``topic``. Raises RequestTimeout (a
        TimeoutError) after ``timeout`` seconds (None: wait forever), NodeClosed."""
        self._wait_topology(
            lambda: self._topology.listeners(topic), timeout, f"no listener for topic {topic!r}"
        )

    def topic(self, name: str, *, latch: bool = False) -> Topic:
        """A handle for sending to one topic often; ``latch=True`` latches every send."""
        check_name(name, "topic")
        return Topic(self, name, latch)

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
        check_name(name, "service")
        if not callable(handler):
            raise TypeError("handler must be callable as handler(data)")
        svc = ServiceEntry(self, name, handler, workers if threaded else 0, queue_size)
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
        self._wait_topology(
            lambda: self._topology.providers(name), timeout, f"no provider for service {name!r}"
        )

    def request(self, service: str, data: Any, timeout: float | None = None) -> Any:
        """Call ``service`` with ``data`` and return its result.

        ``timeout`` in seconds; None means the node's ``request_timeout`` (60 s);
        ``math.inf`` waits forever (a lost connection still fails the call).
        Raises NoProviderError (nobody provides it), RequestTimeout (a TimeoutError),
        ServiceError (the handler raised; see ``remote_traceback``), ConnectionLost
        (the provider went away), NodeClosed, CodecError.
        """
        t = self.request_timeout if timeout is None else timeout
        waiter = Waiter()
        rid = self._start_request(service, data, None, waiter)[0]
        if not waiter.wait(None if math.isinf(t) else t):
            if self._pending.pop(rid, None) is not None:
                raise RequestTimeout(f"service {service!r} did not answer within {t:g} s")
            waiter.wait(None)  # completed at this very moment: its result is being set
        if waiter.error is not None:
            raise waiter.error
        return waiter.result

    def request_future(self, service: str, data: Any, timeout: float | None = None) -> Future:
        """Start a request and return a ``concurrent.futures.Future`` for its result at once.

        The future fails with RequestTimeout after ``timeout`` seconds (None: the
        node's ``request_timeout``), or with the errors :meth:`request` raises.
        Done-callbacks run on the node's I/O thread: keep them short.
        Raises NoProviderError, NodeClosed, CodecError immediately.
        """
        t = self.request_timeout if timeout is None else timeout
        return self._start_request(service, data, t, Future())[1]  # type: ignore[return-value]

    def service(self, name: str) -> Service:
        """A handle for calling one service often."""
        check_name(name, "service")
        return Service(self, name)

    def _start_request(
        self, service: str, data: Any, timeout: float | None, future: Future | Waiter
    ) -> tuple[int, Future | Waiter]:
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
        name = service.encode("utf-8")
        self._counters["requests"] += 1
        if node.id == self.id:
            svc = self._services.get(name)
            if svc is None:
                raise NoProviderError(f"no node provides service {service!r}")
            self._pending[rid] = Pending(future, None, service, self.id)
            request = _new_frame(Frame, (REQUEST, self._codec_id, name, rid, body))
            if not svc.dispatcher.put((request, _LOCAL), 0):
                self._refuse(svc, rid, None)  # fails the future at once
        else:
            conn = self._peers.get(node.id) or self._peer_conn(node)
            if conn is None:
                raise ConnectionLost(
                    f"cannot reach node {node.name!r} ({node.id}) providing {service!r}"
                )
            self._pending[rid] = Pending(future, conn, service, node.id)
            bufs = encode_frame(REQUEST, name, body, self._codec_id, rid)
            if not conn.send(bufs, 16 + len(name) + len(body), False):
                self._pending.pop(rid, None)
                raise ConnectionLost(f"connection to node {node.name!r} is closed")
        if timeout is not None and not math.isinf(timeout):
            self._arm_deadline(rid, timeout)
        return rid, future

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

    def nodes(self) -> list[NodeInfo]:
        """The mesh as this node knows it (NodeInfo records, this node included)."""
        return sorted(self._topology.nodes.values(), key=lambda n: (n.name, n.id))

    def stats(self) -> dict[str, Any]:
        """Counters: messages sent, dropped on the way out (per peer bound) or in
        (per listener bound), per topic, per service and per peer connection."""
        with self._lock:
            topics = {
                e.topic: e.listener.dispatcher.stats() for e in self._topics.values() if e.listener
            }
            services = {s.name: s.dispatcher.stats() for s in self._services.values()}
            conns = list(self._conns)
        peers = {}
        dropped_out = self._counters["dropped_outbound"]
        for c in conns:
            key = f"{c.peer_name or '?'}:{c.peer_id or c.peer_address}"
            peers[key] = {
                "state": c.state,
                "pending_bytes": c.pending_bytes,
                "dropped": c.dropped,
                "frames_in": c.frames_in,
                "frames_out": c.frames_out,
            }
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


def build_node(name: str, **kwargs: Any) -> Node:
    """``Node(name, **kwargs)`` (the seed's spelling)."""
    return Node(name, **kwargs)


build_mesh_node = build_node
