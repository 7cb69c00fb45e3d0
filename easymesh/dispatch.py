"""Per-listener worker pools with bounded queues.

Every topic listener and every service owns a :class:`Dispatcher`: a queue the
I/O thread fills and the dispatcher's own worker threads drain, running the
user's callback or handler. So a slow callback delays only its own topic;
other topics, services, heartbeats and the coordinator link go on.

* Bounded: at most ``queue_size`` items and ``queue_bytes`` bytes wait. Past
  either bound the *oldest* waiting item is dropped and counted (the newest
  data is usually what a robot wants). ``drop='newest'`` refuses the new
  item instead, and in a batch every item after the first refused one too, so
  that what :meth:`Dispatcher.put_many` accepts is always a prefix of the batch
  (a service answers the rest at once).
* Ordered: with one worker (the default for topics) items are handled in the
  order they arrived, so messages from one sender reach the callback in the
  order sent. With more workers they run concurrently, without order.
* Threads are named ``easymesh-<node>-<topic>-<n>``; exceptions from user code
  are logged with the topic and never kill a worker.
* ``stop()`` lets the workers finish what is queued (bounded by ``timeout``),
  stops them with a flag, and never joins the calling thread (a callback may
  close its own node).
* ``workers=0`` makes a thread-less dispatcher: items wait (bounded, the same
  drop policy) until the owner calls :meth:`Dispatcher.run_queued` from its own
  thread (``Node.spin_once``); ``on_put`` tells the owner something arrived.
* ``start=False`` creates the workers without starting them: items queue (bounded)
  until :meth:`Dispatcher.start`. A listener that replaces another starts only once
  the old one's workers have ended (:meth:`Dispatcher.when_ended`), so the old and
  the new callback never run at the same time.
* Stopping is two steps, :meth:`begin_stop` and :meth:`join`, so that an owner with
  many dispatchers (a closing node) stops them all together under one deadline.
* Counters (``received``, ``dropped``, ``handled``, ``errors``) change only under the
  queue's lock: several workers (or spinning threads) share them, and an unlocked ``+=``
  from two threads can lose counts. A worker adds what it ran when it takes the lock for
  its next batch, so the counts cost no lock round of their own.
* Waking. An idle worker waits on its own bell, a plain ``threading.Lock`` it holds and
  blocks on, not on a ``threading.Condition``: ``Condition.wait`` allocates a lock and runs
  some twenty lines of Python per wait, ``notify`` as many again, and for a frame that arrives
  alone (a camera at 30 Hz) they run with cold caches, on the path from the socket to the
  callback. Idle workers queue their bells in ``_sleepers``; the producer, holding the
  dispatcher's lock, takes as many off the front as there are items and releases them (the
  longest idle worker first, as a Condition's ``notify`` wakes them; taking a bell off and
  releasing it is one C call, so a KeyboardInterrupt in a producer cannot lose a worker); a
  woken worker takes the dispatcher's lock again and looks at the queue, as before.
  Measured (2026-12-02): a hand-off to an idle worker costs 22,300 instructions instead of
  29,900 (callgrind, ``scripts/bench/dispatch_instr.py handoff``), a worker draining a
  backlog the same; on the 2-core VM a paced frame handed from a selector thread to a worker
  that waits on a lock or a ``SimpleQueue`` reached it ~80 µs sooner than through a
  Condition (``scripts/bench/handoff_floor.py``), and one hand-off still costs about as much
  as the thread that reads the socket reading the frame itself (see docs/architecture.md).
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from itertools import repeat
from typing import Any

log = logging.getLogger("easymesh.dispatch")

_BATCH = 64
#: A worker stops filling its batch past this many bytes (it always takes one item).
_BATCH_BYTES = 1 << 20
# _ring's C parts: a bell taken off the line and released within one C call (see _ring).
_popleft = deque.popleft
_release = type(threading.Lock()).release
_consume: Callable[[Any], None] = deque(maxlen=0).extend  # runs an iterator out in C


class Dispatcher:
    """A bounded queue plus ``workers`` threads calling ``run(item)`` for each item."""

    def __init__(
        self,
        thread_name: str,
        run: Callable[[Any], None],
        *,
        workers: int = 1,
        queue_size: int = 1000,
        queue_bytes: int = 64 * 1024 * 1024,
        drop: str = "oldest",
        describe: str = "",
        on_put: Callable[[], None] | None = None,
        on_discard: Callable[[list[Any]], None] | None = None,
        start: bool = True,
    ) -> None:
        if workers < 0:
            raise ValueError("workers must be at least 0")
        if queue_size < 1:
            raise ValueError("queue_size must be at least 1")
        if drop not in ("oldest", "newest"):
            raise ValueError("drop must be 'oldest' or 'newest'")
        self.run = run
        #: False for a thread-less dispatcher (``workers=0``: the owner runs the queue).
        self.threaded = workers > 0
        #: How many worker threads it has (0: thread-less).
        self.workers = workers
        self.describe = describe or thread_name
        self.queue_size = queue_size
        self.queue_bytes = queue_bytes
        self.drop_newest = drop == "newest"
        self.on_put = on_put
        self.on_discard = on_discard
        self._q: deque[tuple[Any, int]] = deque()
        self._bytes = 0
        self._lock = threading.Lock()
        #: Idle workers' bells, longest idle first (see Waking).
        self._sleepers: deque[threading.Lock] = deque()
        self._stopping = False
        self._abandon = False
        self.received = 0
        self.dropped = 0
        self.handled = 0
        self.errors = 0
        self._threads = [
            threading.Thread(target=self._work, name=f"{thread_name}-{i + 1}", daemon=True)
            for i in range(workers)
        ]
        self._alive = 0
        self._started = False
        self._on_ended: list[Callable[[], None]] = []
        if start:
            self.start()

    def start(self) -> None:
        """Start the workers (once; no-op when already started or thread-less)."""
        with self._lock:
            if self._started:
                return
            self._started = True
            if self._abandon:  # stopped before it ever started: nothing will run
                self._threads = []
            self._alive = len(self._threads)
        for t in self._threads:
            t.start()
        if not self._threads:
            self._ended()

    def when_ended(self, fn: Callable[[], None]) -> None:
        """Call ``fn()`` once no worker of this dispatcher runs any more (after
        :meth:`begin_stop`); at once if that is already so. Runs in the last worker's
        thread or in the caller's."""
        with self._lock:
            if self._alive or not self._started:
                self._on_ended.append(fn)
                return
        fn()

    def _ended(self) -> None:
        with self._lock:
            fns, self._on_ended = self._on_ended, []
        for fn in fns:
            try:
                fn()
            except Exception:
                log.exception("easymesh: %s: end hook failed", self.describe)

    # -- producers ---------------------------------------------------------------------------

    def put(self, item: Any, nbytes: int) -> bool:
        """Queue one item; False if it was refused (``drop='newest'`` and full, or the
        dispatcher is stopping): then the caller still owns it."""
        return self.put_many(((item, nbytes),)) == 1

    def put_many(self, items: Any) -> int:
        """Queue ``(item, nbytes)`` pairs, dropping per the policy; wakes the workers once.
        Returns how many were queued (with ``drop='newest'``: the first that many).
        Queued items that ``stop()`` later discards go to
        the ``on_discard`` hook (a service answers their callers)."""
        q = self._q
        with self._lock:
            if self._stopping:
                return 0
            if len(q) + len(items) <= self.queue_size:
                # The common case: room for the whole batch.
                nbytes = self._bytes
                for entry in items:
                    nbytes += entry[1]
                if nbytes <= self.queue_bytes:
                    q.extend(items)
                    self._bytes = nbytes
                    self.received += len(items)
                    if self._sleepers:
                        self._ring(len(q))
                    if self.on_put is not None:
                        self.on_put()
                    return len(items)
            accepted = 0
            refusing = False
            for entry in items:
                self.received += 1
                if refusing or (
                    len(q) >= self.queue_size or self._bytes + entry[1] > self.queue_bytes
                ):
                    if self.drop_newest and (q or refusing):  # an empty queue takes one
                        self.dropped += 1
                        refusing = True  # newer items of the batch go too: a prefix is kept
                        continue
                    while q and (
                        len(q) >= self.queue_size or self._bytes + entry[1] > self.queue_bytes
                    ):
                        self._bytes -= q.popleft()[1]
                        self.dropped += 1
                q.append(entry)
                self._bytes += entry[1]
                accepted += 1
            if self._sleepers:
                self._ring(len(q))
        if self.on_put is not None:
            self.on_put()
        return accepted

    def _ring(self, wanted: int) -> None:
        """(lock held) Wake up to ``wanted`` idle workers, longest idle first: each is taken
        off ``_sleepers`` here and its bell released, so no worker is rung twice.

        Taking a bell off and releasing it happen in C, with no bytecode in between: the
        producer may be the main thread (a send to this node's own listener, a request to its
        own service, ``close``), where a KeyboardInterrupt lands between any two bytecodes; a
        bell taken off but never released left its worker asleep for ever (a listener of one
        worker then ran nothing more). ``Condition.notify`` guards the same moment (CPython
        gh-92530). (Callers ring only when a worker is idle.)"""
        sleepers = self._sleepers
        if wanted == 1 or (wanted > 1 and len(sleepers) == 1):  # one bell: the common case
            _consume(map(_release, map(_popleft, (sleepers,))))  # (cheaper than the loop was)
        else:
            _consume(map(_release, map(_popleft, repeat(sleepers, min(len(sleepers), wanted)))))

    def _discard(self, items: list[Any]) -> None:
        """Items that will never run: tell the owner (a service answers their callers)."""
        if self.on_discard is not None and items:
            try:
                self.on_discard(items)
            except Exception:
                log.exception("easymesh: %s: discarding queued items failed", self.describe)

    @property
    def stopping(self) -> bool:
        return self._stopping

    @property
    def queued(self) -> int:
        return len(self._q)

    # -- workers -----------------------------------------------------------------------------

    def _work(self) -> None:
        try:
            self._work_loop()
        finally:
            with self._lock:
                self._alive -= 1
                last = self._alive == 0
            if last:
                self._ended()

    def _work_loop(self) -> None:
        q = self._q
        lock = self._lock
        bell = threading.Lock()  # this worker's: held while it runs, released to wake it
        bell.acquire()
        sleepers = self._sleepers
        run = self.run
        batch: list[Any] = []
        nworkers = len(self._threads)
        # What this worker ran (and what raised) since it last held the lock: added to the
        # shared counters under it, once per batch (several workers share them: an
        # unlocked ``+=`` from two of them can lose counts).
        ran = failed = 0
        while True:
            with lock:
                if ran:
                    self.handled += ran
                    ran = 0
                    if failed:
                        self.errors += failed
                        failed = 0
                while not q:
                    if self._stopping:
                        return
                    sleepers.append(bell)
                    lock.release()  # (a worker thread gets no KeyboardInterrupt in between)
                    bell.acquire()  # released by _ring, which took it off _sleepers
                    lock.acquire()
                if self._abandon:
                    return
                # One worker takes a batch (one lock round per batch); several share
                # the queue so that one slow item does not hold many others behind it.
                n = (
                    min(len(q), _BATCH)
                    if nworkers == 1
                    else max(1, min(len(q) // nworkers, _BATCH))
                )
                taken = 0
                for _ in range(n):
                    item, nbytes = q.popleft()
                    self._bytes -= nbytes
                    batch.append(item)
                    taken += nbytes
                    if taken >= _BATCH_BYTES:
                        break  # large items one by one: bounded memory, the newest sooner
            for i, item in enumerate(batch):
                if self._abandon:
                    with lock:
                        self.handled += ran + i
                        self.errors += failed
                    self._discard(batch[i:])
                    return
                try:
                    run(item)
                except BaseException:  # SystemExit from a callback must not end the worker
                    failed += 1
                    log.exception("easymesh: %s raised", self.describe)
            ran += len(batch)
            batch.clear()
            item = None  # the last message too is dropped now (shared memory goes back)

    def run_queued(self, limit: int | None = None) -> int:
        """(thread-less mode) Run up to ``limit`` queued items (default: those queued now)
        in the calling thread; returns how many ran. Exceptions are logged and counted."""
        q = self._q
        n = len(q) if limit is None else min(limit, len(q))
        ran = 0
        for _ in range(n):
            with self._lock:
                if not q or self._abandon:
                    break
                item, nbytes = q.popleft()
                self._bytes -= nbytes
                # Counted as it is taken, under the lock: two threads may spin one queue.
                self.handled += 1
            try:
                self.run(item)
            except Exception:
                with self._lock:
                    self.errors += 1
                log.exception("easymesh: %s raised", self.describe)
            ran += 1
        return ran

    # -- lifecycle ---------------------------------------------------------------------------

    def stop(self, timeout: float = 2.0, drain: bool = True) -> bool:
        """Stop the workers; with ``drain`` they first finish the queue, up to ``timeout``
        seconds. Returns True if all workers ended. Safe to call from a worker."""
        self.begin_stop(drain)
        return self.join(time.monotonic() + timeout)

    def begin_stop(self, drain: bool = True) -> None:
        """Refuse new items and tell the workers to end (after the queue, with ``drain``).
        Returns at once; see :meth:`join`."""
        with self._lock:
            self._stopping = True
            left = []
            if not drain or not self._threads or not self._started:
                # thread-less, or never started: nobody will run the queue now
                self._abandon = True
                left = self._take_all()
            self._ring(len(self._sleepers))
        self._discard(left)
        if not self._started:
            self.start()  # runs the end hooks (no worker will ever run)

    def join(self, deadline: float) -> bool:
        """Wait until the workers ended or ``deadline`` (a ``time.monotonic()`` value)
        passes; then abandon what is still queued (each worker ends after its current
        item). Never joins the calling thread. True if all workers ended."""
        me = threading.current_thread()
        ended = True
        for t in self._threads:
            if t is me:
                continue
            try:
                t.join(max(0.0, deadline - time.monotonic()))
            except RuntimeError:
                # start(), on another thread, marked us started but has not started this
                # worker yet: nothing to wait for; once it runs it ends at once (abandoned).
                ended = False
                continue
            ended = ended and not t.is_alive()
        if not ended:
            with self._lock:
                self._abandon = True  # stop after the current item
                left = self._take_all()
            self._discard(left)
        return ended

    def _take_all(self) -> list[Any]:
        """(lock held) Empty the queue; the items, counted as dropped."""
        items = [entry[0] for entry in self._q]
        self.dropped += len(items)
        self._q.clear()
        self._bytes = 0
        return items

    def owns_current_thread(self) -> bool:
        return threading.current_thread() in self._threads

    def stats(self) -> dict[str, int]:
        return {
            "received": self.received,
            "handled": self.handled,
            "dropped": self.dropped,
            "errors": self.errors,
            "queued": len(self._q),
        }
