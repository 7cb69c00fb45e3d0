"""Issue 15, session 5: the views of a process wake their waiters in a relay
(``easymesh.view.WakeRelay``): the I/O thread starts a few chains once per turn, each woken
waiter wakes the next view before it carries on. What must hold: every waiter of every
changed view is woken, views nobody waits on are passed over, and the relay never stalls
(a wait that ends for any reason, or a view that closes, passes it on)."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator

import pytest

from easymesh.errors import RequestTimeout
from easymesh.protocol.messages import Diff, NodeInfo, Welcome
from easymesh.view import RELAY, TopologyView
from tests.integration.helpers import wait_until

WAIT = 30.0


class Later:
    """Stands for the I/O thread's call_soon: collects the calls, runs them on demand."""

    def __init__(self) -> None:
        self.calls: list[Callable[[], None]] = []

    def __call__(self, fn: Callable[[], None]) -> None:
        self.calls.append(fn)

    def run(self) -> None:
        calls, self.calls = self.calls, []
        for fn in calls:
            fn()


@pytest.fixture(autouse=True)
def idle_relay() -> Iterator[None]:
    RELAY.pending.clear()
    yield
    RELAY.pending.clear()


def listener(node_id: str = "l", topic: str = "t") -> NodeInfo:
    return NodeInfo(node_id, f"n-{node_id}", tcp="127.0.0.1:1", topics=frozenset({topic}))


def welcomed(later: Later) -> TopologyView:
    view = TopologyView(later=later)
    view.set_local(NodeInfo("me", "me"))
    view.apply(Welcome(1, (), ack=0))
    later.run()
    return view


def asleep(view: TopologyView) -> bool:
    with view._cond:
        return view._sleeping == 1


def start_waiter(
    view: TopologyView, wait: Callable[[], None]
) -> tuple[threading.Thread, list[object]]:
    """A thread in ``wait()``, returned once it sleeps in the view's condition."""
    out: list[object] = []

    def run() -> None:
        try:
            wait()
            out.append(None)
        except BaseException as exc:  # reported by the test
            out.append(exc)

    t = threading.Thread(target=run, daemon=True)
    t.start()
    assert wait_until(lambda: asleep(view), WAIT)
    return t, out


def test_one_start_per_turn_wakes_every_waiting_view_through_the_relay() -> None:
    later = Later()
    views = [welcomed(later) for _ in range(40)]
    waiters = []
    for v in views:
        v.want_topic("t")
        waiters.append(start_waiter(v, lambda v=v: v.wait_for_listener("t", timeout=WAIT)))
    for i, v in enumerate(views):
        v.apply(Diff(2 + i, upsert=(listener(),), ack=1))
    assert len(later.calls) == 1  # 40 views changed in one turn: one start
    assert all(v.listeners("t") for v in views)  # each change is visible at once
    later.run()
    for t, out in waiters:
        t.join(WAIT)
        assert out == [None]
    assert not RELAY.pending


def test_views_nobody_waits_on_are_passed_over() -> None:
    later = Later()
    idle = [welcomed(later) for _ in range(RELAY.WIDTH + 5)]
    last = welcomed(later)
    last.want_topic("t")
    t, out = start_waiter(last, lambda: last.wait_for_listener("t", timeout=WAIT))
    for v in [*idle, last]:
        v.apply(Diff(2, upsert=(listener(),), ack=1))
    later.run()  # the chains start on views without waiters and run on to the last one
    t.join(WAIT)
    assert out == [None] and not RELAY.pending


def test_a_wait_that_times_out_passes_the_relay_on() -> None:
    """A start that never runs (its I/O thread gone) must not strand the views queued
    behind it: any waiter whose wait ends, here by its timeout, wakes the next."""
    lost = Later()  # the start queued here is never run
    waiting = welcomed(lost)
    waiting.want_topic("t")
    t, out = start_waiter(waiting, lambda: waiting.wait_for_listener("t", timeout=WAIT))
    waiting.apply(Diff(2, upsert=(listener(),), ack=1))
    assert len(lost.calls) == 1 and RELAY.pending
    other = welcomed(Later())
    t2, out2 = start_waiter(other, lambda: other.wait_for(lambda: False, 0.3, "nothing"))
    t2.join(WAIT)
    assert len(out2) == 1 and isinstance(out2[0], RequestTimeout)
    t.join(WAIT)
    assert out == [None]  # woken by the relay, long before its own 30 s timeout


def test_a_view_closing_passes_the_relay_on() -> None:
    lost = Later()
    waiting = welcomed(lost)
    waiting.want_topic("t")
    t, out = start_waiter(waiting, lambda: waiting.wait_for_listener("t", timeout=WAIT))
    waiting.apply(Diff(2, upsert=(listener(),), ack=1))
    welcomed(Later()).close(RuntimeError("closed"))
    t.join(WAIT)
    assert out == [None]


def test_a_stalled_relay_is_started_again_by_the_next_change() -> None:
    later = Later()
    busy, silent = welcomed(later), welcomed(later)
    lost = Later()
    waiting = welcomed(lost)
    waiting.want_topic("t")
    t, out = start_waiter(waiting, lambda: waiting.wait_for_listener("t", timeout=WAIT))
    waiting.apply(Diff(2, upsert=(listener(),), ack=1))
    assert len(lost.calls) == 1
    RELAY._moved = float("inf")  # it stepped just now: busy, no second start
    busy.apply(Diff(2, upsert=(listener(),)))
    assert not later.calls
    RELAY._moved = 0.0  # silent for longer than STALL: started again
    silent.apply(Diff(2, upsert=(listener(),)))
    assert len(later.calls) == 1
    later.run()
    t.join(WAIT)
    assert out == [None]
