"""meshfoxglove's bridge: a live mesh as a Foxglove WebSocket server.

The Foxglove protocol itself is the ``foxglove-sdk`` package's (its WebSocket
server); this module only decides what to show. The bridge is an ordinary node of
its own group (name ``meshfoxglove-<pid>``), so it gets every message on a topic
without taking any away from other listeners, and it uses only the public API.

* **Topics.** Every topic somebody in the mesh sends on or listens to is a
  channel (message encoding ``json``, schema encoding ``jsonschema``; see
  :mod:`easymesh.foxglove.channels` for schemas and re-advertising). The bridge
  *listens* to a topic only while a viewer subscribes to its channel: what is not
  watched costs the mesh nothing.
* **Services.** Every service is advertised; a call runs ``request(name, data)``
  with the JSON request and answers the JSON of the result itself, or fails with
  the error's text (the SDK sends it as the failure message).
* **Connection graph.** Which node groups publish, listen to and provide what,
  from the topology (nodes are named by group, as the mesh balances by name;
  the bridge's own listening, which only follows the viewers, is left out).
* **Publishing back** (``allow_publish`` only): JSON a viewer publishes on a
  channel is sent on the mesh topic of that name. Without it the server does not
  declare the capability and the SDK refuses client channels itself.
* **Status.** Drops (rate limit, the listener queue) and undecodable messages are
  logged and sent to viewers as a status message when they change.

Threads. SDK callbacks (subscribe, unsubscribe, ...) run on the SDK's threads and
only queue a task for the bridge's one housekeeping thread, so a callback never
waits on the mesh and the bridge's own state has one writer. That thread is also
the only one that creates and closes SDK channels (re-advertising included; the
listener threads only log): the SDK's ``close`` holds the GIL while it takes the
context's lock and calls back into Python, so closes on several threads deadlock
(see ``_quiet_sdk`` for the other half of that story). The housekeeping
thread also polls ``node.nodes()`` every ``poll_interval`` seconds to find topics
and services that appeared or left. Polling is acceptable because ``nodes()``
reads the node's local copy of the topology (the coordinator pushes every change
to it; no network round trip), costs O(nodes) per tick, and the public API has no
topology-change callback; its only price is up to ``poll_interval`` of delay
before a new topic shows. Messages themselves never pass through this thread:
each topic's listener thread logs to the SDK directly (one hand-off in all).
Service calls run on the SDK's thread for the call and block it for at most
``call_timeout``; client publishing sends from the SDK's thread (``send`` never
blocks).
"""

from __future__ import annotations

import fnmatch
import json
import logging
import queue
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any

import foxglove
from foxglove import Capability, ConnectionGraph, Service, ServiceSchema, StatusLevel
from foxglove.websocket import ChannelView, Client, ClientChannel, ServerListener

from easymesh.errors import MeshError
from easymesh.escape import printable
from easymesh.foxglove.channels import TopicChannel
from easymesh.foxglove.mapping import to_json
from easymesh.node import Node

log = logging.getLogger("easymesh.foxglove")

DEFAULT_PORT = 8765
DEFAULT_MAX_RATE = 100.0
#: Messages the bridge's listener queue holds per topic before it drops the oldest.
QUEUE_SIZE = 32
#: Seconds a re-advertised channel waits for its viewers to subscribe again.
RESUBSCRIBE_GRACE = 10.0
STATUS_ID = "meshfoxglove-status"


