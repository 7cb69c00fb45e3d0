"""One mesh topic as one Foxglove channel: rate limit, schema, (re-)advertising.

A :class:`TopicChannel` is what the bridge keeps per topic. Its :meth:`forward` is
the bridge's mesh listener callback (``raw=True``), so it runs in that topic's own
listener worker thread: one topic's cost never delays another topic, and the
mesh's I/O thread never waits for the viewer.

The path of one message, cheapest test first:

1. **Rate limit** (token bucket, ``max_rate`` per second, a burst of a quarter of a
   second): a message over the limit is dropped and counted *before* it is
   decoded, so a flood costs a counter increment per message.
2. **Decode** with the sender's codec (a message that cannot be decoded is counted
   and skipped) and **map** to JSON and a schema (:mod:`easymesh.foxglove.mapping`).
3. **Schema.** A channel is first advertised without a schema (the bridge listens
   to nothing until a viewer subscribes, so there is nothing to infer from). When
   a message shows a schema the channel does not have yet (its first message, a
   new field, an image), the channel is re-advertised: closed, then created again
   with the wider schema (in that order: the app refuses a second channel for a
   topic that still has one). Foxglove subscribes by topic, so it follows the new
   channel; the message that caused it is kept and logged once the viewer is
   subscribed again (:meth:`flush_pending`) unless a newer one went out meanwhile.
   Creating and closing happen on the bridge's housekeeping thread only: the SDK
   holds the GIL and its context lock while closing, so two threads closing
   channels at once can deadlock. After :data:`MAX_READVERTISE`
   changes the schema stays as it is (a topic whose shape changes all the time
   must not flap), and messages still flow.
4. **Log** to the SDK, which queues per viewer with its own bound
   (``message_backlog_size``) and drops the oldest for a slow viewer: logging
   never blocks.

Bounded all the way: the mesh listener's queue (``queue_size`` messages) sits
between the mesh and this callback and drops the oldest when the callback falls
behind (counted by the node, per topic); the SDK bounds each viewer.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable
from typing import Any

import foxglove

from easymesh.escape import printable
from easymesh.foxglove.mapping import Mapped, map_message, merge_schema
from easymesh.protocol.codecs import codec_for_id

log = logging.getLogger("easymesh.foxglove")

#: Schema changes after which a channel keeps its schema.
MAX_READVERTISE = 20


class RateLimit:
    """A token bucket: ``rate`` messages per second, bursts of ``rate / 4`` (at least 1:
    a listener thread that was not scheduled for a moment delivers a small batch).
    A rate of 0 or less means no limit. Not thread-safe (one listener thread uses it)."""

    def __init__(self, rate: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.rate = rate
        self.burst = max(1.0, rate / 4)
        self._clock = clock
        self._tokens = self.burst
        self._last = clock()

    def allow(self) -> bool:
        if self.rate <= 0:
            return True
        now = self._clock()
        self._tokens = min(self.burst, self._tokens + (now - self._last) * self.rate)
        self._last = now
        if self._tokens >= 1.0:
            self._tokens -= 1.0
            return True
        return False


class TopicChannel:
    """The Foxglove channel of mesh topic ``topic`` in ``context``.

    ``forward`` runs in the topic's listener thread and only logs; when the schema
    grows it calls ``request_readvertise(self)``, and the bridge's housekeeping
    thread, which creates and closes every channel, calls :meth:`readvertise`.
    ``flush_pending``, ``close`` and the properties are called from that thread too.
    """

    def __init__(
        self,
        topic: str,
        context: foxglove.Context,
        max_rate: float,
        request_readvertise: Callable[[TopicChannel], None],
    ) -> None:
        self.topic = topic
        self._context = context
        self._request_readvertise = request_readvertise
        self._limit = RateLimit(max_rate)
        self._lock = threading.Lock()  # the channel, schema and pending message
        self._schema: dict[str, Any] | None = None
        self._schema_name = ""
        self._pending: Mapped | None = None
        self._asked = False  # a re-advertisement is requested and not done yet
        self._changes = 0  # schema changes so far
        self._closed = False
        self.received = 0
        self.forwarded = 0
        self.dropped_rate = 0
        self.undecodable = 0
        self.readvertised = 0
        self.readvertised_at = 0.0  # time.monotonic() of the last re-advertisement
        self.last_error = ""
        self._channel = self._create(None, "")

    @property
    def channel_id(self) -> int:
        return self._channel.id()

    def _create(self, schema: dict[str, Any] | None, name: str) -> foxglove.Channel:
        if schema is None:
            return foxglove.Channel(self.topic, message_encoding="json", context=self._context)
        data = json.dumps(schema, separators=(",", ":")).encode("utf-8")
        sdk_schema = foxglove.Schema(name=name or self.topic, encoding="jsonschema", data=data)
        return foxglove.Channel(
            self.topic, schema=sdk_schema, message_encoding="json", context=self._context
        )

    def forward(self, topic: str, msg: Any) -> None:
        """The mesh listener callback (``raw=True``): one message towards the viewers."""
        self.received += 1
        if not self._limit.allow():
            self.dropped_rate += 1
            return
        try:
            value = codec_for_id(msg.codec).decode(msg.data)
        except Exception as exc:  # noqa: BLE001 - any codec may raise anything on foreign bytes
            self.undecodable += 1
            self.last_error = f"{type(exc).__name__}: {exc}"
            return
        mapped = map_message(value, time.time_ns())
        ask = False
        with self._lock:
            if self._closed:
                return
            if self._needs_schema(mapped):
                self._pending = mapped  # for the viewers of the channel to come
                ask, self._asked = not self._asked, True
                channel = None
            else:
                self._pending = None  # a newer message goes out: the kept one is stale
                channel = self._channel
        if ask:
            self._request_readvertise(self)
        if channel is not None:
            channel.log(mapped.body)
            self.forwarded += 1

    def _needs_schema(self, mapped: Mapped) -> bool:
        """(under _lock) Does ``mapped`` change the schema? Updates the wanted one if so."""
        if self._schema is not None and self._changes >= MAX_READVERTISE:
            return False
        if self._schema is None or mapped.schema_name != self._schema_name:
            self._schema, self._schema_name = mapped.schema, mapped.schema_name
        else:
            merged = merge_schema(self._schema, mapped.schema)
            if merged is self._schema:
                return False
            self._schema = merged
        self._changes += 1
        return True

    def readvertise(self) -> None:
        """Replace the channel by one with the schema the messages asked for.

        Call it from one thread only, the one that creates and closes every channel of
        the context (see the module docs of :mod:`easymesh.foxglove.bridge`)."""
        with self._lock:
            if self._closed or not self._asked:
                return
            self._asked = False
            schema, name, old = self._schema, self._schema_name, self._channel
        old.close()  # the topic must be free before a channel with its name is created
        new = self._create(schema, name)
        with self._lock:
            self._channel = new
            closed = self._closed
            self.readvertised += 1
            self.readvertised_at = time.monotonic()
        if closed:  # closed meanwhile
            new.close()
        log.debug(
            "%s: channel %d replaced by %d with schema %s",
            printable(self.topic),
            old.id(),
            new.id(),
            printable(name or "-"),
        )

    def flush_pending(self) -> None:
        """Log the message kept by the last re-advertisement (a viewer just subscribed
        to the new channel), once."""
        with self._lock:
            mapped, self._pending = self._pending, None
            channel = self._channel
        if mapped is not None and not self._closed:
            channel.log(mapped.body)
            self.forwarded += 1

    def close(self) -> None:
        """Unadvertise the channel (the topic left the mesh, or the bridge stops)."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            self._pending = None
        self._channel.close()
