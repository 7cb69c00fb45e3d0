"""Publishers in the topology: the ``publishes`` field of NodeInfo and Topology.publishers."""

from __future__ import annotations

import msgpack
import pytest

from easymesh.errors import ProtocolError
from easymesh.protocol.messages import Diff, NodeInfo, Register, decode_control, encode_control
from easymesh.protocol.topology import Topology


def node(i: int, name: str, publishes: tuple[str, ...] = (), topics: tuple[str, ...] = ()) -> NodeInfo:
    return NodeInfo(id=f"id{i}", name=name, topics=frozenset(topics), publishes=frozenset(publishes))


def test_publishes_round_trips():
    msg = Register(node(1, "cam", publishes=("image", "info")))
    name, body = encode_control(msg)
    assert decode_control(name, body) == msg
    assert msgpack.unpackb(body)["node"]["publishes"] == ["image", "info"]


def test_a_record_without_publishes_still_parses():
    wire = {"node": {"id": "a", "name": "old", "topics": ["t"]}}
    msg = decode_control(b"register", msgpack.packb(wire))
    assert msg.node.publishes == frozenset() and msg.node.topics == {"t"}


@pytest.mark.parametrize("bad", ["image", [1], [b"x"], ["x" * 5000]])
def test_publishes_is_validated_like_topics(bad):
    wire = {"node": {"id": "a", "name": "n", "publishes": bad}}
    with pytest.raises(ProtocolError, match="publishes|max_bin_len"):  # bytes: refused by msgpack
        decode_control(b"register", msgpack.packb(wire, use_bin_type=True))


def test_publishers_query_follows_changes():
    topo = Topology()
    topo.apply(Diff(1, upsert=(node(2, "b", publishes=("t",)), node(1, "a", publishes=("t", "u")))))
    assert [n.name for n in topo.publishers("t")] == ["a", "b"]
    assert topo.publishers("nothing") == ()
    topo.apply(Diff(2, remove=("id1",)))
    assert [n.name for n in topo.publishers("t")] == ["b"]  # the cache was cleared
    assert topo.publishers("u") == ()
    topo.apply(Diff(3, upsert=(node(2, "b", topics=("t",)),)))
    assert topo.publishers("t") == () and [n.name for n in topo.listeners("t")] == ["b"]
