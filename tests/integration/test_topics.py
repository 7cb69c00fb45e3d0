"""Topics between real nodes, over the Unix socket and over TCP."""

from __future__ import annotations

import threading
import time

import pytest

import easymesh

from .helpers import Collector, wait_until

TRANSPORTS = ["auto", "tcp"]


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_send_and_receive_in_order(node_factory, transport):
    c = Collector()
    r = node_factory("receiver")
    r.listen("t", c)
    s = node_factory("sender", transport=transport)
    s.wait_for_listener("t", timeout=10)
    for i in range(2000):
        s.send("t", i)
    assert c.wait_for(2000) == list(range(2000))
    kinds = {p["state"] for p in s.stats()["peers"].values()}
    assert kinds == {"open"}


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_large_messages(node_factory, transport):
    c = Collector()
    r = node_factory("receiver")
    r.listen("big", c)
    s = node_factory("sender", transport=transport)
    s.wait_for_listener("big", timeout=10)
    blobs = [bytes([i]) * (1_000_000 + i) for i in range(5)] + [b"x" * 20_000_000]
    for b in blobs:
        s.send("big", b)
    got = c.wait_for(len(blobs), timeout=30)
    assert [len(x) for x in got] == [len(b) for b in blobs]
    assert got == blobs


def test_callback_runs_in_listener_worker_thread(node_factory):
    c = Collector()
    r = node_factory("rx")
    r.listen("a", c)
    s = node_factory("tx")
    s.wait_for_listener("a", timeout=10)
    s.send("a", 1)
    c.wait_for(1)
    assert c.threads == {"easymesh-rx-a-1"}


def test_send_without_listener_does_nothing(node_factory):
    s = node_factory("lonely")
    assert not s.has_listeners("nobody")
    s.send("nobody", {"x": 1})
    assert s.stats()["no_listener"] == 1


def test_node_receives_its_own_messages(node_factory):
    c = Collector()
    n = node_factory("self")
    n.listen("loop", c)
    assert n.has_listeners("loop")
    n.send("loop", "me")
    assert c.wait_for(1) == ["me"]


def test_wait_for_listener_times_out(node_factory):
    n = node_factory("waiter")
    t0 = time.monotonic()
    with pytest.raises(TimeoutError):
        n.wait_for_listener("never", timeout=0.3)
    assert time.monotonic() - t0 < 5
    with pytest.raises(easymesh.RequestTimeout):
        n.topic("never").wait_for_listener(timeout=0.1)


def test_stop_listening(node_factory):
    c = Collector()
    r = node_factory("r")
    r.listen("t", c)
    s = node_factory("s")
    s.wait_for_listener("t", timeout=10)
    s.send("t", 1)
    c.wait_for(1)
    r.stop_listening("t")
    assert wait_until(lambda: not s.has_listeners("t"))
    s.send("t", 2)
    r.listen("t2", c)  # a barrier: once s sees t2, anything sent before has arrived or not
    s.wait_for_listener("t2", timeout=10)
    s.send("t2", 3)
    c.wait_for(2)
    assert c.data == [1, 3]


def test_slow_callback_does_not_delay_other_topics(node_factory):
    slow_started = threading.Event()
    release = threading.Event()

    def slow(topic, data):
        slow_started.set()
        release.wait(10)

    fast = Collector()
    r = node_factory("r")
    r.listen("slow", slow)
    r.listen("fast", fast)
    r.add_service("svc", lambda d: d * 2)
    s = node_factory("s")
    s.wait_for_listener("slow", timeout=10)
    s.wait_for_listener("fast", timeout=10)
    s.send("slow", 1)
    assert slow_started.wait(10)
    s.send("fast", 2)
    assert fast.wait_for(1, timeout=5) == [2]
    s.wait_for_service("svc", timeout=10)
    assert s.request("svc", 21, timeout=5) == 42
    release.set()


def test_listener_queue_is_bounded_and_drops_oldest(node_factory):
    gate = threading.Event()
    seen = []

    def cb(topic, data):
        gate.wait(10)
        seen.append(data)

    r = node_factory("r")
    r.listen("t", cb, queue_size=10)
    s = node_factory("s")
    s.wait_for_listener("t", timeout=10)
    for i in range(200):
        s.send("t", i)
    assert wait_until(lambda: r.stats()["topics"]["t"]["received"] == 200)
    gate.set()

    def settled():
        t = r.stats()["topics"]["t"]
        return t["handled"] + t["dropped"] == 200

    assert wait_until(settled)
    stats = r.stats()
    assert stats["dropped_queue"] >= 189
    assert seen[-1] == 199  # the newest survived
    assert seen == sorted(seen)


