"""Unit tests of the node's parts that talk to others: the router (with a fake I/O loop
and a fake clock), the topology view and the registry.

The router's ``start()`` is never called: nothing is bound and nothing dialled; the
fake loop only records what the router asked it to schedule, and the tests play the
connection's part by calling the router's ``on_open``/``on_close`` callbacks as a
connection would. Threads appear only where the behaviour is about threads: a wait
woken by another thread, and the registry's hand-over from an old listener's worker
to the new one. The other parts are in test_parts.py.
"""

from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

from easymesh.decoder import Decoder
from easymesh.errors import ConnectionLost, NodeClosed, RequestTimeout, WouldDeadlock
from easymesh.protocol.codecs import PICKLE_ID
from easymesh.protocol.frames import CONTROL, TOPIC, Frame
from easymesh.protocol.messages import Diff, Ident, NodeInfo, encode_control
from easymesh.registry import Registry, Snapshot
from easymesh.router import Router
from easymesh.transport.connection import CLOSED
from easymesh.view import TopologyView
from easymesh.workers import ServiceEntry, TopicListener

WAIT = 10.0  # generous: the machine is shared


class FakeClock:
    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def _node(node_id: str, *topics: str) -> NodeInfo:
    return NodeInfo(id=node_id, name=f"n-{node_id}", topics=frozenset(topics))


# -- Router ------------------------------------------------------------------------------------


class FakeLoop:
    """Records what the router schedules; never runs it."""

    stopping = False

    def __init__(self) -> None:
        self.soon: list[tuple[Any, tuple[Any, ...]]] = []
        self.later: list[tuple[float, Any, tuple[Any, ...]]] = []

    def call_soon(self, fn: Any, *args: Any) -> None:
        self.soon.append((fn, args))

    def call_later(self, delay: float, fn: Any, *args: Any) -> None:
        self.later.append((delay, fn, args))

    def in_loop_thread(self) -> bool:
        return True

    def unregister(self, sock: Any) -> None:
        pass


class RouterBench:
    """A router with fakes all round, and what reached its collaborators."""

    def __init__(self) -> None:
        self.loop = FakeLoop()
        self.clock = FakeClock()
        self.closed: list[tuple[Any, BaseException]] = []
        self.router = Router(
            loop=self.loop,  # type: ignore[arg-type]
            node_name="me",
            node_id="me-id",
            authkey=None,
            use_unix=False,
            host_key="host",
            max_message_size=1 << 20,
            max_pending_bytes=1 << 20,
            socket_dir=None,
            stall_timeout=4.0,
            decoder=Decoder("pickle"),
            entry=lambda name: None,
            on_requests=lambda link, frames: None,
            on_answers=lambda link, frames: None,
            on_link_closed=lambda link, exc: self.closed.append((link, exc)),
            clock=self.clock,
        )

    def dials(self) -> list[Any]:
        return [fn.__self__ for fn, _ in self.loop.soon if fn.__name__ == "start_connect"]


def _opened(link: Any) -> None:
    """Play the connection: its handshake succeeded."""
    assert link.on_open is not None
    link.on_open(link)


def _closed(link: Any, exc: BaseException) -> None:
    """Play the connection: it closed (before or after opening)."""
    assert link.on_close is not None
    link.on_close(link, exc)


PEER = NodeInfo(id="peer-id", name="peer", tcp="127.0.0.1:9", host_key="elsewhere")


@pytest.fixture
def bench() -> RouterBench:
    return RouterBench()


def test_router_dials_once(bench: RouterBench) -> None:
    link = bench.router.link_to(PEER)
    assert link is not None and link.is_client and link.peer_id == "peer-id"
    assert bench.router.link_to(PEER) is link
    assert bench.dials() == [link]
    assert bench.loop.soon[0][1][1] == ("127.0.0.1", 9)  # the advertised endpoint
    assert bench.router.links == {"peer-id": link}
    assert bench.router.link_to(NodeInfo(id="x", name="no-endpoint")) is None


def test_router_backs_off_a_peer_it_could_not_reach(bench: RouterBench) -> None:
    r = bench.router
    link = r.link_to(PEER)
    assert link is not None
    refused = ConnectionRefusedError(111, "Connection refused")
    _closed(link, refused)  # as the connection does when connect() fails
    assert "peer-id" not in r.links
    assert bench.closed and bench.closed[0][0] is link
    assert isinstance(bench.closed[0][1], ConnectionLost)
    assert r.link_to(PEER) is None  # on backoff: refused at once
    bench.clock.now += 0.19
    assert r.link_to(PEER) is None  # the first delay is 0.25 s -20 %/+20 %
    bench.clock.now += 0.12
    again = r.link_to(PEER)
    assert again is not None and again is not link
    _closed(again, refused)  # fails again: the delay grows (0.5 s -20 %/+20 %)
    bench.clock.now += 0.35
    assert r.link_to(PEER) is None
    bench.clock.now += 0.3
    assert r.link_to(PEER) is not None
    assert len(bench.dials()) == 3


