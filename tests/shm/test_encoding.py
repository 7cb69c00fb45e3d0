"""Encoding and decoding through a real arena mapped read-only (one process, no sockets)."""

from __future__ import annotations

import gc
import os
import pickle
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from easymesh.errors import ProtocolError
from easymesh.shm.arena import buffer_address
from easymesh.shm.descriptor import INLINE, PERSISTENT, decode_message, decode_release
from easymesh.shm.encoding import Encoded, decode, encode
from easymesh.shm.pool import Pool
from easymesh.shm.release import Ledger, Remote

MB = 1 << 20
KB = 1024
WAIT_S = 30.0


@pytest.fixture
def pool() -> Iterator[Pool]:
    with Pool(32 * MB) as p:
        yield p


def deliver(enc: Encoded, pool: Pool, remote: Remote | None = None) -> tuple[Any, Remote, Ledger]:
    """Send ``enc`` to one in-process receiver: ledger, descriptor bytes, decode."""
    if remote is None:
        remote = Remote()
        if pool.arena is not None:
            remote.add_arena(pool.arena_id, pool.size, os.dup(pool.arena.fd))
    ledger = Ledger(pool)
    ledger.sent(enc.blocks)
    body = b"".join(bytes(b) for b in enc.buffers)
    enc.close()
    obj = decode(decode_message(body, remote.arena_size), remote.view)
    return obj, remote, ledger


def give_back(remote: Remote, ledger: Ledger) -> None:
    gc.collect()
    for body in remote.drain():
        ledger.released(decode_release(body))


def inside(obj: Any, remote: Remote, arena: int = 1) -> bool:
    m = remote._mappings[arena]
    addr, n = buffer_address(obj)
    return m.base <= addr and addr + n <= m.base + m.size


def test_numpy_array_arrives_read_only_in_the_mapping_and_block_comes_back(pool: Pool) -> None:
    a = np.arange(2 * MB, dtype=np.uint32).reshape(1024, -1)
    obj, remote, ledger = deliver(encode({"seq": 3, "frame": a}, pool), pool)
    f = obj["frame"]
    assert obj["seq"] == 3 and f.dtype == a.dtype and f.shape == a.shape
    assert np.array_equal(f, a)
    assert not f.flags.writeable
    with pytest.raises(ValueError):
        f[0, 0] = 1
    assert inside(f, remote)
    assert pool.stats()["blocks"] == 1 and ledger.held == 1
    part = f[100:200, ::2]  # a strided view of the array keeps the block
    del obj, f
    give_back(remote, ledger)
    assert pool.stats()["blocks"] == 1
    del part
    give_back(remote, ledger)
    assert pool.stats()["blocks"] == 0 and ledger.held == 0


@pytest.mark.parametrize("make", [bytes, bytearray, memoryview, pickle.PickleBuffer])
def test_bytes_like_types_travel_out_of_band_as_read_only_memoryviews(
    pool: Pool, make: Any
) -> None:
    data = bytes(range(256)) * 1024  # 256 KiB
    enc = encode([make(data), b"small"], pool)
    assert enc is not None and len(enc.blocks) == 1
    assert enc.entries[0].flags == (0 if make is pickle.PickleBuffer else PERSISTENT)
    assert enc.nbytes < 1000  # only the descriptor crosses the socket
    (big, small), remote, ledger = deliver(enc, pool)
    assert isinstance(big, memoryview) and big.readonly and bytes(big) == data
    assert inside(big, remote)
    assert small == b"small"
    del big
    give_back(remote, ledger)
    assert pool.stats()["blocks"] == 0


def test_below_threshold_stays_in_band_with_its_own_type(pool: Pool) -> None:
    obj = {"a": np.zeros(1000), "b": b"x" * (64 * KB - 1), "c": bytearray(10)}
    enc = encode(obj, pool)
    assert enc is not None and enc.entries == [] and pool.arena is None  # no memfd for nothing
    out, _, _ = deliver(enc, pool)
    assert type(out["b"]) is bytes and type(out["c"]) is bytearray
    assert np.array_equal(out["a"], obj["a"])


