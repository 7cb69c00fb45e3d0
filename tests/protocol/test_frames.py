"""Frame layout and the incremental decoder: no sockets, no threads."""

from __future__ import annotations

import os
import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from easymesh.errors import FrameTooLarge, ProtocolError
from easymesh.protocol import frames as F
from easymesh.protocol.frames import FrameDecoder, encode_frame, frame_bytes


def decode_all(data: bytes, step: int, **kwargs) -> list:
    d = FrameDecoder(**kwargs)
    out = []
    for i in range(0, len(data), step):
        d.feed(data[i : i + step])
        out.extend(d.frames())
    return out


def as_tuples(frames):
    return [(f.type, f.codec, bytes(f.name), f.request_id, bytes(f.body)) for f in frames]


CASES = [
    (F.TOPIC, 1, b"some-topic", 0, b""),
    (F.TOPIC, 2, b"t", 0, b"x" * 5),
    (F.REQUEST, 1, b"add", 7, os.urandom(1000)),
    (F.REPLY, 1, b"", 2**64 - 1, os.urandom(70_000)),
    (F.CONTROL, 0, b"register", 0, b"\x80"),
    (F.PING, 0, b"", 0, b""),
    (F.TOPIC, 255, "ü-topic".encode(), 0, os.urandom(300_000)),  # larger than the read buffer
]


def test_header_layout_is_pinned():
    head = struct.pack("<BBHIQ", F.TOPIC, 1, 3, 5, 9)
    assert frame_bytes(F.TOPIC, b"abc", b"hello", codec=1, request_id=9) == head + b"abc" + b"hello"
    assert F.HEADER_SIZE == 16


@pytest.mark.parametrize("step", [1, 3, 16, 17, 4096, 1 << 30])
def test_roundtrip_any_split(step):
    data = b"".join(frame_bytes(t, n, b, c, r) for t, c, n, r, b in CASES)
    if step == 1:
        data = b"".join(frame_bytes(t, n, b, c, r) for t, c, n, r, b in CASES[:5])
        expected = CASES[:5]
    else:
        expected = CASES
    assert as_tuples(decode_all(data, step)) == expected


def test_large_body_bigger_than_a_chunk(monkeypatch):
    monkeypatch.setattr(F, "BODY_CHUNK", 1 << 20)
    body = os.urandom(3 * (1 << 20) + 123)
    data = frame_bytes(F.TOPIC, b"t", body, 1) + frame_bytes(F.TOPIC, b"u", b"tail", 1)
    got = decode_all(data, 65_536)
    assert as_tuples(got) == [(F.TOPIC, 1, b"t", 0, body), (F.TOPIC, 1, b"u", 0, b"tail")]


def test_get_buffer_recv_into_style():
    """The transport's way: write into get_buffer(), then buffer_updated()."""
    frames = [frame_bytes(F.TOPIC, b"t", os.urandom(n), 1) for n in (10, 500_000, 0, 20)]
    stream = memoryview(b"".join(frames))
    d = FrameDecoder()
    got = []
    while stream.nbytes:
        buf = d.get_buffer()
        assert buf.nbytes > 0
        n = min(buf.nbytes, stream.nbytes, 100_000)
        buf[:n] = stream[:n]
        d.buffer_updated(n)
        stream = stream[n:]
        got.extend(d.frames())
    assert [len(f.body) for f in got] == [10, 500_000, 0, 20]


def test_large_body_is_received_into_its_own_storage():
    """A streamed 1 MB message: its header arrives with a good part of the body (here
    100 kB, 1/10), so the full-size storage is allocated at once and recv_into fills
    exactly the rest of the body."""
    body = os.urandom(1_000_000)
    data = frame_bytes(F.TOPIC, b"t", body, 1)
    d = FrameDecoder()
    d.feed(data[:100_000])
    assert d.frames() == []
    buf = d.get_buffer()
    assert buf.nbytes == len(data) - 100_000
    buf[:] = data[100_000:]
    d.buffer_updated(buf.nbytes)
    (f,) = d.frames()
    assert f.body == body


