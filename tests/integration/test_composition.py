"""Regression tests for the behaviour fixed with the node's recomposition (issue 11).

One test (or a small group) per fix, all on a real coordinator process and real
nodes over real sockets; behaviour at interpreter exit runs in a subprocess.
Negative checks ("X never happens") are closed by a positive marker sent after X
on the same path.
"""

from __future__ import annotations

import json
import logging
import math
import os
import pickle
import threading
import time
from collections.abc import Callable
from typing import Any

import msgpack
import pytest

import easymesh
from easymesh.errors import WouldDeadlock
from easymesh.protocol.codecs import MSGPACK_ID

from .helpers import Collector, wait_until

WAIT = 30.0  # generous: the machine is shared by several agents


def on_io_thread(node: easymesh.Node, fn: Callable[[], Any]) -> tuple[Any, float]:
    """Run ``fn`` on ``node``'s I/O thread; (its result or the exception it raised,
    the seconds it took)."""
    out: list[Any] = []
    done = threading.Event()

    def run() -> None:
        start = time.monotonic()
        try:
            result: Any = fn()
        except BaseException as exc:  # noqa: B036 - handed back to the test
            result = exc
        out.append((result, time.monotonic() - start))
        done.set()

    node._loop.call_soon(run)
    assert done.wait(WAIT), "the I/O thread never ran the call"
    return out[0]


class RecordingCodec:
    """A custom codec that records the thread of every decode."""

    codec_id = 200
    name = "recording"

    def __init__(self) -> None:
        self.threads: list[str] = []

    def encode(self, obj: Any) -> bytes:
        return json.dumps(obj).encode()

    def decode(self, data: Any) -> Any:
        self.threads.append(threading.current_thread().name)
        return json.loads(bytes(data))


# -- no user code and no blocking on the I/O thread -------------------------------------------


def test_done_callbacks_run_on_the_futures_thread(node_factory: Any) -> None:
    srv = node_factory("srv")
    attached = threading.Event()
    srv.add_service("echo", lambda d: (attached.wait(WAIT), d)[1])
    cli = node_factory("cli")
    cli.wait_for_service("echo", timeout=WAIT)
    ran_on: list[str] = []
    called = threading.Event()
    futures = [cli.request_future("echo", i, timeout=WAIT) for i in range(5)]
    for f in futures:
        f.add_done_callback(
            lambda f: (ran_on.append(threading.current_thread().name), called.set())
        )
    attached.set()  # answers come only once every callback is attached
    assert [f.result(WAIT) for f in futures] == list(range(5))
    assert wait_until(lambda: len(ran_on) == 5, timeout=WAIT)
    assert set(ran_on) == {"easymesh-cli-futures-1"}


def test_custom_codec_decodes_replies_off_the_io_thread(node_factory: Any) -> None:
    srv_codec, cli_codec = RecordingCodec(), RecordingCodec()
    srv = node_factory("srv", codec=srv_codec)
    srv.add_service("double", lambda d: [x * 2 for x in d])
    cli = node_factory("cli", codec=cli_codec)
    cli.wait_for_service("double", timeout=WAIT)
    assert cli.request("double", [1, 2], timeout=WAIT) == [2, 4]
    assert cli_codec.threads == ["MainThread"]  # decoded by the thread that waited
    assert cli.request_future("double", [3], timeout=WAIT).result(WAIT) == [6]
    assert cli_codec.threads == ["MainThread", "easymesh-cli-futures-1"]
    got = Collector()
    cli.listen("t", got)
    srv.wait_for_listener("t", timeout=WAIT)
    srv.send("t", [7])
    assert got.wait_for(1, WAIT) == [[7]]
    assert cli_codec.threads[-1] == "easymesh-cli-t-1"
    assert srv_codec.threads and not any(t.endswith("-io") for t in srv_codec.threads)