def test_threshold_is_configurable(pool: Pool) -> None:
    enc = encode(b"y" * 100, pool, threshold=64)
    assert enc is not None and len(enc.blocks) == 1
    enc.close()


def test_a_loan_is_sent_without_copy(pool: Pool) -> None:
    loan = pool.loan((512, 1024), np.uint8)
    loan[:] = 9
    arena = pool.arena
    assert arena is not None
    enc = encode({"f": loan[256:]}, pool)
    assert enc is not None
    (e,) = enc.entries
    assert e.block == 0 and e.offset == 256 * 1024  # the loan's own memory, not a new block
    assert pool.stats()["blocks"] == 1
    obj, remote, ledger = deliver(enc, pool)
    del loan  # the sender drops its loan; the receiver still holds the block
    assert pool.stats()["blocks"] == 1
    assert int(obj["f"][0, 0]) == 9 and obj["f"].shape == (256, 1024)
    del obj
    give_back(remote, ledger)
    assert pool.stats()["blocks"] == 0


def test_writing_a_loan_after_send_is_seen_by_the_receiver(pool: Pool) -> None:
    loan = pool.loan(MB)
    obj, remote, ledger = deliver(encode(loan, pool), pool)  # type: ignore[arg-type]
    loan[0] = 42
    assert obj[0] == 42  # documented: a loan is shared, not a snapshot


def test_full_pool_falls_back_inline_or_refuses() -> None:
    with Pool(2 * MB) as pool:
        held = pool.loan(2 * MB)
        frame = np.ones(MB, np.uint8)
        enc = encode(frame, pool)
        assert enc is not None and enc.entries[0].arena == INLINE and not enc.blocks
        out, _, _ = deliver(enc, pool)
        assert np.array_equal(out, frame)
        assert encode(frame, pool, fallback=False) is None
        del held


def test_partial_failure_gives_back_what_was_taken() -> None:
    with Pool(2 * MB) as pool:
        assert (
            encode([np.ones(MB, np.uint8), np.ones(2 * MB, np.uint8)], pool, fallback=False) is None
        )
        assert pool.stats()["blocks"] == 0


def test_no_pool_means_everything_inline_for_tcp_peers() -> None:
    data = {"f": np.arange(MB, dtype=np.uint8), "b": b"z" * MB}
    enc = encode(data, None)
    assert enc is not None and all(e.arena == INLINE for e in enc.entries)
    body = b"".join(bytes(b) for b in enc.buffers)
    out = decode(decode_message(body, lambda a: None), lambda e: memoryview(b""))
    assert np.array_equal(out["f"], data["f"]) and bytes(out["b"]) == data["b"]


def test_max_buffers_keeps_the_rest_in_band(pool: Pool) -> None:
    arrays = [np.full(64 * KB, i, np.uint8) for i in range(5)]
    enc = encode(arrays, pool, max_buffers=2)
    assert enc is not None and len(enc.entries) == 2
    out, _, _ = deliver(enc, pool)
    assert [int(a[0]) for a in out] == [0, 1, 2, 3, 4]


def test_unknown_persistent_id_and_bad_stream_are_protocol_errors(pool: Pool) -> None:
    class P(pickle.Pickler):
        def persistent_id(self, obj: Any) -> Any:
            return 5 if obj == "x" else None

    import io

    f = io.BytesIO()
    P(f, protocol=5).dump(["x"])
    from easymesh.shm.descriptor import encode_message_head

    for stream in [f.getvalue(), b"\x80\x05garbage", b""]:
        body = encode_message_head(len(stream), []) + stream
        with pytest.raises(ProtocolError):
            decode(decode_message(body, lambda a: None), lambda e: memoryview(b""))


