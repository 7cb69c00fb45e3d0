"""Hostile bytes against the sans-IO decoder and handshake, configured exactly as a
connection configures them (issue 3). test_frames.py and test_auth.py cover the
well-formed cases and single garbage frames; this file covers byte *streams*:
any split, any mutation of a real transcript, any header, and the memory a
header can make the decoder allocate."""

from __future__ import annotations

import os
import struct
import tracemalloc

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from easymesh.errors import AuthenticationError, ProtocolError
from easymesh.protocol import frames as F
from easymesh.protocol.auth import FLAG_AUTH, VERSION, ClientHandshake, ServerHandshake
from easymesh.protocol.frames import FrameDecoder, frame_bytes

KEY = b"the-key"


def handshake_decoder() -> FrameDecoder:
    """The decoder as a Connection creates it, before the handshake."""
    return FrameDecoder(max_body=F.HANDSHAKE_MAX_BODY, allowed_types=F.HANDSHAKE_TYPES,
                        buffer_size=F.HANDSHAKE_BUFFER_SIZE, max_name=F.HANDSHAKE_MAX_NAME)


def chunks(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(data) + 1) for c in cuts} | {0, len(data)})
    return [data[a:b] for a, b in zip(points, points[1:], strict=False)]


def serve(stream_parts: list[bytes], key: bytes | None) -> tuple[bool, list[bytes]]:
    """Feed client bytes to a server-side decoder + handshake, as Connection._read does.
    Returns (authenticated, what the server sent)."""
    dec = handshake_decoder()
    hs = ServerHandshake(key)
    sent = []
    for part in stream_parts:
        dec.feed(part)
        while True:
            frame = dec.next_frame()
            if frame is None:
                break
            reply, done = hs.receive(frame)
            if reply:
                sent.append(reply)
            if done:
                return True, sent
    return False, sent


# -- the decoder before the handshake ------------------------------------------------------------


@settings(max_examples=400, deadline=None)
@given(st.binary(max_size=5000), st.lists(st.integers(0, 5000), max_size=20))
def test_handshake_decoder_yields_only_small_handshake_frames(data, cuts):
    dec = handshake_decoder()
    try:
        for part in chunks(data, cuts):
            dec.feed(part)
            for f in dec.frames():
                assert f.type in F.HANDSHAKE_TYPES
                assert len(f.name) <= F.HANDSHAKE_MAX_NAME and len(f.body) <= F.HANDSHAKE_MAX_BODY
            assert dec.buffered <= F.HANDSHAKE_BUFFER_SIZE
    except ProtocolError:
        pass


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=3000), st.lists(st.integers(0, 3000), max_size=10))
def test_any_split_gives_the_same_frames_and_the_same_error(data, cuts):
    """Incremental decoding does not depend on how the bytes arrive (h11's rule)."""

    def run(parts: list[bytes]) -> tuple[list[tuple], str]:
        d = FrameDecoder(max_body=2000)
        out: list[tuple] = []
        try:
            for p in parts:
                d.feed(p)
                out.extend((f.type, f.codec, bytes(f.name), f.request_id, bytes(f.body)) for f in d.frames())
        except ProtocolError as exc:
            return out, type(exc).__name__
        return out, ""

    whole = run([data])
    assert run(chunks(data, cuts)) == whole
    assert run([data[i:i + 1] for i in range(len(data))]) == whole


@pytest.mark.parametrize("name_len", [F.HANDSHAKE_MAX_NAME + 1, 0xFFFF])
def test_handshake_name_limit_is_checked_on_the_header(name_len):
    dec = handshake_decoder()
    dec.feed(struct.pack("<BBHIQ", F.HELLO, 0, name_len, 38, 0))
    with pytest.raises(ProtocolError, match="name"):
        dec.frames()


def test_session_types_refuse_a_second_handshake():
    for ftype in (F.HELLO, F.AUTH):
        d = FrameDecoder(allowed_types=F.SESSION_TYPES)
        d.feed(frame_bytes(ftype, body=b"x" * 38))
        with pytest.raises(ProtocolError, match="unexpected frame type"):
            d.frames()


def test_set_limits_grows_the_buffer_and_keeps_what_was_read():
    """The client's AUTH and its first session frames can arrive in one read."""
    big = os.urandom(3000)  # bigger than the handshake buffer
    stream = frame_bytes(F.AUTH, body=b"p" * 32) + frame_bytes(F.TOPIC, b"t", big, 1)
    dec = handshake_decoder()
    dec.feed(stream[:F.HANDSHAKE_BUFFER_SIZE])
    assert dec.next_frame().type == F.AUTH
    dec.set_limits(1 << 20, F.SESSION_TYPES)
    dec.feed(stream[F.HANDSHAKE_BUFFER_SIZE:])
    (f,) = dec.frames()
    assert (f.type, bytes(f.name), bytes(f.body)) == (F.TOPIC, b"t", big)