def test_router_a_link_that_opened_resets_the_backoff(bench: RouterBench) -> None:
    r = bench.router
    refused = ConnectionRefusedError(111, "Connection refused")
    for _ in range(3):  # three failures: the next delay would be about 2 s
        link = r.link_to(PEER)
        assert link is not None
        _closed(link, refused)
        bench.clock.now += 10.0
    link = r.link_to(PEER)
    assert link is not None
    _opened(link)  # the handshake succeeded
    _closed(link, ConnectionResetError(104, "reset"))  # later lost
    fresh = r.link_to(PEER)  # not on backoff: dialled again at once
    assert fresh is not None and fresh is not link
    _closed(fresh, refused)  # a new failure starts from the initial delay again
    bench.clock.now += 0.31
    assert r.link_to(PEER) is not None


def test_router_retires_the_links_of_a_node_that_left(bench: RouterBench) -> None:
    r = bench.router
    link = r.link_to(PEER)
    assert link is not None
    _opened(link)
    r.forget("peer-id")
    assert "peer-id" not in r.links  # nothing new goes there
    assert link.state != CLOSED  # still read during the grace period
    r.retire("peer-id")
    assert link.state == CLOSED
    assert bench.closed[-1][0] is link and "left the mesh" in str(bench.closed[-1][1])
    assert r.open_links() == 0 and r.stats() == {}


def test_router_does_not_retire_a_node_dialled_again(bench: RouterBench) -> None:
    r = bench.router
    old = r.link_to(PEER)
    assert old is not None
    _opened(old)
    with r._lock:
        inbound = r._new_conn(False, "peer")  # the peer's own link to us
    r._on_frames(inbound, [_ident_frame("peer-id", "peer")])
    r.forget("peer-id")
    new = r.link_to(PEER)  # it came back before the grace period ended
    assert new is not None and new is not old
    r.retire("peer-id")
    assert new.state != CLOSED and r.links == {"peer-id": new}
    assert inbound.state != CLOSED  # it may still be the peer's way to us
    assert old.state == CLOSED  # the link dialled before it left carries nothing any more


def test_router_retires_only_stale_links_of_a_node_that_came_back(bench: RouterBench) -> None:
    r = bench.router
    old = r.link_to(PEER)
    assert old is not None
    _opened(old)
    with r._lock:
        inbound = r._new_conn(False, "peer")
    r._on_frames(inbound, [_ident_frame("peer-id", "peer")])
    r.forget("peer-id")
    r.retire("peer-id", gone=False)  # back in the mesh, not dialled again yet
    assert old.state == CLOSED and inbound.state != CLOSED
    assert r.link_to(PEER) not in (None, old)  # the next send dials afresh


def _ident_frame(node_id: str, name: str) -> Frame:
    op, body = encode_control(Ident(node_id, name))
    return Frame(CONTROL, 0, op, 0, body)


def test_router_never_routes_over_an_accepted_link(bench: RouterBench) -> None:
    r = bench.router
    # An inbound link, as _on_accept makes it (that path needs a real socket: see the
    # report); a peer claims to be PEER on it.
    with r._lock:
        inbound = r._new_conn(False, "peer")
    r._on_frames(inbound, [_ident_frame("peer-id", "peer")])
    assert inbound.peer_id == "peer-id"  # a label for logs and stats
    assert r.links == {}  # never routing
    dialled = r.link_to(PEER)
    assert dialled is not None and dialled is not inbound and dialled.is_client
    # a second claim on another inbound link does not replace the dialled one
    with r._lock:
        other = r._new_conn(False, "peer")
    r._on_frames(other, [_ident_frame("peer-id", "impostor")])
    assert r.links == {"peer-id": dialled}
    assert r.link_to(PEER) is dialled


# -- TopologyView ------------------------------------------------------------------------------


def _diff(version: int, *nodes: NodeInfo) -> Diff:
    return Diff(version, upsert=nodes)