def test_plain_arrays_use_the_stream_caches_on_both_sides(pool: Pool) -> None:
    from easymesh.shm import encoding

    a = np.arange(64 * KB, dtype=np.float32).reshape(256, -1)
    first, remote, _ = deliver(encode(a, pool), pool)
    assert (a.dtype.str, a.shape) in encoding._ARRAY_STREAMS
    assert any(v == (a.dtype.str, a.shape) for v in encoding._ARRAY_LOADS.values())
    second, _, _ = deliver(encode(a * 2, pool), pool, remote)  # both caches hit
    assert np.array_equal(first, a) and np.array_equal(second, a * 2)
    assert second.dtype == a.dtype and second.shape == a.shape and not second.flags.writeable
    assert inside(second, remote)
    big_endian = a.astype(">f4")  # another dtype string: pickled, not taken from the cache
    third, _, _ = deliver(encode(big_endian, pool), pool, remote)
    assert third.dtype == big_endian.dtype and np.array_equal(third, a)


def test_a_cached_stream_with_a_buffer_of_the_wrong_size_is_refused(pool: Pool) -> None:
    a = np.ones(64 * KB, np.uint8)
    deliver(encode(a, pool), pool)
    enc = encode(a, pool)
    assert enc is not None
    e = enc.entries[0]
    body = b"".join(bytes(b) for b in enc.buffers)
    from easymesh.shm.descriptor import encode_message_head

    stream = bytes(enc.buffers[1])
    remote = Remote()
    assert pool.arena is not None
    remote.add_arena(pool.arena_id, pool.size, os.dup(pool.arena.fd))
    short = encode_message_head(len(stream), [e._replace(length=e.length - 3)]) + stream
    assert len(body) == len(short)
    with pytest.raises(ProtocolError):
        decode(decode_message(short, remote.arena_size), remote.view)
    enc.close()


def test_release_from_another_thread_is_queued_and_wakes(pool: Pool) -> None:
    import threading

    woken = threading.Event()
    remote = Remote(wake=woken.set)
    assert pool.arena is None
    enc = encode(b"q" * MB, pool)
    assert enc is not None and pool.arena is not None
    remote.add_arena(pool.arena_id, pool.size, os.dup(pool.arena.fd))
    obj, remote, ledger = deliver(enc, pool, remote)
    holder = [obj]
    del obj
    t = threading.Thread(target=holder.clear)  # the last reference dies on another thread
    t.start()
    t.join(WAIT_S)
    assert woken.wait(WAIT_S)
    assert remote.pending == 1
    give_back(remote, ledger)
    assert pool.stats()["blocks"] == 0


def test_the_shm_package_works_without_numpy() -> None:
    import subprocess
    import sys

    code = (
        "import sys; sys.modules['numpy'] = None\n"
        "import easymesh, easymesh.shm\n"
        "from easymesh.shm import Pool, encode\n"
        "p = Pool(1 << 22)\n"
        "m = p.loan(1 << 20); m[:2] = b'ok'\n"
        "e = encode({'b': m, 'c': bytes(1 << 17)}, p)\n"
        "assert len(e.blocks) == 2, e.entries\n"
        "try:\n"
        "    p.loan((4, 4), 'uint8')\n"
        "except ImportError:\n"
        "    print('no-numpy-ok')\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.stdout.strip() == "no-numpy-ok", out.stderr


values = st.recursive(
    st.one_of(
        st.integers(),
        st.text(max_size=5),
        st.none(),
        st.binary(min_size=0, max_size=3 * KB),
        st.builds(lambda n, v: np.full(n, v, np.uint16), st.integers(0, 2 * KB), st.integers(0, 9)),
    ),
    lambda inner: st.one_of(
        st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=3), inner, max_size=4)
    ),
    max_leaves=10,
)


def same(a: Any, b: Any) -> bool:
    if isinstance(a, np.ndarray):
        return isinstance(b, np.ndarray) and a.dtype == b.dtype and np.array_equal(a, b)
    if isinstance(a, bytes):
        return bytes(b) == a
    if isinstance(a, list):
        return isinstance(b, list) and len(a) == len(b) and all(map(same, a, b))
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    return bool(a == b)


@settings(max_examples=40, deadline=None)
@given(values)
def test_round_trips_with_a_low_threshold(obj: Any) -> None:
    with Pool(4 * MB) as pool:
        enc = encode(obj, pool, threshold=1024)
        assert enc is not None
        out, _, _ = deliver(enc, pool)
        assert same(obj, out)
