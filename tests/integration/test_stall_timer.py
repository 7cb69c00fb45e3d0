"""A stall check that finds bytes waiting leaves one stall timer, not two.

``Connection._check_stall`` first reads what the kernel holds (a busy loop is not a
stall). When that read got bytes and the frame is still partial, the read itself armed a
fresh timer; the check then armed another one over it and lost track of the first. Every
check that found bytes left one more live timer (they re-arm to one deadline, so a burst of
them usually finds bytes once): on a link that streams large frames (nearly always partial,
nearly always readable) their number grew by about one per stall timeout, for as long as the
link lived — after an hour of streaming, some 900 timers, each a ``_check_stall`` (a read
syscall) on the I/O thread every 4 s, and each holding the connection, with its body storage,
past its close (only the last one is cancelled then).

Deterministic: the peer is a plain Unix socket; the bytes are written and the check is
run from one call on the I/O thread, so they are in the kernel, unread, when the check
reads — the state the loop sees when the timer fires on a streaming link.
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Callable
from typing import Any

from easymesh.protocol.auth import ClientHandshake
from easymesh.protocol.frames import TOPIC, frame_bytes
from easymesh.transport.connection import CLOSED, OPEN, Connection
from easymesh.transport.loop import IOLoop

from .helpers import run_on_loop

WAIT = 10.0
STALL = 3600.0  # no timer runs by itself during the test: the test runs the checks


def on_io_thread(loop: IOLoop, fn: Callable[[], Any]) -> None:
    """Run ``fn()`` on the I/O thread and wait for it; re-raise what it raised."""
    result, _ = run_on_loop(loop, fn, WAIT)
    if isinstance(result, BaseException):
        raise result


def live_stall_timers(loop: IOLoop, conn: Connection) -> int:
    return sum(1 for t in list(loop._timers) if not t.cancelled and t.fn == conn._check_stall)


def test_a_stall_check_that_reads_bytes_leaves_a_single_timer(loop: IOLoop) -> None:
    server_side, peer = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    peer.settimeout(WAIT)
    opened = threading.Event()
    armed = threading.Event()
    conn = Connection(
        loop,
        authkey=None,
        is_client=False,
        max_body=1 << 22,
        max_pending=1 << 20,
        on_frames=lambda c, frames: None,
        on_open=lambda c: opened.set(),
        stall_timeout=STALL,
    )
    peer.sendall(ClientHandshake(None).start())
    loop.call_soon(conn.start_server, server_side, None)
    assert opened.wait(WAIT)
    data = frame_bytes(TOPIC, b"t", bytes(1 << 20), 1)  # 1 MiB: a large body, kept partial
    sent = 1000
    peer.sendall(data[:sent])

    def armed_yet() -> None:
        if conn._stall_timer is not None:
            armed.set()
        else:
            loop.call_later(0.01, armed_yet)

    loop.call_soon(armed_yet)
    assert armed.wait(WAIT)  # the partial frame armed the first timer
    assert live_stall_timers(loop, conn) == 1

    def fire() -> None:
        """What the loop does when the timer is due, with bytes waiting in the kernel."""
        nonlocal sent
        peer.sendall(data[sent : sent + 1000])
        sent += 1000
        timer = conn._stall_timer
        assert timer is not None
        timer.cancel()  # a timer that ran counts as cancelled
        conn._check_stall()

    for _ in range(3):
        on_io_thread(loop, fire)
        assert conn.state == OPEN and conn.decoder.partial
        assert live_stall_timers(loop, conn) == 1  # was 2, 3, 4: one more per check

    def fire_silent() -> None:
        """A check with nothing new for the stall timeout: it still closes the link."""
        timer = conn._stall_timer
        assert timer is not None
        timer.cancel()
        conn.last_received -= STALL
        conn._check_stall()

    on_io_thread(loop, fire_silent)
    assert conn.state == CLOSED
    assert live_stall_timers(loop, conn) == 0
    peer.close()
