"""The futures thread: one thread that completes ``request_future`` futures.

Done-callbacks of a Future run on the thread that completes it, and user code must
not run on the I/O thread (nor may a custom codec decode there), so the I/O thread
hands the answers of one read over *as one batch* and this thread decodes them and
completes the futures.

Why not a :class:`~easymesh.dispatch.Dispatcher`: that is a bounded, policy-driven
queue with a Python ``Condition``, whose wait/notify pair costs several
microseconds per wake-up. Here nothing is ever dropped (every future must complete)
and the producer is one I/O thread, so a ``queue.SimpleQueue`` (C code: a put is a
lock release, a get a lock acquire) carries lists of answers; with 100 requests in
flight that halves the cost of the hand-off per answer.

Stopping, as a dispatcher does: :meth:`Completer.begin_stop` refuses new batches
(the owner finishes those itself) and lets the thread finish what was handed over;
:meth:`Completer.join` waits until a deadline, then *abandons* what is left —
``on_abandoned`` gets it — so a done-callback that blocks forever cannot hold a
closing node.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable
from typing import Any

log = logging.getLogger("easymesh.node")

__all__ = ["Completer"]

_STOP = None  # the end-of-work marker in the queue


class Completer:
    """Runs ``finish(item)`` for the items of each batch, in order, on its own thread
    (started by the first batch)."""

    def __init__(
        self,
        name: str,
        finish: Callable[[Any], None],
        on_abandoned: Callable[[list[Any]], None],
    ) -> None:
        self.name = name
        self._finish = finish
        self._on_abandoned = on_abandoned
        self._q: queue.SimpleQueue[list[Any] | None] = queue.SimpleQueue()
        self._lock = threading.Lock()  # orders put() against begin_stop()'s marker
        self._stopping = False
        self._abandon = False
        self._thread: threading.Thread | None = None
        self._ident = -1

    def put(self, batch: list[Any]) -> bool:
        """Hand ``batch`` over; False once stopping (the caller finishes it itself)."""
        with self._lock:
            if self._stopping:
                return False
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name=self.name, daemon=True)
                self._thread.start()
            self._q.put(batch)
        return True

    def owns_current_thread(self) -> bool:
        return threading.get_ident() == self._ident

    def _run(self) -> None:
        self._ident = threading.get_ident()
        get = self._q.get
        finish = self._finish
        while True:
            batch = get()
            if batch is _STOP:
                return
            # A batch taken just as join() gave up is handed on below (its first item
            # sees ``_abandon``): returning with it in hand would leave its futures pending.
            for i, item in enumerate(batch):
                if self._abandon:
                    self._on_abandoned(batch[i:])
                    return
                try:
                    finish(item)
                except BaseException:  # a done-callback's SystemExit must not end us
                    log.exception("easymesh: %s: completing a future failed", self.name)
            batch = item = None  # drop the last answer now (shared memory goes back)

    def begin_stop(self) -> None:
        """Refuse new batches; the thread ends once it finished what it was given."""
        with self._lock:
            if self._stopping:
                return
            self._stopping = True
            if self._thread is not None:
                self._q.put(_STOP)

    def join(self, deadline: float) -> bool:
        """Wait for the thread until ``deadline`` (``time.monotonic()``); past it, hand
        what it has not started to ``on_abandoned``. True if the thread ended."""
        t = self._thread
        if t is None or t.ident == threading.get_ident():
            return t is None
        t.join(max(0.0, deadline - time.monotonic()))
        if not t.is_alive():
            return True
        self._abandon = True  # the thread stops after its current item
        left: list[Any] = []
        while True:
            try:
                batch = self._q.get_nowait()
            except queue.Empty:
                break
            if batch is not _STOP:
                left.extend(batch)
        self._q.put(_STOP)  # the thread, once free, finds this and ends
        if left:
            self._on_abandoned(left)
        return False