def test_blocking_calls_on_the_io_thread_raise_at_once(node_factory: Any) -> None:
    other = node_factory("other")
    other.add_service("echo", lambda d: d)
    n = node_factory("n")
    n.wait_for_service("echo", timeout=WAIT)
    calls: dict[str, Callable[[], Any]] = {
        "request": lambda: n.request("echo", 1, timeout=WAIT),
        "flush": lambda: n.flush(timeout=WAIT),
        "wait_for_listener": lambda: n.wait_for_listener("nobody-listens", timeout=WAIT),
        "wait_for_service": lambda: n.wait_for_service("nobody-provides", timeout=WAIT),
        "wait_for_message": lambda: n.wait_for_message("quiet", timeout=WAIT),
        "ping": lambda: n.ping("other", timeout=WAIT),
    }
    for what, call in calls.items():
        result, took = on_io_thread(n, call)
        assert isinstance(result, WouldDeadlock), (what, result)
        assert took < 5.0, (what, took)
    # the same calls from an ordinary thread work
    assert n.request("echo", 1, timeout=WAIT) == 1
    assert n.ping("other", timeout=WAIT) >= 0.0
    assert n.flush(timeout=WAIT)


def test_result_of_another_pending_request_in_a_done_callback(node_factory: Any) -> None:
    srv = node_factory("srv")
    slow_gate, fast_gate = threading.Event(), threading.Event()
    srv.add_service("slow", lambda d: (slow_gate.wait(WAIT), d)[1])
    srv.add_service("fast", lambda d: (fast_gate.wait(WAIT), d)[1])
    cli = node_factory("cli")
    cli.wait_for_service("slow", timeout=WAIT)
    cli.wait_for_service("fast", timeout=WAIT)
    seen: list[Any] = []
    done = threading.Event()
    try:
        pending = cli.request_future("slow", "s", timeout=WAIT)
        fast = cli.request_future("fast", "f", timeout=WAIT)

        def callback(f: Any) -> None:
            start = time.monotonic()
            try:
                seen.append(pending.result(timeout=WAIT))
            except BaseException as exc:  # noqa: B036
                seen.append(exc)
            seen.append(time.monotonic() - start)
            done.set()

        fast.add_done_callback(callback)
        fast_gate.set()
        assert done.wait(WAIT)
        assert isinstance(seen[0], WouldDeadlock) and seen[1] < 5.0
    finally:
        slow_gate.set()
        fast_gate.set()
    assert pending.result(WAIT) == "s"  # it still completes, on its own


def test_blocking_request_to_a_service_this_thread_spins(node_factory: Any) -> None:
    n = node_factory("n")
    n.add_service("own", lambda d: d + 1, threaded=False)
    n.wait_for_service("own", timeout=WAIT)
    assert n.spin_once(timeout=0) == 0  # this thread is the spinner now
    start = time.monotonic()
    with pytest.raises(WouldDeadlock, match="spin_once"):
        n.request("own", 1, timeout=WAIT)
    assert time.monotonic() - start < 5.0
    fut = n.request_future("own", 1, timeout=WAIT)  # the non-blocking way works
    assert wait_until(lambda: n.spin_once(timeout=0.1) > 0 or fut.done(), timeout=WAIT)
    assert fut.result(WAIT) == 2
    # another thread may block on it while this one spins
    out: list[Any] = []
    t = threading.Thread(target=lambda: out.append(n.request("own", 10, timeout=WAIT)))
    t.start()
    assert wait_until(lambda: n.spin_once(timeout=0.1) > 0, timeout=WAIT)
    t.join(WAIT)
    assert out == [11]


def test_blocking_request_from_a_services_only_worker_to_itself(node_factory: Any) -> None:
    n = node_factory("n")
    seen: list[Any] = []

    def handler(d: int) -> int:
        if d == 0:
            start = time.monotonic()
            try:
                seen.append(n.request("s", 1, timeout=WAIT))  # its only worker is busy: here
            except BaseException as exc:  # noqa: B036 - recorded for the test
                seen.append(exc)
            seen.append(time.monotonic() - start)
            seen.append(n.request("other", 2, timeout=WAIT))  # another service: fine
        return d

    n.add_service("s", handler, workers=1)
    n.add_service("other", lambda d: d)
    assert n.request("s", 0, timeout=2 * WAIT) == 0
    assert isinstance(seen[0], WouldDeadlock) and seen[1] < 5.0 and seen[2] == 2
    # with more workers another one serves it
    n.add_service("s", handler, workers=2)
    seen.clear()
    assert n.request("s", 0, timeout=2 * WAIT) == 0
    assert seen[0] == 1


