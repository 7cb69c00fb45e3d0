"""The publisher: this node's side of topics (``send``, ``send_raw``, latched values).

Path of a topic message: the sending thread asks the topology view for the
listeners (a lock-free cached lookup), encodes once, lets the load balancer pick
one member of each listening group, and writes the frame to each chosen peer's
link itself (the router's link; the connection writes at once when nothing is
queued, see transport/connection.py). A listener in this very node gets the frame
through the registry without any socket. The first send on a topic records it
as published (the record reaches the coordinator asynchronously: ``send`` never
waits for it).

A node learns the listeners of a topic only once it asks (issue 15: nodes are told only
what they need, see :mod:`easymesh.view`). The first send on a topic asks; until the
coordinator has answered, messages for that topic with no known listener are *held*
(encoded, at most ``HOLD_LIMIT`` per topic, the oldest dropped beyond that) instead of
counted as ``no_listener``; the answer (on the I/O thread, :meth:`Publisher.release_held`)
sends them to the listeners it names, or counts them then. ``send`` still never waits.
While a topic has held messages, later sends on it go through the same lock, so they
never overtake the held ones.

Large messages to same-host peers (:mod:`easymesh.shmhub`): when the node shares memory
(``ShmHub.ready``) and ``data`` holds a large buffer (``ShmHub.inband`` finds it while pickling, and
returns the ordinary body otherwise), the chosen receivers are split:
those whose link accepts shared memory get one ``pickle-shm`` encoding (buffers written once
into the pool; the same descriptor bytes to each of them), the others (TCP, this node itself)
the node's ordinary pickle body, as do links still negotiating (the first large message on
a link asks the peer for it: see the hub). Latched values always take the socket path.

Counters (exact from any thread): ``sent``, ``no_listener`` (sent while nobody
listened), ``dropped_outbound`` (a link refused the frame: its bound was full or
it could not be reached).
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable
from typing import Any

from easymesh import allocator
from easymesh.counters import Counter
from easymesh.decoder import Decoder
from easymesh.errors import CodecError, MeshError, NodeClosed
from easymesh.latch import LatchStore
from easymesh.loadbalancing import single_is_chosen
from easymesh.protocol.codecs import PICKLE_SHM_ID
from easymesh.protocol.frames import HEADER, JOIN_LIMIT, TOPIC, Frame, encode_frame
from easymesh.protocol.messages import NodeInfo
from easymesh.registry import Registry
from easymesh.shmhub import ShmHub
from easymesh.view import TopologyView

__all__ = ["Publisher"]

#: Messages held per topic while the coordinator has not said who listens to it.
HOLD_LIMIT = 64

_new_frame = tuple.__new__
_pack_header = HEADER.pack


class Publisher:
    """Sends this node's topic messages (thread-safe)."""

    def __init__(
        self,
        *,
        node_id: str,
        view: TopologyView,
        registry: Registry,
        decoder: Decoder,
        balancer: Any,
        link_to: Callable[[NodeInfo], Any],
        links: dict[str, Any],
        max_message_size: int,
        shm: ShmHub | None = None,
    ) -> None:
        self.node_id = node_id
        self.view = view
        self._listeners = view.listeners  # bound once: the topology's cached lookup
        self.registry = registry
        self.decoder = decoder
        self._codec_id = decoder.codec_id
        self.balancer = balancer
        self._single_is_chosen = single_is_chosen(balancer)
        self.link_to = link_to
        self._links = links  # the router's table of dialled links, read lock-free
        self.max_message_size = max_message_size
        self.shm = shm if shm is not None and shm.enabled else None
        # Bodies at least this large are checked against the limit and tune malloc.
        self._large = min(allocator.LARGE_MESSAGE, max_message_size + 1)
        self.latches = LatchStore()
        self._latched = self.latches.topics
        self.sent = Counter()
        self.no_listener = Counter()
        self.dropped = Counter()
        self._held: dict[str, deque[tuple[int, Any]]] = {}  # topic -> (codec id, body)
        self._hold_lock = threading.Lock()
        self._stopped: str | None = None

    def stop(self, reason: BaseException) -> None:
        """The node is closing: every later send raises NodeClosed with ``reason``'s text (a
        new one each time: one instance raised again and again would chain every raise's
        frames onto its traceback, and keep what was sent alive)."""
        self._stopped = str(reason)

    def send(self, topic: str, data: Any, *, latch: bool = False) -> None:
        """``Node.send`` (bound to it directly: see ``Node._bind_hot_paths``)."""
        # The hot path: lock-free lookups, no Python call before encoding that a message
        # to known listeners does not need.
        if self._stopped is not None:
            raise NodeClosed(self._stopped)
        if topic not in self.registry.published:
            self._first_send(topic)
        if latch or topic in self._latched:
            self._send_latched(topic, data)  # a latched topic keeps its newest value
            return
        nodes = self._listeners(topic)
        if not nodes or self._held:
            if topic in self._held or (not nodes and not self.view.knows_topic(topic)):
                # held until the coordinator names the listeners: the ordinary encoding
                self._hold(topic, self._codec_id, self._encode(topic, data))
                return
            if not nodes:
                self.no_listener.incr()
                return
        shm = self.shm
        if shm is None or not shm.ready:
            self.send_encoded(topic, nodes, self._codec_id, self._encode(topic, data))
            return
        try:
            body = shm.inband(data, topic)  # a tuple: data holds a large buffer
        except MeshError:
            raise
        except Exception as exc:
            raise CodecError(f"cannot encode data for topic {topic!r}: {exc}") from exc
        if type(body) is tuple:
            self._send_shm(shm, topic, nodes, data, body[0])
        else:
            self.send_encoded(topic, nodes, self._codec_id, body)

    def _encode(self, topic: str, data: Any) -> Any:
        try:
            return self.decoder.encode(data)
        except Exception as exc:
            raise CodecError(f"cannot encode data for topic {topic!r}: {exc}") from exc

    def _first_send(self, topic: str) -> None:
        self.registry.publish(topic)
        self.view.want_topic(topic)

    def _send_shm(
        self, shm: ShmHub, topic: str, nodes: Any, data: Any, inline: bytes | None
    ) -> None:
        """One message to the chosen receivers: pickle-shm where the link accepts it (one
        encoding for all of them), the ordinary body elsewhere (``inline`` if inband() made
        it already)."""
        name = topic.encode("utf-8")
        targets = []
        for node in self.balancer.choose_nodes(topic, nodes):
            link = (
                None if node.id == self.node_id else self._links.get(node.id) or self.link_to(node)
            )
            targets.append((node, link, link is not None and shm.accepts(link)))
        enc = body = None
        try:
            if any(t[2] for t in targets):
                enc = shm.encode(data)
                self._check_size(topic, 16 + len(name) + enc.nbytes)
            if not all(t[2] for t in targets):
                body = bytes(self.decoder.encode(data) if inline is None else inline)
                self._check_size(topic, 16 + len(name) + len(body))
                if len(body) >= self._large:
                    allocator.tune()  # a large body through the socket (see send_encoded)
        except Exception as exc:
            if enc is not None:
                enc.close()
            if isinstance(exc, MeshError):
                raise
            raise CodecError(f"cannot encode data for topic {topic!r}: {exc}") from exc
        try:
            self._write_all(shm, name, targets, enc, body)
        finally:
            if enc is not None:
                enc.close()
        self.sent.incr()

    def _write_all(self, shm: ShmHub, name: bytes, targets: Any, enc: Any, body: Any) -> None:
        codec_id = self.decoder.codec_id
        bufs: Any = None
        for node, link, use_shm in targets:
            if use_shm:
                ok = shm.send(link, name, PICKLE_SHM_ID, enc)
            elif link is None and node.id == self.node_id:
                self.deliver_local(name, codec_id, body)
                continue
            elif link is None:
                ok = False
            else:
                if bufs is None:
                    bufs = encode_frame(TOPIC, name, body, codec_id)
                ok = link.send(bufs, 16 + len(name) + len(body), True)
            if not ok:
                self.dropped.incr()

    def _check_size(self, topic: str, nbytes: int) -> None:
        if nbytes - 16 > self.max_message_size:
            raise MeshError(
                f"a message of {nbytes - 16} bytes on topic {topic!r} is larger than"
                f" max_message_size ({self.max_message_size}); receivers would refuse it"
            )

    def send_raw(self, topic: str, codec_id: int, data: Any) -> None:
        if self._stopped is not None:
            raise NodeClosed(self._stopped)
        if not isinstance(codec_id, int) or isinstance(codec_id, bool):
            raise TypeError(f"the codec id must be an int, not {type(codec_id).__name__}")
        if not 0 <= codec_id <= 255:
            raise ValueError(f"the codec id must be in 0..255, not {codec_id}")
        if not self.registry.is_published(topic):
            self._first_send(topic)
        nodes = self.view.listeners(topic)
        if not nodes or self._held:
            if topic in self._held or (not nodes and not self.view.knows_topic(topic)):
                self._hold(topic, codec_id, data)
                return
        if nodes:
            self.send_encoded(topic, nodes, codec_id, data)
        else:
            self.no_listener.incr()

    # -- held messages (listeners not known yet) -------------------------------------------

    def _hold(self, topic: str, codec_id: int, body: Any) -> None:
        """Hold a message until the coordinator says who listens to ``topic``; if it
        already has (it answered meanwhile), send what is held and this one now."""
        if type(body) is not bytes:
            body = bytes(body)  # it may wait: a caller's buffer could change meanwhile
        if len(body) > self.max_message_size:
            raise MeshError(
                f"a message of {len(body)} bytes on topic {topic!r} is larger than"
                f" max_message_size ({self.max_message_size}); receivers would refuse it"
            )
        with self._hold_lock:
            if not self.view.knows_topic(topic):
                held = self._held.get(topic)
                if held is None:
                    held = self._held[topic] = deque()
                if len(held) >= HOLD_LIMIT:
                    held.popleft()
                    self.dropped.incr()
                held.append((codec_id, body))
                return
            if topic in self._held:
                self._release(topic)
            self._send_now(topic, codec_id, body)

    def release_held(self) -> None:
        """(I/O thread, after a topology change) Send or count the messages held for
        topics the coordinator has now answered."""
        if not self._held:
            return
        with self._hold_lock:
            for topic in list(self._held):
                if self.view.knows_topic(topic):
                    self._release(topic)

    def _release(self, topic: str) -> None:
        """(hold lock held) Send the held messages of ``topic``, then forget them."""
        for codec_id, body in self._held[topic]:
            self._send_now(topic, codec_id, body)
        del self._held[topic]

    def _send_now(self, topic: str, codec_id: int, body: Any) -> None:
        nodes = self.view.listeners(topic)
        if nodes:
            self.send_encoded(topic, nodes, codec_id, body)
        else:
            self.no_listener.incr()

    def send_encoded(self, topic: str, nodes: Any, codec_id: int, body: Any) -> None:
        if type(body) is not bytes:
            # A bytearray or memoryview could change after send() returns (it may sit in a
            # queue), and len() of a typed memoryview counts items, not bytes.
            body = bytes(body)
        name = topic.encode("utf-8")
        blen = len(body)
        if blen >= self._large:
            if blen > self.max_message_size:
                raise MeshError(
                    f"a message of {blen} bytes on topic {topic!r} is larger than"
                    f" max_message_size ({self.max_message_size}); receivers would refuse it"
                )
            allocator.tune()
        # The frame, built inline (this is the hot path; see protocol/frames.py for the layout).
        head = _pack_header(TOPIC, codec_id, len(name), blen, 0)
        bufs = [head + name + body] if blen < JOIN_LIMIT else [head + name, body]
        nbytes = 16 + len(name) + blen
        links = self._links
        if len(nodes) != 1 or not self._single_is_chosen:
            nodes = self.balancer.choose_nodes(topic, nodes)
        for node in nodes:
            if node.id == self.node_id:
                self.deliver_local(name, codec_id, body)
                continue
            link = links.get(node.id) or self.link_to(node)
            if link is None or not link.send(bufs, nbytes, True):
                self.dropped.incr()
        self.sent.incr()

    def deliver_local(self, name: bytes, codec_id: int, body: Any) -> None:
        entry = self.registry.entry(name)
        if entry is not None:
            entry.deliver(((_new_frame(Frame, (TOPIC, codec_id, name, 0, body)), len(body)),))

    # -- latched topics --------------------------------------------------------------------

    def _send_latched(self, topic: str, data: Any) -> None:
        try:
            body = self.decoder.encode(data)
        except Exception as exc:
            raise CodecError(f"cannot encode data for topic {topic!r}: {exc}") from exc
        if type(body) is not bytes:
            body = bytes(body)
        codec_id = self.decoder.codec_id
        nodes = self.latches.publish(
            topic,
            codec_id,
            body,
            self.view.listeners,
            lambda nodes: self.send_encoded(topic, nodes, codec_id, body),
        )
        if not nodes:
            self.no_listener.incr()

    def catch_up_latched(self, removed: tuple[str, ...] = ()) -> None:
        """(I/O thread) After a topology change: latched values to new listeners."""
        if self.latches:
            self.latches.catch_up(self.view.listeners, self.view.nodes, removed, self._send_one)

    def _send_one(self, topic: str, node: NodeInfo, codec_id: int, body: bytes) -> None:
        name = topic.encode("utf-8")
        if node.id == self.node_id:
            self.deliver_local(name, codec_id, body)
            return
        link = self._links.get(node.id) or self.link_to(node)
        if link is not None:
            link.send(encode_frame(TOPIC, name, body, codec_id), 16 + len(name) + len(body), True)
