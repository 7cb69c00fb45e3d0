"""The assembly of a node: builds its parts, connects them, and runs its lifecycle.

:class:`~easymesh.node.Node` is the public face; this is the composition root
behind it. It creates each part with the few collaborators that part needs (as
callables, so no part imports another part's owner), holds the callbacks that
pass events between parts (a topology change reaches the view, the latch store and
the router; a change of the node's own record reaches the view and the coordinator
client), and owns the node's lifecycle: starting, closing in a bounded time, and
failing loudly if the I/O thread dies. It holds no table of its own.
"""

from __future__ import annotations

import atexit
import logging
import os
import socket
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from easymesh import config
from easymesh.caller import Caller
from easymesh.coordclient import CoordinatorClient
from easymesh.decoder import Decoder
from easymesh.errors import NodeClosed
from easymesh.escape import printable
from easymesh.loadbalancing import resolve_load_balancer
from easymesh.protocol.codecs import PICKLE_ID
from easymesh.protocol.messages import Diff, NodeInfo, Welcome
from easymesh.publisher import Publisher
from easymesh.registry import Registry, Snapshot
from easymesh.router import PEER_RETIRE_GRACE, Router
from easymesh.servicehost import ServiceHost
from easymesh.shmhub import ShmHub
from easymesh.transport.connection import Connection
from easymesh.transport.listener import host_key
from easymesh.transport.loop import IOLoop, shared_loop
from easymesh.view import TopologyView

__all__ = ["Parts", "Settings", "track", "untrack"]

log = logging.getLogger("easymesh.node")

_open: set[Any] = set()  # nodes of this process not yet closed (strong refs: see below)


def track(node: Any) -> None:
    """Close ``node`` at interpreter exit unless it was closed before. Held strongly: a
    node dropped without ``close()`` keeps running (its threads and sockets) and must
    still deliver what it sent."""
    _open.add(node)


def untrack(node: Any) -> None:
    _open.discard(node)


@atexit.register
def _close_at_exit() -> None:
    """A script that ends without ``close()`` still delivers what it sent: every node
    still open closes (with its linger) when the interpreter exits, as ``with Node()``
    would have done."""
    for node in list(_open):
        node.close()


def _forget_after_fork() -> None:
    # A forked child has copies of its parent's nodes but none of their threads, and
    # shares their sockets: closing them there would write into the parent's streams.
    _open.clear()


os.register_at_fork(after_in_child=_forget_after_fork)


@dataclass(frozen=True)
class Settings:
    """What ``Node()`` was asked for, checked and resolved (see ``Node`` for each)."""

    name: str
    node_id: str
    coordinator: str
    authkey: bytes | None
    codec: Any
    accept_codecs: Iterable[Any] | None
    load_balancer: Any
    heartbeat_interval: float
    heartbeat_timeout: float
    request_timeout: float
    max_message_size: int
    max_pending_bytes: int
    max_in_flight: int
    bind_host: str | None
    socket_dir: str | None
    transport: str
    watch: str = "needed"  # or "all"
    shm: bool = True
    shm_threshold: int = 256 * 1024
    shm_pool_size: int = 256 * 1024 * 1024