def test_view_wait_ends_when_a_diff_adds_a_listener() -> None:
    view = TopologyView()
    inside = threading.Event()
    calls = itertools.count()

    def found() -> Any:
        if next(calls) == 1:  # the first check under the view's lock: the waiter waits next
            inside.set()
        return view.listeners("t")

    def apply() -> None:
        assert inside.wait(WAIT)
        view.apply(_diff(1, _node("a", "t")))  # takes the lock: runs once the waiter sleeps

    t = threading.Thread(target=apply)
    t.start()
    view.wait_for(found, WAIT, "a listener")
    t.join(WAIT)
    assert [n.id for n in view.listeners("t")] == ["a"]
    # the public spelling, woken the same way
    t = threading.Thread(target=lambda: view.apply(_diff(2, _node("a", "t"), _node("b", "u"))))
    t.start()
    view.wait_for_listener("u", WAIT)
    t.join(WAIT)


def test_view_wait_times_out() -> None:
    view = TopologyView()
    start = time.monotonic()
    with pytest.raises(RequestTimeout, match="no listener for topic 't'"):
        view.wait_for_listener("t", 0.2)
    assert time.monotonic() - start >= 0.2
    with pytest.raises(TimeoutError):  # RequestTimeout is a TimeoutError
        view.wait_for_provider("s", 0.05)


@pytest.mark.parametrize("timeout", [0, 0.0, -1.0])
def test_view_timeout_zero_checks_once(timeout: float) -> None:
    view = TopologyView()
    start = time.monotonic()
    with pytest.raises(RequestTimeout):
        view.wait_for_listener("t", timeout)
    assert time.monotonic() - start < 1.0
    view.apply(_diff(1, _node("a", "t")))
    view.wait_for_listener("t", timeout)  # present: returns


def test_view_close_ends_waits() -> None:
    view = TopologyView()
    errors: list[BaseException] = []
    waiting = threading.Event()

    def found() -> Any:
        waiting.set()
        return view.listeners("t")

    def wait() -> None:
        try:
            view.wait_for(found, None, "x")
        except BaseException as exc:
            errors.append(exc)

    t = threading.Thread(target=wait)
    t.start()
    assert waiting.wait(WAIT)
    view.close(NodeClosed("node 'x' is closed"))
    t.join(WAIT)
    assert not t.is_alive()
    assert len(errors) == 1 and isinstance(errors[0], NodeClosed)
    with pytest.raises(NodeClosed, match="is closed"):
        view.wait_for_listener("t", None)  # after close: at once, even with no timeout


def test_view_wait_on_the_io_thread_would_deadlock() -> None:
    view = TopologyView(in_io_thread=lambda: True)
    start = time.monotonic()
    with pytest.raises(WouldDeadlock):
        view.wait_for_listener("t", 30)
    with pytest.raises(WouldDeadlock):
        view.wait_for_provider("s", None)
    assert time.monotonic() - start < 1.0
    view.apply(_diff(1, NodeInfo(id="a", name="a", services=frozenset({"s"}))))
    view.wait_for_provider("s", 30)  # nothing to wait for: fine on any thread


# -- Registry ----------------------------------------------------------------------------------


@pytest.fixture
def registry() -> Iterator[tuple[Registry, list[Snapshot]]]:
    changes: list[Snapshot] = []
    reg = Registry(changes.append)
    yield reg, changes
    assert reg.close(time.monotonic() + WAIT)


def _listener(callback: Any, topic: str = "t") -> TopicListener:
    return TopicListener(
        f"easymesh-unit-{topic}",
        topic,
        callback,
        raw=True,
        workers=1,
        queue_size=100,
        queue_bytes=1 << 20,
        decoder=Decoder("pickle"),
        on_put=None,
        start=False,
    )


def _deliver(reg: Registry, topic: str, body: bytes) -> None:
    entry = reg.entry(topic.encode())
    assert entry is not None
    entry.deliver([(Frame(TOPIC, PICKLE_ID, topic.encode(), 0, body), len(body))])


def test_registry_new_listener_starts_after_the_old_one_ended(registry: Any) -> None:
    reg, _ = registry
    events: list[str] = []
    entered, release, second = threading.Event(), threading.Event(), threading.Event()

    def old_cb(topic: str, msg: Any) -> None:
        events.append("old-start")
        entered.set()
        assert release.wait(WAIT)
        events.append("old-end")

    def new_cb(topic: str, msg: Any) -> None:
        events.append(f"new:{bytes(msg.data).decode()}")
        second.set()

    old = _listener(old_cb)
    assert reg.listen(old) is None
    _deliver(reg, "t", b"1")
    assert entered.wait(WAIT)
    new = _listener(new_cb)
    assert reg.listen(new) is old
    _deliver(reg, "t", b"2")  # queued for the new callback
    assert not any(t.is_alive() for t in new.dispatcher._threads)  # not started yet
    assert new.dispatcher.queued == 1 and events == ["old-start"]
    release.set()
    assert second.wait(WAIT)
    assert events == ["old-start", "old-end", "new:2"]