def test_frames_up_to_the_read_buffer_limit_grow_the_read_buffer_once():
    """100 kB messages on a link whose read buffer is still small: the buffer grows to
    max_buffer at the first one (no more: a header costs at most that), and from then on
    one read takes several such frames whole, parsed in place."""
    bodies = [os.urandom(100_000) for _ in range(5)]
    data = b"".join(frame_bytes(F.TOPIC, b"t", b, 1) for b in bodies)
    d = FrameDecoder(buffer_size=F.HANDSHAKE_BUFFER_SIZE, max_name=F.HANDSHAKE_MAX_NAME)
    d.set_limits(1 << 28, F.SESSION_TYPES)
    d.feed(data[: F.HEADER_SIZE + 1])
    assert d.frames() == [] and d.partial
    assert len(d.get_buffer().obj) == F.READ_BUFFER_SIZE  # grown once, to the limit only
    got, reads, rest = [], 0, memoryview(data)[F.HEADER_SIZE + 1 :]
    while rest.nbytes:
        buf = d.get_buffer()
        assert len(buf.obj) <= F.READ_BUFFER_SIZE
        n = min(buf.nbytes, rest.nbytes)
        buf[:n] = rest[:n]
        d.buffer_updated(n)
        rest = rest[n:]
        reads += 1
        got += d.frames()
    assert [f.body for f in got] == bodies
    assert reads <= 3  # 500 kB in reads of up to 256 kB, not two or three reads per frame


def test_large_body_storage_grows_with_what_arrived():
    """A header alone costs BODY_STEP bytes of storage, not the announced size; the
    storage then grows by BODY_GROWTH as bytes arrive, and the body is intact."""
    body = os.urandom(3_000_000)
    data = frame_bytes(F.TOPIC, b"t", body, 1)
    d = FrameDecoder()
    d.feed(data[:F.HEADER_SIZE + 1])
    assert d.frames() == []
    assert d.partial
    sizes = []
    rest = memoryview(data)[F.HEADER_SIZE + 1 :]
    while rest.nbytes:
        buf = d.get_buffer()
        sizes.append(len(buf.obj))
        n = min(buf.nbytes, rest.nbytes)
        buf[:n] = rest[:n]
        d.buffer_updated(n)
        rest = rest[n:]
    assert sizes[0] == F.BODY_STEP
    assert sizes[-1] == len(body)
    assert all(b <= a * F.BODY_GROWTH for a, b in zip(sizes, sizes[1:], strict=False))
    (f,) = d.frames()
    assert f.body == body and not d.partial


def test_storage_stays_proportional_to_what_arrived(monkeypatch):
    """However much the header announces, the storage is at most BODY_GROWTH times the
    bytes received (or BODY_STEP), also across BODY_CHUNK pieces."""
    monkeypatch.setattr(F, "BODY_CHUNK", 1 << 20)
    body = os.urandom(3 * (1 << 20) + 5)
    data = frame_bytes(F.TOPIC, b"t", body, 1)
    d = FrameDecoder(max_body=1 << 30)
    d.feed(data[: F.HEADER_SIZE + 1])
    got = 1
    rest = memoryview(data)[F.HEADER_SIZE + 1 :]
    while rest.nbytes:
        buf = d.get_buffer()
        held = len(buf.obj) + sum(len(c) for c in d._big_chunks)
        assert held <= max(F.BODY_STEP, F.BODY_GROWTH * got) + (1 << 20)
        n = min(buf.nbytes, rest.nbytes, 50_000)
        buf[:n] = rest[:n]
        d.buffer_updated(n)
        got += n
        rest = rest[n:]
    (f,) = d.frames()
    assert f.body == body


def test_a_stream_of_large_bodies_gets_full_size_storage_after_the_first():
    """After a large body arrived in full, the next one of at most that size gets storage
    of its own size at once, however little of it came with its header (no growth copy);
    a larger announcement still starts at the last body's size, not at its own."""
    body = os.urandom(1_000_000)
    data = frame_bytes(F.TOPIC, b"t", body, 1)
    d = FrameDecoder()

    def feed_in_pieces(chunk: int) -> tuple[list[int], list[F.Frame]]:
        """As a link reads: a read of at most ``chunk`` bytes, then frames()."""
        sizes, got = [], []
        rest = memoryview(data)
        while rest.nbytes:
            buf = d.get_buffer()
            if buf.obj is not d._buf:
                sizes.append(len(buf.obj))
            n = min(buf.nbytes, rest.nbytes, chunk)
            buf[:n] = rest[:n]
            d.buffer_updated(n)
            rest = rest[n:]
            got += d.frames()
        return sizes, got

    first, got = feed_in_pieces(20_000)
    assert first[0] < len(body) and first[-1] == len(body)  # grew: nothing seen before
    assert [f.body for f in got] == [body]
    second, got = feed_in_pieces(20_000)
    assert set(second) == {len(body)}  # one storage, full size from the start
    assert [f.body for f in got] == [body]
    # A header announcing far more, then a stall: storage is the last body's size.
    d.feed(F.HEADER.pack(F.TOPIC, 1, 1, 200_000_000, 0) + b"t" + b"x")
    assert d.frames() == [] and d.partial
    assert len(d.get_buffer().obj) == len(body)


