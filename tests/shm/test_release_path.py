"""The fast paths of a large frame (issue 13, session 4).

Releases: the thread that drops a frame's last view writes the SHM_RELEASE itself when the
link's outbox is free at once (``Outbox.try_send``: never waits, so a finalizer that runs under
that very lock cannot deadlock), else the release waits for the I/O thread as before.
Sending: a loan is found and retained in one lock round (``Pool.hold``); a one-entry message
head is one pack; a plain numpy array is known to be large without pickling it."""

from __future__ import annotations

import gc
import os
import pickle
import socket
from collections.abc import Iterator
from typing import Any, NamedTuple

import numpy as np
import pytest

from easymesh.errors import ProtocolError
from easymesh.protocol.frames import SHM_RELEASE, FrameDecoder
from easymesh.shm.descriptor import (
    INLINE,
    Entry,
    decode_release,
    encode_message_head,
    encode_message_head_one,
)
from easymesh.shm.encoding import encode
from easymesh.shm.pool import Pool
from easymesh.shm.release import Ledger, Remote
from easymesh.shmhub import ShmHub, _LinkShm
from easymesh.transport.outbox import Outbox
from tests.integration.test_outbox import RecordingLoop, fill_kernel

MB = 1 << 20

pytestmark = pytest.mark.skipif(not hasattr(os, "memfd_create"), reason="Linux only")


@pytest.fixture
def pair() -> Iterator[tuple[socket.socket, socket.socket]]:
    a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    a.setblocking(False)
    a.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
    b.settimeout(10)
    yield a, b
    a.close()
    b.close()


def make(sock: socket.socket | None) -> tuple[Outbox, RecordingLoop]:
    loop = RecordingLoop()
    box = Outbox(loop, 1 << 20, lambda: None, lambda exc: None, lambda: "peer")
    if sock is not None:
        box.open(sock, [])
    return box, loop


# -- Outbox.try_send ---------------------------------------------------------------------------


def test_try_send_writes_at_once_when_the_outbox_is_free(pair: Any) -> None:
    box, loop = make(pair[0])
    assert box.try_send(b"release")
    assert pair[1].recv(100) == b"release"
    assert not box.items and not loop.calls


def test_try_send_refuses_without_waiting_when_this_thread_holds_the_lock(pair: Any) -> None:
    box, _ = make(pair[0])
    with box.lock:  # a finalizer running under the outbox's own lock
        assert not box.try_send(b"release")
    assert not box.items
    assert box.try_send(b"marker")  # free again: written
    assert pair[1].recv(100) == b"marker"  # and nothing before it


def test_try_send_refuses_behind_queued_frames_and_on_a_link_not_open(pair: Any) -> None:
    box, _ = make(pair[0])
    fill_kernel(box)
    queued = len(box.items)
    assert not box.try_send(b"release")  # never overtakes nor joins the queue
    assert len(box.items) == queued
    closed, _ = make(None)
    assert not closed.try_send(b"release")
    assert not closed.items


# -- a release from the thread that dropped the view -------------------------------------------


class FakeConn:
    """The two writes a link's shared-memory state uses; ``free`` says whether the outbox
    would take a frame at once."""

    def __init__(self, free: bool) -> None:
        self.free = free
        self.direct: list[bytes] = []
        self.queued: list[bytes] = []

    def try_send(self, frame: bytes) -> bool:
        if self.free:
            self.direct.append(frame)
        return self.free

    def send(self, buffers: list[bytes], nbytes: int, droppable: Any) -> bool:
        data = b"".join(buffers)
        assert len(data) == nbytes and droppable is False
        self.queued.append(data)
        return True


def releases(frames: list[bytes]) -> list[tuple[int, int]]:
    dec = FrameDecoder(max_body=1 << 20)
    dec.feed(b"".join(frames))
    out = []
    for frame in dec.frames():
        assert frame[0] == SHM_RELEASE
        out += decode_release(frame[4])
    return out


def shared_view(pool: Pool, free: bool) -> tuple[Any, FakeConn, list[Any], memoryview, int]:
    """A hub, a fake link whose Remote maps ``pool``, and one tracked view of a block."""
    calls: list[Any] = []
    hub = ShmHub(
        enabled=True,
        threshold=1024,
        pool_size=MB,
        node_name="t",
        call_soon=lambda fn, *args: calls.append((fn, args)),
    )
    conn = FakeConn(free)
    st = hub._state(conn)
    st.remote = Remote(wake=lambda: hub._wake(st))
    assert pool.arena is None
    block = pool.alloc(4096)
    assert block is not None and pool.arena is not None
    st.remote.add_arena(pool.arena_id, pool.size, os.dup(pool.arena.fd))
    view = st.remote.view(Entry(pool.arena_id, 0, block, block, 4096))
    return hub, conn, calls, view, block