class Swap:
    """The first listener's callback blocks (inside, on an Event); every later one
    records what it got. ``overlap`` is set if a later one ran while the first was in."""

    def __init__(self) -> None:
        self.entered, self.release, self.later_ran = (threading.Event() for _ in range(3))
        self.inside = False
        self.overlap = False
        self.got: list[str] = []

    def first(self, topic: str, msg: Any) -> None:
        self.inside = True
        self.entered.set()
        assert self.release.wait(WAIT)
        self.inside = False

    def later(self, topic: str, msg: Any) -> None:
        self.overlap = self.overlap or self.inside
        self.got.append(bytes(msg.data).decode())
        self.later_ran.set()


def test_registry_a_third_listener_waits_for_the_first(registry: Any) -> None:
    reg, _ = registry
    swap = Swap()
    reg.listen(_listener(swap.first))
    _deliver(reg, "t", b"1")
    assert swap.entered.wait(WAIT)
    reg.listen(_listener(swap.later))  # replaced before it could start
    third = _listener(swap.later)
    reg.listen(third)
    _deliver(reg, "t", b"3")
    try:
        assert not any(t.is_alive() for t in third.dispatcher._threads)  # the first still runs
    finally:
        swap.release.set()
    assert swap.later_ran.wait(WAIT)
    assert not swap.overlap and swap.got == ["3"]


def test_registry_listening_again_after_stop_waits_for_the_old_callback(registry: Any) -> None:
    reg, _ = registry
    swap = Swap()
    reg.listen(_listener(swap.first))
    _deliver(reg, "t", b"1")
    assert swap.entered.wait(WAIT)
    reg.stop_listening("t")  # the old callback is still inside
    again = _listener(swap.later)
    reg.listen(again)
    _deliver(reg, "t", b"2")
    try:
        assert not any(t.is_alive() for t in again.dispatcher._threads)
    finally:
        swap.release.set()
    assert swap.later_ran.wait(WAIT)
    assert not swap.overlap and swap.got == ["2"]


def test_registry_close_also_stops_a_replaced_listener_still_draining(registry: Any) -> None:
    reg, _ = registry
    swap = Swap()
    first = _listener(swap.first)
    reg.listen(first)
    _deliver(reg, "t", b"1")
    assert swap.entered.wait(WAIT)
    for body in (b"2", b"3", b"4"):
        _deliver(reg, "t", body)  # queued behind the busy callback
    reg.listen(_listener(swap.later))
    try:
        assert not reg.close(time.monotonic() + 0.2)  # the first one is still inside
        assert first.dispatcher.queued == 0  # what it had queued is abandoned
    finally:
        swap.release.set()
    assert first.dispatcher.join(time.monotonic() + WAIT)
    assert first.dispatcher.stats()["handled"] == 1  # nothing ran after close()


def test_registry_on_change_gets_the_right_snapshot(registry: Any) -> None:
    reg, changes = registry
    reg.listen(_listener(lambda t, m: None, "a"))
    assert changes[-1] == Snapshot(frozenset({"a"}), frozenset(), frozenset())
    reg.publish("out")
    assert changes[-1] == Snapshot(frozenset({"a"}), frozenset(), frozenset({"out"}))
    svc = ServiceEntry(
        "easymesh-unit-svc",
        "svc",
        lambda d: d,
        workers=1,
        queue_size=10,
        serve=lambda s, item: None,
        discard=lambda s, items: None,
        on_put=None,
    )
    assert reg.add_service(svc) is None
    assert changes[-1] == Snapshot(frozenset({"a"}), frozenset({"svc"}), frozenset({"out"}))
    reg.stop_listening("a")
    assert changes[-1] == Snapshot(frozenset(), frozenset({"svc"}), frozenset({"out"}))
    assert reg.remove_service("svc") is svc
    assert changes[-1] == Snapshot(frozenset(), frozenset(), frozenset({"out"}))
    assert reg.snapshot() == changes[-1]
    assert len(changes) == 5


def test_registry_publish_records_a_topic_once(registry: Any) -> None:
    reg, changes = registry
    assert not reg.is_published("x")
    for _ in range(3):
        reg.publish("x")
    reg.publish("y")
    reg.publish("x")
    assert reg.is_published("x") and reg.is_published("y")
    assert [c.publishes for c in changes] == [frozenset({"x"}), frozenset({"x", "y"})]
