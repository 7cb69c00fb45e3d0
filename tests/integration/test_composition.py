"""Regression tests for issue 11's fixes: no user code and no blocking on the I/O thread,
the I/O thread dying, zero and negative timeouts.

One test (or a small group) per fix, on a real coordinator process and real nodes
over real sockets; ``node._loop.call_soon`` puts a call on a node's I/O thread.
Negative checks ("never sent") are closed by a positive marker sent after on the
same path. The lifecycle fixes are in test_composition_lifecycle.py.
"""

from __future__ import annotations

import json
import logging
import math
import threading
import time
from collections.abc import Callable
from typing import Any

import pytest

import easymesh
from easymesh.errors import WouldDeadlock

from .helpers import Collector, run_on_loop, wait_until

WAIT = 30.0  # generous: the machine is shared by several agents


def on_io_thread(node: easymesh.Node, fn: Callable[[], Any]) -> tuple[Any, float]:
    """Run ``fn`` on ``node``'s I/O thread; (its result or the exception it raised,
    the seconds it took)."""
    return run_on_loop(node._loop, fn, WAIT)


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
    futures = [cli.request_future("echo", i, timeout=WAIT) for i in range(5)]
    for f in futures:
        f.add_done_callback(lambda f: ran_on.append(threading.current_thread().name))
    attached.set()  # answers come only once every callback is attached
    assert [f.result(WAIT) for f in futures] == list(range(5))
    assert wait_until(lambda: len(ran_on) == 5, timeout=WAIT)
    assert set(ran_on) == {"easymesh-cli-futures"}


class ExitingCodec(RecordingCodec):
    """Decoding a reply raises SystemExit (user code may)."""

    codec_id = 201

    def __init__(self, exits: bool) -> None:
        super().__init__()
        self.exits = exits

    def decode(self, data: Any) -> Any:
        value = super().decode(data)
        if self.exits and value == "exit":
            raise SystemExit(3)
        return value


def test_a_future_whose_decoding_raises_systemexit_still_completes(node_factory: Any) -> None:
    srv = node_factory("srv", codec=ExitingCodec(exits=False))
    srv.add_service("echo", lambda d: d)
    cli = node_factory("cli", codec=ExitingCodec(exits=True))
    cli.wait_for_service("echo", timeout=WAIT)
    assert isinstance(cli.request_future("echo", "exit", timeout=WAIT).exception(WAIT), SystemExit)
    assert cli.request_future("echo", "fine", timeout=WAIT).result(WAIT) == "fine"


def test_custom_codec_decodes_replies_off_the_io_thread(node_factory: Any) -> None:
    srv_codec, cli_codec = RecordingCodec(), RecordingCodec()
    srv = node_factory("srv", codec=srv_codec)
    srv.add_service("double", lambda d: [x * 2 for x in d])
    cli = node_factory("cli", codec=cli_codec)
    cli.wait_for_service("double", timeout=WAIT)
    assert cli.request("double", [1, 2], timeout=WAIT) == [2, 4]
    assert cli_codec.threads == ["MainThread"]  # decoded by the thread that waited
    assert cli.request_future("double", [3], timeout=WAIT).result(WAIT) == [6]
    assert cli_codec.threads == ["MainThread", "easymesh-cli-futures"]
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

    def handler(d: Any) -> Any:
        handled.append(d)
        return d

    srv.add_service("s", handler, workers=1)
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
