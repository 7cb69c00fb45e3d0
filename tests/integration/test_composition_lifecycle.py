"""Regression tests for issue 11's fixes to the node's lifecycle: close() bounded and
callable from the node's own threads, listening again, a script that exits without
close(), lazy malloc tuning, exact counters, codec acceptance.

Real coordinator process and real nodes over real sockets; behaviour at interpreter
exit runs in a subprocess. Negative checks ("X never happens") are closed by a
positive marker sent after X on the same path. The I/O-thread and deadlock fixes are
in test_composition.py.
"""

from __future__ import annotations

import json
import os
import pickle
import threading
import time
from collections.abc import Callable
from typing import Any

import msgpack
import pytest

import easymesh
from easymesh.protocol.codecs import MSGPACK_ID

from ..preempt import run_preempted
from .helpers import Collector, wait_until

WAIT = 30.0  # generous: the machine is shared by several agents


# -- close() is bounded ------------------------------------------------------------------------


def test_close_with_many_blocked_callbacks_is_bounded(node_factory: Any) -> None:
    linger = 1.0
    n = node_factory("busy", linger=linger)
    gate = threading.Event()
    entered = threading.Semaphore(0)

    def block(*_args: Any) -> None:
        entered.release()
        gate.wait(120)

    try:
        for i in range(20):
            n.listen(f"t{i}", block)
        for i in range(5):
            n.add_service(f"s{i}", block, workers=1)
        for i in range(20):
            n.send(f"t{i}", i)  # delivered in this node, no socket
        futures = [n.request_future(f"s{i}", i, timeout=120) for i in range(5)]
        for _ in range(25):
            assert entered.acquire(timeout=WAIT), "not every callback started"
        start = time.monotonic()
        n.close()
        took = time.monotonic() - start
        assert took < linger + 5.0, took  # about linger + 2 s; 25 x 2 s before the fix
        for f in futures:
            assert isinstance(f.exception(WAIT), easymesh.NodeClosed)
    finally:
        gate.set()


def test_close_fails_every_future_even_behind_a_stuck_done_callback(node_factory: Any) -> None:
    srv = node_factory("srv")
    gate = threading.Event()
    srv.add_service("fast", lambda d: d)
    srv.add_service("hang", lambda d: gate.wait(WAIT))
    n = node_factory("n")
    n.wait_for_service("hang", timeout=WAIT)
    stuck, in_callback = threading.Event(), threading.Event()
    try:
        first = n.request_future("fast", 1, timeout=WAIT)
        first.add_done_callback(lambda f: (in_callback.set(), stuck.wait(WAIT)))
        assert in_callback.wait(WAIT)  # the futures thread is busy in user code
        pending = n.request_future("hang", 2, timeout=120)
        start = time.monotonic()
        n.close()
        assert time.monotonic() - start < n.linger + 5.0
        assert isinstance(pending.exception(WAIT), easymesh.NodeClosed)
    finally:
        stuck.set()
        gate.set()


@pytest.mark.parametrize("where", ["callback", "handler", "done-callback", "io-thread"])
def test_close_from_the_nodes_own_threads(node_factory: Any, where: str) -> None:
    n = node_factory("closer")
    took: list[float] = []
    ran_on: list[str] = []
    done, attached = threading.Event(), threading.Event()

    def close(*_args: Any) -> None:
        ran_on.append(threading.current_thread().name)
        start = time.monotonic()
        n.close()
        took.append(time.monotonic() - start)
        done.set()

    if where == "callback":
        n.listen("t", close)
        n.send("t", 1)
    elif where == "handler":
        n.add_service("s", close)
        n.request_future("s", 1, timeout=WAIT)
    elif where == "done-callback":
        n.add_service("s", lambda d: attached.wait(WAIT))
        n.request_future("s", 1, timeout=WAIT).add_done_callback(close)
        attached.set()
    else:
        n._loop.call_soon(close)
    assert done.wait(WAIT)
    thread = {
        "callback": "easymesh-closer-t-1",
        "handler": "easymesh-closer-s-1",
        "done-callback": "easymesh-closer-futures",
        "io-thread": "easymesh-io",  # the I/O thread every node of the process shares
    }
    assert ran_on == [thread[where]]
    assert took[0] < 5.0  # never waits for the thread it runs on
    assert n.closed
    start = time.monotonic()
    n.close()  # and from here, once more: idempotent, prompt
    assert time.monotonic() - start < 5.0


# -- listening again ---------------------------------------------------------------------------


