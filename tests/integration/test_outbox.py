"""The outbox's bound, over a real socket pair whose far end does not read.

The loop is a stand-in that records what the outbox asks of the I/O thread (the
outbox's only collaborator besides the socket); the socket is real.
"""

from __future__ import annotations

import socket
from collections.abc import Iterator
from typing import Any

import pytest

from easymesh.errors import ConnectionLost
from easymesh.transport.outbox import Outbox


class RecordingLoop:
    def __init__(self) -> None:
        self.calls: list[tuple[Any, tuple[Any, ...]]] = []

    def call_soon(self, fn: Any, *args: Any) -> None:
        self.calls.append((fn, args))


@pytest.fixture
def pair() -> Iterator[tuple[socket.socket, socket.socket]]:
    a, b = socket.socketpair()
    a.setblocking(False)
    a.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
    yield a, b
    a.close()
    b.close()


def make(sock: socket.socket, bound: int) -> tuple[Outbox, RecordingLoop, list[BaseException]]:
    loop = RecordingLoop()
    failures: list[BaseException] = []
    box = Outbox(loop, bound, lambda: None, failures.append, lambda: "peer 'x'")
    box.open(sock, [])
    return box, loop, failures


def fill_kernel(box: Outbox) -> None:
    """Must-deliver frames until the kernel holds no more and the queue has started."""
    while not box.items:
        assert box.send([b"k" * 1000], 1000, False)


def test_droppable_frames_drop_oldest_and_never_disconnect(pair: Any) -> None:
    box, loop, _ = make(pair[0], 10_000)
    fill_kernel(box)
    for _ in range(100):
        box.send([b"t" * 1000], 1000, True)
    assert box.nbytes <= 10_000 + 1000
    assert box.dropped > 0 and box.failure is None
    assert all(fn != box.on_fail for fn, _ in loop.calls)


def test_must_deliver_frames_past_the_bound_disconnect(pair: Any) -> None:
    box, loop, _ = make(pair[0], 10_000)
    fill_kernel(box)
    sent = 0
    while box.send([b"r" * 1000], 1000, False):
        sent += 1
        assert sent < 100, "the queue grew past its bound"
    assert isinstance(box.failure, ConnectionLost)
    assert "stopped reading" in str(box.failure) and "peer 'x'" in str(box.failure)
    assert box.nbytes <= 10_000
    assert (box.on_fail, (box.failure,)) in loop.calls  # the owner closes the link
    assert not box.send([b"r"], 1, False) and not box.send([b"t"], 1, True)


def test_droppable_frames_make_room_for_must_deliver_ones(pair: Any) -> None:
    box, _, _ = make(pair[0], 10_000)
    fill_kernel(box)
    for _ in range(30):  # the queue is full of topic frames (drop-oldest keeps it at the bound)
        box.send([b"t" * 1000], 1000, True)
    dropped = box.dropped
    assert box.nbytes + 1000 > 10_000
    assert box.send([b"r" * 1000], 1000, False)  # an old topic frame is dropped instead
    assert box.failure is None and box.dropped > dropped


def test_an_empty_queue_takes_a_frame_larger_than_the_bound(pair: Any) -> None:
    box, _, _ = make(pair[0], 1000)
    assert box.send([b"x" * 50_000], 50_000, False)
    assert box.failure is None


def test_frames_queued_before_the_link_opens_count_too(pair: Any) -> None:
    loop = RecordingLoop()
    box = Outbox(loop, 5000, lambda: None, lambda exc: None, lambda: "peer")
    while box.send([b"r" * 1000], 1000, False):
        assert box.nbytes <= 5000
    assert box.failure is not None
    assert box.open(pair[0], [b"hs"]) is False  # a failed outbox never starts writing
