"""Latched topics: the newest value of each latched topic, and who already got it.

A node that sends with ``latch=True`` keeps the value; every node that starts
listening to the topic later gets it once, at once (rospy's ``latch=True``).
:class:`LatchStore` owns the values and the rules; sending is the caller's
(a ``send`` function is passed in) and happens while the store's lock is held,
so that a late listener can never receive an older value after a newer one.

Rules (see :meth:`LatchStore.catch_up`):

* a listener gets a topic's value once: its id is marked *served*;
* a node that leaves the mesh loses its mark (it counts as new if it returns);
* a node that is present but no longer listens loses its mark (it gets the value
  again if it listens again later);
* a node missing from the topology keeps its mark (a restarted coordinator lists
  nodes one by one as they come back: they must not get the value twice).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Collection, Iterable, Mapping
from typing import Any

from easymesh.protocol.messages import NodeInfo

__all__ = ["LatchStore"]

Listeners = Callable[[str], tuple[NodeInfo, ...]]


class _Latched:
    __slots__ = ("codec_id", "body", "served")

    def __init__(self, codec_id: int, body: bytes, served: set[str]) -> None:
        self.codec_id = codec_id
        self.body = body
        self.served = served


class LatchStore:
    """This node's latched values (thread-safe; one lock)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._values: dict[str, _Latched] = {}
        #: The latched topics, for a lock-free ``topic in store.topics`` on the send path
        #: (a dict changed in place under the lock; read it, never write it).
        self.topics: Mapping[str, object] = self._values

    def __contains__(self, topic: object) -> bool:
        return topic in self._values

    def __bool__(self) -> bool:
        return bool(self._values)

    def publish(
        self,
        topic: str,
        codec_id: int,
        body: bytes,
        listeners: Listeners,
        send: Callable[[tuple[NodeInfo, ...]], Any],
    ) -> tuple[NodeInfo, ...]:
        """Make ``body`` the topic's value and ``send`` it to the current listeners
        (under the lock); they count as served. Returns those listeners."""
        with self._lock:
            nodes = listeners(topic)
            old = self._values.get(topic)
            served = (old.served if old else set()) | {n.id for n in nodes}
            self._values[topic] = _Latched(codec_id, body, served)
            if nodes:
                send(nodes)
            return nodes

    def catch_up(
        self,
        listeners: Listeners,
        present: Mapping[str, NodeInfo] | Collection[str],
        removed: Iterable[str],
        send_one: Callable[[str, NodeInfo, int, bytes], Any],
    ) -> int:
        """After a topology change: ``send_one(topic, node, codec_id, body)`` for each
        listener not yet served. ``removed``: ids of nodes that left. Returns how many
        values went out."""
        if not self._values:
            return 0
        gone = set(removed)
        sent = 0
        with self._lock:
            for topic, entry in self._values.items():
                served = entry.served - gone
                nodes = listeners(topic)
                for node in nodes:
                    if node.id not in served:
                        send_one(topic, node, entry.codec_id, entry.body)
                        sent += 1
                entry.served = {n.id for n in nodes} | {i for i in served if i not in present}
        return sent

    def clear(self, topic: str) -> None:
        """Forget ``topic``'s value (late listeners no longer get it)."""
        with self._lock:
            self._values.pop(topic, None)
