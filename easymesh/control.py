"""Control loops: take messages in your own thread, at your own rate (mixin of Node).

``subscribe`` returns a :class:`~easymesh.subscription.Subscription` (newest
messages buffered, no user code called); ``wait_for_message`` takes the next one;
listeners and services registered with ``threaded=False`` queue their calls until
the owner runs them with ``spin_once`` / ``spin``, in the owner's thread. See the
README section "Embedding in a control loop" for which calls run where.
"""

from __future__ import annotations

import time
from typing import Any

from easymesh.handles import RawMessage, Service, Topic  # noqa: F401 - RawMessage re-exported
from easymesh.nodebase import NodeBase, check_name
from easymesh.subscription import Subscription
from easymesh.workers import TopicEntry

_new_frame = tuple.__new__
_LOCAL = None  # reply target of a request this node made to itself
_SWEEP = 0.05  # seconds between sweeps of request deadlines: a timeout fires up to this late


class ControlLoops(NodeBase):
    """subscribe, wait_for_message, spin_once, spin (mixin of Node)."""

    def subscribe(self, topic: str, queue_size: int = 1) -> Subscription:
        """Buffer the newest ``queue_size`` messages of ``topic`` for the caller to take
        (``latest()``, ``get()``, ``drain()``, iteration); never calls user code.
        Close it (or use ``with``) to stop. Raises NodeClosed, ValueError."""
        self._check_open()
        check_name(topic, "topic")
        sub = Subscription(topic, queue_size, self._decode_or_raise, self._unsubscribe)
        name = topic.encode("utf-8")
        with self._lock:
            entry = self._topics.get(name)
            if entry is None:
                entry = self._topics[name] = TopicEntry(topic)
            entry.subs += (sub,)
            entry.refresh()
            self._publish_self()
        return sub

    def _unsubscribe(self, sub: Subscription) -> None:
        name = sub.topic.encode("utf-8")
        with self._lock:
            entry = self._topics.get(name)
            if entry is None or sub not in entry.subs:
                return
            entry.subs = tuple(s for s in entry.subs if s is not sub)
            entry.refresh()
            if not entry.sinks:
                del self._topics[name]
            if not self._closing:
                self._publish_self()

    def wait_for_message(self, topic: str, timeout: float | None = None) -> Any:
        """The next message on ``topic`` (like rospy's ``wait_for_message``).
        Raises RequestTimeout (a TimeoutError) after ``timeout`` seconds (None: forever),
        NodeClosed / SubscriptionClosed if the node closes meanwhile."""
        with self.subscribe(topic, queue_size=1) as sub:
            return sub.get(timeout)

    def spin_once(self, timeout: float | None = 0.0) -> int:
        """Run the queued calls of ``threaded=False`` listeners and services in this
        thread; return how many ran. If none is queued, wait up to ``timeout`` seconds
        for one (0: do not wait; None: until one arrives or the node closes).
        Per listener, calls run in arrival order."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            ran = 0
            for d in list(self._spinnable):
                ran += d.run_queued()
            if ran or self._closing:
                return ran
            with self._spin_cond:
                while not any(d.queued for d in self._spinnable) and not self._closing:
                    left = None if deadline is None else deadline - time.monotonic()
                    if left is not None and left <= 0:
                        return 0
                    self._spin_cond.wait(left)

    def spin(self) -> None:
        """Run queued ``threaded=False`` calls in this thread until :meth:`close`."""
        while not self._closing:
            self.spin_once(timeout=None)

    def _spin_wake(self) -> None:
        with self._spin_cond:
            self._spin_cond.notify_all()
