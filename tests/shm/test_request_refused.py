"""A request whose large buffers were already written into the pool, then refused before it
went out (``max_in_flight`` reached, or the node closing), gives its blocks back: nothing
else would (an encoded message holds its references until it is closed), and the pool is
bounded, so each such refusal used to lose its share of it for good."""

from __future__ import annotations

import os
import threading
from typing import Any

import numpy as np
import pytest

import easymesh
from tests.integration.helpers import wait_until

WAIT = 30.0

pytestmark = pytest.mark.skipif(not hasattr(os, "memfd_create"), reason="Linux only")


def test_a_request_refused_by_max_in_flight_gives_its_blocks_back(node_factory: Any) -> None:
    go = threading.Event()
    srv = node_factory("srv", shm=True)
    srv.add_service("hold", lambda x: go.wait(WAIT) and len(x))
    cli = node_factory("cli", shm=True, max_in_flight=1)
    cli.wait_for_service("hold", timeout=WAIT)
    go.set()
    # the link is open (a large request through the socket asks for shared memory)...
    assert cli.request("hold", bytes(1 << 20), timeout=WAIT) == 1 << 20
    assert wait_until(lambda: cli.stats()["shm"]["links"] >= 1, WAIT)  # ...and takes shm
    go.clear()
    first = cli.request_future("hold", b"y", timeout=WAIT)  # the only slot
    try:
        with pytest.raises(easymesh.TooManyRequests):
            cli.request_future("hold", np.ones(1 << 20, dtype=np.uint8), timeout=WAIT)
        assert cli.stats()["shm"]["blocks"] == 0, cli.stats()["shm"]
    finally:
        go.set()
    assert first.result(timeout=WAIT) == 1
