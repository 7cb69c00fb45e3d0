"""What the coordinator believes about a node record, and the topology in parts (no sockets)."""

from __future__ import annotations

import msgpack
import pytest

from easymesh.errors import ProtocolError
from easymesh.protocol import frames as F
from easymesh.protocol.frames import CONTROL, FrameDecoder, encode_frame_parts
from easymesh.protocol.limits import (
    Limits,
    record_problem,
    tcp_key,
    tcp_problem,
    topology_problem,
    unix_problem,
)
from easymesh.protocol.messages import (
    MAX_CONTROL_BODY,
    Diff,
    NodeInfo,
    Register,
    Update,
    Welcome,
    decode_control,
    encode_control,
    record_bytes,
    welcome_part_bodies,
)
from easymesh.protocol.topology import Topology, merge_diffs, split_diff

NID = "0123456789abcdef"


def node(i: int = 0, **kw: object) -> NodeInfo:
    base = dict(id=f"{i:016x}", name=f"n{i}", tcp="127.0.0.1:4000", unix=f"@easymesh-{i:016x}", pid=7)
    base.update(kw)
    return NodeInfo(**base)  # type: ignore[arg-type]


def problem(n: NodeInfo, limits: Limits | None = None) -> str | None:
    return record_problem(n, limits or Limits(), len(record_bytes(n)))


# -- endpoints -------------------------------------------------------------------------------------


@pytest.mark.parametrize("endpoint", ["", "127.0.0.1:1", "10.1.2.3:65535", "[::1]:6374", "[fe80::1]:80"])
def test_tcp_endpoints_accepted(endpoint: str) -> None:
    assert tcp_problem(endpoint) is None


@pytest.mark.parametrize(
    "endpoint",
    [
        "localhost:80",  # a host name: a DNS lookup, and it may resolve elsewhere later
        "evil.example.com:443",
        "127.0.0.1",  # no port
        "127.0.0.1:0",
        "127.0.0.1:65536",
        "127.0.0.1:-1",
        "127.0.0.1:８０",  # non-ASCII digits
        "::1:80",  # v6 without brackets
        "224.0.0.1:80",  # multicast
        "127.0.0.1:80\nforged",
        "[::1]",
        "x",
    ],
)
def test_tcp_endpoints_refused(endpoint: str) -> None:
    assert tcp_problem(endpoint)


def test_tcp_key_spells_one_socket_one_way() -> None:
    assert tcp_key("127.0.0.1:80") == tcp_key("[::ffff:127.0.0.1]:80") == ("127.0.0.1", 80)
    assert tcp_key("[::1]:80") == ("::1", 80) != tcp_key("127.0.0.1:80")
    assert tcp_key("127.0.0.1:81") != tcp_key("127.0.0.1:80")
    assert tcp_key("") is None and tcp_key("localhost:80") is None


@pytest.mark.parametrize(
    "endpoint",
    ["", f"@easymesh-{NID}", f"/tmp/easymesh-1000/42-{NID}.sock", f"/run/user/1000/x/42-{NID}.sock"],
)
def test_unix_endpoints_accepted(endpoint: str) -> None:
    assert unix_problem(endpoint, NID, 42) is None


@pytest.mark.parametrize(
    "endpoint",
    [
        "@easymesh-ffffffffffffffff",  # another node's abstract socket
        "@docker",
        "@",
        "/var/run/docker.sock",
        "/tmp/easymesh-1000/42-ffffffffffffffff.sock",  # another node's file
        f"/tmp/easymesh-1000/43-{NID}.sock",  # another pid
        f"relative/42-{NID}.sock",
        f"/tmp/../etc/42-{NID}.sock",
        f"/tmp//42-{NID}.sock",
        f"/tmp/42-{NID}.sock\0x",
        f"/tmp/42-{NID}.socket",
    ],
)
def test_unix_endpoints_refused(endpoint: str) -> None:
    assert unix_problem(endpoint, NID, 42)


# -- records ---------------------------------------------------------------------------------------


def test_an_ordinary_record_is_accepted() -> None:
    assert problem(node(topics=frozenset({"a", "b"}), services=frozenset({"s"}))) is None


@pytest.mark.parametrize(
    "fields, words",
    [
        ({"id": "has space"}, "node id"),
        ({"id": "x" * 65}, "node id"),
        ({"id": "a\nb"}, "node id"),
        ({"name": "n" * 1025}, "node name"),
        ({"hostname": "h" * 256}, "host name"),
        ({"host_key": "k" * 513}, "host key"),
        ({"topics": frozenset({"t" * 1025})}, "topic name"),
        ({"services": frozenset({""})}, "service name"),
        ({"tcp": "example.com:80"}, "literal IP"),
        ({"unix": "/var/run/docker.sock"}, "unix endpoint"),
    ],
)
def test_records_refused_with_a_clear_reason(fields: dict[str, object], words: str) -> None:
    why = problem(node(**fields))
    assert why and words in why


