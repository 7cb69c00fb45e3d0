"""The selector I/O thread: one selector, a call queue, a timer heap, a wake-up socketpair.

A :class:`LoopThread` is run for one or more owners, each through its own
:class:`easymesh.transport.loop.IOLoop` view (the design, and why every ``Node`` of a
process shares one thread, is in that module's docstring). This module knows nothing of
the views but the two calls it makes on them (:class:`View`): a crash is reported to
each, and each stops waiting once the thread is gone.

Only this thread owns sockets and protocol state (with one exception: a user thread may
write a frame straight to an idle connection under that connection's lock, see
connection.py). Other threads hand work to it with :meth:`LoopThread.call_soon` /
:meth:`LoopThread.call_later`, which wake it with one byte on the socketpair; wake-ups
are coalesced (one byte per batch of calls). ``_run`` keeps its fast path inline: with
nothing queued and no timer due a wake-up costs no Python call.

A handler that raises is logged and the loop carries on: an exception never kills the
thread, so one owner's failing handler does not stop the others. Should the thread end
any other way (a ``BaseException`` such as ``KeyboardInterrupt`` delivered to it, or a
bug in the loop itself), every view still attached hears of it (``crashed_with``) before
the sockets close — each node then fails loudly instead of hanging.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import os
import selectors
import socket
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Any, Protocol

log = logging.getLogger("easymesh.loop")

READ = selectors.EVENT_READ
WRITE = selectors.EVENT_WRITE


def _noop(*_args: Any) -> None:
    pass


class Timer:
    """A scheduled call; ``cancel()`` is safe from any thread. ``cancelled`` is also set
    once the timer ran (a timer runs once)."""

    __slots__ = ("when", "fn", "args", "cancelled")

    def __init__(self, when: float, fn: Callable[..., Any], args: tuple[Any, ...]) -> None:
        self.when = when
        self.fn = fn
        self.args = args
        self.cancelled = False

    def cancel(self) -> None:
        self.cancelled = True
        # A cancelled timer stays in the heap until its deadline; let go of the callable
        # now so that what it references (a closed connection and its read buffer) can
        # be freed: under churn, 5 s of cancelled handshake timers held ~400 closed
        # connections (100 MB) in the coordinator. One atomic store: the loop thread may
        # be reading fn and args at this moment, and _noop takes any arguments.
        self.fn = _noop


class View(Protocol):
    """What the thread needs of an owner's view."""

    left: threading.Event

    def crashed_with(self, exc: BaseException) -> None: ...


