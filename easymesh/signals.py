"""Stopping on SIGINT and SIGTERM: the one signal helper of the coordinator, the node's
``forever()`` and the commands.

Two ways to react, for two kinds of main thread:

- :func:`install` / :func:`stopping_on` call a stop function, ``stop(signum)``. The Python
  handler does nothing but write the signal number into a pipe; a small thread
  (``easymesh-signals``) reads it and calls ``stop``. The handler runs on the main thread
  between two bytecodes, possibly while that thread holds the very lock ``stop`` needs
  (``Event.set`` while the main thread is inside ``Event.wait``'s ``with self._cond``, a
  ``queue.Queue.put`` while it is inside ``get``): calling ``stop`` there can deadlock,
  rarely and unreproducibly. ``os.write`` takes no Python lock, and ``stop`` runs on an
  ordinary thread, so it may set Events, put on queues and close nodes (``close()`` is
  callable from any thread).
- :func:`interrupt_on` makes the signals raise KeyboardInterrupt in the main thread, as
  Ctrl-C does by default: for a main thread running a loop that already handles Ctrl-C
  (the tools), where SIGTERM should simply mean the same.

Both install their handlers even over an inherited ``SIG_IGN`` (a shell starts ``cmd &``
with SIGINT ignored): the program asked for these signals to stop it. Only the main thread
may set handlers; elsewhere nothing is installed and the returned ``restore`` does nothing
(the caller's own stop path still works). ``restore()`` puts the previous handlers back,
stops the thread and joins it (bounded), and may be called more than once.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

log = logging.getLogger("easymesh.signals")

#: What the coordinator, nodes and tools stop on.
STOP_SIGNALS: tuple[signal.Signals, ...] = (signal.SIGINT, signal.SIGTERM)
#: meshlaunch and meshbag also stop when their terminal goes away.
STOP_SIGNALS_HUP: tuple[signal.Signals, ...] = STOP_SIGNALS + (signal.SIGHUP,)
#: Seconds restore() waits for a stop() still running on the signal thread.
JOIN_TIMEOUT = 30.0
#: Longest a main thread waiting for a stop should sleep in one go. Linux gives a signal sent
#: to the process to *some* thread that does not block it — usually the main thread, but not
#: when a signal is already pending there — and Python runs its handler only on the main
#: thread, once that thread next runs bytecode: a main thread asleep in a long lock wait
#: would not see the signal until the wait ends. Waiting in slices of this length bounds it.
WAIT_SLICE = 0.25

Restore = Callable[[], None]
_QUIT = 0  # no signal has number 0: the byte that ends the thread


def _on_main_thread() -> bool:
    return threading.current_thread() is threading.main_thread()


def _set_handlers(signals: tuple[int, ...], handler: Any) -> Restore:
    """Install ``handler`` for ``signals``; return what puts the previous ones back."""
    previous = {sig: signal.signal(sig, handler) for sig in signals}
    done = False

    def restore() -> None:
        nonlocal done
        if done:
            return
        done = True
        for sig, old in previous.items():
            signal.signal(sig, old if old is not None else signal.SIG_DFL)

    return restore


def install(stop: Callable[[int], object], signals: tuple[int, ...] = STOP_SIGNALS) -> Restore:
    """Until the returned ``restore()`` is called, each of ``signals`` calls
    ``stop(signum)`` on the thread ``easymesh-signals`` (every time: a second Ctrl-C calls
    it again). An exception from ``stop`` is logged, never raised. Does nothing off the
    main thread. Call ``restore()`` on the main thread too (not from ``stop``: setting
    handlers is the main thread's privilege)."""
    if not _on_main_thread():
        return lambda: None
    read_fd, write_fd = os.pipe2(os.O_CLOEXEC | os.O_NONBLOCK)
    os.set_blocking(read_fd, True)

    def handler(signum: int, frame: Any) -> None:
        try:
            os.write(write_fd, bytes([signum]))
        except OSError:  # pipe full: stops are already pending
            pass

    thread = threading.Thread(
        target=_deliver, args=(read_fd, stop), name="easymesh-signals", daemon=True
    )
    thread.start()
    put_back = _set_handlers(signals, handler)
    lock = threading.Lock()
    is_open = [True]

    def restore() -> None:
        with lock:
            if not is_open[0]:
                return
            is_open[0] = False
            put_back()  # from now on no signal reaches ``handler``
            os.set_blocking(write_fd, True)
            os.write(write_fd, bytes([_QUIT]))
        if thread is not threading.current_thread():
            thread.join(JOIN_TIMEOUT)
        os.close(write_fd)

    return restore


def _deliver(read_fd: int, stop: Callable[[int], object]) -> None:
    """The signal thread: call ``stop`` for every signal number read, until the quit byte."""
    try:
        while True:
            try:
                data = os.read(read_fd, 64)
            except InterruptedError:
                continue
            for signum in data:
                if signum == _QUIT:
                    return
                try:
                    stop(signum)
                except Exception:
                    log.exception("easymesh: the stop function for signal %d failed", signum)
            if not data:
                return
    finally:
        os.close(read_fd)


def interrupt_on(signals: tuple[int, ...] = STOP_SIGNALS) -> Restore:
    """Until ``restore()``, each of ``signals`` raises KeyboardInterrupt in the main thread
    (as Ctrl-C does by default). Does nothing off the main thread."""
    if not _on_main_thread():
        return lambda: None

    def handler(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    return _set_handlers(signals, handler)


@contextmanager
def stopping_on(
    stop: Callable[[int], object], signals: tuple[int, ...] = STOP_SIGNALS
) -> Iterator[None]:
    """:func:`install` for the duration of a ``with`` block."""
    restore = install(stop, signals)
    try:
        yield
    finally:
        restore()


@contextmanager
def interrupting_on(signals: tuple[int, ...] = STOP_SIGNALS) -> Iterator[None]:
    """:func:`interrupt_on` for the duration of a ``with`` block."""
    restore = interrupt_on(signals)
    try:
        yield
    finally:
        restore()
