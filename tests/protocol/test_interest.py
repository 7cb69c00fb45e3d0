"""Issue 15: who is told which record (the coordinator's Audience), and the watch/ack wire
format. Sans-IO: no sockets."""

from __future__ import annotations

import msgpack
import pytest

from easymesh.errors import ProtocolError
from easymesh.protocol.interest import Audience
from easymesh.protocol.messages import (
    WATCH_ALL,
    Diff,
    NodeInfo,
    Register,
    Update,
    Watch,
    Welcome,
    decode_control,
    diff_bodies,
    encode_control,
    record_bytes,
    welcome_part_bodies,
)
from easymesh.protocol.topology import Topology


def rec(i: str, topics: tuple[str, ...] = (), services: tuple[str, ...] = ()) -> NodeInfo:
    return NodeInfo(i, f"name-{i}", topics=frozenset(topics), services=frozenset(services))


def watching(topics: tuple[str, ...] = (), services: tuple[str, ...] = (), seq: int = 1) -> Watch:
    return Watch(False, frozenset(topics), frozenset(services), seq)


def join(a: Audience, node: NodeInfo, watch: Watch) -> list[str]:
    """What the coordinator does on a Register: record, watch, Welcome ids."""
    a.put(node)
    a.watch(node.id, watch, answered=True)
    return a.welcome(node.id)


def test_a_storm_of_nodes_that_need_nothing_tells_nobody_anything():
    a = Audience()
    for i in range(200):
        assert join(a, rec(f"n{i}"), watching(seq=0)) == []
    assert a.deltas(f"n{i}" for i in range(200)) == {}


def test_a_watcher_of_all_hears_every_change_and_a_plain_node_none():
    a = Audience()
    join(a, rec("tool"), WATCH_ALL)
    join(a, rec("plain"), watching(seq=0))
    assert join(a, rec("x", ("t",)), watching(seq=0)) == []
    assert a.deltas(["x"]) == {"tool": (["x"], [], None)}
    a.drop("x")
    assert a.deltas(["x"]) == {"tool": ([], ["x"], None)}


def test_a_new_interest_is_answered_with_the_matching_records_and_an_ack():
    a = Audience()
    join(a, rec("l1", ("t",)), watching(seq=0))
    join(a, rec("l2", ("t", "u")), watching(seq=0))
    join(a, rec("p", (), ("s",)), watching(seq=0))
    join(a, rec("sender"), watching(seq=0))
    a.watch("sender", watching(("t",), ("s",), seq=2))
    assert a.deltas([]) == {"sender": (["l1", "l2", "p"], [], 2)}
    # an interest nobody matches is still acked (an empty answer)
    a.watch("sender", watching(("t", "none"), ("s",), seq=3))
    assert a.deltas([]) == {"sender": ([], [], 3)}


def test_a_welcome_carries_what_the_watch_sees_then_changes_follow():
    a = Audience()
    join(a, rec("l", ("t",)), watching(seq=0))
    join(a, rec("other", ("u",)), watching(seq=0))
    assert join(a, rec("s"), watching(("t",), seq=1)) == ["l"]
    a.put(rec("l2", ("t",)))
    a.watch("l2", watching(seq=0), answered=True)
    a.welcome("l2")
    assert a.deltas(["l2"]) == {"s": (["l2"], [], None)}
    a.put(rec("l", ()))  # stops listening: s is told to forget it
    assert a.deltas(["l"]) == {"s": ([], ["l"], None)}
    a.put(rec("l", ("t",)))  # and back
    assert a.deltas(["l"]) == {"s": (["l"], [], None)}


def test_leaving_tells_exactly_those_who_knew():
    a = Audience()
    join(a, rec("l", ("t",)), watching(seq=0))
    join(a, rec("s1"), watching(("t",)))
    join(a, rec("s2"), watching(("u",)))
    a.drop("l")
    assert a.deltas(["l"]) == {"s1": ([], ["l"], None)}
    a.drop("s1")  # a watcher leaving is forgotten everywhere
    assert "s1" not in a.known and all("s1" not in w for w in a._known_by.values())


