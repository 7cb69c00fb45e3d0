"""The registry: what this node registers — its listeners, subscriptions, services,
the topics it publishes — and the thread-less queues that ``spin_once`` runs.

Owns the tables and one lock. Every change calls ``on_change(snapshot)`` *while the
lock is held*, so that the records the node publishes (to its topology view and to
the coordinator) follow the changes in order; the hot paths read the tables without
the lock (``entry``/``service``: one dict lookup; the dicts are only changed under
the lock and a lookup is atomic).

Replacing a listener: the new one's workers start only when the old one's have
ended (the old callback finishes what it had queued, bounded), so the old and the
new callback never run at the same time. Every listener told to stop counts until
its workers end (``_ending``): a listener that replaces one that never started, or
that comes after ``stop_listening``, waits for the earlier ones just the same.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any, NamedTuple

from easymesh.dispatch import Dispatcher
from easymesh.errors import MeshError
from easymesh.subscription import Subscription
from easymesh.workers import ServiceEntry, TopicEntry, TopicListener

__all__ = ["Registry", "Snapshot", "check_name", "MAX_PUBLISHED"]

#: Topics a node's record lists as published, at most (the coordinator refuses records
#: with more than 4,096; a node that sends on more is still listed with these).
MAX_PUBLISHED = 1024
#: Topics (listened to) and services one node may have: the coordinator's default limits
#: (protocol/limits.py). Checked here so that going over fails the call that does it, not
#: the node's registration later.
MAX_TOPICS = 4096
MAX_SERVICES = 4096


def _too_many(what: str, limit: int) -> MeshError:
    return MeshError(f"a node may have at most {limit} {what} (the coordinator's limit)")


class Snapshot(NamedTuple):
    """What the node's record says it does."""

    topics: frozenset[str]  # listened to (by a callback or a subscription)
    services: frozenset[str]
    publishes: frozenset[str]


def check_name(name: Any, what: str) -> None:
    """Raise ValueError unless ``name`` is a usable topic or service name."""
    if not isinstance(name, str) or not name:
        raise ValueError(f"a {what} name must be a non-empty string")
    if len(name.encode("utf-8")) > 1024:
        raise ValueError(f"a {what} name must be at most 1024 bytes")


