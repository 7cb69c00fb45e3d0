"""Unit tests of the node's pure parts: request table, latch store, backoff, counter, decoder.

No sockets and, except where the behaviour is about threads (the request table and
the counter under contention), no threads: the request table gets a fake clock,
the latch store fake listener tables and a recording ``send``, the backoff an
injected ``rand``. The router, the topology view and the registry are in
test_parts_router.py; the caller and the service host in test_parts_caller.py.
"""

from __future__ import annotations

import itertools
import os
import pickle
import threading
from typing import Any

import pytest

from easymesh.backoff import Backoff
from easymesh.counters import Counter
from easymesh.decoder import Decoder
from easymesh.errors import (
    CodecError,
    TooManyRequests,
)
from easymesh.latch import LatchStore
from easymesh.protocol.codecs import (
    JSON_ID,
    MSGPACK_ID,
    PICKLE_ID,
    PICKLE_SHM_ID,
    RAW_ID,
    JsonCodec,
)
from easymesh.protocol.messages import NodeInfo
from easymesh.requests import RequestTable

from ..preempt import run_preempted

WAIT = 10.0  # generous: the machine is shared


class FakeClock:
    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


# -- RequestTable ------------------------------------------------------------------------------


def test_request_deadlines_expire_in_order() -> None:
    clock = FakeClock()
    table = RequestTable(clock=clock)
    a = table.add("fa", "link", "a", "n1", timeout=3.0)
    b = table.add("fb", "link", "b", "n1", timeout=1.0)
    c = table.add("fc", "link", "c", "n1", timeout=2.0)
    table.add("fd", "link", "d", "n1", timeout=None)  # no deadline
    table.add("fe", "link", "e", "n1", timeout=float("inf"))
    assert table.expired() == []
    clock.now += 1.5
    assert [p.service for p in table.expired()] == ["b"]
    clock.now += 1.0
    assert [p.service for p in table.expired()] == ["c"]
    clock.now += 1.0
    assert [p.service for p in table.expired()] == ["a"]
    clock.now += 1e6
    assert table.expired() == []
    assert a not in table and b not in table and c not in table
    assert len(table) == 2  # the two without a deadline wait forever
    assert table.deadline_entries == 0


def test_request_pop_only_for_the_link_it_went_out_on() -> None:
    table = RequestTable(clock=FakeClock())
    mine, other = object(), object()
    rid = table.add("f", mine, "svc", "n1", timeout=5.0)
    assert table.pop(rid, other) is None  # a reply on another link does not complete it
    assert rid in table
    p = table.pop(rid, mine)
    assert p is not None and p.future == "f" and p.link is mine
    assert table.pop(rid, mine) is None  # exactly once
    assert table.pop(12345, mine) is None  # never asked
    local = table.add("g", None, "svc", "self")  # a request to this node itself
    assert table.pop(local, mine) is None
    assert table.pop(local, None) is not None


def test_request_completed_exactly_once() -> None:
    clock = FakeClock()
    table = RequestTable(clock=clock)
    link = object()
    rid = table.add("f", link, "svc", "n1", timeout=1.0)
    clock.now += 2.0
    assert [p.future for p in table.expired()] == ["f"]  # the timeout won
    assert table.pop(rid, link) is None  # the late answer finds nothing
    assert table.discard(rid) is None
    assert table.take_where(lambda p: True) == []
    rid = table.add("g", link, "svc", "n1", timeout=1.0)
    assert table.pop(rid, link) is not None  # the answer won
    clock.now += 2.0
    assert table.expired() == []  # the deadline finds nothing


