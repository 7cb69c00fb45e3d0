"""The dispatcher's bells (a lock per idle worker instead of a Condition, issue 13).

What the change must keep: no item waits while a worker is idle (no lost wake-up), as many
idle workers woken as items queued (several run at once), the longest idle worker first (as a
Condition's notify), ``stop()`` wakes idle workers, and no bell is left rung (a worker woken
for nothing).
"""

from __future__ import annotations

import threading
import time
from typing import Any

from easymesh.dispatch import Dispatcher

WAIT = 20.0  # generous: the machine is shared


def wait_for(cond: Any, timeout: float = WAIT) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return True
        time.sleep(0.002)  # polling a condition, not synchronising on time
    return bool(cond())


def all_idle(d: Dispatcher) -> bool:
    with d._lock:
        return len(d._sleepers) == d.workers and not d._q


def no_bell_rung(d: Dispatcher) -> bool:
    with d._lock:
        return all(bell.locked() for bell in d._sleepers)


def test_items_from_two_producers_all_run_and_no_token_is_left() -> None:
    ran: list[int] = []
    lock = threading.Lock()

    def run(item: int) -> None:
        with lock:
            ran.append(item)

    d = Dispatcher("easymesh-test-bell", run, workers=3, queue_size=100_000)
    n = 3000

    def produce(base: int) -> None:
        for i in range(n):
            d.put(base + i, 1)
            if i % 97 == 0:
                time.sleep(0)  # let the workers go idle now and then

    producers = [threading.Thread(target=produce, args=(k * n,)) for k in range(2)]
    for t in producers:
        t.start()
    for t in producers:
        t.join()
    assert wait_for(lambda: len(ran) == 2 * n)
    assert sorted(ran) == list(range(2 * n))
    assert wait_for(lambda: all_idle(d))
    assert no_bell_rung(d)  # every released bell had its worker
    assert d.stop(timeout=WAIT)


def test_as_many_idle_workers_wake_as_items_queued() -> None:
    barrier = threading.Barrier(3, timeout=WAIT)
    met: list[bool] = []

    def run(_item: Any) -> None:
        barrier.wait()  # only passes if three workers run at the same time
        met.append(True)

    d = Dispatcher("easymesh-test-bell-many", run, workers=3)
    assert wait_for(lambda: all_idle(d))
    assert d.put_many([(1, 1), (2, 1), (3, 1)]) == 3
    assert wait_for(lambda: len(met) == 3)
    assert wait_for(lambda: all_idle(d))
    assert no_bell_rung(d)
    assert d.stop(timeout=WAIT)


def test_one_item_wakes_one_worker_and_order_holds_with_one_worker() -> None:
    ran: list[int] = []
    d = Dispatcher("easymesh-test-bell-one", ran.append, workers=1)
    for i in range(200):
        assert wait_for(lambda: all_idle(d))  # the worker waits on the bell each time
        d.put(i, 1)
        assert wait_for(lambda i=i: len(ran) == i + 1)  # type: ignore[misc]
    assert ran == list(range(200))
    assert no_bell_rung(d)
    assert d.stop(timeout=WAIT)


def test_the_longest_idle_worker_is_woken_first() -> None:
    ran: list[int] = []
    d = Dispatcher("easymesh-test-bell-fifo", ran.append, workers=3)
    assert wait_for(lambda: all_idle(d))
    for i in range(6):
        with d._lock:
            longest_idle = d._sleepers[0]
        d.put(i, 1)
        assert wait_for(lambda i=i: len(ran) == i + 1 and all_idle(d))  # type: ignore[misc]
        with d._lock:  # the one woken went idle again: its bell is now last in line
            assert d._sleepers[-1] is longest_idle
    assert no_bell_rung(d)
    assert d.stop(timeout=WAIT)


def test_stop_wakes_idle_workers() -> None:
    d = Dispatcher("easymesh-test-bell-stop", lambda _item: None, workers=4)
    assert wait_for(lambda: all_idle(d))
    assert d.stop(timeout=WAIT)  # True: every worker woke and ended
    assert not any(t.is_alive() for t in d._threads)
