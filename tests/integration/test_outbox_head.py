"""The outbox's bound with a frame larger than the bound at its head, partly written.

An empty queue takes any frame, whatever its size (a 32 MiB camera frame with the default
32 MiB ``max_pending_bytes``). While it is being written, a small must-deliver frame (a PONG, a
request, the SHM_ARENA announcement that precedes the first shared-memory message) used to
count that whole frame against the bound and disconnect the peer, although the peer was
reading. Measured in scripts/bench/large.py (32 MiB frames at 30 Hz, 3 receivers): a frame sent
before a receiver's shared-memory offer arrived went through the socket; the announcement
behind it closed the link, again on every reconnection, and that receiver lost most frames.
Now a frame partly written is not counted against what may wait behind it.
"""

from __future__ import annotations

from typing import Any

from easymesh.errors import ConnectionLost
from tests.integration.test_outbox import make, pair  # noqa: F401  (pair is a fixture)


def test_a_small_must_deliver_frame_behind_a_large_one_being_written(pair: Any) -> None:  # noqa: F811
    box, loop, _ = make(pair[0], 10_000)
    assert box.send([b"L" * 50_000], 50_000, True)  # into the empty queue: partly written
    assert box.items and 0 < box.head_sent < 50_000
    assert box.send([b"a" * 32], 32, False)  # e.g. SHM_ARENA
    assert box.failure is None and all(fn != box.on_fail for fn, _ in loop.calls)
    # what waits behind the large frame is still bounded: must-deliver frames past it disconnect
    sent = 0
    while box.send([b"r" * 1000], 1000, False):
        sent += 1
        assert sent < 100, "the queue grew past its bound"
    assert isinstance(box.failure, ConnectionLost) and "stopped reading" in str(box.failure)
    assert 8 <= sent <= 10
