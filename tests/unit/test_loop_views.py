"""The I/O thread shared by several owners (transport/loop.py): each owner's ``IOLoop`` view
removes only its own sockets and timers, the thread ends with its last owner, a crash
reaches every owner, and a forked child never reuses its parent's thread. Real sockets
(socketpairs), a real thread; no node."""

from __future__ import annotations

import os
import socket
import threading
from collections.abc import Iterator
from typing import Any

import pytest

from easymesh.transport import loop as loopmod
from easymesh.transport.loop import READ, IOLoop, LoopThread, shared_loop

WAIT = 10.0


class Reader:
    """Registers one end of a socketpair with a view and records what it reads; has the
    ``abort()`` a view calls when its owner leaves."""

    def __init__(self, view: IOLoop) -> None:
        self.view = view
        self.sock, self.peer = socket.socketpair()
        self.sock.setblocking(False)
        self.got = bytearray()
        self.arrived = threading.Condition()
        self.aborted = threading.Event()

    def start(self) -> None:
        self.view.register(self.sock, READ, self._on_event)

    def _on_event(self, _mask: int) -> None:
        data = self.sock.recv(4096)
        with self.arrived:
            self.got += data
            self.arrived.notify_all()

    def wait_for(self, data: bytes) -> bool:
        with self.arrived:
            return self.arrived.wait_for(lambda: data in self.got, WAIT)

    def abort(self) -> None:
        self.view.unregister(self.sock)
        self.sock.close()
        self.aborted.set()

    def close(self) -> None:
        self.sock.close()
        self.peer.close()


@pytest.fixture
def readers() -> Iterator[list[Reader]]:
    made: list[Reader] = []
    yield made
    for r in made:
        r.close()


def _on_thread(view: IOLoop, fn: Any) -> Any:
    """Run ``fn()`` on the I/O thread and return what it returned."""
    out: list[Any] = []
    ran = threading.Event()
    view.call_soon(lambda: (out.append(fn()), ran.set()))
    assert ran.wait(WAIT)
    return out[0]


def test_a_view_that_leaves_takes_only_its_own_sockets_and_timers(readers: list[Reader]) -> None:
    thread = LoopThread("easymesh-test-io", "test")
    a = IOLoop("a", thread=thread)
    b = IOLoop("b", thread=thread)
    ra, rb = Reader(a), Reader(b)
    readers += [ra, rb]
    a.start()
    b.start()  # started once: the second start does nothing
    a.call_soon(ra.start)
    b.call_soon(rb.start)
    ra.peer.send(b"a1")
    rb.peer.send(b"b1")
    assert ra.wait_for(b"a1") and rb.wait_for(b"b1")
    fired = threading.Event()
    a_timer = a.call_later(3600, fired.set)
    b_fired = threading.Event()
    b_timer = b.call_later(3600, b_fired.set)

    a.stop(timeout=WAIT)
    assert a.left.is_set() and ra.aborted.is_set() and a_timer.cancelled
    assert not rb.aborted.is_set() and not b_timer.cancelled
    assert thread.running  # b still owns it
    rb.peer.send(b"b2")
    assert rb.wait_for(b"b2")
    b.call_later(0.0, b_fired.set)
    assert b_fired.wait(WAIT)
    dropped = threading.Event()
    a.call_soon(dropped.set)  # a left: its calls are dropped ...
    _on_thread(b, lambda: None)  # ... (b's call, queued after it, ran)
    assert not dropped.is_set()
    assert a.call_later(0.0, dropped.set).cancelled

    b.stop(timeout=WAIT)
    assert thread.stopped.wait(WAIT) and rb.aborted.is_set()
    assert not any(t.name == "easymesh-test-io" for t in threading.enumerate())


