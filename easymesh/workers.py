"""What a node does with each topic and service it serves: the registrations that own
worker pools (or thread-less queues) and run user callbacks and handlers.

* :class:`TopicEntry` — one topic on this node: an optional callback listener and any
  number of subscriptions; the I/O thread hands each arriving batch to all of them.
* :class:`TopicListener` — a callback and its Dispatcher (decodes, then calls back).
* :class:`ServiceEntry` — a handler and its Dispatcher (decodes, runs, replies; the
  request/reply plumbing is in peers.py).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from easymesh.dispatch import Dispatcher
from easymesh.handles import RawMessage
from easymesh.protocol.codecs import codec_for_id
from easymesh.protocol.frames import (
    Frame,
)
from easymesh.subscription import Subscription

if TYPE_CHECKING:
    from easymesh.node import Node


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
        node: Node,
        topic: str,
        callback: Callable[[str, Any], Any],
        raw: bool,
        workers: int,
        queue_size: int,
        queue_bytes: int,
    ) -> None:
        self.topic = topic
        self.callback = callback
        self.raw = raw
        self.node = node
        self._own_id = node._codec_id
        self._own_decode = node._codec.decode
        self.dispatcher = Dispatcher(
            f"easymesh-{node.name}-{topic}",
            self.run_raw if raw else self.run,
            workers=workers,
            queue_size=queue_size,
            queue_bytes=queue_bytes,
            describe=f"callback for topic {topic!r}",
            on_put=None if workers else node._spin_wake,
        )

    def run(self, frame: Frame) -> None:
        try:
            if frame[1] == self._own_id:
                data = self._own_decode(frame[4])
            else:
                data = codec_for_id(frame[1]).decode(frame[4])
        except Exception as exc:
            self.node._decode_failed(frame[1], exc, self.topic)
            return
        self.callback(self.topic, data)

    def run_raw(self, frame: Frame) -> None:
        self.callback(self.topic, RawMessage(frame.codec, frame.body))


class ServiceEntry:
    """A service handler and the worker pool that runs it."""

    def __init__(
        self, node: Node, name: str, handler: Callable[[Any], Any], workers: int, queue_size: int
    ) -> None:
        self.name = name
        self.handler = handler
        self.node = node
        self.dispatcher = Dispatcher(
            f"easymesh-{node.name}-{name}",
            self.run,
            workers=workers,
            queue_size=queue_size,
            queue_bytes=1 << 62,
            drop="newest",
            describe=f"handler of service {name!r}",
            on_put=None if workers else node._spin_wake,
            on_discard=lambda items: node._discard_requests(self, items),
        )

    def run(self, item: Any) -> None:
        frame, reply_to = item
        self.node._serve(self, frame, reply_to)

