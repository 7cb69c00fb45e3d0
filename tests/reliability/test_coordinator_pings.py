"""When the coordinator PINGs a node (issue 15): only after half the heartbeat timeout of
silence, so a node that heartbeats on time is never asked (before, the sweep asked every
node silent for one interval and crossed the nodes' own PINGs: one extra PING and PONG
per node per second in a healthy mesh), while a node whose own interval is longer is
still asked before it would be dropped.

A raw client that knows the key (:class:`KeyHolder`) plays the node, so the test sees
every frame the coordinator sends on the link, over real sockets on 127.0.0.1.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

from easymesh.coordinator import Coordinator
from easymesh.protocol.frames import PING, PONG, Frame

from .keyholder import KeyHolder, record

KEY = "coordinator-pings-key"
INTERVAL = 0.5  # the coordinator's: timeout 2 s, asks after 1 s of silence, sweeps every 0.25 s


@pytest.fixture
def coordinator() -> Iterator[Coordinator]:
    coord = Coordinator("127.0.0.1", 0, authkey=KEY, heartbeat_interval=INTERVAL).start()
    try:
        yield coord
    finally:
        coord.close()


def _frames_until(kh: KeyHolder, deadline: float) -> list[Frame]:
    """Every frame that arrives before ``deadline``."""
    out: list[Frame] = []
    while time.monotonic() < deadline:
        try:
            frame = kh.next_frame(max(0.01, deadline - time.monotonic()))
        except TimeoutError:
            break
        if frame is None:
            raise AssertionError("the coordinator closed the link")
        out.append(frame)
    return out


@pytest.mark.timeout(60)
def test_a_node_that_heartbeats_on_time_is_never_asked(coordinator: Coordinator) -> None:
    with KeyHolder(("127.0.0.1", coordinator.port), KEY) as kh:
        kh.register(record())
        assert kh.answer()[0] == "welcome"
        got: list[Frame] = []
        # Our PING every 0.7 s: longer than the coordinator's interval (it used to ask
        # after 0.5 s of silence), well within half its timeout (1 s).
        for _ in range(6):
            kh.send_frame(PING)
            got += _frames_until(kh, time.monotonic() + 0.7)
        # The marker: the PONG to this PING comes after any PING sent before it.
        kh.send_frame(PING, rid=7)
        while not got or not (got[-1].type == PONG and got[-1].request_id == 7):
            frame = kh.next_frame(10)
            assert frame is not None, "the coordinator closed the link"
            got.append(frame)
        assert [f.type for f in got].count(PONG) == 7  # it answered each of ours
        assert PING not in [f.type for f in got], "the coordinator asked a node that was on time"


@pytest.mark.timeout(60)
def test_a_silent_node_is_asked_before_it_is_dropped(coordinator: Coordinator) -> None:
    with KeyHolder(("127.0.0.1", coordinator.port), KEY) as kh:
        kh.register(record())
        assert kh.answer()[0] == "welcome"
        t0 = time.monotonic()
        frame = kh.next_frame(10)  # we say nothing: the coordinator asks
        asked = time.monotonic() - t0
        assert frame is not None and frame.type == PING
        assert 0.9 < asked < 2.0, asked  # after half the timeout, before the timeout
