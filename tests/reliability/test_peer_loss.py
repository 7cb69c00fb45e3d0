"""Issue 3, item 4: losing a peer.

A sender in its own process sends to listeners in other processes every 5 ms.
kill -9 one listener: the sender neither raises nor blocks, and the coordinator
drops the dead node at once (the socket closes). Freeze another with SIGSTOP (a
half-open peer: its sockets stay open): the coordinator drops it within a few
heartbeat periods; after SIGCONT it registers again and is reached again. A
listener restarted under the same name is reached again.
"""

from __future__ import annotations

import signal
import time

import pytest

import easymesh

from .procs import wait_until

HB = 0.5
FIGURES: dict[str, float] = {}


def _count(listener, src: str = "sender") -> int:
    return listener.command("recv", "RECV")["t"].get(src, {}).get("count", 0)


def _names(n: easymesh.Node) -> list[str]:
    return sorted(x.name for x in n.nodes())


@pytest.mark.timeout(150)
def test_killed_frozen_and_restarted_listeners(coordinator_factory, agent):
    coord = coordinator_factory(heartbeat_interval=HB)
    a = agent("victim-a", coord.address, heartbeat=HB, listen=("t",))
    b = agent("victim-b", coord.address, heartbeat=HB, listen=("t",))
    sender = agent("sender", coord.address, heartbeat=HB)
    sender.command("sendloop t 0.005", "LOOPING")
    assert wait_until(lambda: _count(a) > 10 and _count(b) > 10, 15)
    with easymesh.Node("watcher", coordinator=coord.address, heartbeat_interval=HB, watch="all") as w:
        # kill -9: the coordinator sees the socket close and drops it at once
        a.kill()
        t0 = time.monotonic()
        assert wait_until(lambda: "victim-a" not in _names(w), 15)
        FIGURES["killed_dropped_after_s"] = round(time.monotonic() - t0, 2)
        assert coord.wait_for_log("'victim-a'", 5)

        # SIGSTOP: nothing closes; only the heartbeat timeout finds it
        before_b = _count(b)
        b.signal(signal.SIGSTOP)
        t0 = time.monotonic()
        try:
            assert wait_until(lambda: "victim-b" not in _names(w), 30 * HB)
            frozen_drop = time.monotonic() - t0
            FIGURES["frozen_dropped_after_s"] = round(frozen_drop, 2)
            FIGURES["frozen_dropped_after_heartbeats"] = round(frozen_drop / HB, 1)
            assert coord.wait_for_log("heartbeat timeout", 5)
        finally:
            b.signal(signal.SIGCONT)
        # thawed, it notices its coordinator link is gone, registers again, and is reached
        t0 = time.monotonic()
        assert wait_until(lambda: "victim-b" in _names(w), 20)
        assert wait_until(lambda: _count(b) > before_b + 50, 20)
        FIGURES["thawed_reached_after_s"] = round(time.monotonic() - t0, 2)

        # a new process with the dead listener's name is reached again
        t0 = time.monotonic()
        a2 = agent("victim-a", coord.address, heartbeat=HB, listen=("t",))
        assert wait_until(lambda: _count(a2) > 10, 20)
        FIGURES["restarted_reached_after_s"] = round(time.monotonic() - t0, 2)
        assert wait_until(lambda: _names(w) == ["sender", "victim-a", "victim-b", "watcher"], 10), _names(w)

    stopped = sender.command("stopsend", "STOPPED")
    st = sender.command("stats", "STATS")
    FIGURES["sender_slowest_send_ms"] = round(stopped["max_send_s"] * 1000, 1)
    FIGURES["sender_dropped"] = st["dropped_outbound"]
    print(f"\npeer loss: {FIGURES}")
    assert stopped["n_errors"] == 0, stopped["errors"]  # send() never raised
    assert stopped["max_send_s"] < 2  # nor blocked
    recv_b = b.command("recv", "RECV")["t"]["sender"]
    assert recv_b["disorder"] == 0  # per-sender order, across the freeze