class Registry:
    """This node's topics, services and thread-less queues (thread-safe)."""

    def __init__(self, on_change: Callable[[Snapshot], None]) -> None:
        self._on_change = on_change
        self._lock = threading.Lock()
        self._topics: dict[bytes, TopicEntry] = {}
        self._services: dict[bytes, ServiceEntry] = {}
        #: Topics this node has sent on: a frozenset replaced (never changed) under the
        #: lock, so senders test ``topic in registry.published`` without one.
        self.published: frozenset[str] = frozenset()
        self._threadless: tuple[Dispatcher, ...] = ()
        #: topic -> listeners' dispatchers told to stop whose workers may still run
        self._ending: dict[bytes, list[Dispatcher]] = {}
        self._spin_cond = threading.Condition(threading.Lock())
        self._spinner: int | None = None  # thread ident of the last spin_once caller
        self._closed = False

    # -- lookups (any thread, lock-free) ---------------------------------------------------

    def entry(self, name: bytes) -> TopicEntry | None:
        return self._topics.get(name)

    def service(self, name: bytes) -> ServiceEntry | None:
        return self._services.get(name)

    def is_published(self, topic: str) -> bool:
        return topic in self.published

    def snapshot(self) -> Snapshot:
        with self._lock:
            return self._snapshot()

    def _snapshot(self) -> Snapshot:
        return Snapshot(
            frozenset(e.topic for e in self._topics.values() if e.sinks),
            frozenset(s.name for s in self._services.values()),
            self.published,
        )

    def _changed(self) -> None:
        """(lock held) Tell the owner; keeps the thread-less list current."""
        dispatchers = [e.listener.dispatcher for e in self._topics.values() if e.listener]
        dispatchers += [s.dispatcher for s in self._services.values()]
        self._threadless = tuple(d for d in dispatchers if not d.threaded)
        if not self._closed:
            self._on_change(self._snapshot())

    # -- topics ----------------------------------------------------------------------------

    def listen(self, listener: TopicListener) -> TopicListener | None:
        """Install ``listener`` (created with ``start=False``) for its topic; returns the
        one it replaced, which is already told to stop. The new one starts when the old
        one's workers have ended."""
        name = listener.topic.encode("utf-8")
        with self._lock:
            entry = self._topics.get(name)
            if entry is None:
                if len(self._topics) >= MAX_TOPICS:
                    raise _too_many("topics", MAX_TOPICS)
                entry = self._topics[name] = TopicEntry(listener.topic)
            old, entry.listener = entry.listener, listener
            entry.refresh()
            self._changed()
            if old is not None:
                self._ending.setdefault(name, []).append(old.dispatcher)
            earlier = tuple(self._ending.get(name, ()))
        if old is not None:
            self._stop(name, old.dispatcher)
        self._start_after(listener.dispatcher, earlier)
        return old

    def _stop(self, name: bytes, d: Dispatcher) -> None:
        """Tell a listener's dispatcher (in ``_ending``) to stop; forget it once ended."""
        d.begin_stop(drain=True)
        d.when_ended(lambda: self._ended(name, d))

    def _ended(self, name: bytes, d: Dispatcher) -> None:
        with self._lock:
            ending = self._ending.get(name, [])
            if d in ending:
                ending.remove(d)
            if not ending:
                self._ending.pop(name, None)

    @staticmethod
    def _start_after(d: Dispatcher, earlier: tuple[Dispatcher, ...]) -> None:
        """Start ``d`` once every dispatcher in ``earlier`` has ended."""
        if not earlier:
            d.start()
            return
        left = [len(earlier)]
        lock = threading.Lock()

        def one_ended() -> None:
            with lock:
                left[0] -= 1
                last = left[0] == 0
            if last:
                d.start()

        for e in earlier:
            e.when_ended(one_ended)

    def stop_listening(self, topic: str) -> TopicListener | None:
        """Remove the listener of ``topic`` (told to stop); None if there was none."""
        name = topic.encode("utf-8")
        with self._lock:
            entry = self._topics.get(name)
            if entry is None or entry.listener is None:
                return None
            old, entry.listener = entry.listener, None
            entry.refresh()
            if not entry.sinks:
                del self._topics[name]
            self._changed()
            self._ending.setdefault(name, []).append(old.dispatcher)
        self._stop(name, old.dispatcher)
        return old

    def subscribe(self, sub: Subscription) -> None:
        name = sub.topic.encode("utf-8")
        with self._lock:
            entry = self._topics.get(name)
            if entry is None:
                if len(self._topics) >= MAX_TOPICS:
                    raise _too_many("topics", MAX_TOPICS)
                entry = self._topics[name] = TopicEntry(sub.topic)
            entry.subs += (sub,)
            entry.refresh()
            self._changed()

    def unsubscribe(self, sub: Subscription) -> None:
        name = sub.topic.encode("utf-8")
        with self._lock:
            entry = self._topics.get(name)
            if entry is None or sub not in entry.subs:
                return
            entry.subs = tuple(s for s in entry.subs if s is not sub)
            entry.refresh()
            if not entry.sinks:
                del self._topics[name]
            self._changed()

    def listening_to(self) -> list[str]:
        with self._lock:
            return sorted(e.topic for e in self._topics.values() if e.sinks)

    def publish(self, topic: str) -> None:
        """Record that this node sends on ``topic`` (its first send does this). Past
        ``MAX_PUBLISHED`` topics the record stops growing (sending is not affected; the
        coordinator bounds a record's size)."""
        with self._lock:
            if topic in self.published or len(self.published) >= MAX_PUBLISHED:
                return
            self.published = self.published | {topic}
            self._changed()

    # -- services --------------------------------------------------------------------------

    def add_service(self, svc: ServiceEntry) -> ServiceEntry | None:
        """Install ``svc``; returns the one it replaced (told to stop)."""
        name = svc.name.encode("utf-8")
        with self._lock:
            old = self._services.get(name)
            if old is None and len(self._services) >= MAX_SERVICES:
                svc.dispatcher.begin_stop(drain=False)
                raise _too_many("services", MAX_SERVICES)
            self._services[name] = svc
            self._changed()
        if old is not None:
            old.dispatcher.begin_stop(drain=True)
        return old

    def remove_service(self, name: str) -> ServiceEntry | None:
        with self._lock:
            svc = self._services.pop(name.encode("utf-8"), None)
            if svc is None:
                return None
            self._changed()
        svc.dispatcher.begin_stop(drain=True)
        return svc

    # -- spinning (threaded=False listeners and services) ----------------------------------

    def wake_spinner(self) -> None:
        with self._spin_cond:
            self._spin_cond.notify_all()

    def is_spinner(self) -> bool:
        """Whether the calling thread is the one that runs ``spin_once``."""
        return self._spinner == threading.get_ident()

    def spin_once(self, timeout: float | None, closed: Callable[[], bool]) -> int:
        """Run queued calls of thread-less listeners and services in this thread; see
        ``Node.spin_once``."""
        self._spinner = threading.get_ident()
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            ran = 0
            for d in self._threadless:
                ran += d.run_queued()
            if ran or closed():
                return ran
            with self._spin_cond:
                while not any(d.queued for d in self._threadless) and not closed():
                    left = None if deadline is None else deadline - time.monotonic()
                    if left is not None and left <= 0:
                        return 0
                    self._spin_cond.wait(left)

    # -- lifecycle and introspection -------------------------------------------------------

    def dispatchers(self) -> list[Dispatcher]:
        with self._lock:
            out = [e.listener.dispatcher for e in self._topics.values() if e.listener]
            return out + [s.dispatcher for s in self._services.values()]

    def owns_current_thread(self) -> bool:
        return any(d.owns_current_thread() for d in self.dispatchers())

    def close(self, deadline: float) -> bool:
        """Stop every listener, subscription and service together; wait for their
        workers until ``deadline`` (``time.monotonic()``). True if all ended."""
        with self._lock:
            self._closed = True
            entries = list(self._topics.values())
            services = list(self._services.values())
            ending = [d for ds in self._ending.values() for d in ds]  # replaced, still draining
        subs = [s for e in entries for s in e.subs]
        dispatchers = [e.listener.dispatcher for e in entries if e.listener]
        dispatchers += [s.dispatcher for s in services] + ending
        for sub in subs:
            sub.close()
        for d in dispatchers:
            d.begin_stop(drain=True)
        self.wake_spinner()
        ended = True
        for d in dispatchers:
            ended = d.join(deadline) and ended
        return ended

    def stats(self) -> tuple[dict[str, Any], dict[str, Any]]:
        """Per-topic listener stats and per-service stats."""
        with self._lock:
            topics = {
                e.topic: e.listener.dispatcher.stats() for e in self._topics.values() if e.listener
            }
            services = {s.name: s.dispatcher.stats() for s in self._services.values()}
        return topics, services