# -- memory a header can demand --------------------------------------------------------------------


@settings(max_examples=60, deadline=None)
@given(st.sampled_from(sorted(F.SESSION_TYPES)), st.integers(0, 0xFFFF), st.integers(0, 0xFFFFFFFF),
       st.integers(0, 4096))
def test_a_header_cannot_demand_more_than_one_body_chunk(ftype, nlen, blen, extra):
    """Whatever a header announces, feeding it (and some bytes after it) allocates at most
    one BODY_CHUNK of body storage beyond the read buffer: never the announced size."""
    dec = FrameDecoder(max_body=1 << 30)
    data = struct.pack("<BBHIQ", ftype, 1, nlen, blen, 0) + b"n" * min(nlen, 70000) + b"b" * extra
    tracemalloc.start()
    try:
        try:
            dec.feed(data)
            dec.frames()
        except ProtocolError:
            pass
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < F.BODY_CHUNK + 4 * len(data) + (1 << 20)


# -- the handshake as a stream ----------------------------------------------------------------------


@settings(max_examples=400, deadline=None)
@given(st.binary(max_size=2000), st.lists(st.integers(0, 2000), max_size=10), st.booleans())
def test_arbitrary_client_bytes_never_authenticate(data, cuts, keyed_hello_first):
    """Bytes that were not computed with the key never pass a keyed server, whatever
    precedes them (optionally a well-formed HELLO that claims a key)."""
    if keyed_hello_first:
        data = frame_bytes(F.HELLO, body=b"EMSH" + bytes((VERSION, FLAG_AUTH)) + os.urandom(32)) + data
    try:
        done, _ = serve(chunks(data, cuts), KEY)
    except (ProtocolError, AuthenticationError):
        return
    assert not done


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=600), st.lists(st.integers(0, 600), max_size=6))
def test_arbitrary_server_bytes_never_satisfy_a_keyed_client(data, cuts):
    client = ClientHandshake(KEY)
    client.start()
    dec = handshake_decoder()
    try:
        for part in chunks(data, cuts):
            dec.feed(part)
            while (frame := dec.next_frame()) is not None:
                client.receive(frame)
                raise AssertionError("a keyed client accepted a server that does not know the key")
    except (ProtocolError, AuthenticationError):
        pass


def _transcript() -> tuple[ClientHandshake, ServerHandshake, bytes, bytes]:
    client, server = ClientHandshake(KEY), ServerHandshake(KEY)
    hello = client.start()
    server_hello = server.receive(handshake_decoder_frame(hello))[0]
    auth = client.receive(handshake_decoder_frame(server_hello))
    return client, server, hello, auth


def handshake_decoder_frame(data: bytes) -> F.Frame:
    d = handshake_decoder()
    d.feed(data)
    (f,) = d.frames()
    return f


@settings(max_examples=400, deadline=None)
@given(st.integers(0, 10_000), st.integers(1, 255))
def test_a_mutated_auth_frame_never_authenticates(pos, xor):
    """Flip bits anywhere in the client's AUTH frame: the server either refuses or the
    flipped bits were outside the proof (header fields it ignores)."""
    _, server, _, auth = _transcript()
    pos %= len(auth)
    mutated = bytearray(auth)
    mutated[pos] ^= xor
    d = handshake_decoder()
    d.feed(bytes(mutated))
    try:
        frame = d.next_frame()
        if frame is None:
            return  # the header now announces more bytes: the handshake timeout closes it
        _, done = server.receive(frame)
    except (ProtocolError, AuthenticationError):
        return
    assert done
    assert pos < F.HEADER_SIZE and pos not in (0, 2, 3, 4, 5, 6, 7), f"accepted a flip at {pos}"


@settings(max_examples=300, deadline=None)
@given(st.integers(0, 10_000), st.integers(1, 255))
def test_a_mutated_client_hello_breaks_the_proof(pos, xor):
    """Flip bits in the client's HELLO: a keyed server then computes its proof over what
    it received, so a changed nonce makes the real client refuse the server, and the
    server refuses the real client's proof."""
    client, server = ClientHandshake(KEY), ServerHandshake(KEY)
    hello = bytearray(client.start())
    pos %= len(hello)
    hello[pos] ^= xor
    d = handshake_decoder()
    d.feed(bytes(hello))
    try:
        frame = d.next_frame()
        assume(frame is not None)
        server_hello, _ = server.receive(frame)
        auth = client.receive(handshake_decoder_frame(server_hello))
        _, done = server.receive(handshake_decoder_frame(auth))
    except (ProtocolError, AuthenticationError):
        return
    # only bits the protocol ignores can have changed: header codec/request id, flag bits 1-7
    nonce_start = F.HEADER_SIZE + 6
    assert done and not (nonce_start <= pos < nonce_start + 32), f"accepted a flip at {pos}"
