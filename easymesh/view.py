"""The topology view: the mesh as this node knows it, and waiting for it to change.

Owns the node's copy of the :class:`~easymesh.protocol.topology.Topology` and one
condition. The coordinator client applies what the coordinator sends
(:meth:`TopologyView.apply`), the registry records this node's own record
(:meth:`TopologyView.set_local`); any thread may query it (``listeners``,
``providers``: lock-free reads of copy-on-write caches, the hot path of ``send``)
or wait for a listener or provider to appear.

What this node needs to know (issue 15) is its *watch*
(:class:`~easymesh.protocol.messages.Watch`): ``all`` for tools, else the topics it sends
to or waits for and the services it calls or waits for. :meth:`want_topic` and
:meth:`want_service` add an interest (the coordinator client sends the new watch,
``on_interest``) and say whether the coordinator has answered it yet: each watch carries a
``seq`` and the coordinator acks it in the Welcome or a Diff carrying the matching
records, so "no listener" after the ack is the coordinator's word, before it only "not
told yet". A coordinator that predates watches sends no ack and the whole mesh: then
everything counts as known.

Waking the waiters (issue 15): a node's I/O thread may apply the changes of many nodes
in one turn (every node of a process shares it, and a change for 100 of them arrives on
100 sockets at once). Given ``later`` (the I/O thread's ``call_soon``), :meth:`apply`
changes the view at once but queues one wake-up per view, run after the turn's other
ready sockets were read: the woken threads then take the GIL while the I/O thread waits
in ``select`` rather than each one snatching it between two reads. A query sees the
change at once (it reads the view, not the condition); only a sleeping waiter learns of it
a turn later. :meth:`close` still wakes everyone at once.

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
from easymesh.protocol.messages import Diff, NodeInfo, Watch, Welcome
from easymesh.protocol.topology import Topology

__all__ = ["TopologyView"]

#: Longest a first question about a name (has_listeners, has_service) waits for the
#: coordinator's answer.
ANSWER_WAIT = 5.0


class TopologyView:
    """This node's copy of the mesh topology (thread-safe)."""

    def __init__(
        self,
        in_io_thread: Callable[[], bool] = lambda: False,
        watch_all: bool = False,
        later: Callable[[Callable[[], None]], None] | None = None,
    ) -> None:
        self._topology = Topology()
        self._cond = threading.Condition(threading.Lock())
        # Waking the waiters after a change: at once, or (``later``: the I/O thread's
        # call_soon) once the I/O thread has handled every socket that was ready.
        self._later = later
        self._wake_queued = False
        self._in_io_thread = in_io_thread
        self._closed: BaseException | None = None
        self.watch_all = watch_all
        self.on_interest: Callable[[], None] = lambda: None
        self._wanted_topics: dict[str, int] = {}  # topic -> the watch seq that added it
        self._wanted_services: dict[str, int] = {}
        self._seq = 0
        self._acked = -1  # the newest watch seq the coordinator answered
        self._everything = watch_all  # every record comes anyway: all is known
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

    # -- what this node needs ----------------------------------------------------------------

    def watch(self) -> Watch:
        """What to tell the coordinator this node needs (any thread)."""
        with self._cond:
            return Watch(
                self.watch_all,
                frozenset(self._wanted_topics),
                frozenset(self._wanted_services),
                self._seq,
            )

    def want_topic(self, topic: str) -> bool:
        """Make ``topic``'s listeners part of what this node needs; whether the coordinator
        has answered (the view's ``listeners(topic)`` is its word). Never blocks long."""
        return self._want(self._wanted_topics, topic)

    def want_service(self, service: str) -> bool:
        """As :meth:`want_topic`, for a service's providers."""
        return self._want(self._wanted_services, service)

    def _want(self, wanted: dict[str, int], name: str) -> bool:
        if self._everything:
            return True
        seq = wanted.get(name)
        if seq is None:
            with self._cond:
                seq = wanted.get(name)
                if seq is None:
                    self._seq += 1
                    seq = wanted[name] = self._seq
            self.on_interest()
        return self._acked >= seq or self._everything

    def knows_topic(self, topic: str) -> bool:
        """Whether the coordinator answered the interest in ``topic`` (False if none)."""
        return self._knows(self._wanted_topics, topic)

    def _knows(self, wanted: dict[str, int], name: str) -> bool:
        if self._everything:
            return True
        seq = wanted.get(name)
        return seq is not None and self._acked >= seq

    def wait_known_topic(self, topic: str, timeout: float = ANSWER_WAIT) -> None:
        """Ask for ``topic`` and wait (up to ``timeout``; not on the I/O thread) for the
        coordinator's answer; returns quietly either way."""
        self._wait_known(self._wanted_topics, topic, timeout)

    def wait_known_service(self, service: str, timeout: float = ANSWER_WAIT) -> None:
        """As :meth:`wait_known_topic`, for a service."""
        self._wait_known(self._wanted_services, service, timeout)

    def _wait_known(self, wanted: dict[str, int], name: str, timeout: float) -> None:
        if self._want(wanted, name) or self._in_io_thread():
            return
        deadline = time.monotonic() + timeout
        with self._cond:
            while not self._knows(wanted, name) and self._closed is None:
                left = deadline - time.monotonic()
                if left <= 0:
                    return
                self._cond.wait(left)

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
            if msg.ack is not None:
                self._acked = max(self._acked, msg.ack) if isinstance(msg, Diff) else msg.ack
            elif isinstance(msg, Welcome):
                self._everything = True  # a coordinator without watches: it sends all
            if self._later is None:
                self._cond.notify_all()
            elif not self._wake_queued:
                self._wake_queued = True
                self._later(self._wake)
        return True

    def _wake(self) -> None:
        with self._cond:
            self._wake_queued = False
            self._cond.notify_all()

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
        self.want_topic(topic)
        self.wait_for(lambda: self.listeners(topic), timeout, f"no listener for topic {topic!r}")

    def wait_for_provider(self, service: str, timeout: float | None) -> None:
        self.want_service(service)
        self.wait_for(
            lambda: self.providers(service), timeout, f"no provider for service {service!r}"
        )
