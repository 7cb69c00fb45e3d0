"""A key-holder plays the shared-memory negotiation wrong on purpose (SHM_ASK / SHM_OFFER /
SHM_ARENA out of turn) against a real node over its Unix socket: it gets nothing new.

Negative checks ("no ARENA went", "one OFFER only") end at a PONG: the node answers a PING
on the same link in order, so everything it would have sent before is read by then."""

from __future__ import annotations

import os
import pickle
from typing import Any

import numpy as np
import pytest

from easymesh.protocol import frames as F
from easymesh.protocol.codecs import PICKLE_ID
from easymesh.shm.arena import Arena
from easymesh.shm.descriptor import encode_arena
from easymesh.shm.fdpass import send_with_fds
from tests.reliability.keyholder import KeyHolder

from .procinfo import memfd_fds
from .test_node import MB, WAIT, _asked, _hostile_setup

pytestmark = pytest.mark.skipif(not hasattr(os, "memfd_create"), reason="Linux only")


def _until_pong(kh: KeyHolder, rid: int) -> list[int]:
    """Types of the frames the node sends before it answers a PING sent now."""
    kh.send_frame(F.PING, rid=rid)
    out = []
    while True:
        frame = kh.next_frame(WAIT)
        assert frame is not None, "the node closed the link"
        if frame.type == F.PONG and frame.request_id == rid:
            return out
        out.append(frame.type)


def test_an_ask_flood_gets_one_offer(node_factory: Any) -> None:
    rx, _got, address = _hostile_setup(node_factory)
    with KeyHolder(address, None) as kh:
        for _ in range(200):
            kh.send_frame(F.SHM_ASK)
        assert _until_pong(kh, 7) == [F.SHM_OFFER]
    assert rx.stats()["shm"]["links"] == 0


def test_an_offer_nobody_asked_for_gets_no_arena(node_factory: Any) -> None:
    """Only the answer to the node's own ask brings its arena's fd."""
    rx, _got, address = _hostile_setup(node_factory)
    rx.add_service("big", lambda _x: np.ones(MB, dtype=np.uint8))
    with KeyHolder(address, None) as kh:
        kh.send_frame(F.SHM_OFFER)  # unasked: ignored
        kh.send_frame(F.REQUEST, b"big", pickle.dumps(1, 5), PICKLE_ID, 5)
        seen: list[int] = []
        while F.REPLY not in seen:  # (a worker runs the service: a PING could overtake it)
            frame = kh.next_frame(WAIT)
            assert frame is not None, "the node closed the link"
            seen.append(frame.type)
        seen += _until_pong(kh, 9)
        assert F.REPLY in seen and F.SHM_ASK in seen and F.SHM_ARENA not in seen, seen
        kh.send_frame(F.SHM_OFFER)  # the answer: now the arena comes, once
        kh.send_frame(F.SHM_OFFER)
        assert _until_pong(kh, 11) == [F.SHM_ARENA]


def test_a_second_arena_closes_the_link_and_its_fd_is_closed(node_factory: Any) -> None:
    rx, _got, address = _hostile_setup(node_factory)
    with KeyHolder(address, None) as kh:
        _asked(kh)
        for arena_id in (1, 2):
            arena = Arena(MB, "easymesh-hostile")
            body = encode_arena(arena_id, MB)
            frame = b"".join(bytes(b) for b in F.encode_frame(F.SHM_ARENA, b"", body))
            send_with_fds(kh.sock, [frame], [arena.fd])
            arena.close()  # ours; the node got its own descriptor
            if arena_id == 1:
                assert _until_pong(kh, 3) == []  # mapped; the node reads plainly again
                assert not any(p["reads_fds"] for p in rx.stats()["peers"].values())
        assert kh.closed_by_server(WAIT)  # the second one came to a plain read, without its fd
    assert not [f for f in memfd_fds() if "hostile" in f]
