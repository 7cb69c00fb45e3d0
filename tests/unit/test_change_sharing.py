"""Issue 15, what one topology change costs the nodes of a process, without sockets:
the diff decoded once per process for identical bytes (``coordclient.decode_diff``) and
the view waking its waiters once per I/O-thread turn (``TopologyView(later=...)``)."""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Callable

import pytest

from easymesh import coordclient
from easymesh.coordclient import decode_diff
from easymesh.errors import ProtocolError
from easymesh.protocol.messages import Diff, NodeInfo, Welcome, encode_control
from easymesh.view import TopologyView


def body_of(diff: Diff) -> bytes:
    return encode_control(diff)[1]


def listener(node_id: str = "l", topic: str = "t") -> NodeInfo:
    return NodeInfo(node_id, f"n-{node_id}", tcp="127.0.0.1:1", topics=frozenset({topic}))


def test_identical_bytes_decode_once_and_other_bytes_decode_anew() -> None:
    body = body_of(Diff(7, upsert=(listener(),)))
    first = decode_diff(body)
    assert first == Diff(7, upsert=(listener(),))
    assert decode_diff(bytes(body)) is first  # equal bytes, another object: shared
    assert decode_diff(bytearray(body)) is first  # (a large frame's body is a bytearray)
    other = decode_diff(body_of(Diff(8, upsert=(listener(),))))
    assert other is not first and other.version == 8
    assert decode_diff(body) is not first and decode_diff(body) == first  # one entry


def test_bytes_that_fail_to_decode_raise_every_time_and_are_never_kept() -> None:
    good = body_of(Diff(3, remove=("x",)))
    kept = decode_diff(good)
    for _ in range(2):
        with pytest.raises(ProtocolError):
            decode_diff(b"\x93garbage")
    assert coordclient._last_diff is not None and coordclient._last_diff[1] is kept


def test_a_shared_diff_is_immutable_all_the_way_down() -> None:
    diff = decode_diff(body_of(Diff(9, upsert=(listener(),), remove=("gone",))))
    with pytest.raises(dataclasses.FrozenInstanceError):
        diff.version = 10  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        diff.upsert[0].topics = frozenset()  # type: ignore[misc]
    assert isinstance(diff.upsert, tuple) and isinstance(diff.remove, tuple)
    assert isinstance(diff.upsert[0].topics, frozenset)


def test_two_views_applying_one_shared_diff_keep_their_own_records() -> None:
    diff = decode_diff(body_of(Diff(2, upsert=(listener(), NodeInfo("a", "stale-a")))))
    views = {}
    for me in ("a", "b"):
        view = TopologyView()
        view.set_local(NodeInfo(me, f"own-{me}"))
        view.apply(Welcome(1, (), ack=0))
        view.apply(diff)
        views[me] = view
    a, b = views["a"], views["b"]
    assert a.nodes["a"].name == "own-a"  # its own record wins over the coordinator's
    assert b.nodes["a"].name == "stale-a" and "b" not in a.nodes
    assert a.nodes["l"] is b.nodes["l"]  # the shared, immutable record
    b.close(RuntimeError("closed"))
    a.apply(decode_diff(body_of(Diff(3, remove=("l",)))))
    assert "l" not in a.nodes and "l" in b.nodes  # each view's dict is its own
    assert diff.upsert[0] == listener()  # and the shared value did not change


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


def test_the_view_wakes_its_waiters_once_per_turn_after_the_changes() -> None:
    later = Later()
    view = TopologyView(later=later)
    view.set_local(NodeInfo("me", "me"))
    view.apply(Welcome(1, (), ack=0))
    later.run()
    waiting = threading.Event()
    done: list[BaseException | None] = []

    def wait() -> None:
        view.want_topic("t")
        waiting.set()
        try:
            view.wait_for_listener("t", timeout=30)
            done.append(None)
        except BaseException as exc:  # reported below
            done.append(exc)

    t = threading.Thread(target=wait)
    t.start()
    assert waiting.wait(30)
    view.apply(Diff(2, ack=1))
    view.apply(Diff(3, upsert=(listener("me2"),)))
    view.apply(Diff(4, upsert=(listener(),)))
    assert len(later.calls) == 1  # three changes in one turn: one wake-up queued
    assert view.listeners("t")  # the change itself is visible at once
    later.run()
    t.join(30)
    assert done == [None]
    view.apply(Diff(5, remove=("l",)))
    assert len(later.calls) == 1  # the next turn queues its own
    later.run()


def test_closing_the_view_wakes_its_waiters_at_once() -> None:
    later = Later()
    view = TopologyView(later=later)
    view.apply(Welcome(1, (), ack=0))
    later.run()
    failed: list[BaseException] = []
    started = threading.Event()

    def wait() -> None:
        started.set()
        try:
            view.wait_for(lambda: False, 30, "nothing")
        except BaseException as exc:  # the NodeClosed under test
            failed.append(exc)

    t = threading.Thread(target=wait)
    t.start()
    assert started.wait(30)
    view.close(RuntimeError("closed"))
    t.join(30)
    assert not t.is_alive() and len(failed) == 1 and not later.calls


@pytest.mark.parametrize("interval", [1.0, 0.05, 3.0])
def test_heartbeats_fall_on_a_grid_at_most_a_twentieth_of_an_interval_off(
    interval: float,
) -> None:
    grid = interval / coordclient.BEAT_GRID
    for now in (0.0, 12.3456, 1000.001, 98765.4321):
        delay = coordclient.next_beat(interval, now)
        assert interval - grid / 2 - 1e-9 <= delay <= interval + grid / 2 + 1e-9
        beat = (now + delay) / grid
        assert abs(beat - round(beat)) < 1e-6  # on the grid: nodes of a process beat together
    assert coordclient.next_beat(0.0, 5.0) == 0.0  # degenerate intervals as asked
    assert coordclient.next_beat(float("inf"), 5.0) == float("inf")


@pytest.mark.parametrize("interval", [1.0, 0.05, 3.0])
def test_heartbeats_stay_one_interval_apart_when_their_timers_fire_late(interval: float) -> None:
    """A timer fires a little after its deadline (call_later reads the clock after next_beat
    did, select wakes late): just past a point of the grid. Rounding one interval on from
    there *up* to the grid skipped to the point after the one due: every heartbeat came 1.1
    intervals after the last (10 % fewer than asked, and closer to the coordinator's PING)."""
    grid = interval / coordclient.BEAT_GRID
    late = grid / 50  # how late each timer fires
    fired = [98765.4321]
    for _ in range(50):
        fired.append(fired[-1] + coordclient.next_beat(interval, fired[-1]) + late)
    gaps = [b - a for a, b in zip(fired[1:], fired[2:], strict=False)]  # (after the first)
    assert abs(sum(gaps) / len(gaps) - interval) < grid / 10
    assert max(gaps) <= interval + grid / 2 + late
    for t in fired[1:]:
        beat = (t - late) / grid
        assert abs(beat - round(beat)) < 1e-6  # still on the grid
