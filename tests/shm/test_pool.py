"""Pool: bounded, never blocking, reference counts, loans freed when their last view goes."""

from __future__ import annotations

import fcntl
import gc
import os

import numpy as np
import pytest

from easymesh.shm.arena import F_SEAL_FUTURE_WRITE, buffer_address
from easymesh.shm.pool import Pool

MB = 1 << 20


def test_alloc_returns_none_when_full_and_counts() -> None:
    with Pool(4 * MB) as pool:
        a = pool.alloc(3 * MB)
        assert a is not None
        assert pool.alloc(2 * MB) is None
        assert pool.stats()["exhausted"] == 1
        pool.release(a)
        assert pool.alloc(4 * MB) == 0


def test_block_is_freed_only_when_every_reference_is_given_back() -> None:
    with Pool(4 * MB) as pool:
        off = pool.alloc(MB)
        assert off is not None
        pool.retain(off, 3)  # sent to three receivers
        pool.release(off)  # the sender's own reference
        pool.release(off, 2)
        assert pool.refs(off) == 1 and pool.stats()["used_bytes"] == MB
        pool.release(off)
        assert pool.stats()["used_bytes"] == 0
        with pytest.raises(KeyError):
            pool.release(off)


def test_arena_is_a_sealed_memfd_not_a_dev_shm_file() -> None:
    before = set(os.listdir("/dev/shm"))
    with Pool(4 * MB, name="easymesh-test") as pool:
        pool.alloc(1)
        arena = pool.arena
        assert arena is not None
        assert os.readlink(f"/proc/self/fd/{arena.fd}").startswith("/memfd:easymesh-test")
        seals = fcntl.fcntl(arena.fd, fcntl.F_GET_SEALS)
        assert seals & fcntl.F_SEAL_SHRINK and seals & fcntl.F_SEAL_GROW
        assert seals & fcntl.F_SEAL_SEAL
        assert arena.write_sealed == bool(seals & F_SEAL_FUTURE_WRITE)
        assert os.fstat(arena.fd).st_size == 4 * MB
        assert set(os.listdir("/dev/shm")) == before
        fd = arena.fd
    assert arena.closed and arena.fd == -1
    with pytest.raises(OSError):
        os.fstat(fd)


def test_loan_bytes_is_writable_and_freed_with_its_last_derived_view() -> None:
    with Pool(4 * MB) as pool:
        m = pool.loan(MB)
        m[:3] = b"abc"
        sub = m[1:10][1:]  # views of views keep the memory, not the first memoryview
        del m
        gc.collect()
        assert pool.stats()["blocks"] == 1
        assert bytes(sub[:1]) == b"c"
        del sub
        assert pool.stats()["blocks"] == 0


def test_loan_numpy_array_and_its_views() -> None:
    with Pool(16 * MB) as pool:
        a = pool.loan((1080, 1920, 4), np.uint8)
        assert a.shape == (1080, 1920, 4) and a.flags.writeable
        a[:] = 5
        arena = pool.arena
        assert arena is not None
        addr, n = buffer_address(a)
        assert arena.base <= addr and addr + n <= arena.base + arena.size
        row = a[10]
        t = a.T  # not contiguous, still a view
        del a
        assert pool.stats()["blocks"] == 1
        assert int(row[0, 0]) == 5 and int(t[0, 0, 0]) == 5
        del row, t
        assert pool.stats()["blocks"] == 0
        f = pool.loan(10, "float64")
        assert f.shape == (10,) and f.dtype == np.float64


def test_loan_when_full_returns_none() -> None:
    with Pool(2 * MB) as pool:
        held = pool.loan(2 * MB)
        assert held is not None
        assert pool.loan(1) is None
        assert pool.loan((10, 10), np.uint8) is None


def test_find_recognises_buffers_inside_live_blocks_only() -> None:
    with Pool(4 * MB) as pool:
        loan = pool.loan(2 * MB)
        assert pool.find(loan) == (0, 0)
        assert pool.find(loan[4096 + 5 :]) == (0, 4096 + 5)
        assert pool.find(bytearray(100)) is None
        assert pool.find(b"x" * 100) is None
        assert pool.find(object()) is None


def test_close_waits_for_live_loans_before_unmapping() -> None:
    pool = Pool(4 * MB)
    loan = pool.loan(MB)
    pool.close()
    arena = pool.arena
    assert arena is not None and not arena.closed
    loan[0] = 1  # still mapped: writing is safe
    assert pool.alloc(1) is None  # closed pools allocate nothing
    del loan
    assert arena.closed


def test_copy_in_fills_a_held_block_and_refuses_what_does_not_fit() -> None:
    with Pool(4 * MB) as pool:
        off = pool.alloc(MB)
        assert off is not None
        pool.copy_in(off, b"abc" * 1000)
        arena = pool.arena
        assert arena is not None
        assert bytes(arena.view(off, 6, readonly=True)) == b"abcabc"
        with pytest.raises(ValueError):
            pool.copy_in(off, bytes(MB + 1))
        with pytest.raises(ValueError):
            pool.copy_in(off + 4096, b"x")  # not the start of a held block
