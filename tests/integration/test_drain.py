"""A link whose write fails because the peer closed still delivers what the peer sent first.

The flake this pins down (meshbag play with shared memory on, about 1 run in 10): a sender
dials, sends its messages and closes at once. The accepting side, which writes its
``SHM_OFFER`` right after the handshake, got EPIPE for that write, and the connection closed
on the spot, throwing away every frame still unread in its socket (a Unix socket keeps them
readable after the peer is gone). Now the frames are read and delivered before the link
closes.

Deterministic: the peer is a plain socket driven from inside the accepting connection's
``on_open`` (on its I/O thread), so it has sent everything and closed *before* the first
write after the handshake, whatever the scheduling.
"""

from __future__ import annotations

import socket
import threading
from typing import Any

from easymesh.protocol.auth import ClientHandshake
from easymesh.protocol.frames import HEADER, TOPIC, frame_bytes
from easymesh.transport.connection import CLOSED, Connection
from easymesh.transport.loop import IOLoop

WAIT = 10.0
COUNT = 120  # frames of ~1 kB: several reads (the session buffer starts at 16 KiB), and
# less than the peer's socket buffer (sendall must not wait: we are its only reader)


def recv_frame(sock: socket.socket) -> bytes:
    """One whole frame from a blocking socket."""
    head = b""
    while len(head) < HEADER.size:
        head += sock.recv(HEADER.size - len(head))
    _ftype, _codec, nlen, blen, _rid = HEADER.unpack(head)
    rest = b""
    while len(rest) < nlen + blen:
        rest += sock.recv(nlen + blen - len(rest))
    return head + rest


def test_frames_sent_before_the_peer_closed_are_delivered(loop: IOLoop) -> None:
    server_side, peer = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    peer.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 1 << 20)
    peer.settimeout(WAIT)
    payload = b"".join(
        frame_bytes(TOPIC, b"t", i.to_bytes(4, "big") * 250, codec=1) for i in range(COUNT)
    )
    got: list[int] = []
    closed = threading.Event()
    write_ok: list[bool] = []

    def on_open(conn: Connection) -> None:
        # The peer has our handshake reply; it sends everything and closes, and only then
        # do we write (as the shm hub writes its SHM_OFFER here).
        recv_frame(peer)
        peer.sendall(payload)
        peer.close()
        write_ok.append(conn.send([frame_bytes(TOPIC, b"x", b"hello")], 21, False))

    def on_frames(conn: Connection, frames: list[Any]) -> None:
        got.extend(int.from_bytes(f[4][:4], "big") for f in frames)

    conn = Connection(
        loop,
        authkey=None,
        is_client=False,
        max_body=1 << 20,
        max_pending=1 << 20,
        on_frames=on_frames,
        on_open=on_open,
        on_close=lambda c, exc: closed.set(),
    )
    hello = ClientHandshake(None).start()
    peer.sendall(hello)
    loop.call_soon(conn.start_server, server_side, None)
    assert closed.wait(WAIT)
    assert conn.state == CLOSED
    assert write_ok == [False]  # the write after the handshake did fail (EPIPE)
    assert got == list(range(COUNT))  # and every frame the peer sent first arrived, in order
