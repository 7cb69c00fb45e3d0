"""An owner's I/O loop: its share of a selector thread. Every ``Node`` of a process
shares one thread.

:class:`IOLoop` is what a node's parts (router, connections, listeners, coordinator
client) and the coordinator schedule calls and timers on and register sockets with. It
is a view of a :class:`~easymesh.transport.loopthread.LoopThread` (the thread: selector,
call queue, timers) that remembers which sockets and timers are its owner's, so that
:meth:`IOLoop.stop` removes exactly those and leaves the thread serving its other owners.

* ``IOLoop(name)``: a private thread (``easymesh-<name>-io``), ended by ``stop()``. The
  coordinator and the transport tests use it.
* :func:`shared_loop`: every ``Node`` of a process gets a view of one shared thread
  (``easymesh-io``), created with the first node and stopped when the last view stops
  (counted under the thread's lock); a node created after that starts a new thread.
  ``EASYMESH_IO_LOOP=own`` gives each node a private thread again (kept to measure the
  two side by side in one run, and as a way back should a program depend on per-node
  threads, e.g. their names).

Why one thread per process (issue 15). With a thread per node, a topology change that
concerns 100 nodes of a process woke 100 threads: a GIL hand-over and a context switch
each, ~0.285 ms of CPU per node against ~0.130 ms when one thread wakes once and serves
them all (``scripts/bench/thread_floor.py``); a join storm of 1,000 nodes spent most of
its CPU there. One thread also means one selector, one wake-up pair and one timer heap
per process instead of per node. What it costs: the nodes of a process share one
thread's time (none of it runs user code, see docs/architecture.md "Threads"), and if
that thread dies every node on it fails (each is told, marked closed and logs it).

The hot path costs what it did: ``call_soon``, ``modify`` and ``in_loop_thread`` *are*
the thread's bound methods (instance attributes set once, no forwarding frame). A
blocking call made on the thread raises at once whichever node it belongs to
(``in_loop_thread`` compares with the shared thread: it is the one that would wait).

Leaving (``stop``) takes two turns of the thread: the first aborts the owner's sockets,
whose closers may queue notifications (``on_close``) or register a socket (a connect
queued just before); the second, queued behind those, aborts what is left, cancels the
owner's timers and from then on drops its calls, as a private thread that stopped never
ran them. On the thread itself ``stop`` does not wait for the second turn (it cannot wait
on itself). Bounded by ``timeout`` either way.

Fork: a child process has a copy of the parent's views and thread object but not the
thread; :func:`shared_loop` in the child starts a new one (``os.register_at_fork`` and a
pid check).
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from collections.abc import Callable
from typing import Any

from easymesh.transport.loopthread import READ, WRITE, LoopThread, Timer

log = logging.getLogger("easymesh.loop")

__all__ = ["IOLoop", "LoopThread", "READ", "WRITE", "Timer", "shared_loop", "SHARED_THREAD_NAME"]

SHARED_THREAD_NAME = "easymesh-io"


def _drop(*_args: Any) -> None:
    """``call_soon`` of a view that left: its owner is closed."""


class IOLoop:
    """One owner's share of an I/O thread: schedule calls and timers on it, register
    sockets with it. ``thread``: a view of that (shared) thread; default: a private one."""

    #: Run ``fn(*args)`` on the I/O thread, soon. Safe from any thread.
    call_soon: Callable[..., None]
    #: (I/O thread) Change what a registered socket waits for.
    modify: Callable[[socket.socket, int, Callable[[int], None]], None]
    #: Whether the calling thread is the I/O thread.
    in_loop_thread: Callable[[], bool]

    def __init__(
        self,
        name: str,
        on_crash: Callable[[BaseException], None] | None = None,
        *,
        thread: LoopThread | None = None,
    ) -> None:
        self.name = name
        self.on_crash = on_crash
        if thread is None:
            thread = LoopThread(f"easymesh-{name}-io", name)
        self.thread = thread
        self.call_soon = thread.call_soon
        self.modify = thread.modify
        self.in_loop_thread = thread.in_loop_thread
        self._owned: dict[Any, Callable[[int], None]] = {}  # I/O thread only
        self._timers: set[Timer] = set()
        self._lock = threading.Lock()  # _timers, _prune_at, _leaving
        self._prune_at = 64
        self._leaving = False
        #: Set once this view left (or the thread is gone).
        self.left = threading.Event()
        thread.attach(self)

    # -- lifecycle ---------------------------------------------------------------------------

    def start(self) -> None:
        """Start the thread unless it runs already (shared: another owner started it)."""
        self.thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        """Leave: close this owner's sockets, cancel its timers, drop its later calls; the
        thread stops when its last owner left. Idempotent; waits up to ``timeout`` unless
        called on the I/O thread."""
        deadline = time.monotonic() + timeout
        thread = self.thread
        with self._lock:
            already, self._leaving = self._leaving, True
        if already:
            if not thread.in_loop_thread():
                self.left.wait(timeout)
            return
        if thread.in_loop_thread():
            self._abort_owned()
            thread.call_soon(self._finish_leaving)
        elif thread.started and thread.running:
            thread.call_soon(self._leave)
            self.left.wait(timeout)
        else:  # never started, or ended: no thread runs, nothing to wait for
            self._finish_leaving()
        if thread.detach(self):
            thread.stop(max(0.0, deadline - time.monotonic()))

    def _leave(self) -> None:
        self._abort_owned()
        self.thread.call_soon(self._finish_leaving)  # behind what the closers queued

    def _finish_leaving(self) -> None:
        self._abort_owned()
        with self._lock:
            timers, self._timers = self._timers, set()
        for timer in timers:
            timer.cancel()
        self.call_soon = _drop
        self.left.set()

    def _abort_owned(self) -> None:
        keys = [key for key in map(self.thread.key, list(self._owned)) if key is not None]
        self._owned.clear()
        self.thread.abort(keys)

    def crashed_with(self, exc: BaseException) -> None:
        """(the dying I/O thread) Tell the owner, before its sockets close."""
        if self.on_crash is None:
            return
        try:
            self.on_crash(exc)
        except BaseException:
            log.exception("easymesh %s: the crash handler failed", self.name)

    @property
    def stopping(self) -> bool:
        """True once this owner began to leave, or the thread is stopping or ended."""
        return self._leaving or self.thread.stopping

    @property
    def running(self) -> bool:
        return not self._leaving and self.thread.running

    @property
    def crashed(self) -> BaseException | None:
        """Why the thread ended, if it ended by an exception."""
        return self.thread.crashed

    @property
    def stopped(self) -> threading.Event:
        """Set once the thread ended (shared: not when only this owner left)."""
        return self.thread.stopped

    # -- timers (any thread) -----------------------------------------------------------------

    def call_later(self, delay: float, fn: Callable[..., Any], *args: Any) -> Timer:
        """Run ``fn(*args)`` on the I/O thread after ``delay`` seconds. Safe from any
        thread. After ``stop()`` the timer is returned cancelled."""
        with self._lock:
            if self._leaving:
                timer = Timer(0.0, fn, args)
                timer.cancel()
                return timer
        timer = self.thread.call_later(delay, fn, *args)
        with self._lock:
            if self._leaving:
                # stop() began since the check above, and its last turn may have cancelled
                # the timers already: this one would run for a closed owner (the thread
                # serves others and lives on), so it is cancelled here.
                timer.cancel()
                return timer
            timers = self._timers
            timers.add(timer)
            if len(timers) > self._prune_at:  # spent and cancelled ones go, amortised O(1)
                self._timers = timers = {t for t in timers if not t.cancelled}
                self._prune_at = max(64, 2 * len(timers))
        return timer

    # -- selector (I/O thread only) ----------------------------------------------------------

    def register(self, sock: socket.socket, events: int, handler: Callable[[int], None]) -> None:
        self.thread.register(sock, events, handler)
        self._owned[sock] = handler
        if self.left.is_set():
            # A call queued by a thread that looked up call_soon just before this owner
            # left (e.g. a peer dialled while the node closed) ran after it: nothing of a
            # closed owner may stay on a thread that serves others. Closed at once.
            self._abort_owned()

    def unregister(self, sock: socket.socket) -> None:
        self.thread.unregister(sock)
        self._owned.pop(sock, None)


# -- the process's shared thread -------------------------------------------------------------

_shared_lock = threading.Lock()
_shared: LoopThread | None = None


def shared_loop(name: str, on_crash: Callable[[BaseException], None] | None = None) -> IOLoop:
    """A view of this process's shared I/O thread for the owner ``name``; the thread is
    created (not started: :meth:`IOLoop.start`) if none runs, or the last one is ending,
    or it belongs to the parent of this forked process."""
    global _shared
    with _shared_lock:
        thread = _shared
        if thread is not None and thread.pid == os.getpid():
            try:
                return IOLoop(name, on_crash, thread=thread)
            except RuntimeError:
                pass  # its last owner just left: it is stopping
        thread = _shared = LoopThread(SHARED_THREAD_NAME, "io")
        return IOLoop(name, on_crash, thread=thread)


def _forget_after_fork() -> None:
    # The child has a copy of the parent's thread object but no thread: never reuse it.
    global _shared, _shared_lock
    _shared = None
    _shared_lock = threading.Lock()


os.register_at_fork(after_in_child=_forget_after_fork)