class Bridge:
    """Serve ``node``'s view of the mesh to Foxglove on ``host:port`` (make the node with
    ``watch='all'`` to show the whole mesh: a plain node knows only the nodes it needs).

    ``topics``: fnmatch patterns of topics to show (None: all). ``max_rate``:
    messages per second per channel towards the viewers (0: no limit).
    Use as a context manager, or call :meth:`start` and :meth:`close`.
    Raises RuntimeError (from the SDK) when the port cannot be bound.
    """

    def __init__(
        self,
        node: Node,
        *,
        host: str = "127.0.0.1",
        port: int = DEFAULT_PORT,
        topics: Iterable[str] | None = None,
        max_rate: float = DEFAULT_MAX_RATE,
        allow_publish: bool = False,
        poll_interval: float = 0.5,
        status_interval: float = 2.0,
        call_timeout: float = 30.0,
    ) -> None:
        self.node = node
        self.host = host
        self.port = port
        self.patterns = list(topics) if topics else None
        self.max_rate = max_rate
        self.allow_publish = allow_publish
        self.poll_interval = poll_interval
        self.status_interval = status_interval
        self.call_timeout = call_timeout
        self._context = foxglove.Context()
        self._server: Any = None
        self._tasks: queue.Queue[Callable[[], None]] = queue.Queue()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        # housekeeping-thread state
        self._channels: dict[str, TopicChannel] = {}
        self._subs: dict[str, set[tuple[int, int]]] = {}  # topic -> {(client id, channel id)}
        self._listening: set[str] = set()
        self._services: set[str] = set()
        self._graph: Any = None
        self._queue_dropped: dict[str, int] = {}  # topic -> listener queue drops so far
        self._queue_dropped_base = 0  # drops of listeners already stopped
        self._reported: tuple[int, ...] = (0, 0, 0)
        # client channels (SDK threads): (client id, channel id) -> (topic, encoding)
        self._client_channels: dict[tuple[int, int], tuple[str, str]] = {}
        self._client_lock = threading.Lock()

    # -- lifecycle ---------------------------------------------------------------------------

    def start(self) -> Bridge:
        """Start serving (once; later calls do nothing) and return self."""
        if self._server is not None:
            return self
        capabilities = [Capability.ConnectionGraph, Capability.Services]
        if self.allow_publish:
            capabilities.append(Capability.ClientPublish)
        self._server = foxglove.start_server(
            name=f"easymesh ({self.node.name})",
            host=self.host,
            port=self.port,
            capabilities=capabilities,
            server_listener=_Listener(self),
            # json: the encoding of service calls and client messages; without it the
            # app disables both
            supported_encodings=["json"],
            context=self._context,
        )
        self.port = self._server.port
        _quiet_sdk()
        self._refresh()
        self._thread = threading.Thread(
            target=self._run, name="meshfoxglove-housekeeping", daemon=True
        )
        self._thread.start()
        return self

    @property
    def url(self) -> str:
        return f"ws://{self.host}:{self.port}"

    def app_url(self) -> str:
        """A Foxglove web-app link that opens this server."""
        return str(self._server.app_url()) if self._server is not None else ""

    def close(self) -> None:
        """Stop the server and the housekeeping thread; idempotent, bounded in time."""
        if self._stop.is_set():
            return
        self._stop.set()
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(5.0)
        if self._server is not None:
            self._server.stop()
        for channel in list(self._channels.values()):
            channel.close()
        for topic in list(self._listening):
            self._stop_listening(topic)

    def __enter__(self) -> Bridge:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.close()

    # -- the housekeeping thread -------------------------------------------------------------

    def _run(self) -> None:
        next_poll = next_status = time.monotonic()
        while not self._stop.is_set():
            timeout = max(0.0, min(next_poll, next_status) - time.monotonic())
            try:
                task = self._tasks.get(timeout=timeout)
            except queue.Empty:
                task = None
            try:
                if task is not None:
                    task()
                now = time.monotonic()
                if now >= next_poll:
                    self._refresh()
                    next_poll = now + self.poll_interval
                if now >= next_status:
                    self._report()
                    next_status = now + self.status_interval
            except Exception:  # noqa: BLE001 - the bridge must outlive one bad tick
                log.exception("meshfoxglove: housekeeping failed")

    def _refresh(self) -> None:
        """Follow the topology: channels, services, connection graph, idle listeners."""
        infos = [i for i in self.node.nodes()]
        me = self.node.id
        topics: set[str] = set()
        services: set[str] = set()
        for info in infos:
            topics |= info.publishes
            if info.id != me:  # our own listening follows the viewers, not the mesh
                topics |= info.topics
                services |= info.services
        self._update_channels({t for t in topics if self._wanted(t)})
        self._update_services(services)
        self._publish_graph(infos)
        now = time.monotonic()
        for topic in list(self._listening):
            channel = self._channels.get(topic)
            if channel is None or (
                not self._watched(topic) and now - channel.readvertised_at > RESUBSCRIBE_GRACE
            ):
                self._stop_listening(topic)

    def _wanted(self, topic: str) -> bool:
        return self.patterns is None or any(fnmatch.fnmatchcase(topic, p) for p in self.patterns)

    def _update_channels(self, topics: set[str]) -> None:
        for topic in topics - self._channels.keys():
            self._channels[topic] = TopicChannel(
                topic, self._context, self.max_rate, self._ask_readvertise
            )
        for topic in self._channels.keys() - topics:
            self._channels.pop(topic).close()
            self._subs.pop(topic, None)
            if topic in self._listening:
                self._stop_listening(topic)

    def _update_services(self, services: set[str]) -> None:
        gone = self._services - services
        if gone:
            self._server.remove_services(sorted(gone))
        new = sorted(services - self._services)
        if new:
            self._server.add_services([self._service(name) for name in new])
        self._services = set(services)

    def _service(self, name: str) -> Service:
        def handler(request: Any) -> bytes:
            return self._call(name, request.payload)

        return Service(name, schema=ServiceSchema(name), handler=handler)

    def _publish_graph(self, infos: list[Any]) -> None:
        """Publish the connection graph when it changed.

        The bridge's own listening is left out: it follows the viewers, not the mesh,
        and keeping it out also keeps graph updates apart from viewers connecting and
        leaving. That matters because the SDK calls the listener's graph callbacks
        with its graph lock held, while ``publish_connection_graph`` holds the GIL as
        it waits for that lock: the two at the same moment would deadlock."""
        published: dict[str, set[str]] = {}
        listened: dict[str, set[str]] = {}
        provided: dict[str, set[str]] = {}
        for info in infos:
            for t in info.publishes:
                published.setdefault(t, set()).add(info.name)
            for t in info.topics if info.id != self.node.id else ():
                listened.setdefault(t, set()).add(info.name)
            for s in info.services:
                provided.setdefault(s, set()).add(info.name)
        key = tuple(
            tuple(sorted((k, tuple(sorted(v))) for k, v in d.items()))
            for d in (published, listened, provided)
        )
        if key == self._graph:
            return
        graph = ConnectionGraph()
        for t, ids in published.items():
            graph.set_published_topic(t, sorted(ids))
        for t, ids in listened.items():
            graph.set_subscribed_topic(t, sorted(ids))
        for s, ids in provided.items():
            graph.set_advertised_service(s, sorted(ids))
        self._server.publish_connection_graph(graph)
        self._graph = key

    def _ask_readvertise(self, channel: TopicChannel) -> None:
        """(a listener thread) Queue the re-advertisement of ``channel`` (see channels.py)."""
        self._tasks.put(lambda: self._readvertise(channel))

    def _readvertise(self, channel: TopicChannel) -> None:
        if self._channels.get(channel.topic) is channel:
            channel.readvertise()

    # -- viewers subscribing (tasks queued by the SDK callbacks) -----------------------------

    def _subscribed(self, client_id: int, channel_id: int, topic: str) -> None:
        channel = self._channels.get(topic)
        log.debug(
            "viewer %d subscribed to %s (channel %d)", client_id, printable(topic), channel_id
        )
        if channel is None or channel.channel_id != channel_id:
            return  # a channel that was replaced or removed meanwhile
        self._subs.setdefault(topic, set()).add((client_id, channel_id))
        if topic not in self._listening:
            log.debug("listening to %s", printable(topic))
            self.node.listen(topic, channel.forward, raw=True, queue_size=QUEUE_SIZE)
            self._listening.add(topic)
        channel.flush_pending()

    def _unsubscribed(self, client_id: int, channel_id: int, topic: str) -> None:
        log.debug("viewer %d left %s (channel %d)", client_id, printable(topic), channel_id)
        subs = self._subs.get(topic)
        if subs is not None:
            subs.discard((client_id, channel_id))
        channel = self._channels.get(topic)
        # A viewer that leaves the current channel stops the listener at once; one
        # that leaves a replaced channel is expected back (see _refresh).
        if channel is not None and channel.channel_id == channel_id and not self._watched(topic):
            self._stop_listening(topic)

    def _watched(self, topic: str) -> bool:
        channel = self._channels.get(topic)
        subs = self._subs.get(topic, ())
        return channel is not None and any(c == channel.channel_id for _, c in subs)

    def _stop_listening(self, topic: str) -> None:
        if topic not in self._listening:
            return
        log.debug("no longer listening to %s", printable(topic))
        self._listening.discard(topic)
        self._queue_dropped_base += self._queue_dropped.pop(topic, 0)
        try:
            self.node.stop_listening(topic)
        except MeshError:
            pass  # the node is closing

    # -- status ------------------------------------------------------------------------------

    def counters(self) -> dict[str, int]:
        """Totals over all channels: received, forwarded, dropped (rate limit, listener
        queue) and undecodable messages."""
        topics = self.node.stats()["topics"]
        for topic in list(self._listening):  # a copy: any thread may ask
            if topic in topics:
                self._queue_dropped[topic] = topics[topic]["dropped"]
        channels = list(self._channels.values())
        return {
            "received": sum(c.received for c in channels),
            "forwarded": sum(c.forwarded for c in channels),
            "dropped_rate": sum(c.dropped_rate for c in channels),
            "dropped_queue": self._queue_dropped_base + sum(self._queue_dropped.values()),
            "undecodable": sum(c.undecodable for c in channels),
        }

    def _report(self) -> None:
        """Log and show the drop counters when they changed since the last report."""
        c = self.counters()
        now = (c["dropped_rate"], c["dropped_queue"], c["undecodable"])
        if now == self._reported:
            return
        # Dropping what is over --max-rate is the bridge doing its job; a full queue
        # (the bridge cannot keep up) or undecodable messages are worth a warning.
        trouble = now[1] > self._reported[1] or now[2] > self._reported[2]
        self._reported = now
        text = (
            f"meshfoxglove: forwarded {c['forwarded']} of {c['received']} messages; dropped"
            f" {c['dropped_rate']} over --max-rate={self.max_rate:g}/s and {c['dropped_queue']}"
            f" in full listener queues; {c['undecodable']} undecodable"
        )
        log.log(logging.WARNING if trouble else logging.INFO, "%s", text)
        level = StatusLevel.Warning if trouble else StatusLevel.Info
        self._server.publish_status(text, level, id=STATUS_ID)

    # -- services and client publishing (SDK threads) ----------------------------------------

    def _call(self, name: str, payload: bytes) -> bytes:
        """A service call from a viewer: the JSON result, or an exception whose text
        the SDK sends as the failure."""
        try:
            data = json.loads(payload) if payload.strip() else None
        except ValueError as exc:
            raise ValueError(f"the request is not JSON: {exc}") from None
        try:
            result = self.node.request(name, data, timeout=self.call_timeout)
        except MeshError as exc:
            raise CallFailed(str(exc)) from None
        return json.dumps(to_json(result), separators=(",", ":"), allow_nan=False).encode()

    def _client_advertised(self, client: Client, channel: ClientChannel) -> None:
        with self._client_lock:
            self._client_channels[(client.id, channel.id)] = (channel.topic, channel.encoding)

    def _client_unadvertised(self, client: Client, channel_id: int) -> None:
        with self._client_lock:
            self._client_channels.pop((client.id, channel_id), None)

    def _client_message(self, client: Client, channel_id: int, data: bytes) -> None:
        if not self.allow_publish:
            return
        with self._client_lock:
            found = self._client_channels.get((client.id, channel_id))
        if found is None:
            return
        topic, encoding = found
        try:
            if encoding != "json":
                raise ValueError(f"encoding {encoding!r} is not json")
            value = json.loads(data)
            self.node.send(topic, value)
        except (ValueError, MeshError) as exc:
            log.warning("meshfoxglove: not sent on %s: %s", printable(topic), printable(str(exc)))