def test_the_io_thread_dying_fails_the_node_loudly(
    node_factory: Any, caplog: pytest.LogCaptureFixture
) -> None:
    srv = node_factory("srv")
    gate = threading.Event()
    srv.add_service("hang", lambda d: gate.wait(WAIT))
    n = node_factory("victim")
    n.wait_for_service("hang", timeout=WAIT)
    try:
        fut = n.request_future("hang", 0, timeout=120)

        def die() -> None:
            raise KeyboardInterrupt("injected by the test")

        with caplog.at_level(logging.CRITICAL):
            n._loop.call_soon(die)
            exc = fut.exception(timeout=WAIT)  # the pending request fails with the reason
        assert isinstance(exc, easymesh.NodeClosed)
        assert "I/O thread died" in str(exc) and "KeyboardInterrupt" in str(exc)
        assert n.closed
        with pytest.raises(easymesh.NodeClosed, match="I/O thread died"):
            n.send("t", 1)
        with pytest.raises(easymesh.NodeClosed, match="I/O thread died"):
            n.request("hang", 1, timeout=5)
        with pytest.raises(easymesh.NodeClosed, match="I/O thread died"):
            n.wait_for_listener("nobody", timeout=WAIT)
        assert any(
            r.levelno == logging.CRITICAL and "I/O thread died" in r.getMessage()
            for r in caplog.records
        )
        start = time.monotonic()
        n.close()
        assert time.monotonic() - start < 5.0
    finally:
        gate.set()


def test_nothing_waits_forever_on_a_node_whose_io_thread_died(node_factory: Any) -> None:
    n = node_factory("victim")
    sub = n.subscribe("quiet")
    ended: dict[str, Any] = {}

    def run(what: str, fn: Callable[[], Any]) -> threading.Thread:
        def target() -> None:
            try:
                ended[what] = fn()
            except BaseException as exc:  # noqa: B036 - recorded for the test
                ended[what] = exc

        t = threading.Thread(target=target, name=f"test-{what}")
        t.start()
        return t

    threads = [
        run("forever", n.forever),
        run("wait_for_message", lambda: n.wait_for_message("quiet", timeout=None)),
        run("subscription", lambda: sub.get(timeout=None)),
        run("spin", n.spin),
    ]

    def die() -> None:
        raise KeyboardInterrupt("injected by the test")

    n._loop.call_soon(die)
    for t in threads:
        t.join(WAIT)
    assert not any(t.is_alive() for t in threads), (
        f"still blocked after the I/O thread died: {[t.name for t in threads if t.is_alive()]}"
    )
    assert ended["forever"] is None and ended["spin"] is None
    assert isinstance(ended["wait_for_message"], (easymesh.NodeClosed, easymesh.SubscriptionClosed))
    assert isinstance(ended["subscription"], (easymesh.NodeClosed, easymesh.SubscriptionClosed))


# -- timeouts of zero and below ----------------------------------------------------------------


def test_zero_and_negative_timeouts_fail_at_once_without_sending(node_factory: Any) -> None:
    srv = node_factory("srv")
    handled: list[Any] = []
    srv.add_service("s", lambda d: handled.append(d) or d, workers=1)
    cli = node_factory("cli")
    cli.wait_for_service("s", timeout=WAIT)
    start = time.monotonic()
    for t in (0, 0.0, -1, -math.inf):
        with pytest.raises(easymesh.RequestTimeout):
            cli.request("s", f"blocking {t}", timeout=t)
        fut = cli.request_future("s", f"future {t}", timeout=t)
        assert fut.done()
        assert isinstance(fut.exception(0), easymesh.RequestTimeout)
    with pytest.raises(easymesh.RequestTimeout):
        cli.wait_for_listener("nobody", timeout=0)
    with pytest.raises(easymesh.RequestTimeout):
        cli.wait_for_service("nobody", timeout=-1)
    with pytest.raises(easymesh.RequestTimeout):
        cli.ping("srv", timeout=0)
    assert time.monotonic() - start < 5.0
    assert cli.request("s", "marker", timeout=WAIT) == "marker"  # same link, sent after
    assert handled == ["marker"]
    assert len(cli._caller.table) == 0


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
    thread = {"callback": "t-1", "handler": "s-1", "done-callback": "futures-1", "io-thread": "io"}
    assert ran_on == [f"easymesh-closer-{thread[where]}"]
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
    go = threading.Barrier(8)

    def send() -> None:
        go.wait(WAIT)
        for i in range(20_000):
            n.send("nobody-listens", i)

    threads = [threading.Thread(target=send) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    stats = n.stats()
    assert stats["no_listener"] == 160_000
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
