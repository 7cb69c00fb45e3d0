"""What a node does with each topic and service it serves: the registrations that own
worker pools (or thread-less queues) and run user callbacks and handlers.

* :class:`TopicEntry` — one topic on this node: an optional callback listener and any
  number of subscriptions; the I/O thread hands each arriving batch to all of them.
* :class:`TopicListener` — a callback and its Dispatcher (decodes, then calls back).
* :class:`ServiceEntry` — a handler and its Dispatcher; what runs for each request
  (decode, call, reply) is the service host's, passed in as ``serve``.

None of them knows the node: each gets the few collaborators it needs (a decoder,
a wake-up for spinning, the service host's callbacks).
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from typing import Any

from easymesh.decoder import Decoder
from easymesh.dispatch import Dispatcher
from easymesh.errors import CodecError
from easymesh.escape import printable
from easymesh.handles import RawMessage
from easymesh.protocol.frames import Frame
from easymesh.subscription import Subscription

log = logging.getLogger("easymesh.node")


class TopicEntry:
    """Everything this node does with one topic: a listener and/or subscriptions."""

    __slots__ = ("topic", "listener", "subs", "sinks")

    def __init__(self, topic: str) -> None:
        self.topic = topic
        self.listener: TopicListener | None = None
        self.subs: tuple[Subscription, ...] = ()
        self.sinks: tuple[Any, ...] = ()

    def refresh(self) -> None:
        self.sinks = ((self.listener.dispatcher,) if self.listener else ()) + self.subs

    def deliver(self, items: Any) -> None:
        for sink in self.sinks:
            sink.put_many(items)


class TopicListener:
    """A topic callback and the worker pool that runs it."""

    def __init__(
        self,
        thread_name: str,
        topic: str,
        callback: Callable[[str, Any], Any],
        *,
        raw: bool,
        workers: int,
        queue_size: int,
        queue_bytes: int,
        decoder: Decoder,
        on_put: Callable[[], None] | None,
        start: bool,
    ) -> None:
        self.topic = topic
        self.callback = callback
        self.decoder = decoder
        self._own_id = decoder.codec_id
        self._own_decode = decoder.codec.decode
        self.dispatcher = Dispatcher(
            thread_name,
            self.run_raw if raw else self.run,
            workers=workers,
            queue_size=queue_size,
            queue_bytes=queue_bytes,
            describe=f"callback for topic {topic!r}",
            on_put=on_put,
            start=start,
        )

    def run(self, frame: Frame) -> None:
        if frame[1] == self._own_id:
            try:
                data = self._own_decode(frame[4])
            except Exception as exc:
                self._failed(frame[1], exc)
                return
        else:
            try:
                data = self.decoder.decode(frame[1], frame[4])
            except CodecError as exc:
                self._failed(frame[1], exc, counted=True)
                return
        self.callback(self.topic, data)

    def run_raw(self, frame: Frame) -> None:
        body = frame.body
        if not isinstance(body, (bytes, bytearray)):  # views of shared memory: keep a copy
            from easymesh.shm.body import inline_copy

            body = inline_copy(body)
        self.callback(self.topic, RawMessage(frame.codec, body))

    def _failed(self, codec_id: int, exc: Exception, counted: bool = False) -> None:
        if not counted:
            self.decoder.errors.incr()
        log.error(
            "node %s: cannot decode a message on topic %r (codec %d): %s",
            printable(self.decoder.node_name),
            self.topic,
            codec_id,
            printable(exc),
        )


class ServiceEntry:
    """A service handler and the worker pool that runs it."""

    def __init__(
        self,
        thread_name: str,
        name: str,
        handler: Callable[[Any], Any],
        *,
        workers: int,
        queue_size: int,
        queue_bytes: int = 64 * 1024 * 1024,
        serve: Callable[[ServiceEntry, Any], None],
        discard: Callable[[ServiceEntry, list[Any]], None],
        on_put: Callable[[], None] | None,
    ) -> None:
        self.name = name
        self.handler = handler
        self.dispatcher = Dispatcher(
            thread_name,
            functools.partial(serve, self),  # no Python frame of its own per request
            workers=workers,
            queue_size=queue_size,
            queue_bytes=queue_bytes,
            drop="newest",
            describe=f"handler of service {name!r}",
            on_put=on_put,
            on_discard=lambda items: discard(self, items),
        )