def test_leaving_on_the_thread_itself_does_not_wait(readers: list[Reader]) -> None:
    thread = LoopThread("easymesh-test-io", "test")
    a, b = IOLoop("a", thread=thread), IOLoop("b", thread=thread)
    ra = Reader(a)
    readers.append(ra)
    a.start()
    a.call_soon(ra.start)
    _on_thread(a, lambda: a.stop(timeout=60.0))  # would hang 60 s if it waited on itself
    assert a.left.wait(WAIT) and ra.aborted.is_set() and thread.running
    assert _on_thread(b, a.in_loop_thread)  # one thread: a blocking call there is refused
    b.stop(timeout=WAIT)
    assert thread.stopped.wait(WAIT)


def test_an_error_in_one_owners_handler_leaves_the_others_running(
    readers: list[Reader], caplog: pytest.LogCaptureFixture
) -> None:
    thread = LoopThread("easymesh-test-io", "test")
    a, b = IOLoop("a", thread=thread), IOLoop("b", thread=thread)
    rb = Reader(b)
    readers.append(rb)
    a.start()
    b.call_soon(rb.start)

    def broken(*_args: Any) -> None:
        raise RuntimeError("a's bug")

    bad_r, bad_w = socket.socketpair()
    bad_r.setblocking(False)

    def broken_reader(_mask: int) -> None:
        bad_r.recv(4096)
        raise RuntimeError("a's bug")

    try:
        a.call_soon(broken)
        a.call_later(0.0, broken)
        a.call_soon(a.register, bad_r, READ, broken_reader)
        bad_w.send(b"x")
        _on_thread(a, lambda: None)
        bad_w.send(b"y")  # read (and failed) on the loop's next turns
        rb.peer.send(b"still here")
        assert rb.wait_for(b"still here")
        assert _on_thread(b, lambda: "alive") == "alive"

        def failures() -> int:
            return sum(1 for r in caplog.records if r.exc_info and "a's bug" in str(r.exc_info[1]))

        # the call, the timer and the handler each failed, were logged, and the loop went on
        assert _on_thread(b, failures) >= 2
    finally:
        a.stop(timeout=WAIT)
        b.stop(timeout=WAIT)
        bad_w.close()
    assert bad_r.fileno() == -1  # closed with its owner (no abort(): closed directly)
    assert thread.stopped.wait(WAIT)


def test_a_crash_reaches_every_owner_before_the_sockets_close(readers: list[Reader]) -> None:
    thread = LoopThread("easymesh-test-io", "test")
    heard: dict[str, tuple[BaseException, bool]] = {}
    ra_box: list[Reader] = []

    def on_crash(name: str, reader: Reader | None) -> Any:
        def crashed(exc: BaseException) -> None:
            heard[name] = (exc, reader.aborted.is_set() if reader else False)

        return crashed

    a = IOLoop("a", thread=thread, on_crash=lambda exc: on_crash("a", ra_box[0])(exc))
    b = IOLoop("b", thread=thread, on_crash=on_crash("b", None))
    ra = Reader(a)
    ra_box.append(ra)
    readers.append(ra)
    a.start()
    a.call_soon(ra.start)

    def die() -> None:
        raise KeyboardInterrupt("injected by the test")

    b.call_soon(die)
    assert thread.stopped.wait(WAIT)
    assert set(heard) == {"a", "b"}
    assert all(isinstance(exc, KeyboardInterrupt) for exc, _ in heard.values())
    assert heard["a"][1] is False  # told before its socket was closed
    assert ra.aborted.is_set()
    assert a.crashed is b.crashed is thread.crashed
    a.stop(timeout=WAIT)  # after the thread is gone: returns at once
    b.stop(timeout=WAIT)