class LoopThread:
    """The I/O thread: a selector, a call queue, timers and a wake-up socketpair, shared
    by the views attached to it."""

    def __init__(self, thread_name: str, name: str) -> None:
        self.name = name
        self.pid = os.getpid()
        #: Why the thread ended, if it ended by an exception (None otherwise).
        self.crashed: BaseException | None = None
        self._selector = selectors.DefaultSelector()
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)
        self._selector.register(self._wake_r, READ, self._drain_wake)
        self._calls: deque[tuple[Callable[..., Any], tuple[Any, ...]]] = deque()
        self._wake_pending = False
        self._timers: list[tuple[float, int, Timer]] = []
        self._timer_lock = threading.Lock()
        self._seq = itertools.count()
        self._next_deadline = float("inf")
        self._stopping = False
        self._thread = threading.Thread(target=self._run, name=thread_name, daemon=True)
        self._ident: int | None = None
        self.stopped = threading.Event()
        self._views: set[View] = set()
        self._views_lock = threading.Lock()
        self._started = False
        self._released = False  # the last view left: no view may attach any more

    # -- views and lifecycle -----------------------------------------------------------------

    def attach(self, view: View) -> None:
        """Count ``view`` as an owner. Raises RuntimeError once the last one left or the
        thread is ending (stopping, or crashed: its owners are being told, and a view that
        came now would be neither told nor served)."""
        with self._views_lock:
            if self._released or self._stopping or self.stopped.is_set():
                raise RuntimeError("this I/O thread is ending")
            self._views.add(view)

    def detach(self, view: View) -> bool:
        """Forget ``view``; True when it was the last (the caller then stops the thread)."""
        with self._views_lock:
            self._views.discard(view)
            if self._views or self._released:
                return False
            self._released = True
            return True

    def start(self) -> None:
        """Start the thread (once; later calls do nothing)."""
        with self._views_lock:
            if self._started:
                return
            self._started = True
        self._thread.start()

    @property
    def started(self) -> bool:
        return self._started

    def stop(self, timeout: float = 5.0) -> None:
        """Stop the loop and close the selector. Joins the thread unless called from it."""
        self.call_soon(self._set_stopping)
        if not self.in_loop_thread() and self._thread.is_alive():
            self._thread.join(timeout)

    def _set_stopping(self) -> None:
        self._stopping = True

    @property
    def stopping(self) -> bool:
        """True once stop() was requested (and processed) or the loop ended."""
        return self._stopping or self.stopped.is_set()

    def in_loop_thread(self) -> bool:
        return threading.get_ident() == self._ident

    @property
    def running(self) -> bool:
        return self._thread.is_alive() and not self._stopping

    # -- scheduling (any thread) -------------------------------------------------------------

    def call_soon(self, fn: Callable[..., Any], *args: Any) -> None:
        """Run ``fn(*args)`` on the I/O thread, soon. Safe from any thread."""
        self._calls.append((fn, args))
        if not self._wake_pending and threading.get_ident() != self._ident:
            self._wake_pending = True
            self._wake()

    def call_later(self, delay: float, fn: Callable[..., Any], *args: Any) -> Timer:
        """Run ``fn(*args)`` on the I/O thread after ``delay`` seconds. Safe from any thread;
        wakes the loop only if this deadline is earlier than the one it sleeps towards."""
        when = time.monotonic() + max(0.0, delay)
        timer = Timer(when, fn, args)
        with self._timer_lock:
            heapq.heappush(self._timers, (when, next(self._seq), timer))
            earlier = when < self._next_deadline
            if earlier:
                self._next_deadline = when  # the loop sleeps towards this one from now on
        if earlier and threading.get_ident() != self._ident:
            self._wake()
        return timer

    def _wake(self) -> None:
        try:
            self._wake_w.send(b"\0")
        except (BlockingIOError, InterruptedError):
            pass  # the pipe is full: the loop is awake anyway
        except OSError:
            pass  # closed: the loop is gone

    def _drain_wake(self, _mask: int) -> None:
        try:
            while self._wake_r.recv(4096):
                pass
        except (BlockingIOError, InterruptedError):
            pass

    # -- selector (I/O thread only) ----------------------------------------------------------

    def register(self, sock: socket.socket, events: int, handler: Callable[[int], None]) -> None:
        self._selector.register(sock, events, handler)

    def modify(self, sock: socket.socket, events: int, handler: Callable[[int], None]) -> None:
        self._selector.modify(sock, events, handler)

    def unregister(self, sock: socket.socket) -> None:
        try:
            self._selector.unregister(sock)
        except (KeyError, ValueError, OSError):
            pass

    # -- the thread --------------------------------------------------------------------------

    def _run(self) -> None:
        self._ident = threading.get_ident()
        select = self._selector.select
        calls = self._calls
        monotonic = time.monotonic
        inf = float("inf")
        try:
            while True:
                # The checks inline are the common case (nothing queued, no timer due):
                # no Python call for it on every wake-up.
                if calls or self._wake_pending:
                    self._run_calls(calls)
                if self._stopping:
                    break
                now = monotonic()
                next_deadline = self._next_deadline
                if next_deadline <= now:
                    timeout = self._run_timers()
                else:
                    timeout = None if next_deadline == inf else next_deadline - now
                if calls:
                    timeout = 0.0
                try:
                    events = select(timeout)
                except InterruptedError:
                    continue
                for key, mask in events:
                    try:
                        key.data(mask)
                    except Exception:
                        log.exception("easymesh %s: I/O handler failed", self.name)
        except BaseException as exc:
            self.crashed = exc
            log.critical("easymesh %s: the I/O thread died", self.name, exc_info=True)
            self._stopping = True
        finally:
            self._end()

    def _end(self) -> None:
        # The owners hear of a crash before the sockets close: closing them fails what
        # went out on them with a bland "closing" error, and the reason must win.
        with self._views_lock:
            views = list(self._views)
        if self.crashed is not None:
            for view in views:
                view.crashed_with(self.crashed)
        try:
            self._close_all()
        except BaseException:
            log.exception("easymesh %s: closing the sockets failed", self.name)
        self.stopped.set()
        with self._views_lock:
            views = list(self._views)
        for view in views:
            view.left.set()  # nobody waits on a thread that is gone

    def _run_calls(self, calls: deque[tuple[Callable[..., Any], tuple[Any, ...]]]) -> None:
        self._wake_pending = False
        for _ in range(len(calls)):
            fn, args = calls.popleft()
            try:
                fn(*args)
            except Exception:
                log.exception("easymesh %s: scheduled call failed", self.name)

    def _run_timers(self) -> float | None:
        """Run due timers; the seconds until the next one (None: no timers)."""
        timers = self._timers
        while True:
            with self._timer_lock:
                if not timers:
                    self._next_deadline = float("inf")
                    return None
                when, _, timer = timers[0]
                now = time.monotonic()
                if timer.cancelled:
                    heapq.heappop(timers)
                    continue
                if when > now:
                    self._next_deadline = when
                    return when - now
                heapq.heappop(timers)
            fn = timer.fn
            timer.cancelled = True  # spent: its owner's list of timers may forget it
            try:
                fn(*timer.args)
            except Exception:
                log.exception("easymesh %s: timer failed", self.name)
            timer.fn, timer.args = _noop, ()  # what it referenced may go (see Timer.cancel)

    def _close_all(self) -> None:
        self.abort(list(self._selector.get_map().values()))
        # calls queued before or by the closers (on_close notifications) run now; one of
        # them may register a new socket (a connect queued just before the stop): abort
        # whatever is registered once more.
        self._run_calls(self._calls)
        self.abort(list(self._selector.get_map().values()))
        self._selector.close()
        self._wake_r.close()
        self._wake_w.close()

    def abort(self, keys: list[selectors.SelectorKey]) -> None:
        """(I/O thread) Close what these keys registered: through its owner's ``abort()``
        (a Connection, a Listener) or else by closing the socket."""
        closers = []
        for key in keys:
            if key.fileobj is self._wake_r:
                continue
            owner = getattr(key.data, "__self__", None)
            close = getattr(owner, "abort", None)
            if callable(close):
                closers.append(close)
            else:
                self.unregister(key.fileobj)  # type: ignore[arg-type]
                try:
                    key.fileobj.close()  # type: ignore[union-attr]
                except OSError:
                    pass
        for close in closers:
            try:
                close()
            except Exception:
                log.exception("easymesh %s: closing failed", self.name)

    def key(self, sock: Any) -> selectors.SelectorKey | None:
        try:
            return self._selector.get_key(sock)
        except (KeyError, ValueError, RuntimeError):
            return None