def test_a_narrower_watch_removes_what_it_no_longer_sees():
    a = Audience()
    join(a, rec("l", ("t",)), watching(seq=0))
    join(a, rec("p", (), ("s",)), watching(seq=0))
    assert join(a, rec("w"), watching(("t",), ("s",))) == ["l", "p"]
    a.watch("w", watching(("t",), seq=2))
    assert a.deltas([]) == {"w": ([], ["p"], 2)}


def test_cost_of_a_change_follows_who_needs_it():
    """A change of one record visits its audience, not the mesh."""
    a = Audience()
    for i in range(1000):
        join(a, rec(f"n{i}"), watching(seq=0))
    join(a, rec("w"), watching(("t",)))
    assert a._audience_of("n5") == set()
    a.put(rec("n5", ("t",)))
    assert a._audience_of("n5") == {"w"}
    assert a.deltas(["n5"]) == {"w": (["n5"], [], None)}


def test_watch_and_ack_round_trip():
    w = Watch(False, frozenset({"a", "b"}), frozenset({"s"}), 7)
    node = rec("x", ("t",))
    for msg in (Register(node, "secret", w), Update(node, watch=w), Register(node)):
        assert decode_control(*encode_control(msg)) == msg
    assert decode_control(*encode_control(Diff(3, (node,), ("y",), 9))).ack == 9
    assert decode_control(*encode_control(Diff(3, (node,)))).ack is None
    (pieces,) = welcome_part_bodies(4, [record_bytes(node)], ack=5)
    assert decode_control(b"welcome", b"".join(pieces)) == Welcome(4, (node,), 0, 1, 5)


def test_diff_bodies_split_and_ack_the_last():
    records = [record_bytes(rec(f"n{i}")) for i in range(30)]
    bodies = diff_bodies(8, records, ["gone"], 4, budget=200)
    diffs = [decode_control(b"diff", b"".join(p)) for p in bodies]
    assert len(diffs) > 1
    assert [n.id for d in diffs for n in d.upsert] == [f"n{i}" for i in range(30)]
    assert [d.ack for d in diffs] == [None] * (len(diffs) - 1) + [4]
    assert [d.remove for d in diffs] == [()] * (len(diffs) - 1) + [("gone",)]
    t = Topology()
    t.apply(Welcome(1, (rec("gone"),)))
    for d in diffs:
        t.apply(d)
    assert sorted(t.nodes) == sorted(f"n{i}" for i in range(30))


@pytest.mark.parametrize(
    "bad",
    [[], {"all": 1}, {"topics": "t"}, {"topics": [1]}, {"seq": "1"}, {"services": [None]}],
)
def test_malformed_watches_are_refused(bad):
    body = msgpack.packb({"node": rec("x").to_wire(), "watch": bad})
    with pytest.raises(ProtocolError):
        decode_control(b"register", body)


def test_by_process_puts_the_nodes_of_one_process_together():
    """The coordinator writes a change's diffs in this order: one wake-up per process."""
    a = Audience()
    where = {"n1": ("h1", 10), "n2": ("h1", 20), "n3": ("h1", 10), "n4": ("h2", 10), "n5": ("h1", 20)}
    for node_id, (host, pid) in where.items():
        a.put(NodeInfo(id=node_id, name=node_id, host_key=host, pid=pid))
    order = a.by_process(["n1", "n2", "n4", "n3", "n5", "unknown"])
    assert sorted(order) == sorted(["n1", "n2", "n4", "n3", "n5", "unknown"])
    runs = [where.get(i, ("", 0)) for i in order]
    changes = sum(1 for x, y in zip(runs, runs[1:], strict=False) if x != y)
    assert changes == 3  # four processes ('' for the unknown id), each in one run
    assert order[runs.index(("h1", 10)):][:2] == ["n1", "n3"]  # stable: arrival order kept
    assert a.by_process(["n2"]) == ["n2"]
