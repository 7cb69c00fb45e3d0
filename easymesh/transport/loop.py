"""One selector-based I/O thread per Node or Coordinator.

Only this thread owns sockets and protocol state (with one exception: a user
thread may write a frame straight to an idle connection under that
connection's lock, see connection.py). Other threads hand work to the loop with
:meth:`IOLoop.call_soon` / :meth:`IOLoop.call_later`, which wake it with one
byte on a socketpair; wake-ups are coalesced (one byte per batch of calls).

A handler that raises is logged and the loop carries on: an exception never
kills the I/O thread. Should the thread end any other way (a ``BaseException``
such as ``KeyboardInterrupt`` delivered to it, or a bug in the loop itself), the
owner hears of it through ``on_crash(exc)`` — a node then fails loudly (marks
itself closed with the reason, fails its pending requests) instead of hanging.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import selectors
import socket
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Any

log = logging.getLogger("easymesh.loop")

READ = selectors.EVENT_READ
WRITE = selectors.EVENT_WRITE


def _noop(*_args: Any) -> None:
    pass


class Timer:
    """A scheduled call; ``cancel()`` is safe from any thread."""

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


class IOLoop:
    """The I/O thread: a selector, a call queue, timers and a wake-up socketpair."""

    def __init__(self, name: str, on_crash: Callable[[BaseException], None] | None = None) -> None:
        self.name = name
        self.on_crash = on_crash
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
        self._thread = threading.Thread(target=self._run, name=f"easymesh-{name}-io", daemon=True)
        self._ident: int | None = None
        self.stopped = threading.Event()

    # -- lifecycle ---------------------------------------------------------------------------

    def start(self) -> None:
        self._thread.start()

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
            # The owner hears of a crash before the sockets close: closing them fails
            # what went out on them with a bland "closing" error, and the reason must win.
            if self.crashed is not None and self.on_crash is not None:
                try:
                    self.on_crash(self.crashed)
                except BaseException:
                    log.exception("easymesh %s: the crash handler failed", self.name)
            try:
                self._close_all()
            except BaseException:
                log.exception("easymesh %s: closing the sockets failed", self.name)
            self.stopped.set()

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
            try:
                timer.fn(*timer.args)
            except Exception:
                log.exception("easymesh %s: timer failed", self.name)

    def _close_all(self) -> None:
        self._abort_registered()
        # calls queued before or by the closers (on_close notifications) run now; one of
        # them may register a new socket (a connect queued just before the stop): abort
        # whatever is registered once more.
        self._run_calls(self._calls)
        self._abort_registered()
        self._selector.close()
        self._wake_r.close()
        self._wake_w.close()

    def _abort_registered(self) -> None:
        closers = []
        for key in list(self._selector.get_map().values()):
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