def _quiet_sdk() -> None:
    """Switch the SDK's own (Rust) logging off.

    The SDK hands its log records to Python's logging while holding its internal
    locks, and some of its calls (closing a channel, logging a message) hold the GIL
    while they wait for those locks: a record written from one thread while another
    waits deadlocks the bridge (seen under load with re-advertised channels).
    ``disable_logging`` is the SDK's internal switch for it (the public
    ``set_log_level`` works only before the server starts, and only once); without
    it, the SDK's loggers are at least kept quiet below errors.
    """
    disable = getattr(getattr(foxglove, "_foxglove", None), "disable_logging", None)
    if callable(disable):
        disable()
    else:
        logging.getLogger("foxglove").setLevel(logging.ERROR)


class CallFailed(Exception):
    """A service call from a viewer failed in the mesh (the SDK shows its text)."""


class _Listener(ServerListener):
    """The SDK's callbacks: each one queues a task for the housekeeping thread, or
    (client channels and messages) does its few dictionary operations at once."""

    def __init__(self, bridge: Bridge) -> None:
        self.bridge = bridge

    def on_subscribe(self, client: Client, channel: ChannelView) -> None:
        cid, chid, topic = client.id, channel.id, channel.topic
        self.bridge._tasks.put(lambda: self.bridge._subscribed(cid, chid, topic))

    def on_unsubscribe(self, client: Client, channel: ChannelView) -> None:
        cid, chid, topic = client.id, channel.id, channel.topic
        self.bridge._tasks.put(lambda: self.bridge._unsubscribed(cid, chid, topic))

    def on_client_advertise(self, client: Client, channel: ClientChannel) -> None:
        self.bridge._client_advertised(client, channel)

    def on_client_unadvertise(self, client: Client, client_channel_id: int) -> None:
        self.bridge._client_unadvertised(client, client_channel_id)

    def on_message_data(self, client: Client, client_channel_id: int, data: bytes) -> None:
        self.bridge._client_message(client, client_channel_id, data)