class Parts:
    """One node's parts, wired together, and its lifecycle."""

    def __init__(self, cfg: Settings) -> None:
        if cfg.watch not in ("needed", "all"):
            raise ValueError("watch must be 'needed' or 'all'")
        name, node_id = cfg.name, cfg.node_id
        self.name = name
        self.id = node_id
        self._bind_host = cfg.bind_host
        self._hostname = socket.gethostname()
        self._host_key = host_key()
        self.closing = False
        self._close_started = False
        self.close_reason: BaseException | None = None
        self._close_lock = threading.Lock()
        self.closed = threading.Event()
        self.decoder = Decoder(cfg.codec, cfg.accept_codecs, name)
        balancer = resolve_load_balancer(cfg.load_balancer)
        self.loop = self._make_loop(name)
        self._loop_started = False
        in_io = self.loop.in_loop_thread
        self.view = TopologyView(in_io, watch_all=cfg.watch == "all", later=self.loop.call_soon)
        self.shm = ShmHub(
            enabled=cfg.shm and cfg.transport == "auto" and self.decoder.codec_id == PICKLE_ID,
            threshold=cfg.shm_threshold, pool_size=cfg.shm_pool_size, node_name=name,
            call_soon=lambda fn, *args: self.loop.call_soon(fn, *args),  # none once closed
        )  # fmt: skip
        self.registry = Registry(self._record_changed)
        self.host = ServiceHost(
            name, self.registry, self.decoder, lambda *answer: self.caller.complete_local(*answer),
            self.shm,
        )  # fmt: skip
        self.router = Router(
            loop=self.loop, node_name=name, node_id=node_id, authkey=cfg.authkey,
            use_unix=cfg.transport == "auto", host_key=self._host_key,
            max_message_size=cfg.max_message_size, max_pending_bytes=cfg.max_pending_bytes,
            socket_dir=cfg.socket_dir, stall_timeout=cfg.heartbeat_timeout, decoder=self.decoder, entry=self.registry.entry,
            on_requests=self.host.on_requests, shm=self.shm,
        )  # fmt: skip
        self.caller = Caller(
            node_name=name, node_id=node_id, view=self.view, registry=self.registry,
            host=self.host, decoder=self.decoder, balancer=balancer,
            link_to=self.router.link_to, links=self.router.links, call_later=self.loop.call_later,
            in_io_thread=in_io,
            request_timeout=cfg.request_timeout, max_in_flight=cfg.max_in_flight, shm=self.shm,
        )  # fmt: skip
        self.router.answers_to(self.caller.on_answers, self.caller.fail_link)
        self.publisher = Publisher(
            node_id=node_id, view=self.view, registry=self.registry, decoder=self.decoder,
            balancer=balancer, link_to=self.router.link_to, links=self.router.links,
            max_message_size=cfg.max_message_size, shm=self.shm,
        )  # fmt: skip
        self.coordinator = CoordinatorClient(
            loop=self.loop, address=cfg.coordinator, authkey=cfg.authkey, node_name=name,
            heartbeat_interval=cfg.heartbeat_interval, heartbeat_timeout=cfg.heartbeat_timeout,
            self_info=self.self_info, watch=self.view.watch, on_first_open=self._start_tcp,
            on_topology=self._on_topology, stall_timeout=cfg.heartbeat_timeout,
        )  # fmt: skip
        self.view.on_interest = self.coordinator.send_update

    def _make_loop(self, name: str) -> IOLoop:
        """Every node of the process on one I/O thread (``transport/loop.py`` says why),
        unless ``EASYMESH_IO_LOOP=own``."""
        if config.io_loop() == "own":
            return IOLoop(name, on_crash=self._on_io_crash)
        return shared_loop(name, on_crash=self._on_io_crash)

    def start(self, connect_timeout: float) -> None:
        """Bind, start the I/O thread, join the mesh (the caller's thread).

        The I/O thread starts only once its first work is queued (the Unix listener, the
        first attempt to reach the coordinator): it runs both as soon as it starts instead
        of going to sleep and being woken for them, one sleep and wake-up less per
        ``Node()`` (issue 15: in a join storm each costs a GIL hand-over among a hundred
        threads)."""
        try:
            self.router.start()
            self.view.set_local(self.self_info())
            self.coordinator.connect(connect_timeout, start_loop=self._start_loop)
        except BaseException:
            self.coordinator.stop()
            if not self._loop_started:
                self._start_loop()  # it owns sockets (its wake-up pair, the listener): it closes them
            self._shutdown_loop()
            raise

    def _start_loop(self) -> None:
        self._loop_started = True
        self.loop.start()

    # -- callbacks between the parts -------------------------------------------------------

    def self_info(self, snapshot: Snapshot | None = None) -> NodeInfo:
        """This node's record, as it stands."""
        s = snapshot or self.registry.snapshot()
        return NodeInfo(
            id=self.id,
            name=self.name,
            hostname=self._hostname,
            host_key=self._host_key,
            tcp=self.router.tcp_endpoint,
            unix=self.router.unix_endpoint,
            topics=s.topics,
            services=s.services,
            publishes=s.publishes,
            pid=os.getpid(),
        )

    def _record_changed(self, snapshot: Snapshot) -> None:
        """(registry lock held) Our record changed: the view first, then the coordinator."""
        self.view.set_local(self.self_info(snapshot))
        self.coordinator.send_update()
        if self.publisher.latches:
            self.loop.call_soon(self.publisher.catch_up_latched)

    def _start_tcp(self, coordinator_link: Connection) -> None:
        """(I/O thread) Listen for TCP peers on the address that reaches the coordinator."""
        sock = coordinator_link.sock
        ip = self._bind_host or (sock.getsockname()[0] if sock is not None else "127.0.0.1")
        self.router.start_tcp(ip)
        self.view.set_local(self.self_info())

    def _on_topology(self, msg: Welcome | Diff) -> bool:
        """(I/O thread) The coordinator told us of a change; False while a Welcome is
        still arriving in parts."""
        if not self.view.apply(msg):
            return False
        removed = msg.remove if isinstance(msg, Diff) else ()
        self.publisher.release_held()
        self.publisher.catch_up_latched(removed)
        for node_id in removed:
            # Messages it sent just before leaving may still be in our socket: read them
            # first. A node that really left closes its side long before the grace ends.
            self.router.forget(node_id)
            self.loop.call_later(PEER_RETIRE_GRACE, self._retire, node_id)
        return True

    def _retire(self, node_id: str) -> None:
        self.router.retire(node_id, gone=node_id not in self.view.nodes)

    # -- lifecycle -------------------------------------------------------------------------

    def check_open(self) -> None:
        if self.closing:  # a new NodeClosed each time (see Publisher.stop)
            raise NodeClosed(str(self.close_reason or f"node {self.name!r} is closed"))

    def own_thread(self) -> bool:
        """Whether the calling thread is one of this node's (I/O, workers, futures)."""
        return (
            self.loop.in_loop_thread()
            or self.registry.owns_current_thread()
            or self.caller.owns_current_thread()
        )

    def _on_io_crash(self, exc: BaseException) -> None:
        """The I/O thread died: fail loudly, never hang. The node closes itself with the
        reason, so that every wait ends with it: pending requests, ``forever()``,
        subscriptions and ``wait_for_message`` included (runs on the dying I/O thread,
        before its sockets close: no flush, the Bye still leaves)."""
        reason = NodeClosed(f"node {self.name!r} failed: its I/O thread died ({exc!r})")
        # The thread may be shared: each node on it logs that it failed (the thread logged why).
        log.error("easymesh: %s", printable(reason, 300))
        with self._close_lock:
            self.closing = True
            self.close_reason = reason
            self.publisher.stop(reason)  # at once, like the flag (close() repeats it)
        self.close(0.0)

    def close(self, linger: float) -> None:
        """See ``Node.close``: flush (up to ``linger``), say goodbye, fail what is pending,
        stop every worker pool together (2 s), stop the I/O thread."""
        with self._close_lock:
            already, self._close_started = self._close_started, True
            self.closing = True
            if self.close_reason is None:
                self.close_reason = NodeClosed(f"node {self.name!r} is closed")
            self.publisher.stop(self.close_reason)
        if already:
            if not self.own_thread():
                self.closed.wait(10.0)
            return
        in_io = self.loop.in_loop_thread()
        if not in_io:
            self.router.wait_flushed(time.monotonic() + max(0.0, linger))
        self.router.begin_close()
        self.coordinator.leave(wait=not in_io)
        self.view.close(self.close_reason)
        deadline = time.monotonic() + 2.0
        self.caller.close(self.close_reason, deadline)
        self.registry.close(deadline)
        self._shutdown_loop()
        self.shm.close()
        self.closed.set()

    def _shutdown_loop(self) -> None:
        self.closing = True
        if self.loop.in_loop_thread():
            self.router.close_listeners()  # also one paused after running out of fds
        self.loop.stop(timeout=3.0)
        if not self.loop.running:
            self.router.close_listeners()
