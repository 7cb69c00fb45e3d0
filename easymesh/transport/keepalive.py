"""PING and PONG: the one implementation every link uses.

A PING (frame type 4) carries an optional request id; the answer is a PONG with the
same id, on the same link. Nodes ping the coordinator as a heartbeat (id 0), the
coordinator pings a node it has not heard from (id 0), and ``Node.ping`` measures a
round trip to a peer (a fresh id, matched by the request table).
"""

from __future__ import annotations

from typing import Any

from easymesh.protocol.frames import PING, PONG, Frame, encode_frame

__all__ = ["PING_FRAME", "answer_ping", "ping_frame"]

#: A heartbeat PING (request id 0), ready to send.
PING_FRAME = encode_frame(PING)
_PONG = encode_frame(PONG)


def ping_frame(request_id: int = 0) -> list[Any]:
    """A PING asking for a PONG with ``request_id``."""
    return encode_frame(PING, request_id=request_id) if request_id else PING_FRAME


def answer_ping(link: Any, frame: Frame) -> None:
    """Answer a PING that arrived on ``link`` (anything with ``send(bufs, n, droppable)``)."""
    pong = encode_frame(PONG, request_id=frame[3]) if frame[3] else _PONG
    link.send(pong, 16, droppable=False)
