"""Descriptors: round trips, and every malformed or hostile body refused (no sockets)."""

from __future__ import annotations

import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from easymesh.errors import ProtocolError
from easymesh.shm.descriptor import (
    INLINE,
    PERSISTENT,
    Entry,
    decode_arena,
    decode_message,
    decode_release,
    encode_arena,
    encode_message_head,
    encode_release,
)

ARENAS = {7: 1 << 20}


def sizes(arena: int) -> int | None:
    return ARENAS.get(arena)


def body(entries: list[Entry], stream: bytes = b"S" * 5, inline: bytes = b"") -> bytes:
    return encode_message_head(len(stream), entries) + stream + inline


def test_message_round_trip() -> None:
    entries = [Entry(7, 0, 4096, 4100, 1000), Entry(INLINE, PERSISTENT, 0, 0, 3)]
    msg = decode_message(body(entries, b"pickle", b"abc"), sizes)
    assert msg.entries == entries
    assert bytes(msg.stream) == b"pickle"
    assert bytes(msg.inline) == b"abc"


def test_buffer_that_ends_exactly_at_the_arena_end_is_fine() -> None:
    e = Entry(7, 0, 0, (1 << 20) - 10, 10)
    assert decode_message(body([e]), sizes).entries == [e]


HOSTILE = {
    "unknown arena": [Entry(8, 0, 0, 0, 10)],
    "past the end": [Entry(7, 0, 0, (1 << 20) - 10, 11)],
    "offset past the end": [Entry(7, 0, 0, 1 << 21, 0)],
    "u64 overflow": [Entry(7, 0, 0, 2**64 - 1, 2**64 - 1)],
    "huge length": [Entry(7, 0, 0, 0, 2**64 - 1)],
    "offset before its block": [Entry(7, 0, 8192, 4096, 10)],
    "unknown flag": [Entry(7, 2, 0, 0, 10)],
    "inline past the body": [Entry(INLINE, 0, 0, 0, 4)],
    "inline with a block": [Entry(INLINE, 0, 4096, 0, 0)],
    "too many buffers": [Entry(7, 0, 0, 0, 1)] * 65,
}


@pytest.mark.parametrize("entries", HOSTILE.values(), ids=list(HOSTILE))
def test_hostile_entries_are_refused(entries: list[Entry]) -> None:
    with pytest.raises(ProtocolError):
        decode_message(body(entries, inline=b"abc"), sizes)


@pytest.mark.parametrize(
    "raw",
    [
        b"",
        b"\x01\x00\x00",
        struct.pack("<BBHI", 2, 0, 0, 0),  # unknown version
        struct.pack("<BBHI", 1, 1, 0, 0),  # unknown flags
        struct.pack("<BBHI", 1, 0, 0, 10) + b"short",  # stream longer than the body
        struct.pack("<BBHI", 1, 0, 1, 0) + b"\x00" * 31,  # truncated entry
        struct.pack("<BBHI", 1, 0, 0xFFFF, 0xFFFFFFFF),
    ],
)
def test_malformed_heads_are_refused(raw: bytes) -> None:
    with pytest.raises(ProtocolError):
        decode_message(raw, sizes)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=200))
def test_garbage_raises_protocol_error_or_yields_in_range_entries(raw: bytes) -> None:
    try:
        msg = decode_message(raw, sizes)
    except ProtocolError:
        return
    for e in msg.entries:
        if e.arena == INLINE:
            assert e.offset + e.length <= len(msg.inline)
        else:
            assert e.offset + e.length <= ARENAS[e.arena]


def test_arena_round_trip_and_bounds() -> None:
    assert decode_arena(encode_arena(3, 1 << 20), 1 << 30) == (3, 1 << 20)
    for raw in [
        b"",
        encode_arena(3, 1 << 20) + b"x",
        struct.pack("<IIQ", 0, 0, 4096),
        struct.pack("<IIQ", 1, 5, 4096),
        struct.pack("<IIQ", 1, 0, 0),
    ]:
        with pytest.raises(ProtocolError):
            decode_arena(raw, 1 << 30)
    with pytest.raises(ProtocolError):
        decode_arena(encode_arena(3, 1 << 31), 1 << 30)  # larger than we accept to map


def test_release_round_trip_and_garbage() -> None:
    refs = [(1, 0), (1, 4096), (2, 1 << 40)]
    assert decode_release(encode_release(refs)) == refs
    assert decode_release(encode_release([])) == []
    for raw in [
        b"",
        b"\x01\x00\x00\x00",
        encode_release(refs)[:-1],
        encode_release(refs) + b"\0",
        struct.pack("<I", 1) + struct.pack("<IIQ", 0, 0, 0),
        struct.pack("<I", 10**6),
    ]:
        with pytest.raises(ProtocolError):
            decode_release(raw)


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=100))
def test_release_garbage(raw: bytes) -> None:
    try:
        decode_release(raw)
    except ProtocolError:
        pass
