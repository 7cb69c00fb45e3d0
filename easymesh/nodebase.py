"""The state every part of a Node shares, declared once.

A Node is assembled from mixins so that no module grows past a few hundred lines:
:class:`~easymesh.uplink.CoordinatorLink` (topology, coordinator link),
:class:`~easymesh.peers.PeerLinks` (peer links, routing, requests and replies) and
:class:`~easymesh.node.Node` itself (the public API). :class:`NodeBase` declares
the attributes they share (``Node.__init__`` assigns them) and the methods one part
calls on another, for readers and type checkers; it holds no behaviour.
"""

from __future__ import annotations

import itertools
import threading
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import socket

    from easymesh.dispatch import Dispatcher
    from easymesh.peers import Pending
    from easymesh.protocol.topology import Topology
    from easymesh.transport.connection import Connection
    from easymesh.transport.listener import Listener
    from easymesh.transport.loop import IOLoop
    from easymesh.workers import ServiceEntry, TopicEntry


class NodeBase:
    # identity and settings
    name: str
    id: str
    coordinator: str
    heartbeat_interval: float
    heartbeat_timeout: float
    request_timeout: float
    linger: float
    max_message_size: int
    max_pending_bytes: int
    queue_size: int
    _codec: Any
    _codec_id: int
    _balancer: Any
    _authkey: bytes | None
    _bind_host: str | None
    _use_unix: bool
    _host_key: str
    _hostname: str
    # threads and locks (lock order: _latch_lock, then _lock, then _topo_lock)
    _loop: IOLoop
    _lock: threading.RLock
    _topo_lock: threading.Lock
    _topo_cond: threading.Condition
    _latch_lock: threading.Lock
    _spin_cond: threading.Condition
    # what this node serves
    _topics: dict[bytes, TopicEntry]
    _services: dict[bytes, ServiceEntry]
    _spinnable: list[Dispatcher]
    _latched: dict[str, list[Any]]
    _published: frozenset[str]
    # the mesh
    _topology: Topology
    _peers: dict[str, Connection]
    _conns: set[Connection]
    _retry_after: dict[str, float]
    _unix: Listener
    _unix_endpoint: str
    _tcp: Listener | None
    _tcp_endpoint: str
    # requests
    _pending: dict[int, Pending]
    _rid: itertools.count[int]
    _deadlines: list[tuple[float, int, float]]
    _deadline_lock: threading.Lock
    _sweep_armed: bool
    # lifecycle and the coordinator link
    _closing: bool
    _closed: threading.Event
    _coord: Connection | None
    _coord_ready: bool
    _coord_sockaddr: tuple[int, Any] | None
    _reconnect_delay: float
    _attempt_done: threading.Event
    _attempt_error: BaseException | None
    _welcomed: bool
    _counters: dict[str, int]

    if TYPE_CHECKING:

        def _check_open(self) -> None: ...

        def _check_latched(self, removed: tuple[str, ...] = ()) -> None: ...

        def _on_accept(self, sock: socket.socket, addr: Any) -> None: ...

        def _decode_failed(self, codec_id: int, exc: Exception, topic: str) -> None: ...

        def _self_info(self) -> Any: ...

        def _decode_or_raise(self, codec_id: int, body: Any) -> Any: ...

        def _publish_self(self) -> None: ...


def check_name(name: Any, what: str) -> None:
    if not isinstance(name, str) or not name:
        raise ValueError(f"a {what} name must be a non-empty string")
    if len(name.encode("utf-8")) > 1024:
        raise ValueError(f"a {what} name must be at most 1024 bytes")