def test_listening_again_never_runs_old_and_new_together(node_factory: Any) -> None:
    r = node_factory("r")
    s = node_factory("s")
    lock = threading.Lock()
    state = {"active": 0, "most": 0}
    counts = {"old": 0, "new": 0}
    hold, old_held, stop = threading.Event(), threading.Event(), threading.Event()

    def make(label: str) -> Callable[[str, Any], None]:
        def callback(topic: str, data: Any) -> None:
            with lock:
                state["active"] += 1
                state["most"] = max(state["most"], state["active"])
                counts[label] += 1
            if label == "old" and hold.is_set():
                old_held.set()
                stop.wait(WAIT)  # stays inside while the new one is installed
            with lock:
                state["active"] -= 1

        return callback

    def send_forever() -> None:
        i = 0
        while not stop.wait(0.001):  # a steady flow, not a synchronisation
            s.send("t", i)
            i += 1

    r.listen("t", make("old"))
    s.wait_for_listener("t", timeout=WAIT)
    sender = threading.Thread(target=send_forever)
    sender.start()
    try:
        assert wait_until(lambda: counts["old"] >= 20, timeout=WAIT)
        hold.set()
        assert old_held.wait(WAIT)
        r.listen("t", make("new"))  # waits up to 1 s for the old one, which is stuck
        assert counts["new"] == 0
        # messages keep coming and wait for the new callback, which has not started
        assert wait_until(lambda: r.stats()["topics"]["t"]["queued"] > 0, timeout=WAIT)
        assert counts["new"] == 0
        hold.clear()
    finally:
        stop.set()  # releases the old callback (and the sender)
        sender.join(WAIT)
    s.send("t", "marker")
    assert wait_until(lambda: counts["new"] > 0, timeout=WAIT)
    assert state["most"] == 1


# -- exit without close() ----------------------------------------------------------------------

# 200 x 200 kB: more than the kernel's socket buffers hold, so that at exit most of it
# still waits in the node's queue (without the close at exit, about 60 of 200 were lost).
SENDER_WITHOUT_CLOSE = """
import easymesh
n = easymesh.Node("exiter", coordinator={address!r}, max_pending_bytes=1 << 28, linger=20)
n.wait_for_listener("t", timeout=30)
for i in range(200):
    n.send("t", (i, b"x" * 200_000))
print("sent", flush=True)
"""


def test_a_script_that_ends_without_close_still_delivers(
    coordinator: Any, node_factory: Any, node_process: Any
) -> None:
    got = Collector()
    r = node_factory("r")
    r.listen("t", lambda topic, data: got(topic, data[0]), queue_size=1000)
    p = node_process(SENDER_WITHOUT_CLOSE.format(address=coordinator.address))
    p.wait_for_line("sent", timeout=WAIT)
    assert p.proc.wait(60) == 0
    assert got.wait_for(200, timeout=WAIT) == list(range(200))


MALLOC_PROBE = """
import json
import easymesh
from easymesh import allocator
out = {{}}
with easymesh.Node("probe", coordinator={address!r}) as n:
    out["after_node"] = allocator._done
    got = []
    n.listen("t", lambda t, d: got.append(len(d)))
    n.wait_for_listener("t", timeout=30)
    for _ in range(100):
        n.send("t", b"x" * 1000)
    out["after_small"] = allocator._done
    n.send("t", b"x" * 1_000_000)
    out["after_large"] = allocator._done
print(json.dumps(out), flush=True)
"""


def test_node_leaves_malloc_alone_until_a_large_message(
    coordinator: Any, node_process: Any
) -> None:
    p = node_process(MALLOC_PROBE.format(address=coordinator.address))
    line = p.wait_for_line("after_node", timeout=WAIT)
    assert json.loads(line) == {"after_node": False, "after_small": False, "after_large": True}
    assert p.proc.wait(WAIT) == 0


# -- counters ----------------------------------------------------------------------------------


def test_counters_are_exact_under_threads(node_factory: Any) -> None:
    n = node_factory("counting")
    # Asked first: the coordinator has answered for the topic, so no send is held (issue 15).
    assert not n.has_listeners("nobody-listens")
    go = threading.Barrier(8)

    def send() -> None:
        go.wait(WAIT)
        for i in range(2_000):
            n.send("nobody-listens", i)

    # Preemptible between any two bytecodes (tests/preempt.py): without that, a counter
    # kept as ``self.n += 1`` also counted exactly here and this test could not fail.
    run_preempted(send)
    stats = n.stats()
    assert stats["no_listener"] == 16_000
    assert stats["sent"] == 0


# -- codec acceptance --------------------------------------------------------------------------


class Booby:
    """Unpickling this creates a file: proof that a pickle frame was decoded."""

    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self) -> Any:
        return (open, (self.path, "w"))


def test_a_msgpack_node_never_unpickles(node_factory: Any, tmp_path: Any) -> None:
    marker = str(tmp_path / "unpickled")
    got = Collector()
    m = node_factory("m", codec="msgpack")
    m.listen("t", got)
    m.add_service("svc", lambda d: d)
    p = node_factory("p")  # pickle, the default
    p.wait_for_listener("t", timeout=WAIT)
    p.wait_for_service("svc", timeout=WAIT)
    p.send("t", Booby(marker))
    p.send_raw("t", MSGPACK_ID, msgpack.packb("after"))  # the marker, same path
    assert got.wait_for(1, WAIT) == ["after"]
    with pytest.raises(easymesh.ServiceError):
        p.request("svc", Booby(marker), timeout=WAIT)  # a request is refused too
    assert not os.path.exists(marker)
    assert m.stats()["refused_codec"] >= 1
    assert got.data == ["after"]
    pickle.loads(pickle.dumps(Booby(marker)))  # the booby trap works: it would have shown
    assert os.path.exists(marker)