def test_request_completed_exactly_once_under_racing_threads() -> None:
    table = RequestTable()
    link = object()
    rids = [table.add(i, link, "svc", "n1", timeout=60.0) for i in range(20_000)]
    won: list[list[int]] = [[] for _ in range(4)]
    start = threading.Barrier(4)

    def take(k: int) -> None:
        start.wait(WAIT)
        if k == 2:  # a lost link (or close) takes everything still there, once
            won[k].extend(p.future for p in table.take_where(lambda p: p.link is link))
            return
        for rid in rids if k == 0 else reversed(rids):
            p = table.pop(rid, link) if k < 2 else table.discard(rid)
            if p is not None:
                won[k].append(p.future)

    threads = [threading.Thread(target=take, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    everything = sorted(itertools.chain.from_iterable(won))
    assert everything == list(range(20_000))  # each completed once, none lost
    assert len(table) == 0


def test_request_discard_ignores_the_link() -> None:
    clock = FakeClock()
    table = RequestTable(clock=clock)
    rid = table.add("f", object(), "svc", "n1", timeout=1.0)
    p = table.discard(rid)
    assert p is not None and p.future == "f"
    assert table.discard(rid) is None
    clock.now += 5.0
    assert table.expired() == []


def test_request_take_where() -> None:
    table = RequestTable(clock=FakeClock())
    l1, l2 = object(), object()
    r1 = table.add("a", l1, "svc", "n1", timeout=1.0)
    table.add("b", l2, "svc", "n2", timeout=1.0)
    r3 = table.add("c", l1, "svc", "n1")
    taken = table.take_where(lambda p: p.link is l1)
    assert sorted(p.future for p in taken) == ["a", "c"]
    assert r1 not in table and r3 not in table and len(table) == 1
    assert table.take_where(lambda p: p.link is l1) == []
    assert [p.future for p in table.take_where(lambda p: True)] == ["b"]


def test_request_deadline_heap_is_pruned() -> None:
    clock = FakeClock()
    table = RequestTable(clock=clock)
    link = object()
    keep = [table.add(i, link, "svc", "n1", timeout=3600.0) for i in range(10)]
    most = 0
    for i in range(20_000):  # answered long before their deadline
        rid = table.add(i, link, "svc", "n1", timeout=3600.0)
        assert table.pop(rid, link) is not None
        most = max(most, table.deadline_entries)
    assert most <= 2 * (len(table) + 1) + 1024  # pruned whenever past twice the live ones
    assert len(table) == 10
    clock.now += 7200.0
    assert sorted(p.future for p in table.expired()) == list(range(10))  # kept entries survived
    assert all(rid not in table for rid in keep)


def test_request_max_in_flight() -> None:
    table = RequestTable(clock=FakeClock(), max_in_flight=3)
    link = object()
    rids = [table.add(i, link, "svc", "n1", timeout=1.0) for i in range(3)]
    with pytest.raises(TooManyRequests, match="max_in_flight=3"):
        table.add(3, link, "svc", "n1", timeout=1.0)
    assert len(table) == 3
    table.pop(rids[0], link)
    table.add(4, link, "svc", "n1", timeout=1.0)  # room again
    assert len(table) == 3


# -- LatchStore --------------------------------------------------------------------------------


def _node(node_id: str, *topics: str) -> NodeInfo:
    return NodeInfo(id=node_id, name=f"n-{node_id}", topics=frozenset(topics))


class Mesh:
    """Who listens, as the latch store asks it, and what the store sent."""

    def __init__(self) -> None:
        self.nodes: dict[str, NodeInfo] = {}
        self.sent: list[tuple[str, str, bytes]] = []

    def set(self, *nodes: NodeInfo) -> None:
        self.nodes = {n.id: n for n in nodes}

    def listeners(self, topic: str) -> tuple[NodeInfo, ...]:
        return tuple(n for n in self.nodes.values() if topic in n.topics)

    def send_one(self, topic: str, node: NodeInfo, codec_id: int, body: bytes) -> None:
        self.sent.append((topic, node.id, body))

    def catch_up(self, store: LatchStore, removed: tuple[str, ...] = ()) -> list[str]:
        self.sent.clear()
        store.catch_up(self.listeners, self.nodes, removed, self.send_one)
        return sorted(node_id for _, node_id, _ in self.sent)


def test_latch_publish_serves_the_current_listeners() -> None:
    mesh, store = Mesh(), LatchStore()
    mesh.set(_node("a", "t"), _node("b", "t"), _node("c", "other"))
    sent: list[tuple[NodeInfo, ...]] = []
    got = store.publish("t", PICKLE_ID, b"v1", mesh.listeners, sent.append)
    assert [n.id for n in got] == ["a", "b"] and sent == [got]
    assert "t" in store and store
    assert mesh.catch_up(store) == []  # both were served by the publish
    sent.clear()
    assert store.publish("u", PICKLE_ID, b"x", mesh.listeners, sent.append) == ()
    assert sent == []  # nobody listens: nothing sent, the value is kept
    assert "u" in store


def test_latch_catch_up_serves_only_new_listeners() -> None:
    mesh, store = Mesh(), LatchStore()
    mesh.set(_node("a", "t"))
    store.publish("t", PICKLE_ID, b"v1", mesh.listeners, lambda nodes: None)
    mesh.set(_node("a", "t"), _node("b", "t"), _node("c", "t"))
    assert mesh.catch_up(store) == ["b", "c"]
    assert mesh.sent[0][2] == b"v1"
    assert mesh.catch_up(store) == []  # once each
    store.publish("t", PICKLE_ID, b"v2", mesh.listeners, lambda nodes: None)
    mesh.set(_node("a", "t"), _node("b", "t"), _node("c", "t"), _node("d", "t"))
    assert mesh.catch_up(store) == ["d"]
    assert mesh.sent[0][2] == b"v2"  # the newest value


def test_latch_a_node_that_leaves_and_returns_is_served_again() -> None:
    mesh, store = Mesh(), LatchStore()
    mesh.set(_node("a", "t"), _node("b", "t"))
    store.publish("t", PICKLE_ID, b"v", mesh.listeners, lambda nodes: None)
    mesh.set(_node("b", "t"))
    assert mesh.catch_up(store, removed=("a",)) == []
    mesh.set(_node("a", "t"), _node("b", "t"))
    assert mesh.catch_up(store) == ["a"]


def test_latch_present_but_not_listening_loses_its_mark() -> None:
    mesh, store = Mesh(), LatchStore()
    mesh.set(_node("a", "t"))
    store.publish("t", PICKLE_ID, b"v", mesh.listeners, lambda nodes: None)
    mesh.set(_node("a"))  # still in the mesh, stopped listening
    assert mesh.catch_up(store) == []
    mesh.set(_node("a", "t"))  # listens again: gets the value again
    assert mesh.catch_up(store) == ["a"]


def test_latch_missing_from_the_topology_keeps_its_mark() -> None:
    mesh, store = Mesh(), LatchStore()
    mesh.set(_node("a", "t"), _node("b", "t"))
    store.publish("t", PICKLE_ID, b"v", mesh.listeners, lambda nodes: None)
    mesh.set()  # a restarted coordinator lists nobody yet (no removal was announced)
    assert mesh.catch_up(store) == []
    mesh.set(_node("b", "t"))  # they come back one by one
    assert mesh.catch_up(store) == []
    mesh.set(_node("a", "t"), _node("b", "t"))
    assert mesh.catch_up(store) == []  # never twice


def test_latch_clear() -> None:
    mesh, store = Mesh(), LatchStore()
    mesh.set(_node("a", "t"))
    store.publish("t", PICKLE_ID, b"v", mesh.listeners, lambda nodes: None)
    store.clear("t")
    store.clear("never-latched")
    assert "t" not in store and not store
    mesh.set(_node("a", "t"), _node("b", "t"))
    assert mesh.catch_up(store) == []


# -- Backoff and Counter -----------------------------------------------------------------------


def test_backoff_grows_to_its_cap() -> None:
    b = Backoff(0.25, 5.0, rand=lambda: 0.5)  # 0.5: the jitter factor is exactly 1
    assert [b.next() for _ in range(7)] == [0.25, 0.5, 1.0, 2.0, 4.0, 5.0, 5.0]
    assert b.attempts == 7
    b3 = Backoff(1.0, 100.0, factor=3.0, jitter=0.0)
    assert [b3.next() for _ in range(4)] == [1.0, 3.0, 9.0, 27.0]


def test_backoff_jitter_bounds() -> None:
    low = Backoff(1.0, 8.0, jitter=0.2, rand=lambda: 0.0)
    high = Backoff(1.0, 8.0, jitter=0.2, rand=lambda: 1.0)
    assert [round(low.next(), 9) for _ in range(5)] == [0.8, 1.6, 3.2, 6.4, 6.4]
    assert [round(high.next(), 9) for _ in range(5)] == [1.2, 2.4, 4.8, 9.6, 9.6]
    real = Backoff(1.0, 1.0, jitter=0.2)  # random.random: always inside the bounds
    delays = [real.next() for _ in range(2000)]
    assert all(0.8 <= d <= 1.2 for d in delays)
    assert len(set(delays)) > 1000  # and really jittered


def test_backoff_reset() -> None:
    b = Backoff(0.5, 4.0, jitter=0.0)
    for _ in range(5):
        b.next()
    b.reset()
    assert b.attempts == 0
    assert b.next() == 0.5 and b.next() == 1.0


@pytest.mark.parametrize(
    "args",
    [(0.0, 1.0), (2.0, 1.0), (-1.0, 1.0)],
)
def test_backoff_refuses_nonsense(args: tuple[float, float]) -> None:
    with pytest.raises(ValueError):
        Backoff(*args)
    with pytest.raises(ValueError):
        Backoff(1.0, 2.0, factor=0.5)
    with pytest.raises(ValueError):
        Backoff(1.0, 2.0, jitter=1.0)


def test_counter_exact_under_threads() -> None:
    # Preemptible between any two bytecodes (tests/preempt.py): without that, a plain
    # ``n += 1`` also counted exactly here on Python 3.11 and this test could not fail.
    c = Counter()
    start = threading.Barrier(8)

    def bump() -> None:
        start.wait(WAIT)
        incr = c.incr
        for _ in range(5_000):
            incr()

    run_preempted(bump)
    assert c.value == 40_000


def test_counter_add() -> None:
    c = Counter()
    assert c.value == 0 and int(c) == 0
    c.incr()
    c.add(41)
    c.add(0)
    assert c.value == 42 and int(c) == 42 and repr(c) == "<Counter 42>"
    for _ in range(1000):
        c.incr()
    assert c.value == 1042


# -- Decoder -----------------------------------------------------------------------------------


class _Marker:
    """Unpickling this creates a file: proof that a pickle frame was decoded."""

    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self) -> Any:
        return (open, (self.path, "w"))


class _Custom:
    codec_id = 200

    def encode(self, obj: Any) -> bytes:
        return repr(obj).encode()

    def decode(self, data: bytes) -> Any:
        return bytes(data).decode()


def _accepted_ids(d: Decoder) -> set[int]:
    return {i for i, ok in enumerate(d.allowed) if ok}


ALL = set(range(256))


def test_decoder_default_acceptance() -> None:
    assert len(Decoder("pickle").allowed) == 256
    assert _accepted_ids(Decoder("pickle")) == ALL
    for own in ("msgpack", "json", "raw", _Custom()):
        # pickle-shm (id 4) is pickle too: refused with it
        assert _accepted_ids(Decoder(own)) == ALL - {PICKLE_ID, PICKLE_SHM_ID}, own


def test_decoder_accept_codecs_narrows_and_widens() -> None:
    # pickle-shm (id 4) goes wherever pickle goes
    assert _accepted_ids(Decoder("pickle", ["msgpack"])) == {PICKLE_ID, PICKLE_SHM_ID, MSGPACK_ID}
    assert _accepted_ids(Decoder("pickle", [])) == {PICKLE_ID, PICKLE_SHM_ID}  # its own always
    assert _accepted_ids(Decoder("msgpack", [JSON_ID, RAW_ID])) == {MSGPACK_ID, JSON_ID, RAW_ID}
    assert _accepted_ids(Decoder("msgpack", [JsonCodec()])) == {MSGPACK_ID, JSON_ID}
    assert _accepted_ids(Decoder("json", [_Custom(), 201])) == {JSON_ID, 200, 201}
    widened = Decoder("msgpack", ["pickle"])
    assert _accepted_ids(widened) == {MSGPACK_ID, PICKLE_ID, PICKLE_SHM_ID}
    assert widened.accepted() == ["pickle", "msgpack", "pickle-shm"]
    with pytest.raises(ValueError):
        Decoder("pickle", [256])
    with pytest.raises(ValueError):
        Decoder("pickle", ["nope"])


def test_decoder_refused_codec_raises_and_counts(tmp_path: Any) -> None:
    marker = str(tmp_path / "unpickled")
    body = pickle.dumps(_Marker(marker))
    d = Decoder("msgpack")
    with pytest.raises(CodecError, match="not accepted"):
        d.decode(PICKLE_ID, body)
    assert d.errors.value == 1
    assert not os.path.exists(marker)
    assert d.decode(MSGPACK_ID, d.encode({"a": 1})) == {"a": 1}
    assert d.decode(JSON_ID, b"[1]") == [1]
    with pytest.raises(CodecError):
        d.decode(MSGPACK_ID, b"\xc1")  # malformed: counted too
    assert d.errors.value == 2
    narrow = Decoder("pickle", ["pickle"])
    with pytest.raises(CodecError):
        narrow.decode(JSON_ID, b"[1]")
    assert narrow.errors.value == 1


def test_decoder_refuse_counts_and_logs_once_per_link(caplog: Any) -> None:
    class Link:
        label = "node 'evil\\n'"

    d = Decoder("msgpack", node_name="me")
    a, b = Link(), Link()
    with caplog.at_level("WARNING", logger="easymesh.node"):
        for link in (a, a, a, b, None):
            d.refuse(link, PICKLE_ID, "a topic message")
    assert d.refused.value == 5
    assert len([r for r in caplog.records if "codec pickle" in r.getMessage()]) == 2


def test_registry_refuses_more_topics_and_services_than_the_coordinator_takes() -> None:
    import pytest

    from easymesh import registry as reg
    from easymesh.errors import MeshError
    from easymesh.subscription import Subscription

    r = reg.Registry(lambda snapshot: None)
    old = reg.MAX_TOPICS
    reg.MAX_TOPICS = 2
    try:
        for t in ("a", "b"):
            r.subscribe(Subscription(t, 1, lambda c, b: b, r.unsubscribe))
        r.subscribe(Subscription("a", 1, lambda c, b: b, r.unsubscribe))  # same topic: fine
        with pytest.raises(MeshError, match="at most 2 topics"):
            r.subscribe(Subscription("c", 1, lambda c, b: b, r.unsubscribe))
        assert r.listening_to() == ["a", "b"]
    finally:
        reg.MAX_TOPICS = old


def test_the_table_asks_for_one_sweep_at_a_time_and_again_while_deadlines_wait() -> None:
    """``on_deadlines`` is called when a deadline arrives with no sweep due, never twice
    for one; ``sweep`` says whether the next is due (deadlines left, not stopping), and
    after it says no, the next deadline asks again."""
    now = [0.0]
    asked: list[int] = []
    table = RequestTable(clock=lambda: now[0], on_deadlines=lambda: asked.append(1))
    table.add("f1", None, "a", "n", timeout=1.0)
    table.add("f2", None, "b", "n", timeout=2.0)
    table.add("f3", None, "c", "n")  # no deadline: no sweep
    assert asked == [1]
    now[0] = 1.5
    expired, again = table.sweep()
    assert [p.future for p in expired] == ["f1"] and again and asked == [1]
    table.add("f4", None, "d", "n", timeout=5.0)  # a sweep is due: nobody is asked
    assert asked == [1]
    now[0] = 10.0
    expired, again = table.sweep()
    assert sorted(p.future for p in expired) == ["f2", "f4"] and not again
    table.add("f5", None, "e", "n", timeout=1.0)  # none due now: ask again
    assert asked == [1, 1]
    expired, again = table.sweep(stop=True)
    assert expired == [] and not again
