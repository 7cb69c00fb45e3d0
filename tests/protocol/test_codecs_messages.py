"""Codecs, control messages and topology rules: no sockets."""

from __future__ import annotations

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from easymesh.errors import CodecError, ProtocolError, UnknownCodec
from easymesh.protocol import codecs
from easymesh.protocol.messages import (
    Bye,
    Diff,
    Ident,
    NodeInfo,
    Register,
    Update,
    Welcome,
    decode_control,
    encode_control,
)
from easymesh.protocol.topology import Topology, merge_diffs


def test_codec_ids_are_pinned():
    assert codecs.resolve_codec("raw").codec_id == 0
    assert codecs.resolve_codec("pickle").codec_id == 1
    assert codecs.resolve_codec("msgpack").codec_id == 2
    assert codecs.resolve_codec("json").codec_id == 3


@pytest.mark.parametrize("name,value", [
    ("pickle", {"a": (1, 2), "b": b"\0" * 10, "c": {1, 2}}),
    ("msgpack", {"a": [1, 2], "b": b"\0" * 10, 3: "x"}),
    ("json", {"a": [1, 2.5, None, "é"]}),
    ("raw", b"\x00\x01"),
])
def test_roundtrip(name, value):
    c = codecs.resolve_codec(name)
    assert c.decode(c.encode(value)) == value


def test_raw_refuses_non_bytes():
    with pytest.raises(CodecError):
        codecs.resolve_codec("raw").encode("text")


def test_unknown_codec_name_and_id():
    with pytest.raises(ValueError):
        codecs.resolve_codec("yaml")
    with pytest.raises(UnknownCodec):
        codecs.codec_for_id(77)


def test_custom_codec_object():
    class Upper:
        codec_id = 200
        def encode(self, obj):
            return obj.upper().encode()
        def decode(self, data):
            return bytes(data).decode()

    c = codecs.resolve_codec(Upper())
    assert codecs.codec_id_of(c) == 200
    assert codecs.codec_for_id(200, own=c) is c
    with pytest.raises(TypeError):
        codecs.resolve_codec(object())

    class Reserved(Upper):
        codec_id = 5
    with pytest.raises(ValueError):
        codecs.resolve_codec(Reserved())


def info(i: int, name: str = "n", topics=(), services=()) -> NodeInfo:
    return NodeInfo(id=f"id{i}", name=name, hostname="h", host_key="k", tcp="127.0.0.1:1",
                    unix="@x", topics=frozenset(topics), services=frozenset(services), pid=i)


@pytest.mark.parametrize("msg", [
    Register(info(1, topics=["a", "b"], services=["s"])),
    Update(info(2)),
    Bye(),
    Welcome(3, (info(1), info(2))),
    Diff(4, upsert=(info(3),), remove=("id1",)),
    Ident("abc", "me"),
])
def test_control_roundtrip(msg):
    name, body = encode_control(msg)
    back = decode_control(name, body)
    assert back == msg and type(back) is type(msg)


@pytest.mark.parametrize("name,body", [
    (b"register", msgpack.packb({"node": {"id": 1, "name": "x"}})),
    (b"register", msgpack.packb({"node": {"name": "x"}})),
    (b"register", msgpack.packb([1, 2])),
    (b"register", b"\xc1"),  # never-used msgpack byte
    (b"diff", msgpack.packb({"version": "one"})),
    (b"welcome", msgpack.packb({"nodes": "x"})),
    (b"nope", msgpack.packb({})),
    (b"ident", msgpack.packb({"id": None, "name": "x"})),
])
def test_control_garbage_is_a_protocol_error(name, body):
    with pytest.raises(ProtocolError):
        decode_control(name, body)


@settings(max_examples=300, deadline=None)
@given(st.sampled_from([b"register", b"update", b"bye", b"welcome", b"diff", b"ident", b"x"]),
       st.binary(max_size=500))
def test_control_arbitrary_bytes(name, body):
    try:
        decode_control(name, body)
    except ProtocolError:
        pass


def test_topology_upsert_remove_and_queries():
    t = Topology()
    d1 = t.upsert(info(1, "a", topics=["x"]))
    d2 = t.upsert(info(2, "b", topics=["x"], services=["s"]))
    assert t.upsert(info(2, "b", topics=["x"], services=["s"])) is None  # no change, no diff
    assert [n.id for n in t.listeners("x")] == ["id1", "id2"]
    assert [n.id for n in t.providers("s")] == ["id2"]
    d3 = t.remove("id1")
    assert t.remove("id1") is None
    assert [n.id for n in t.listeners("x")] == ["id2"]
    assert (d1.version, d2.version, d3.version) == (1, 2, 3)

    mirror = Topology()
    for d in (d1, d2, d3):
        mirror.apply(d)
    assert mirror.nodes == t.nodes
    fresh = Topology()
    fresh.apply(t.welcome())
    assert fresh.nodes == t.nodes and fresh.version == 3


def test_local_record_is_authoritative():
    t = Topology()
    me = info(1, "me", topics=["new"])
    t.set_local(me)
    t.apply(Welcome(5, (info(1, "me"), info(2))))  # coordinator has an older record of us
    assert t.nodes["id1"] == me
    assert [n.id for n in t.listeners("new")] == ["id1"]


def test_merge_diffs_last_write_wins():
    a, b = info(1), info(2)
    merged = merge_diffs([Diff(1, upsert=(a,)), Diff(2, upsert=(b,)), Diff(3, remove=("id1",))])
    assert merged.version == 3
    assert merged.upsert == (b,) and merged.remove == ("id1",)
    assert merge_diffs([]) is None
