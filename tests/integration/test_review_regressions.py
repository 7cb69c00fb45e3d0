"""Regressions for bugs a code review found (each failed before its fix)."""

from __future__ import annotations

import array
import math
import threading
import time

import pytest

import easymesh

from .helpers import Collector, wait_until


def test_local_request_to_a_full_service_fails_at_once(node_factory):
    n = node_factory("srv")
    gate = threading.Event()
    running = threading.Event()
    n.add_service("slow", lambda d: (running.set(), gate.wait(10), d)[2], workers=1, queue_size=1)
    futures = [n.request_future("slow", 0, timeout=math.inf)]
    assert running.wait(10)
    futures += [n.request_future("slow", i, timeout=math.inf) for i in range(1, 4)]
    # one runs, one waits, two were refused: they fail now instead of never
    assert wait_until(lambda: sum(f.done() for f in futures) == 2, timeout=5)
    refused = [f for f in futures if f.done()]
    for f in refused:
        with pytest.raises(easymesh.ServiceError, match="too many requests"):
            f.result(0)
    gate.set()
    assert wait_until(lambda: all(f.done() for f in futures), timeout=10)
    assert len(n._caller.table) == 0


def test_requests_queued_in_a_removed_service_are_answered(node_factory):
    srv = node_factory("srv")
    srv.add_service("s", lambda d: d, threaded=False)  # never spun: requests just wait
    cli = node_factory("cli")
    cli.wait_for_service("s", timeout=10)
    fut = cli.request_future("s", 1, timeout=30)
    assert wait_until(lambda: srv.stats()["services"]["s"]["queued"] == 1)
    srv.remove_service("s")
    with pytest.raises(easymesh.NoProviderError, match="removed"):
        fut.result(timeout=5)


def test_typed_memoryview_and_reused_buffers(node_factory):
    c = Collector()
    r = node_factory("r")
    r.listen("t", c, raw=True)
    s = node_factory("s", codec="raw")
    s.wait_for_listener("t", timeout=10)
    doubles = memoryview(array.array("d", [1.5] * 100))  # 100 items, 800 bytes
    s.send("t", doubles)
    buf = bytearray(b"\x00" * 100_000)
    s.send("t", buf)
    buf[:3] = b"\xff\xff\xff"  # the caller reuses its buffer at once
    s.send("t", b"after")
    got = c.wait_for(3)
    assert [len(m.data) for m in got] == [800, 100_000, 5]
    assert bytes(got[0].data) == doubles.tobytes()
    assert bytes(got[1].data[:3]) == b"\x00\x00\x00"


def test_drain_skips_an_undecodable_message(node_factory):
    class Odd:
        codec_id = 210

        def encode(self, obj):
            return b"x"

        def decode(self, data):
            raise ValueError("nope")

    loop = node_factory("loop")
    sub = loop.subscribe("t", queue_size=10)
    good = node_factory("good")
    odd = node_factory("odd", codec=Odd())
    good.wait_for_listener("t", timeout=10)
    odd.wait_for_listener("t", timeout=10)
    good.send("t", 1)
    assert wait_until(lambda: sub.received == 1)
    odd.send("t", 2)
    assert wait_until(lambda: sub.received == 2)
    good.send("t", 3)
    assert wait_until(lambda: sub.received == 3)
    assert sub.drain() == [1, 3]
    assert loop.stats()["decode_errors"] == 1


def test_request_deadlines_do_not_pile_up(node_factory):
    srv = node_factory("srv")
    srv.add_service("echo", lambda d: d)
    cli = node_factory("cli")
    cli.wait_for_service("echo", timeout=10)
    for i in range(2000):
        cli.request_future("echo", i, timeout=10 + i / 1000).result(10)  # a new timeout each time
    assert cli._caller.table.deadline_entries < 1100


def test_latched_value_not_repeated_after_coordinator_restart():
    c = easymesh.Coordinator(host="127.0.0.1", port=0).start()
    port = c.port
    addr = f"127.0.0.1:{port}"
    got = Collector()
    tx = easymesh.Node("tx", coordinator=addr)
    rx = easymesh.Node("rx", coordinator=addr)
    c2 = None
    try:
        rx.listen("t", got)
        tx.wait_for_listener("t", timeout=10)
        tx.send("t", "latched-value", latch=True)
        got.wait_for(1)
        rx._reconnect_delay = 1.0  # rx registers again after tx does
        c.close()
        c2 = easymesh.Coordinator(host="127.0.0.1", port=port).start()
        assert wait_until(lambda: len(c2.nodes()) == 2, timeout=15)
        time.sleep(0.5)  # a (wrong) second delivery would arrive now
        assert got.data == ["latched-value"]
    finally:
        tx.close()
        rx.close()
        c.close()
        if c2 is not None:
            c2.close()