def test_shared_loop_is_one_thread_until_its_last_owner_leaves() -> None:
    a = shared_loop("a")
    b = shared_loop("b")
    assert a.thread is b.thread
    a.start()
    assert _on_thread(b, lambda: threading.current_thread().name) == loopmod.SHARED_THREAD_NAME
    a.stop(timeout=WAIT)
    assert b.running
    first = b.thread
    b.stop(timeout=WAIT)
    assert first.stopped.wait(WAIT)
    c = shared_loop("c")  # after the last one left: a new thread
    try:
        assert c.thread is not first
        c.start()
        assert _on_thread(c, lambda: "ran") == "ran"
    finally:
        c.stop(timeout=WAIT)


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
@pytest.mark.filterwarnings("ignore:.*fork.*:DeprecationWarning")  # 3.12+: threads and fork
def test_a_forked_child_never_reuses_the_parents_thread() -> None:
    parent = shared_loop("parent")
    parent.start()
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: report and leave at once, whatever happens
        code = 1
        try:
            child = shared_loop("child")
            child.start()
            fresh = child.thread is not parent.thread and child.thread.pid == os.getpid()
            ran = threading.Event()
            child.call_soon(ran.set)
            code = 0 if fresh and ran.wait(WAIT) else 2
            child.stop(timeout=WAIT)
        finally:
            os.write(w, bytes([code]))
            os._exit(code)
    os.close(w)
    try:
        with os.fdopen(r, "rb") as f:
            assert f.read(1) == b"\0"
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0
        assert _on_thread(parent, lambda: "parent still runs") == "parent still runs"
    finally:
        parent.stop(timeout=WAIT)


def test_a_timer_set_while_its_owner_leaves_is_cancelled() -> None:
    # a.call_later checked that a was not leaving, then a.stop() ran to its end (its timers
    # cancelled) before call_later recorded the new timer: it must come back cancelled,
    # else it runs for a closed owner on a thread that lives on for b.
    thread = LoopThread("easymesh-test-io", "test")
    a, b = IOLoop("a", thread=thread), IOLoop("b", thread=thread)
    a.start()
    real = thread.call_later

    def racing(delay: float, fn: Any, *args: Any) -> Any:
        timer = real(delay, fn, *args)
        stopper = threading.Thread(target=a.stop, kwargs={"timeout": WAIT})
        stopper.start()
        stopper.join(WAIT)
        return timer

    thread.call_later = racing  # type: ignore[method-assign]
    try:
        timer = a.call_later(3600, lambda: None)
    finally:
        del thread.call_later
    try:
        assert a.left.is_set() and thread.running  # a left; b keeps the thread
        assert timer.cancelled
    finally:
        b.stop(timeout=WAIT)
    assert thread.stopped.wait(WAIT)


def test_no_owner_joins_a_thread_that_crashed() -> None:
    # While a crashed thread tells its owners (each node closes, which may take seconds), a
    # new owner (a Node() made meanwhile) must not attach: it would never be told, and its
    # calls would never run. shared_loop then gives it a new thread.
    thread = LoopThread("easymesh-test-io", "test")
    late: list[Any] = []

    def on_crash(_exc: BaseException) -> None:
        try:
            late.append(IOLoop("late", thread=thread))
        except RuntimeError as exc:
            late.append(exc)

    a = IOLoop("a", thread=thread, on_crash=on_crash)
    a.start()

    def die() -> None:
        raise KeyboardInterrupt("injected by the test")

    a.call_soon(die)
    assert thread.stopped.wait(WAIT)
    assert len(late) == 1 and isinstance(late[0], RuntimeError), late
    a.stop(timeout=WAIT)


def test_a_socket_registered_after_its_owner_left_is_closed(readers: list[Reader]) -> None:
    # A call a left to the thread just before it left (a thread looked up a.call_soon, then
    # a.stop() ran to its end, then the call was queued) registers a socket: it must not
    # stay on the thread that serves b, read for a closed owner.
    thread = LoopThread("easymesh-test-io", "test")
    a, b = IOLoop("a", thread=thread), IOLoop("b", thread=thread)
    a.start()
    late_call_soon = a.call_soon  # looked up while a is still there
    a.stop(timeout=WAIT)
    assert a.left.is_set() and thread.running
    ra = Reader(a)
    readers.append(ra)
    late_call_soon(ra.start)  # runs after a left
    try:
        assert ra.aborted.wait(WAIT)  # closed through its owner's abort()
        assert _on_thread(b, lambda: thread.key(ra.sock)) is None
    finally:
        b.stop(timeout=WAIT)
    assert thread.stopped.wait(WAIT)
