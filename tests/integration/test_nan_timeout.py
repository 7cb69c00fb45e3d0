"""A timeout that is not a number (NaN) is refused like one that leaves no time.

A blocking request() with it raised ValueError from the lock it sleeps on, after the request
had gone out (its entry waiting for an answer nobody would read); a request_future() with it
put a NaN deadline at the head of the deadline heap, where no comparison ever passes: the
timeouts of every other future of the node stopped firing."""

from __future__ import annotations

import math
import threading
from typing import Any

import pytest

import easymesh

WAIT = 20.0


def test_a_nan_timeout_is_refused_and_other_timeouts_still_fire(node_factory: Any) -> None:
    go = threading.Event()
    srv = node_factory("srv")
    srv.add_service("hold", lambda x: go.wait(WAIT) and x)
    cli = node_factory("cli")
    cli.wait_for_service("hold", timeout=WAIT)
    try:
        with pytest.raises(easymesh.RequestTimeout):
            cli.request("hold", 1, timeout=math.nan)
        nan_future = cli.request_future("hold", 2, timeout=math.nan)
        with pytest.raises(easymesh.RequestTimeout):
            nan_future.result(timeout=WAIT)
        short = cli.request_future("hold", 3, timeout=0.2)
        with pytest.raises(easymesh.RequestTimeout):
            short.result(timeout=WAIT)
        with pytest.raises(easymesh.RequestTimeout):
            cli.ping("srv", timeout=math.nan)
    finally:
        go.set()