def test_counts_and_record_size_are_bounded() -> None:
    limits = Limits(max_topics=3, max_services=2, max_record_bytes=2000)
    assert "topics" in (problem(node(topics=frozenset("abcd")), limits) or "")
    assert "services" in (problem(node(services=frozenset("abc")), limits) or "")
    big = node(topics=frozenset({"t" * 1000, "u" * 1000, "v" * 10}))
    assert "record" in (problem(big, limits) or "")
    assert problem(node(topics=frozenset("abc"), services=frozenset("ab")), limits) is None


def test_topology_bounds() -> None:
    limits = Limits(max_nodes=2, max_topology_bytes=1000)
    assert topology_problem(2, 1000, limits) is None
    assert "full" in (topology_problem(3, 10, limits) or "")
    assert "full" in (topology_problem(1, 1001, limits) or "")


# -- messages --------------------------------------------------------------------------------------


def test_register_carries_a_secret_update_does_not_need_one() -> None:
    reg = Register(node(), "s3cret")
    assert decode_control(*encode_control(reg)) == reg
    assert decode_control(*encode_control(Register(node()))) == Register(node(), "")
    assert decode_control(*encode_control(Update(node()))) == Update(node())


def test_register_secret_is_bounded_and_typed() -> None:
    for bad in ({"node": node().to_wire(), "secret": "x" * 129}, {"node": node().to_wire(), "secret": 5}):
        with pytest.raises(ProtocolError):
            decode_control(b"register", msgpack.packb(bad))


@pytest.mark.parametrize(
    "value",
    [
        b"\xc4\x05hello",  # bin
        b"\xd4\x01\x00",  # ext
        b"\xdd\x00\x20\x00\x00" + b"\xc0" * 10,  # array announcing 2 M entries
        b"\xdf\x00\x00\x01\x00",  # map announcing 256 entries
    ],
)
def test_control_decoding_has_explicit_limits(value: bytes) -> None:
    body = b"\x81\xa2id" + value
    with pytest.raises(ProtocolError):
        decode_control(b"ident", body)


def test_a_small_body_cannot_expand_into_a_huge_decode() -> None:
    """15 MB of empty arrays decode into about 15 million Python lists (900 MB, seconds of
    CPU on an I/O thread). What a node may send the coordinator (Register, Update, Bye)
    and a peer may send a node (Ident) holds a handful of containers: decoding with that
    budget stops at once."""
    bomb = msgpack.packb({f"k{i}": [[]] * 1_000_000 for i in range(15)})
    narrow = msgpack.packb({f"k{i}": [[]] * 5_000 for i in range(15)})
    for op in (b"register", b"ident"):
        with pytest.raises(ProtocolError, match="max_array_len"):
            decode_control(op, bomb, max_containers=16, max_array_len=10_000)
        with pytest.raises(ProtocolError, match="arrays and maps"):
            decode_control(op, narrow, max_containers=16, max_array_len=10_000)
    wide = msgpack.packb({"node": ["ab"] * 20_000})
    with pytest.raises(ProtocolError):
        decode_control(b"register", wide, max_containers=16, max_array_len=10_000)
    big = Register(node(topics=frozenset(f"t{i}" for i in range(4096))), "s")
    assert decode_control(*encode_control(big), max_containers=16, max_array_len=10_000) == big


def test_welcome_parts_are_in_range() -> None:
    for part, parts in ((1, 1), (-1, 2), (0, 0), (0, 5000)):
        body = msgpack.packb({"version": 1, "part": part, "parts": parts, "nodes": []})
        with pytest.raises(ProtocolError):
            decode_control(b"welcome", body)


def test_an_old_style_welcome_is_one_part() -> None:
    body = msgpack.packb({"version": 3, "nodes": [node().to_wire()]})
    assert decode_control(b"welcome", body) == Welcome(3, (node(),), 0, 1)


# -- the topology in parts ---------------------------------------------------------------------------


def coordinator_topology(n: int, topics: int = 0) -> Topology:
    topo = Topology()
    for i in range(n):
        topo.upsert(node(i, topics=frozenset(f"topic-{i}-{j}" for j in range(topics))))
    return topo


def decoded_parts(topo: Topology, budget: int) -> list[Welcome]:
    """The Welcome parts as a node receives them: framed, through a decoder, decoded."""
    dec = FrameDecoder()
    for pieces in topo.welcome_bodies(budget):
        bufs, nbytes = encode_frame_parts(CONTROL, b"welcome", pieces)
        data = b"".join(bytes(b) for b in bufs)
        assert len(data) == nbytes
        dec.feed(data)
    return [decode_control(f.name, f.body) for f in dec.frames()]