def test_the_dropping_thread_writes_the_release_when_the_outbox_is_free() -> None:
    with Pool(MB) as pool:
        hub, conn, calls, view, block = shared_view(pool, free=True)
        del view
        gc.collect()
        assert releases(conn.direct) == [(pool.arena_id, block)]
        assert not calls and not conn.queued  # the I/O thread was not woken
        hub.on_close(conn)


def test_a_release_the_outbox_refuses_waits_for_one_flush_on_the_io_thread() -> None:
    with Pool(MB) as pool:
        hub, conn, calls, view, block = shared_view(pool, free=False)
        st: _LinkShm = hub._links[conn]
        second = st.remote.view(Entry(pool.arena_id, 0, block, block + 8, 8))
        del view
        del second
        gc.collect()
        assert not conn.direct and not conn.queued
        assert len(calls) == 1  # one flush for both releases
        fn, args = calls[0]
        fn(*args)  # what the I/O thread runs
        assert releases(conn.queued) == [(pool.arena_id, block)] * 2
        assert not st.unsent and not st.flush_due
        hub.on_close(conn)


# -- the send path -----------------------------------------------------------------------------


def test_hold_finds_a_loan_and_takes_a_reference_in_one_step() -> None:
    with Pool(4 * MB) as pool:
        loan = pool.loan(2 * MB)
        assert pool.refs(0) == 1
        assert pool.hold(loan[4096 + 5 :]) == (0, 4096 + 5)
        assert pool.refs(0) == 2
        pool.release(0)
        assert pool.hold(bytearray(100)) is None and pool.hold(object()) is None
        assert pool.refs(0) == 1


def test_a_one_entry_head_is_the_general_head() -> None:
    for e in (Entry(1, 0, 4096, 4100, 8294400), Entry(INLINE, 1, 0, 0, 3)):
        assert encode_message_head_one(77, e) == encode_message_head(77, [e])
    with pytest.raises(ValueError):
        encode_message_head_one(1 << 32, Entry(1, 0, 0, 0, 1))


def test_a_loaned_frame_is_encoded_without_a_copy_and_gives_its_reference_back() -> None:
    with Pool(16 * MB) as pool:
        frame = pool.loan((1080, 1920, 4), np.uint8)
        frame[...] = 7
        for _ in range(2):  # the second time from the stream cache
            enc = encode(frame, pool, 1024)
            assert enc is not None and enc.blocks == [0] and pool.refs(0) == 2
            assert enc.entries == [Entry(pool.arena_id, 0, 0, 0, frame.nbytes)]
            assert enc.nbytes == sum(len(b) for b in enc.buffers)
            enc.close()
            assert pool.refs(0) == 1
        ledger = Ledger(pool)
        ledger.sent([0])
        ledger.released([(pool.arena_id, 0)])
        assert pool.refs(0) == 1


def test_inband_knows_a_large_plain_array_without_pickling_it() -> None:
    hub = ShmHub(
        enabled=True, threshold=1024, pool_size=MB, node_name="t", call_soon=lambda *a: None
    )
    assert hub.inband(np.zeros(4096, np.uint8), "t") == (None,)  # large, and no body made
    assert hub.inband(np.zeros((64, 64), np.uint8)[:, ::2], "t") == (None,)  # not contiguous
    small = np.zeros(16, np.uint8)
    body = hub.inband(small, "t")
    assert type(body) is bytes and np.array_equal(pickle.loads(body), small)
    objects = np.array([None] * 1024, dtype=object)  # pickled in band, as before
    body = hub.inband(objects, "t")
    assert type(body) is bytes and len(pickle.loads(body)) == 1024


