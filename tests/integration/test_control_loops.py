"""Control loops: subscriptions, wait_for_message, thread-less callbacks and spin_once."""

from __future__ import annotations

import threading
import time

import pytest

import easymesh

from .helpers import wait_until


@pytest.fixture
def pair(node_factory):
    loop = node_factory("loop")
    sender = node_factory("sender")
    return loop, sender


def test_latest_after_a_burst_returns_the_newest(pair):
    loop, sender = pair
    sub = loop.subscribe("cmd")
    assert sub.latest() is None
    sender.wait_for_listener("cmd", timeout=10)
    for i in range(500):
        sender.send("cmd", {"seq": i})
    assert wait_until(lambda: (sub.latest() or {}).get("seq") == 499)
    assert sub.latest() == {"seq": 499}  # does not consume
    assert sub.dropped == 499  # queue_size=1: everything older was dropped and counted
    assert sub.get(timeout=1) == {"seq": 499}
    assert sub.latest() == {"seq": 499}
    sub.close()


def test_get_times_out(pair):
    loop, _ = pair
    with loop.subscribe("quiet") as sub:
        t0 = time.monotonic()
        with pytest.raises(TimeoutError):
            sub.get(timeout=0.2)
        assert time.monotonic() - t0 < 5


def test_drain_preserves_order(pair):
    loop, sender = pair
    with loop.subscribe("events", queue_size=1000) as sub:
        sender.wait_for_listener("events", timeout=10)
        for i in range(300):
            sender.send("events", i)
        assert wait_until(lambda: sub.received == 300)
        assert sub.drain() == list(range(300))
        assert sub.drain() == []
        assert sub.dropped == 0


def test_bounded_drop_oldest(pair):
    loop, sender = pair
    with loop.subscribe("burst", queue_size=5) as sub:
        sender.wait_for_listener("burst", timeout=10)
        for i in range(50):
            sender.send("burst", i)
        assert wait_until(lambda: sub.received == 50)
        assert sub.drain() == [45, 46, 47, 48, 49]
        assert sub.dropped == 45


def test_iteration_ends_on_close(pair):
    loop, sender = pair
    sub = loop.subscribe("stream", queue_size=100)
    got = []

    def consume():
        for data in sub:
            got.append(data)

    t = threading.Thread(target=consume)
    t.start()
    sender.wait_for_listener("stream", timeout=10)
    for i in range(10):
        sender.send("stream", i)
    assert wait_until(lambda: len(got) == 10)
    sub.close()
    t.join(10)
    assert not t.is_alive() and got == list(range(10))
    with pytest.raises(easymesh.SubscriptionClosed):
        sub.get(timeout=1)
    assert wait_until(lambda: not sender.has_listeners("stream"))


def test_subscription_and_listener_on_the_same_topic(pair):
    loop, sender = pair
    seen = []
    loop.listen("both", lambda t, d: seen.append(d))
    with loop.subscribe("both", queue_size=10) as sub:
        sender.wait_for_listener("both", timeout=10)
        sender.send("both", "x")
        assert sub.get(timeout=10) == "x"
        assert wait_until(lambda: seen == ["x"])
    assert loop.has_listeners("both")  # the callback listener remains


def test_wait_for_message(pair):
    loop, sender = pair

    def later():
        sender.wait_for_listener("once", timeout=10)
        sender.send("once", 42)

    t = threading.Thread(target=later)
    t.start()
    assert loop.wait_for_message("once", timeout=10) == 42
    t.join(10)
    with pytest.raises(TimeoutError):
        loop.wait_for_message("never", timeout=0.2)


def test_unthreaded_callbacks_run_only_in_spin_once(pair):
    loop, sender = pair
    calls = []
    loop.listen("ctl", lambda t, d: calls.append((d, threading.current_thread().name)), threaded=False)
    assert not any(t.name.startswith("easymesh-loop-ctl") for t in threading.enumerate())
    sender.wait_for_listener("ctl", timeout=10)
    for i in range(5):
        sender.send("ctl", i)
    assert wait_until(lambda: loop.stats()["topics"]["ctl"]["queued"] == 5)
    time.sleep(0.1)
    assert calls == []  # nothing ran on its own
    assert loop.spin_once() == 5
    me = threading.current_thread().name
    assert calls == [(i, me) for i in range(5)]
    assert loop.spin_once() == 0
    t0 = time.monotonic()
    assert loop.spin_once(timeout=0.2) == 0
    assert 0.15 < time.monotonic() - t0 < 5


def test_spin_once_waits_for_work(pair):
    loop, sender = pair
    loop.listen("wake", lambda t, d: None, threaded=False)
    sender.wait_for_listener("wake", timeout=10)
    threading.Timer(0.2, sender.send, args=("wake", 1)).start()
    assert loop.spin_once(timeout=10) == 1


def test_unthreaded_service_waits_for_spin(pair):
    loop, sender = pair
    where = []

    def handler(d):
        where.append(threading.current_thread().name)
        return d + 1

    loop.add_service("inc", handler, threaded=False)
    sender.wait_for_service("inc", timeout=10)
    fut = sender.request_future("inc", 1, timeout=10)
    time.sleep(0.2)
    assert not fut.done()  # waits for the owner to spin
    assert loop.spin_once(timeout=10) == 1
    assert fut.result(timeout=10) == 2
    assert where == [threading.current_thread().name]


def test_spin_returns_on_close(pair):
    loop, _ = pair
    loop.listen("x", lambda t, d: None, threaded=False)
    threading.Timer(0.2, loop.close).start()
    t = threading.Thread(target=loop.spin)
    t.start()
    t.join(10)
    assert not t.is_alive()


def test_close_ends_subscription(pair):
    loop, _ = pair
    sub = loop.subscribe("t")
    threading.Timer(0.2, loop.close).start()
    with pytest.raises(easymesh.SubscriptionClosed):
        sub.get(timeout=10)
