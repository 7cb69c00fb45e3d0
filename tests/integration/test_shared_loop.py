"""Every Node of a process shares one I/O thread (issue 15; easymesh/transport/loop.py).

Real nodes on a real coordinator: the nodes of this process share one thread; closing
one leaves the others working (its own links, listeners and timers go, theirs stay); the
last close stops the thread and a node created after that starts a new one; a user
callback that fails, or a failure on the shared thread, stops no other node; if the
thread dies, every node on it fails loudly; a forked child starts its own thread.
"""

from __future__ import annotations

import logging
import os
import threading
from typing import Any

import pytest

import easymesh
from easymesh.transport.loop import SHARED_THREAD_NAME
from tests.integration.helpers import Collector, wait_until

WAIT = 20.0


def _io_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.endswith("-io")]


def _node(coordinator: Any, name: str, **kwargs: Any) -> easymesh.Node:
    return easymesh.Node(name, coordinator=coordinator.address, connect_timeout=15, **kwargs)


def test_nodes_of_a_process_share_one_io_thread(node_factory: Any) -> None:
    a, b, c = node_factory("a"), node_factory("b"), node_factory("c")
    assert a._loop.thread is b._loop.thread is c._loop.thread
    assert [t.name for t in _io_threads()] == [SHARED_THREAD_NAME]
    got = Collector()
    c.listen("t", got)
    a.wait_for_listener("t", timeout=WAIT)
    b.wait_for_listener("t", timeout=WAIT)
    a.send("t", "from a")
    b.send("t", "from b")
    assert sorted(got.wait_for(2, WAIT)) == ["from a", "from b"]


def test_closing_one_node_leaves_the_others_working(node_factory: Any) -> None:
    a, b, c = node_factory("a"), node_factory("b"), node_factory("c")
    got = Collector()
    c.listen("t", got)
    c.add_service("echo", lambda d: d)
    for n in (a, b):
        n.wait_for_listener("t", timeout=WAIT)
        n.wait_for_service("echo", timeout=WAIT)
        assert n.request("echo", n.name, timeout=WAIT) == n.name
    b_link = b._router.links[c.id]
    a_loop = a._loop
    a_timers = list(a_loop._timers)
    assert a_timers  # its heartbeat at least

    a.close()
    assert a_loop.left.is_set() and all(t.cancelled for t in a_timers)
    assert a_loop.thread.running  # b and c still on it
    assert b._router.links[c.id] is b_link and b_link.state == "open"
    b.send("t", "after a closed")
    assert got.wait_for(1, WAIT) == ["after a closed"]
    assert b.request("echo", 2, timeout=WAIT) == 2
    with pytest.raises(easymesh.NodeClosed):
        a.send("t", 1)


def test_the_last_close_stops_the_thread_and_a_new_node_starts_another(coordinator: Any) -> None:
    before = set(_io_threads())
    with _node(coordinator, "a") as a, _node(coordinator, "b") as b:
        first = a._loop.thread
        assert b._loop.thread is first and first.running
    assert first.stopped.wait(WAIT)
    assert wait_until(lambda: set(_io_threads()) == before, timeout=WAIT)
    with _node(coordinator, "later") as later, _node(coordinator, "later2") as later2:
        assert later._loop.thread is not first and later2._loop.thread is later._loop.thread
        got = Collector()
        later2.listen("t", got)
        later.wait_for_listener("t", timeout=WAIT)
        later.send("t", "works")
        assert got.wait_for(1, WAIT) == ["works"]


def test_a_failing_callback_in_one_node_stops_no_other(node_factory: Any) -> None:
    bad, good, sender = node_factory("bad"), node_factory("good"), node_factory("sender")

    def broken(topic: str, data: Any) -> None:
        raise RuntimeError("the user's bug")

    got = Collector()
    bad.listen("t", broken)
    good.listen("t", got)
    sender.wait_for_listener("t", timeout=WAIT)
    assert wait_until(lambda: len(sender._view.listeners("t")) == 2, timeout=WAIT)
    for i in range(5):
        sender.send("t", i)
    assert got.wait_for(5, WAIT) == list(range(5))

    def fail_on_the_io_thread() -> None:
        raise RuntimeError("a failure on the shared I/O thread")

    bad._loop.call_soon(fail_on_the_io_thread)  # logged; the thread goes on
    sender.send("t", 5)
    assert got.wait_for(6, WAIT) == list(range(6))
    assert not bad.closed and not good.closed


def test_a_dying_io_thread_fails_every_node_on_it_loudly(
    node_factory: Any, caplog: pytest.LogCaptureFixture
) -> None:
    a, b = node_factory("a"), node_factory("b")
    gate = threading.Event()
    a.add_service("hang", lambda d: gate.wait(WAIT))
    b.wait_for_service("hang", timeout=WAIT)
    try:
        pending = b.request_future("hang", 0, timeout=120)

        def die() -> None:
            raise KeyboardInterrupt("injected by the test")

        with caplog.at_level(logging.ERROR):
            a._loop.call_soon(die)
            exc = pending.exception(timeout=WAIT)
        assert isinstance(exc, easymesh.NodeClosed) and "I/O thread died" in str(exc)
        assert wait_until(lambda: a.closed and b.closed, timeout=WAIT)
        for n in (a, b):
            with pytest.raises(easymesh.NodeClosed, match="I/O thread died"):
                n.send("t", 1)
        said = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
        assert any("'a' failed" in m for m in said) and any("'b' failed" in m for m in said)
    finally:
        gate.set()


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
@pytest.mark.filterwarnings("ignore:.*fork.*:DeprecationWarning")  # 3.12+: threads and fork
def test_a_forked_child_runs_its_own_io_thread(node_factory: Any, coordinator: Any) -> None:
    parent = node_factory("parent")
    parent.add_service("echo", lambda d: d)
    assert parent.request("echo", "before", timeout=WAIT) == "before"
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: report and leave at once, whatever happens
        code = 1
        try:
            with _node(coordinator, "child") as child:
                fresh = child._loop.thread is not parent._loop.thread
                child.wait_for_service("echo", timeout=WAIT)
                ok = child.request("echo", "from the child", timeout=WAIT) == "from the child"
                code = 0 if fresh and ok else 2
        finally:
            os.write(w, bytes([code]))
            os._exit(code)
    os.close(w)
    with os.fdopen(r, "rb") as f:
        assert f.read(1) == b"\0"
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert parent.request("echo", "after", timeout=WAIT) == "after"


def test_a_blocking_call_on_the_shared_thread_raises_for_every_node(node_factory: Any) -> None:
    """The thread that runs a's I/O runs b's too: b.request() made there could never
    complete, so it raises at once, as on a node's own I/O thread."""
    a, b = node_factory("a"), node_factory("b")
    b.add_service("echo", lambda d: d)
    b.wait_for_service("echo", timeout=WAIT)
    seen: list[Any] = []
    done = threading.Event()

    def on_the_io_thread() -> None:
        for call in (
            lambda: b.request("echo", 1, timeout=30),
            lambda: a.request("echo", 1, timeout=30),
        ):
            try:
                seen.append(call())
            except Exception as exc:  # noqa: BLE001 - recorded for the test
                seen.append(exc)
        done.set()

    a._loop.call_soon(on_the_io_thread)
    assert done.wait(WAIT)
    assert all(isinstance(x, easymesh.WouldDeadlock) for x in seen) and len(seen) == 2
    assert a.request("echo", 2, timeout=WAIT) == 2  # and from here it works
