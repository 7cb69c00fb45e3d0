"""Node: the object a user holds. A thin facade that wires the node's parts together.

The parts (see docs/architecture.md for who owns what, the lock order and the
paths of a message, a request and a topology change):

* :class:`~easymesh.view.TopologyView` — the mesh as this node knows it; waits;
* :class:`~easymesh.registry.Registry` — this node's listeners, subscriptions,
  services, published topics, and the thread-less queues ``spin_once`` runs;
* :class:`~easymesh.router.Router` — the links to peers, and what arrives on them;
* :class:`~easymesh.publisher.Publisher` — sending topics, latched values
  (:class:`~easymesh.latch.LatchStore`);
* :class:`~easymesh.caller.Caller` — requests and pings, over the
  :class:`~easymesh.requests.RequestTable`;
* :class:`~easymesh.servicehost.ServiceHost` — runs handlers, sends replies;
* :class:`~easymesh.coordclient.CoordinatorClient` — register, heartbeat,
  reconnect, topology diffs;
* :class:`~easymesh.decoder.Decoder` — the node's codec and the codecs it accepts.

The Node holds no table of its own: each part owns its state and its lock and gets
the few collaborators it needs as callables. Threads: one I/O thread, shared by every
node of the process (``easymesh-io``; see easymesh/transport/loop.py), owns the sockets
and never runs user code; each listener and
service has its worker pool; request futures are completed on ``easymesh-<name>-futures``.
"""

from __future__ import annotations

import socket
import time
import uuid
from collections.abc import Callable, Iterable
from concurrent.futures import Future
from typing import Any

from easymesh import assembly, config, signals
from easymesh.assembly import Parts, Settings
from easymesh.config import format_address
from easymesh.errors import WouldDeadlock
from easymesh.handles import RawMessage, Service, Topic  # noqa: F401 - RawMessage re-exported
from easymesh.protocol.messages import NodeInfo
from easymesh.registry import check_name
from easymesh.subscription import Subscription
from easymesh.workers import ServiceEntry, TopicListener

__all__ = ["Node", "build_node", "build_mesh_node"]
_HOT_PATHS = (("send", "_publisher"), ("request", "_caller"), ("request_future", "_caller"))


def _check_args(name: Any, transport: str) -> None:
    if not isinstance(name, str) or not name or len(name) > 256:
        raise ValueError("a node name must be a non-empty string of at most 256 characters")
    if transport not in ("auto", "tcp"):
        raise ValueError("transport must be 'auto' or 'tcp'")