def test_a_large_topology_travels_in_parts_and_is_applied_whole() -> None:
    coord = coordinator_topology(60, topics=20)
    parts = decoded_parts(coord, budget=3_000)
    assert len(parts) > 5
    assert [p.part for p in parts] == list(range(len(parts)))
    node_side = Topology()
    node_side.apply(Welcome(0, (node(999),)))  # what it knew before
    for p in parts[:-1]:
        assert node_side.apply(p) is False
        assert set(node_side.nodes) == {node(999).id}  # nothing half-applied
    assert node_side.apply(parts[-1]) is True
    assert node_side.nodes == coord.nodes and node_side.version == coord.version


def test_each_part_stays_under_its_budget() -> None:
    coord = coordinator_topology(100, topics=5)
    budget = 5000
    biggest = max(len(record_bytes(n)) for n in coord.nodes.values())
    for pieces in coord.welcome_bodies(budget):
        assert sum(len(p) for p in pieces) <= budget + biggest + 64


def test_an_empty_topology_is_one_empty_part() -> None:
    (part,) = decoded_parts(Topology(), 1000)
    assert part.parts == 1 and part.nodes == ()
    assert Topology().apply(part) is True


def test_a_part_of_many_small_records_is_few_buffers() -> None:
    """A frame's buffers go to one sendmsg, which takes at most IOV_MAX (1,024) of them."""
    (pieces,) = welcome_part_bodies(1, [b"\x80"] * 5000)
    bufs, nbytes = encode_frame_parts(CONTROL, b"welcome", pieces)
    assert len(bufs) <= 1 + F.MAX_PIECES and nbytes == sum(len(b) for b in bufs)
    few = [b"\x80" * 1000] * 3
    assert encode_frame_parts(CONTROL, b"welcome", few)[0][1:] == few  # shared, not copied


def test_default_parts_fit_a_control_frame() -> None:
    bodies = welcome_part_bodies(1, [b"\x80" * 1000] * 20_000)
    assert all(sum(len(p) for p in b) < MAX_CONTROL_BODY for b in bodies)


def test_parts_out_of_order_or_interleaved_are_refused() -> None:
    parts = decoded_parts(coordinator_topology(30, topics=10), budget=3000)
    assert len(parts) >= 3
    t = Topology()
    with pytest.raises(ProtocolError):
        t.apply(parts[1])  # no part 0 first
    t.apply(parts[0])
    with pytest.raises(ProtocolError):
        t.apply(parts[2])  # skipped part 1
    t.apply(parts[0])
    with pytest.raises(ProtocolError):
        t.apply(Diff(99, remove=("x",)))  # a diff between parts
    other = Welcome(parts[1].version + 1, (), 1, parts[1].parts)
    t.apply(parts[0])
    with pytest.raises(ProtocolError):
        t.apply(other)  # another version


def test_part_zero_restarts_after_a_reconnect() -> None:
    parts = decoded_parts(coordinator_topology(30, topics=10), budget=3000)
    t = Topology()
    t.apply(parts[0])
    t.apply(parts[1])  # the link drops here; the new link's Welcome starts again
    for p in parts:
        t.apply(p)
    assert len(t.nodes) == 30


def test_total_bytes_tracks_records() -> None:
    t = Topology()
    a, b = node(1), node(2, topics=frozenset({"x" * 100}))
    t.upsert(a)
    t.upsert(b)
    assert t.total_bytes == len(record_bytes(a)) + len(record_bytes(b))
    b2 = node(2)
    t.upsert(b2)
    assert t.total_bytes == len(record_bytes(a)) + len(record_bytes(b2))
    t.remove(a.id)
    t.remove(b.id)
    assert t.total_bytes == 0


def test_a_large_diff_is_split_with_the_same_effect() -> None:
    coord = coordinator_topology(50, topics=10)
    diffs = []
    for i in range(50, 80):
        diffs.append(coord.upsert(node(i, topics=frozenset(f"t{j}" for j in range(30)))))
    diffs.append(coord.remove(node(3).id))
    merged = merge_diffs([d for d in diffs if d is not None])
    assert merged is not None
    sizes = {n.id: len(coord.record(n.id)) for n in merged.upsert}
    parts = split_diff(merged, sizes, budget=2000)
    assert len(parts) > 3 and all(p.version == merged.version for p in parts)
    whole, split = Topology(), Topology()
    whole.apply(Welcome(0, tuple(node(i) for i in range(50))))
    split.apply(Welcome(0, tuple(node(i) for i in range(50))))
    whole.apply(merged)
    for p in parts:
        split.apply(p)
    assert whole.nodes == split.nodes
