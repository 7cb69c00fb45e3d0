"""fd passing over real Unix socketpairs, and what a receiver can (not) do with the fd."""

from __future__ import annotations

import mmap
import os
import socket
from collections.abc import Iterator

import pytest

from easymesh.errors import ProtocolError
from easymesh.shm.arena import Mapping
from easymesh.shm.fdpass import MAX_FDS_PER_READ, FdQueue, recv_into_with_fds, send_with_fds
from easymesh.shm.pool import Pool

MB = 1 << 20


@pytest.fixture
def pair() -> Iterator[tuple[socket.socket, socket.socket]]:
    a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    yield a, b
    a.close()
    b.close()


def memfd(tag: str) -> int:
    fd = os.memfd_create(tag, os.MFD_CLOEXEC)
    return fd


def test_fds_arrive_in_stream_order_with_their_bytes(
    pair: tuple[socket.socket, socket.socket],
) -> None:
    a, b = pair
    fds = [memfd(f"t{i}") for i in range(3)]
    try:
        a.sendall(b"plain-")
        for i, fd in enumerate(fds):
            assert send_with_fds(a, [b"ARENA%d-" % i], [fd]) == 7
        a.sendall(b"tail")
        queue = FdQueue()
        total = 0
        got = bytearray()
        buf = bytearray(4096)
        while len(got) < 6 + 21 + 4:
            n, new = recv_into_with_fds(b, buf)
            queue.push(new)
            total += len(new)
            got += buf[:n]
            assert total >= got.count(b"ARENA")  # no ARENA bytes before their fd
        assert bytes(got) == b"plain-ARENA0-ARENA1-ARENA2-tail"
        names = [os.readlink(f"/proc/self/fd/{queue.pop()}") for _ in range(3)]
        assert [n.split(":")[1].split(" ")[0] for n in names] == ["t0", "t1", "t2"]
        with pytest.raises(ProtocolError):
            queue.pop()
    finally:
        for fd in fds:
            os.close(fd)


def test_received_fds_are_close_on_exec(pair: tuple[socket.socket, socket.socket]) -> None:
    a, b = pair
    fd = memfd("cloexec")
    send_with_fds(a, [b"x"], [fd])
    os.close(fd)
    _, (got,) = recv_into_with_fds(b, bytearray(10))
    assert not os.get_inheritable(got)
    os.close(got)


def test_too_many_fds_in_one_read_is_refused(pair: tuple[socket.socket, socket.socket]) -> None:
    a, b = pair
    fds = [memfd("many") for _ in range(MAX_FDS_PER_READ * 4)]
    send_with_fds(a, [b"x"], fds)
    for fd in fds:
        os.close(fd)
    before = set(os.listdir("/proc/self/fd"))
    with pytest.raises(ProtocolError):
        recv_into_with_fds(b, bytearray(10))
    assert set(os.listdir("/proc/self/fd")) <= before  # what did arrive was closed


def test_fd_queue_is_bounded_and_closes_what_it_holds() -> None:
    q = FdQueue(max_pending=2)
    fds = [memfd("q") for _ in range(3)]
    q.push(fds[:2])
    with pytest.raises(ProtocolError):
        q.push(fds[2:])
    for fd in fds:
        with pytest.raises(OSError):
            os.fstat(fd)


def test_receiver_mapping_is_read_only_and_cannot_be_made_writable() -> None:
    with Pool(4 * MB) as pool:
        loan = pool.loan(MB)
        loan[:5] = b"hello"
        arena = pool.arena
        assert arena is not None
        ro = os.dup(arena.fd)
        # the fd a receiver gets: read-only, and the memfd is sealed against new writers
        with pytest.raises(OSError):
            mmap.mmap(ro, 4 * MB, flags=mmap.MAP_SHARED, prot=mmap.PROT_READ | mmap.PROT_WRITE)
        with pytest.raises(OSError):
            os.write(ro, b"x")
        if arena.write_sealed:
            rw = os.open(f"/proc/self/fd/{ro}", os.O_RDWR)  # reopening writable works...
            try:
                with pytest.raises(OSError):  # ...but mapping it writable or writing does not
                    mmap.mmap(
                        rw, 4 * MB, flags=mmap.MAP_SHARED, prot=mmap.PROT_READ | mmap.PROT_WRITE
                    )
                with pytest.raises(OSError):
                    os.pwrite(rw, b"evil", 0)
                with pytest.raises(OSError):
                    os.ftruncate(rw, MB)  # sealed size: a mapping can never SIGBUS
            finally:
                os.close(rw)
        m = Mapping(ro, 4 * MB)
        view = m.view(0, 5, readonly=True)
        assert view.readonly and bytes(view) == b"hello"
        loan[0:1] = b"j"  # the sender's writes are visible, the receiver reads only
        assert bytes(view) == b"jello"
        del view
        m.close()
        assert m.closed


def test_mapping_refuses_unsealed_or_wrong_size_files() -> None:
    fd = os.memfd_create("unsealed", os.MFD_CLOEXEC)
    os.ftruncate(fd, MB)
    with pytest.raises(ProtocolError):
        Mapping(os.dup(fd), MB)  # size not sealed: it could shrink under us
    os.close(fd)
    with Pool(MB) as pool:
        pool.alloc(1)
        assert pool.arena is not None
        with pytest.raises(ProtocolError):
            Mapping(os.dup(pool.arena.fd), 2 * MB)  # claims more than the file has
    r, w = os.pipe()
    os.close(w)
    with pytest.raises(ProtocolError):
        Mapping(r, MB)  # not a file at all; Mapping closed it
    with pytest.raises(OSError):
        os.fstat(r)


def test_mapping_views_are_bounded_and_unmap_waits_for_them() -> None:
    with Pool(MB) as pool:
        pool.alloc(1)
        assert pool.arena is not None
        m = Mapping(os.dup(pool.arena.fd), MB)
        with pytest.raises(ValueError):
            m.view(MB - 10, 11, readonly=True)
        released = []
        v = m.view(100, 10, readonly=True, on_release=lambda: released.append(1))
        sub = v[2:4]
        m.close()
        assert not m.closed and m.live_views == 1
        del v
        assert not released
        assert bytes(sub) == b"\0\0"
        del sub
        assert released == [1] and m.closed