def test_encode_frame_scatter_gather_for_large_bodies():
    body = b"x" * 100_000
    bufs = encode_frame(F.TOPIC, b"t", body, 1)
    assert len(bufs) == 2 and bufs[1] is body
    assert len(encode_frame(F.TOPIC, b"t", b"small", 1)) == 1


def test_length_checked_before_allocation():
    d = FrameDecoder(max_body=1000)
    d.feed(struct.pack("<BBHIQ", F.TOPIC, 1, 0, 1001, 0))
    with pytest.raises(FrameTooLarge):
        d.frames()
    with pytest.raises(ProtocolError):  # stays failed
        d.frames()


def test_huge_length_prefix_rejected_without_allocating():
    d = FrameDecoder()
    # the biggest length the header can carry; 2**63 cannot even be expressed
    d.feed(struct.pack("<BBHIQ", F.TOPIC, 1, 0, 0xFFFFFFFF, 2**63))
    with pytest.raises(FrameTooLarge):
        d.frames()
    assert d.buffered == 16


def test_unknown_type_rejected():
    d = FrameDecoder()
    d.feed(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    with pytest.raises(ProtocolError):
        d.frames()


def test_handshake_limits():
    d = FrameDecoder(max_body=F.HANDSHAKE_MAX_BODY, allowed_types=F.HANDSHAKE_TYPES)
    d.feed(frame_bytes(F.TOPIC, b"t", b"x"))
    with pytest.raises(ProtocolError):
        d.frames()
    d = FrameDecoder(max_body=F.HANDSHAKE_MAX_BODY, allowed_types=F.HANDSHAKE_TYPES)
    d.feed(frame_bytes(F.HELLO, b"", b"x" * 257))
    with pytest.raises(FrameTooLarge):
        d.frames()


def test_next_frame_parses_one_at_a_time_so_limits_can_change():
    d = FrameDecoder(max_body=64, allowed_types=F.HANDSHAKE_TYPES)
    d.feed(frame_bytes(F.AUTH, b"", b"p" * 32) + frame_bytes(F.TOPIC, b"t", b"data", 1))
    f = d.next_frame()
    assert f is not None and f.type == F.AUTH
    d.set_limits(1 << 20, F.ALL_TYPES)
    assert as_tuples(d.frames()) == [(F.TOPIC, 1, b"t", 0, b"data")]


def test_partial_frame_stays_buffered():
    data = frame_bytes(F.TOPIC, b"topic", b"payload", 1)
    d = FrameDecoder()
    d.feed(data[:-1])
    assert d.frames() == []
    d.feed(data[-1:])
    assert len(d.frames()) == 1
    assert d.buffered == 0


def test_rejects_name_too_long_on_encode():
    with pytest.raises(ProtocolError):
        encode_frame(F.TOPIC, b"x" * 70_000, b"")


frame_st = st.tuples(
    st.sampled_from(sorted(F.ALL_TYPES)),
    st.integers(0, 255),
    st.binary(max_size=40),
    st.integers(0, 2**64 - 1),
    st.binary(max_size=3000),
)


@settings(max_examples=200, deadline=None)
@given(st.lists(frame_st, max_size=8), st.integers(1, 5000))
def test_roundtrip_property(frames, step):
    data = b"".join(frame_bytes(t, n, b, c, r) for t, c, n, r, b in frames)
    assert as_tuples(decode_all(data, step)) == [(t, c, n, r, b) for t, c, n, r, b in frames]


@settings(max_examples=500, deadline=None)
@given(st.binary(max_size=4000), st.integers(1, 500))
def test_garbage_never_crashes_or_overallocates(data, step):
    """Arbitrary bytes give frames or ProtocolError; nothing else, and bounded memory."""
    d = FrameDecoder(max_body=10_000)
    try:
        for i in range(0, len(data), step):
            d.feed(data[i : i + step])
            for f in d.frames():
                assert len(f.body) <= 10_000
    except ProtocolError:
        pass
    assert d.buffered <= len(data)