def test_an_array_in_a_container_is_pickled_in_band_once_per_stream() -> None:
    """Until a stream (topic or service) has carried a large buffer, its messages are pickled
    without a buffer_callback: the first large one comes out in band (its body serves the
    socket path that a link's first large message takes anyway); from then on the stream's
    messages stop at the large buffer, before it is copied. Other streams are not affected."""
    hub = ShmHub(
        enabled=True, threshold=1024, pool_size=MB, node_name="t", call_soon=lambda *a: None
    )
    small = {"seq": 1, "data": b"x" * 16}
    assert hub.inband(small, "cam") == pickle.dumps(small, 5)
    msg = {"seq": 2, "frame": np.arange(4096, dtype=np.uint8)}
    (body,) = hub.inband(msg, "cam")  # type: ignore[misc]
    assert type(body) is bytes and np.array_equal(pickle.loads(body)["frame"], msg["frame"])
    assert hub.inband(msg, "cam") == (None,)  # the stream is known: stopped at the array
    assert hub.inband(small, "cam") == pickle.dumps(small, 5)  # small ones still in band
    (other,) = hub.inband(msg, "other")  # type: ignore[misc]
    assert other == body


def test_a_large_bytes_in_a_container_is_pickled_once_for_the_socket() -> None:
    """The body inband() made while finding the large bytes is the one a link that cannot
    take shared memory (TCP) sends: the message is not pickled a second time."""
    hub = ShmHub(
        enabled=True, threshold=1024, pool_size=MB, node_name="t", call_soon=lambda *a: None
    )
    msg = {"seq": 1, "data": b"x" * 4096}
    (body,) = hub.inband(msg, "t")  # type: ignore[misc]
    assert type(body) is bytes and pickle.loads(body) == msg
    (body,) = hub.inband(msg, "t")  # type: ignore[misc]  # bytes are never out of band
    assert type(body) is bytes and pickle.loads(body) == msg
    assert hub.inband(b"x" * 4096, "t") == (None,)  # top level: found by type, nothing pickled


def test_a_release_of_one_block_is_checked_like_any_release() -> None:
    with Pool(4 * MB) as pool:
        block = pool.alloc(4096)
        assert block is not None
        ledger = Ledger(pool)
        ledger.sent([block])
        ledger.sent([block])  # the same frame to this peer twice: two references
        with pytest.raises(ProtocolError):
            ledger.released([(pool.arena_id + 1, block)])  # an arena we never shared
        with pytest.raises(ProtocolError):
            ledger.released([(pool.arena_id, block + 4096)])  # a block it does not hold
        assert ledger.held == 2 and pool.refs(block) == 3
        ledger.released([(pool.arena_id, block)])
        assert ledger.held == 1 and pool.refs(block) == 2
        ledger.released([(pool.arena_id, block)])
        with pytest.raises(ProtocolError):
            ledger.released([(pool.arena_id, block)])  # once more than it held
        assert ledger.held == 0 and pool.refs(block) == 1


def test_the_loaned_array_itself_and_views_of_it_are_sent_without_a_copy() -> None:
    with Pool(16 * MB) as pool:
        frame = pool.loan((1080, 1920, 4), np.uint8)
        assert pool.hold_loan(frame) == 0 and pool.refs(0) == 2  # the very object
        pool.release(0)
        part = frame[540:]  # another object over the same block: found by its address
        assert pool.hold_loan(part) is None
        enc = encode(part, pool, 1024)
        assert enc is not None and enc.entries == [
            Entry(pool.arena_id, 0, 0, 540 * 1920 * 4, part.nbytes)
        ]
        enc.close()
        assert pool.hold_loan(np.zeros(4096, np.uint8)) is None
        del part
        del frame
        gc.collect()
        assert pool._loaned == {} and pool.refs(0) == 0  # forgotten with the array


class _Stamped(NamedTuple):
    stamp: int
    frame: Any


def test_a_large_array_that_scan_cannot_see_still_reaches_shared_memory() -> None:
    """scan() looks into dicts, lists, tuples and ``__dict__``s only (three levels): a
    namedtuple, a slotted object or a deeper array is invisible to it. A stream whose bodies
    come out large anyway is pickled with the buffer_callback from its next message on, so
    such an array is found (as it was before the memo) instead of going in band for ever."""
    hub = ShmHub(
        enabled=True, threshold=1024, pool_size=MB, node_name="t", call_soon=lambda *a: None
    )
    frame = np.arange(4096, dtype=np.uint8)
    for key, msg in (
        ("named", _Stamped(1, frame)),
        ("deep", {"a": {"b": {"c": {"d": frame}}}}),
    ):
        body = hub.inband(msg, key)  # the first one: in band, as documented
        assert type(body) is bytes and len(body) > 4096
        assert hub.inband(msg, key) == (None,), key  # stopped at the array
    assert hub.inband(b"y" * 4096, "named") == (None,)
    text = "z" * 4096  # large, but nothing to share: in band, whatever the stream knows
    assert type(hub.inband(text, "text")) is bytes and type(hub.inband(text, "text")) is bytes
