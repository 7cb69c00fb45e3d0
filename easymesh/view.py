"""The topology view: the mesh as this node knows it, and waiting for it to change.

Owns the node's copy of the :class:`~easymesh.protocol.topology.Topology` and one
condition. The coordinator client applies what the coordinator sends
(:meth:`TopologyView.apply`), the registry records this node's own record
(:meth:`TopologyView.set_local`); any thread may query it (``listeners``,
``providers``: lock-free reads of copy-on-write caches, the hot path of ``send``)
or wait for a listener or provider to appear.

A wait ends with RequestTimeout after its timeout, with NodeClosed when the node
closes (:meth:`TopologyView.close`), and fails at once with WouldDeadlock when made
from the node's I/O thread (the thread that would have to apply the change).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

from easymesh.errors import NodeClosed, RequestTimeout, WouldDeadlock
from easymesh.protocol.messages import Diff, NodeInfo, Welcome
from easymesh.protocol.topology import Topology

__all__ = ["TopologyView"]


class TopologyView:
    """This node's copy of the mesh topology (thread-safe)."""

    def __init__(self, in_io_thread: Callable[[], bool] = lambda: False) -> None:
        self._topology = Topology()
        self._cond = threading.Condition(threading.Lock())
        self._in_io_thread = in_io_thread
        self._closed: BaseException | None = None
        # The hot-path queries, bound once (lock-free; see protocol/topology.py).
        self.listeners = self._topology.listeners
        self.providers = self._topology.providers

    @property
    def nodes(self) -> dict[str, NodeInfo]:
        """Every node by id (this one included); a snapshot, never changed in place."""
        return self._topology.nodes

    def find(self, name_or_id: str) -> NodeInfo | None:
        """The node with this id, else the member of that name with the smallest id."""
        nodes = self._topology.nodes
        found = nodes.get(name_or_id)
        if found is None:
            named = [n for n in nodes.values() if n.name == name_or_id]
            found = min(named, key=lambda n: n.id) if named else None
        return found

    # -- changes ---------------------------------------------------------------------------

    def set_local(self, info: NodeInfo) -> None:
        """This node's own record (authoritative for itself)."""
        with self._cond:
            self._topology.set_local(info)
            self._cond.notify_all()

    def apply(self, msg: Welcome | Diff) -> bool:
        """(coordinator client) A Welcome (part) or Diff from the coordinator. False for a
        Welcome part that is not the last (nothing changes until the whole topology is in).
        Raises ProtocolError for parts out of order."""
        with self._cond:
            if not self._topology.apply(msg):
                return False
            self._cond.notify_all()
        return True

    def close(self, reason: BaseException) -> None:
        """The node closed: every wait ends with ``reason``."""
        with self._cond:
            self._closed = reason
            self._cond.notify_all()

    # -- waiting ---------------------------------------------------------------------------

    def wait_for(self, found: Callable[[], Any], timeout: float | None, what: str) -> None:
        """Block until ``found()`` is true. ``timeout`` seconds (None: forever; 0 or
        less: check once). Raises RequestTimeout, NodeClosed, WouldDeadlock."""
        if found():
            return
        if self._in_io_thread():
            raise WouldDeadlock(f"waiting for {what} on the node's I/O thread would never end")
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            while not found():
                if self._closed is not None:
                    raise NodeClosed(str(self._closed))
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    raise RequestTimeout(f"{what} after {timeout:g} s")
                self._cond.wait(None if left is None else min(left, threading.TIMEOUT_MAX))

    def wait_for_listener(self, topic: str, timeout: float | None) -> None:
        self.wait_for(lambda: self.listeners(topic), timeout, f"no listener for topic {topic!r}")

    def wait_for_provider(self, service: str, timeout: float | None) -> None:
        self.wait_for(
            lambda: self.providers(service), timeout, f"no provider for service {service!r}"
        )