class Node:
    """A member of the mesh. Connects, authenticates and registers before returning.

    Arguments (all but ``name`` keyword-only):

    ``name``: nodes that share a name form a load-balancing group.
    ``coordinator``: ``'host:port'`` or ``'host'`` (port 6374); default
    ``$EASYMESH_COORDINATOR``, else ``localhost:6374``.
    ``authkey``: bytes or str shared by the whole mesh; default ``$EASYMESH_AUTHKEY``.
    ``codec``: ``'pickle'`` (default), ``'msgpack'``, ``'json'``, ``'raw'`` or an
    object with ``encode``/``decode`` (see protocol/codecs.py).
    ``accept_codecs``: the codecs this node decodes when peers send them (names, ids or
    codec objects; its own codec always). Default: all of them if ``codec`` is pickle,
    else all but pickle (see decoder.py). Frames in other codecs are dropped unread.
    ``load_balancer``: ``'round-robin'`` (default), ``'random'``, ``None`` (every
    listener gets every message) or an object (see loadbalancing.py).
    ``connect_timeout``: seconds to keep trying to reach the coordinator (10).
    ``heartbeat_interval``: seconds between heartbeats to the coordinator (1).
    ``request_timeout``: what ``timeout=None`` means for requests (60 s).
    ``linger``: seconds ``close()`` waits for queued messages to leave (2).
    ``max_message_size``: largest frame body accepted from a peer (256 MiB).
    ``max_pending_bytes``: bound on bytes queued towards one peer (32 MiB).
    ``max_in_flight``: requests that may wait for an answer at once (100,000).
    ``queue_size``: default bound of each listener's queue (10,000 messages).
    ``host``: IP to bind and advertise for TCP; default: the address this
    machine uses to reach the coordinator.
    ``socket_dir``: folder for the Unix socket (default: Linux abstract namespace).
    ``transport``: ``'auto'`` (Unix socket to peers on this host, TCP to others) or
    ``'tcp'`` (always TCP; for testing and benchmarks).
    ``watch``: ``'needed'`` (default): the node learns only of the listeners of topics it
    sends to or waits for and the providers of services it calls or waits for (a join
    storm costs it nothing it does not use); ``'all'``: of every node (tools, bridges).
    ``shm``: send large buffers (numpy arrays, bytes... of at least ``shm_threshold``, 256 KiB)
    to peers on this host through shared memory: written once, received without a copy as
    read-only views (README, "Large messages"). Silently the socket path on TCP links, other
    OSes, a codec other than pickle, or ``shm=False``. On by default: small messages cost the
    same (a link carries one 16-byte offer), large ones are written once instead of through
    each socket. ``shm_pool_size``: the bound (256 MiB).

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
        accept_codecs: Iterable[Any] | None = None,
        load_balancer: Any = "round-robin",
        connect_timeout: float = config.DEFAULT_CONNECT_TIMEOUT,
        heartbeat_interval: float = config.DEFAULT_HEARTBEAT_INTERVAL,
        request_timeout: float = config.DEFAULT_REQUEST_TIMEOUT,
        linger: float = config.DEFAULT_LINGER,
        max_message_size: int = config.DEFAULT_MAX_MESSAGE_SIZE,
        max_pending_bytes: int = config.DEFAULT_MAX_PENDING_BYTES,
        max_in_flight: int = config.DEFAULT_MAX_IN_FLIGHT,
        queue_size: int = config.DEFAULT_QUEUE_SIZE,
        host: str | None = None,
        socket_dir: str | None = None,
        transport: str = "auto",
        watch: str = "needed",
        shm: bool = True,
        shm_threshold: int = 256 * 1024,
        shm_pool_size: int = 256 * 1024 * 1024,
    ) -> None:
        _check_args(name, transport)
        self.name = name
        self.id = uuid.uuid4().hex[:16]
        host_, port = config.coordinator_address(coordinator)
        self.coordinator = format_address(host_, port)
        self.heartbeat_interval = heartbeat_interval
        self.heartbeat_timeout = heartbeat_interval * config.HEARTBEAT_TIMEOUT_FACTOR
        self.request_timeout = request_timeout
        self.linger = linger
        self.max_message_size = max_message_size
        self.max_pending_bytes = max_pending_bytes
        self.queue_size = queue_size
        # Peers are told an IP address, never a name, so that nobody resolves names on a
        # hot path; a name given here is resolved once, now.
        bind_host = (
            str(socket.getaddrinfo(host, None, type=socket.SOCK_STREAM)[0][4][0]) if host else None
        )
        self._p = p = Parts(Settings(
            name=name, node_id=self.id, coordinator=self.coordinator,
            authkey=config.authkey_bytes(authkey), codec=codec, accept_codecs=accept_codecs,
            load_balancer=load_balancer, heartbeat_interval=heartbeat_interval,
            heartbeat_timeout=self.heartbeat_timeout, request_timeout=request_timeout,
            max_message_size=max_message_size, max_pending_bytes=max_pending_bytes,
            max_in_flight=max_in_flight, bind_host=bind_host, socket_dir=socket_dir,
            transport=transport, watch=watch, shm=shm, shm_threshold=shm_threshold,
            shm_pool_size=shm_pool_size,
        ))  # fmt: skip
        # The parts the public methods below talk to (the node holds no state of its own).
        self._view, self._registry, self._router = p.view, p.registry, p.router
        self._publisher, self._caller, self._host = p.publisher, p.caller, p.host
        self._decoder, self._loop = p.decoder, p.loop
        self._bind_hot_paths()
        p.start(connect_timeout)
        assembly.track(self)

    def _bind_hot_paths(self) -> None:
        """``send``, ``request``, ``request_future`` go straight to the part that does the work
        (one Python call less) unless the class has its own: a subclass's, a patch (mock)."""
        for name, part in _HOT_PATHS:
            if getattr(type(self), name) is _PLAIN[name] and name not in vars(self):
                setattr(self, name, getattr(getattr(self, part), name))

    # -- public: lifecycle -----------------------------------------------------------------

    def __enter__(self) -> Node:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<easymesh.Node {self.name!r} id={self.id} coordinator={self.coordinator}>"

    @property
    def closed(self) -> bool:
        return self._p.closing

    def close(self, linger: float | None = None) -> None:
        """Leave the mesh. Idempotent, bounded in time (about ``linger`` + 2.5 s in all,
        however many listeners and services), safe from any thread (a callback too).

        Waits up to ``linger`` seconds (default: the node's ``linger``) for messages
        already sent to leave, then fails every pending request with NodeClosed,
        stops all listeners' and services' workers together (they finish what is
        queued, within 2 s) and the I/O thread. Called from a thread of this node (a
        callback, a handler, a done-callback, the I/O thread) it never waits for that
        thread itself.
        """
        assembly.untrack(self)
        self._p.close(self.linger if linger is None else linger)

    def forever(self) -> None:
        """Block until :meth:`close`, Ctrl-C (SIGINT) or SIGTERM; then close cleanly."""
        restore = signals.install(lambda signum: self.close())
        try:
            while not self._p.closed.wait(signals.WAIT_SLICE):
                pass
        except KeyboardInterrupt:
            pass
        finally:
            restore()
            self.close()

    def _check_open(self) -> None:
        self._p.check_open()

    def _own_thread(self) -> bool:
        return self._p.own_thread()

    # -- public: topics --------------------------------------------------------------------

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
        self._publisher.send(topic, data, latch=latch)  # (bound directly: _bind_hot_paths)

    def loan(self, shape: Any, dtype: Any = None) -> Any:
        """A writable buffer in this node's shared memory, to fill and ``send`` with no copy:
        ``loan(nbytes)`` a memoryview, ``loan(shape, dtype)`` a numpy array. An ordinary
        buffer when shm is off or the pool is full. After sending it, do not write to it
        again: receivers that still hold the message would see the writes; loan a new one."""
        return self._p.shm.loan(shape, dtype)

    def send_raw(self, topic: str, codec: int, data: bytes | bytearray) -> None:
        """Send bytes already encoded with codec id ``codec`` (as a raw listener got them).
        Raises NodeClosed, TypeError/ValueError for a codec id that is not an int 0..255."""
        self._publisher.send_raw(topic, codec, data)

    def clear_latch(self, topic: str) -> None:
        """Forget the latched value of ``topic`` (late listeners no longer get it)."""
        self._publisher.latches.clear(topic)

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
        Listening again to the same topic replaces the callback: the new one starts
        once the old one finished what it had queued (never both at once).
        Raises NodeClosed, ValueError/TypeError on bad arguments.
        """
        self._check_open()
        check_name(topic, "topic")
        if not callable(callback):
            raise TypeError("callback must be callable as callback(topic, data)")
        listener = TopicListener(
            f"easymesh-{self.name}-{topic}",
            topic,
            callback,
            raw=raw,
            workers=workers if threaded else 0,
            queue_size=queue_size or self.queue_size,
            queue_bytes=queue_bytes,
            decoder=self._decoder,
            on_put=None if threaded else self._registry.wake_spinner,
            start=False,
        )
        old = self._registry.listen(listener)
        if old is not None and not self._own_thread():
            old.dispatcher.join(time.monotonic() + 1.0)

    def stop_listening(self, topic: str) -> None:
        """Stop the callback for ``topic`` (no-op if none). Messages already queued are
        still handled (bounded)."""
        old = self._registry.stop_listening(topic)
        if old is not None and not self._own_thread():
            old.dispatcher.join(time.monotonic() + 1.0)

    def listening_to(self) -> list[str]:
        """Topics this node listens to."""
        return self._registry.listening_to()

    def has_listeners(self, topic: str) -> bool:
        """Whether any node in the mesh (this one included) listens to ``topic``. The first
        question about a topic waits for the coordinator's answer (a round trip; at most 5 s)."""
        self._view.wait_known_topic(topic)
        return bool(self._view.listeners(topic))

    def wait_for_listener(self, topic: str, timeout: float | None = None) -> None:
        """Block until some node listens to ``topic``. Raises RequestTimeout (a
        TimeoutError) after ``timeout`` seconds (None: wait forever; 0 or less: check
        once), NodeClosed, WouldDeadlock (called on the node's I/O thread)."""
        self._view.wait_for_listener(topic, timeout)

    def topic(self, name: str, *, latch: bool = False) -> Topic:
        """A handle for sending to one topic often; ``latch=True`` latches every send."""
        check_name(name, "topic")
        self._view.want_topic(name)  # ask for its listeners now, before the first send
        return Topic(self, name, latch)

    # -- public: control loops -------------------------------------------------------------

    def subscribe(self, topic: str, queue_size: int = 1) -> Subscription:
        """Buffer the newest ``queue_size`` messages of ``topic`` for the caller to take
        (``latest()``, ``get()``, ``drain()``, iteration); never calls user code.
        Close it (or use ``with``) to stop. Raises NodeClosed, ValueError."""
        self._check_open()
        check_name(topic, "topic")
        sub = Subscription(topic, queue_size, self._decoder.decode, self._registry.unsubscribe)
        self._registry.subscribe(sub)
        return sub

    def wait_for_message(self, topic: str, timeout: float | None = None) -> Any:
        """The next message on ``topic`` (like rospy's ``wait_for_message``).
        Raises RequestTimeout (a TimeoutError) after ``timeout`` seconds (None: forever),
        NodeClosed / SubscriptionClosed if the node closes meanwhile."""
        if self._loop.in_loop_thread():
            raise WouldDeadlock("wait_for_message() on the node's I/O thread would never end")
        with self.subscribe(topic, queue_size=1) as sub:
            return sub.get(timeout)

    def spin_once(self, timeout: float | None = 0.0) -> int:
        """Run the queued calls of ``threaded=False`` listeners and services in this
        thread; return how many ran. If none is queued, wait up to ``timeout`` seconds
        for one (0: do not wait; None: until one arrives or the node closes).
        Per listener, calls run in arrival order."""
        return self._registry.spin_once(timeout, lambda: self._p.closing)

    def spin(self) -> None:
        """Run queued ``threaded=False`` calls in this thread until :meth:`close`."""
        while not self._p.closing:
            self.spin_once(timeout=None)

    # -- public: services ------------------------------------------------------------------

    def add_service(
        self,
        name: str,
        handler: Callable[[Any], Any],
        *,
        workers: int = 4,
        queue_size: int = 1000,
        queue_bytes: int = config.DEFAULT_QUEUE_BYTES,
        threaded: bool = True,
    ) -> None:
        """Serve requests for ``name``: ``handler(data) -> result`` runs in this service's
        own worker threads (``workers`` at once; a request made from inside a handler
        works). When ``queue_size`` requests, or ``queue_bytes`` bytes of them, wait, new
        ones are refused with a ServiceError ("overloaded"); one request alone is always
        taken. Adding the same name again replaces the handler.
        With ``threaded=False`` requests wait until the owner calls :meth:`spin_once`
        / :meth:`spin`, and the handler runs in the owner's thread.
        Raises NodeClosed, ValueError/TypeError on bad arguments.
        """
        self._check_open()
        check_name(name, "service")
        if not callable(handler):
            raise TypeError("handler must be callable as handler(data)")
        svc = ServiceEntry(
            f"easymesh-{self.name}-{name}",
            name,
            handler,
            workers=workers if threaded else 0,
            queue_size=queue_size,
            queue_bytes=queue_bytes,
            serve=self._host.serve,
            discard=self._host.discard,
            on_put=None if threaded else self._registry.wake_spinner,
        )
        old = self._registry.add_service(svc)
        if old is not None and not self._own_thread():
            old.dispatcher.join(time.monotonic() + 1.0)

    def remove_service(self, name: str) -> None:
        """Stop providing ``name`` (no-op if not provided)."""
        old = self._registry.remove_service(name)
        if old is not None and not self._own_thread():
            old.dispatcher.join(time.monotonic() + 1.0)

    def has_service(self, name: str) -> bool:
        """Whether any node in the mesh (this one included) provides ``name`` (as has_listeners)."""
        self._view.wait_known_service(name)
        return bool(self._view.providers(name))

    def wait_for_service(self, name: str, timeout: float | None = None) -> None:
        """Block until some node provides ``name``. Raises RequestTimeout (a TimeoutError)
        after ``timeout`` seconds (None: wait forever; 0 or less: check once),
        NodeClosed, WouldDeadlock (called on the node's I/O thread)."""
        self._view.wait_for_provider(name, timeout)

    def request(self, service: str, data: Any, timeout: float | None = None) -> Any:
        """Call ``service`` with ``data`` and return its result.

        ``timeout`` in seconds; None means the node's ``request_timeout`` (60 s);
        ``math.inf`` waits forever (a lost connection still fails the call); 0 or a
        negative value leaves no time: RequestTimeout at once, nothing sent.
        Raises NoProviderError (nobody provides it), RequestTimeout (a TimeoutError),
        ServiceError (the handler raised; see ``remote_traceback``), ConnectionLost
        (the provider went away), NodeClosed, CodecError, TooManyRequests,
        WouldDeadlock (called where the answer could never arrive: the I/O thread,
        the thread that spins the ``threaded=False`` service it calls, or the only
        worker of the service it calls).
        """
        return self._caller.request(service, data, timeout)

    def request_future(self, service: str, data: Any, timeout: float | None = None) -> Future:
        """Start a request and return a ``concurrent.futures.Future`` for its result at once.

        The future fails with RequestTimeout after ``timeout`` seconds (None: the
        node's ``request_timeout``; 0 or less: at once), or with the errors
        :meth:`request` raises. It is completed, and its done-callbacks run, on the
        node's futures thread (``easymesh-<node>-futures``), never on the I/O thread.
        Raises NoProviderError, NodeClosed, CodecError, TooManyRequests immediately.
        """
        return self._caller.request_future(service, data, timeout)

    def service(self, name: str) -> Service:
        """A handle for calling one service often."""
        check_name(name, "service")
        self._view.want_service(name)
        return Service(self, name)

    def flush(self, timeout: float | None = None) -> bool:
        """Wait until every message already sent has been handed to the kernel (or its
        connection closed), up to ``timeout`` seconds (None: forever). True if all left.
        ``send()`` itself never waits; call this where you want back-pressure, e.g.
        before replaying a large file as fast as possible. Raises WouldDeadlock on the
        node's I/O thread (which is the one that writes the queues)."""
        if self._loop.in_loop_thread():
            raise WouldDeadlock("flush() on the node's I/O thread would never end")
        deadline = time.monotonic() + (1e9 if timeout is None else timeout)
        return self._router.wait_flushed(deadline)

    # -- public: introspection -------------------------------------------------------------

    def nodes(self) -> list[NodeInfo]:
        """The mesh as this node knows it (NodeInfo records, this node included): every node
        with ``watch='all'``, else the nodes it needs (see ``watch``)."""
        return sorted(self._view.nodes.values(), key=lambda n: (n.name, n.id))

    def ping(self, node: str, timeout: float = 5.0) -> float:
        """Round-trip time in seconds to ``node`` (a node id, or a name: one member of
        that group) over the mesh link, as the data would travel.

        Raises NoProviderError (no such node), RequestTimeout (no answer within
        ``timeout``), ConnectionLost, NodeClosed, WouldDeadlock (on the I/O thread).
        """
        return self._caller.ping(node, timeout)

    def stats(self) -> dict[str, Any]:
        """Counters: messages sent, dropped on the way out (per peer bound) or in
        (per listener bound), refused (codec not accepted), per topic, per service and
        per peer link."""
        topics, services = self._registry.stats()
        pub = self._publisher
        return {
            "name": self.name,
            "id": self.id,
            "sent": pub.sent.value,
            "requests": self._caller.requests.value,
            "no_listener": pub.no_listener.value,
            "dropped_outbound": pub.dropped.value + self._router.dropped_outbound(),
            "dropped_queue": sum(t["dropped"] for t in topics.values()),
            "received": sum(t["received"] for t in topics.values()),
            "decode_errors": self._decoder.errors.value,
            "refused_codec": self._decoder.refused.value,
            "unroutable": self._router.unroutable.value,
            "unmatched_answers": self._caller.unmatched.value,
            "topics": topics,
            "services": services,
            "peers": self._router.stats(),
            "shm": self._p.shm.stats(),
        }


def build_node(name: str, **kwargs: Any) -> Node:
    """``Node(name, **kwargs)`` (the seed's spelling)."""
    return Node(name, **kwargs)


build_mesh_node = build_node
_PLAIN = {name: vars(Node)[name] for name, _ in _HOT_PATHS}  # as defined, unpatched
