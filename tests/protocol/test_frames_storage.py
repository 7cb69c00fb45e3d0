"""Large bodies through ``get_buffer``/``buffer_updated``/``frames``, as a link reads them:
any sequence of frame sizes, in any read sizes, arrives intact and in order, and a large
body's storage never exceeds what docs/guarantees.md promises (Memory): ``BODY_GROWTH``
times what has arrived of it, or ``BODY_STEP``, or the size of the link's previous large
body (delivered in full), in pieces of at most ``BODY_CHUNK``; and a large body no larger
than the previous one gets its full-size storage at once (no growth copy).

The decoder's constants are scaled down (a 1 KiB chunk, a 256-byte read buffer) so that
every path — in place, grown read buffer, large, several pieces, exactly one chunk, one
byte more — is reached with bodies of a few kB.
"""

from __future__ import annotations

import random

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from easymesh.protocol import frames as F
from easymesh.protocol.frames import FrameDecoder, frame_bytes

CHUNK = 1024  # BODY_CHUNK
STEP = 32  # BODY_STEP
MAX_BUFFER = 256  # the read buffer's largest size: a larger frame is "large"
NAME = 8


def body_of(n: int, seed: int) -> bytes:
    return random.Random(seed).randbytes(n)


@st.composite
def frame_specs(draw: st.DrawFn) -> tuple[bytes, int, int]:
    """(name, body size, seed): small, at the read buffer's edge, around a chunk, any."""
    name = draw(st.binary(max_size=NAME))
    kind = draw(st.sampled_from(["small", "edge", "chunk", "any"]))
    if kind == "small":
        n = draw(st.integers(0, 200))
    elif kind == "edge":  # total = MAX_BUFFER - 1 .. MAX_BUFFER + 2
        n = MAX_BUFFER - F.HEADER_SIZE - len(name) + draw(st.integers(-1, 2))
    elif kind == "chunk":
        n = draw(st.sampled_from([CHUNK - 1, CHUNK, CHUNK + 1, 2 * CHUNK, 2 * CHUNK + 1]))
    else:
        n = draw(st.integers(0, 3 * CHUNK + 7))
    return name, n, draw(st.integers(0, 1 << 30))


def run_stream(specs: list[tuple[bytes, int, int]], reads: list[int]) -> None:
    bodies = [body_of(n, seed) for _name, n, seed in specs]
    stream = b""
    starts: list[int] = []  # where each frame's header starts in the stream
    body_at: list[int] = []  # where its body starts
    prev_large: list[int] = []  # the size of the last large body before it (0: none)
    last = 0
    for (name, _n, _seed), body in zip(specs, bodies, strict=True):
        starts.append(len(stream))
        body_at.append(len(stream) + F.HEADER_SIZE + len(name))
        prev_large.append(last)
        stream += frame_bytes(F.TOPIC, name, body, 1)
        if F.HEADER_SIZE + len(name) + len(body) > MAX_BUFFER:
            last = len(body)

    d = FrameDecoder(buffer_size=64, max_name=NAME, max_buffer=MAX_BUFFER)
    got: list[tuple[bytes, bytes]] = []
    seen_storage: set[int] = set()  # frames whose first storage was checked
    fed = 0
    i = 0
    while fed < len(stream):
        buf = d.get_buffer()
        assert buf.nbytes > 0
        assert len(d._buf) <= MAX_BUFFER
        if d._big_cur is not None:
            j = max(k for k, s in enumerate(starts) if s < fed)  # the frame in progress
            blen = len(bodies[j])
            arrived = fed - body_at[j]
            held = len(d._big_cur) + sum(len(c) for c in d._big_chunks)
            assert len(d._big_cur) <= CHUNK
            assert held <= blen
            assert held <= max(STEP, F.BODY_GROWTH * arrived, prev_large[j]), (j, arrived, held)
            if j not in seen_storage:
                seen_storage.add(j)
                if prev_large[j] >= blen and blen <= CHUNK:
                    assert len(d._big_cur) == blen  # full size at once: no growth copy
        n = min(buf.nbytes, reads[i % len(reads)], len(stream) - fed)
        buf[:n] = stream[fed : fed + n]
        d.buffer_updated(n)
        fed += n
        i += 1
        got += [(bytes(f.name), bytes(f.body)) for f in d.frames()]
    assert got == [(name, body) for (name, _n, _s), body in zip(specs, bodies, strict=True)]
    assert not d.partial


BIG = 3 * CHUNK + 7


@settings(max_examples=300, deadline=None)
@given(st.lists(frame_specs(), min_size=1, max_size=6), st.lists(st.integers(1, 1500), min_size=1, max_size=12))
# hostile sequences: big, small, big (headers alone first); one chunk exactly, then one byte more
@example([(b"a", BIG, 1), (b"b", 10, 2), (b"c", BIG, 3)], [F.HEADER_SIZE + 1, 7, 1500])
@example([(b"a", CHUNK, 1), (b"b", BIG, 2), (b"c", CHUNK + 1, 3)], [17, 1])
@example([(b"a", CHUNK + 1, 1), (b"", CHUNK + 1, 2), (b"x", 2 * CHUNK, 3)], [1500])
@example([(b"a", 400, 1), (b"b", BIG, 2), (b"c", 300, 3), (b"d", 2000, 4)], [1])
def test_large_bodies_arrive_intact_with_bounded_storage(
    specs: list[tuple[bytes, int, int]], reads: list[int]
) -> None:
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(F, "BODY_CHUNK", CHUNK)
        mp.setattr(F, "BODY_STEP", STEP)
        run_stream(specs, reads)