def test_callback_exception_is_logged_and_worker_survives(node_factory, caplog):
    c = Collector()

    def cb(topic, data):
        if data == "boom":
            raise RuntimeError("callback failed on purpose")
        c(topic, data)

    r = node_factory("r")
    r.listen("t", cb)
    s = node_factory("s")
    s.wait_for_listener("t", timeout=10)
    s.send("t", "boom")
    s.send("t", "ok")
    assert c.wait_for(1) == ["ok"]
    assert "topic 't'" in caplog.text and "callback failed on purpose" in caplog.text
    assert r.stats()["topics"]["t"]["errors"] == 1


@pytest.mark.parametrize("codec", ["pickle", "msgpack", "json"])
def test_codecs(node_factory, codec):
    c = Collector()
    r = node_factory("r", codec=codec)
    r.listen("t", c)
    s = node_factory("s", codec=codec)
    s.wait_for_listener("t", timeout=10)
    s.send("t", {"a": [1, 2, 3], "b": "x"})
    assert c.wait_for(1) == [{"a": [1, 2, 3], "b": "x"}]


def test_mixed_codecs_talk(node_factory):
    """Each message says its codec: a msgpack sender reaches a pickle listener."""
    c = Collector()
    r = node_factory("r", codec="pickle")
    r.listen("t", c)
    s = node_factory("s", codec="msgpack")
    s.wait_for_listener("t", timeout=10)
    s.send("t", [1, "two"])
    assert c.wait_for(1) == [[1, "two"]]


def test_unknown_codec_is_logged_not_fatal(node_factory, caplog):
    class Odd:
        codec_id = 201
        def encode(self, obj):
            return repr(obj).encode()
        def decode(self, data):
            return bytes(data).decode()

    c = Collector()
    r = node_factory("r")
    r.listen("t", c)
    s = node_factory("s", codec=Odd())
    s.wait_for_listener("t", timeout=10)
    s.send("t", 1)
    s2 = node_factory("s2")
    s2.send("t", "fine")
    assert c.wait_for(1) == ["fine"]
    assert wait_until(lambda: r.stats()["decode_errors"] == 1)
    assert "codec 201" in caplog.text


def test_raw_listener_and_send_raw(node_factory):
    c = Collector()
    r = node_factory("r")
    r.listen("t", c, raw=True)
    s = node_factory("s")
    s.wait_for_listener("t", timeout=10)
    s.send("t", {"k": 1})
    (msg,) = c.wait_for(1)
    assert isinstance(msg, easymesh.RawMessage) and msg.codec == 1
    c2 = Collector()
    r.listen("t2", c2)
    s.wait_for_listener("t2", timeout=10)
    s.send_raw("t2", msg.codec, msg.data)
    assert c2.wait_for(1) == [{"k": 1}]


def test_topic_handle(node_factory):
    c = Collector()
    r = node_factory("r")
    r.listen("h", c)
    s = node_factory("s")
    t = s.topic("h")
    t.wait_for_listener(timeout=10)
    assert t.has_listeners()
    t.send(5)
    assert c.wait_for(1) == [5]


def test_latched_topic_reaches_late_listener(node_factory):
    s = node_factory("mapper")
    s.send("map", {"version": 1}, latch=True)
    s.topic("map", latch=True).send({"version": 2})
    c = Collector()
    late = node_factory("late")
    late.listen("map", c)
    assert c.wait_for(1) == [{"version": 2}]
    # only once per listener; new sends still flow normally
    s.send("map", {"version": 3}, latch=True)
    assert c.wait_for(2) == [{"version": 2}, {"version": 3}]
    s.clear_latch("map")
    c3 = Collector()
    later = node_factory("later")
    later.listen("map", c3)
    s.wait_for_listener("map", timeout=10)
    time.sleep(0.3)  # give a (wrong) latched delivery time to show up
    assert c3.data == []


def test_latched_value_goes_away_with_its_sender(node_factory):
    s = node_factory("mapper")
    s.send("cfg", 1, latch=True)
    s.close()
    c = Collector()
    late = node_factory("late")
    late.listen("cfg", c)
    time.sleep(0.3)  # nothing should arrive: the latched value left with its node
    assert c.data == []


def test_flush_waits_until_sent(node_factory):
    c = Collector()
    r = node_factory("r")
    r.listen("t", c, queue_size=100_000)
    s = node_factory("s")
    s.wait_for_listener("t", timeout=10)
    for _ in range(1000):
        s.send("t", b"x" * 10_000)  # 10 MB: below the 32 MiB outbound bound, nothing dropped
    assert s.flush(timeout=30)
    assert all(p["pending_bytes"] == 0 for p in s.stats()["peers"].values())
    c.wait_for(1000, timeout=30)
