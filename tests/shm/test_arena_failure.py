"""A node whose shared-memory arena cannot be created still sends large messages (through the
socket) and still loans buffers (ordinary ones): shared memory is on by default, so a kernel
that refuses the memfd or its mapping (no memfd, seccomp, an address-space or memory limit)
must cost only the speed-up, never a send.

Deterministic and real: a pool of 1 PiB cannot be mapped (the address space of x86-64 and
arm64 user processes is at most 128 TiB, so mmap fails with ENOMEM) though every check before
the first large send passes."""

from __future__ import annotations

import os
from typing import Any

import numpy as np
import pytest

from tests.integration.helpers import Collector, wait_until

WAIT = 30.0
UNMAPPABLE = 1 << 50

pytestmark = pytest.mark.skipif(not hasattr(os, "memfd_create"), reason="Linux only")


def _first_large_message(node_factory: Any) -> tuple[Any, Any, Collector, Any]:
    """rx listening, tx with a pool the kernel refuses, and tx's first large message sent
    (it dials; through the socket): (tx, rx, what rx got, the frame)."""
    rx = node_factory("rx")
    got = Collector()
    rx.listen("frames", got)
    tx = node_factory("tx", shm_pool_size=UNMAPPABLE)
    tx.wait_for_listener("frames", timeout=WAIT)
    frame = np.arange(1 << 20, dtype=np.uint8)
    tx.send("frames", frame)
    return tx, rx, got, frame


def test_a_node_whose_arena_cannot_be_mapped_sends_through_the_socket(
    node_factory: Any, caplog: Any
) -> None:
    tx, _rx, got, frame = _first_large_message(node_factory)
    assert np.array_equal(got.wait_for(1, WAIT)[0], frame)
    # tx creates its arena to ask rx for shared memory, the kernel refuses, tx says so once
    assert wait_until(lambda: "no shared memory for" in caplog.text, WAIT)
    assert tx.stats()["shm"]["links"] == 0
    tx.send("frames", frame)
    loaned = tx.loan((1 << 17,), "uint8")
    loaned[:] = 7
    tx.send("frames", loaned)
    data = got.wait_for(3, WAIT)
    assert np.array_equal(data[1], frame)
    assert np.array_equal(data[2], np.full(1 << 17, 7, dtype=np.uint8))


def test_a_node_whose_arena_cannot_be_mapped_never_asks_for_shared_memory(
    node_factory: Any, caplog: Any
) -> None:
    """It has no arena to pass, so it must not ask: a receiver that answered an ask reads
    with ``recvmsg_into`` (the dearer read) until an arena's fd comes, which would be never."""
    tx, rx, got, frame = _first_large_message(node_factory)  # the kernel refuses the arena
    assert wait_until(lambda: "no shared memory for" in caplog.text, WAIT)
    tx.send("frames", frame)
    # a round trip on the same link after both: an ask, had one gone, was read before it
    tx.ping("rx", timeout=WAIT)
    assert len(got.wait_for(2, WAIT)) == 2
    peers = rx.stats()["peers"].values()
    assert peers and not any(p["reads_fds"] for p in peers), list(peers)
