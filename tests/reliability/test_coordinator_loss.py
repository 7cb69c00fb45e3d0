"""Issue 3, item 3: losing the coordinator.

kill -9 the coordinator while two node processes talk: they keep delivering to
each other (topics and services); restart it on the same port: the old nodes
register again and a brand-new node reaches them within 10 s. Also a frozen
(SIGSTOP) coordinator: nodes notice the silence, and all heals after SIGCONT.
"""

from __future__ import annotations

import os
import signal
import time

import pytest

import easymesh

from .procs import wait_until

HB = 0.5  # heartbeat interval of the coordinator and of every node in these tests
DOWN = 3.0  # seconds the coordinator stays dead: nodes back off to their longest retry delay
FIGURES: dict[str, float] = {}


def _count(listener, src: str) -> int:
    return listener.command("recv", "RECV")["t"].get(src, {}).get("count", 0)


def _new_node_reaches(address: str, listener, t0: float) -> float:
    """Seconds from ``t0`` until a brand-new node has registered, seen the old ones
    and talked to them (topic delivered, service answered)."""
    with easymesh.Node("newcomer", coordinator=address, heartbeat_interval=HB, connect_timeout=20) as n:
        n.wait_for_listener("t", timeout=20)
        n.wait_for_service("echo", timeout=20)
        assert n.request("echo", "hi", timeout=10) == "hi"
        n.send("t", {"src": "newcomer", "seq": 0})
        assert wait_until(lambda: _count(listener, "newcomer") == 1, 10)
        return time.monotonic() - t0


def _topology_settles(address: str, names: set[str]) -> None:
    """The coordinator ends up with exactly these nodes (plus the checking node), once each."""
    with easymesh.Node("checker", coordinator=address, heartbeat_interval=HB, watch="all") as n:
        want = sorted(names | {"checker"})
        assert wait_until(lambda: sorted(x.name for x in n.nodes()) == want, 15), n.nodes()


@pytest.mark.timeout(120)
def test_coordinator_kill_and_restart_on_the_same_port(coordinator_factory, agent):
    coord = coordinator_factory(heartbeat_interval=HB)
    port = coord.port
    listener = agent("listener", coord.address, heartbeat=HB, listen=("t",), service=("echo:echo",))
    sender = agent("sender", coord.address, heartbeat=HB)
    sender.command("sendloop t 0.01", "LOOPING")
    assert wait_until(lambda: _count(listener, "sender") > 10, 15)

    coord.kill()  # SIGKILL
    t_kill = time.monotonic()
    before = _count(listener, "sender")
    # the nodes notice (they log it) and keep talking to each other meanwhile
    assert listener.wait_for_log("lost the coordinator", 15)
    assert wait_until(lambda: _count(listener, "sender") > before + 50, 15)
    reply = sender.command("request echo 10 \"while-away\"", "REPLY")
    assert reply["ok"], reply
    time.sleep(max(0.0, DOWN - (time.monotonic() - t_kill)))  # the outage lasts DOWN seconds

    coord2 = coordinator_factory(port=port, heartbeat_interval=HB)
    t_restart = time.monotonic()
    assert listener.wait_for_log("registered again", 20) and sender.wait_for_log("registered again", 20)
    heal = _new_node_reaches(coord2.address, listener, t_restart)
    FIGURES["coordinator_restart_heal_s"] = round(heal, 2)
    FIGURES["coordinator_down_s"] = round(t_restart - t_kill, 2)
    print(f"\ncoordinator loss: {FIGURES}")
    assert heal < 10, f"a new node reached the old ones {heal:.1f} s after the restart"
    _topology_settles(coord2.address, {"listener", "sender"})

    stopped = sender.command("stopsend", "STOPPED")
    assert stopped["n_errors"] == 0, stopped["errors"]
    assert stopped["max_send_s"] < 2
    # per-sender order held throughout
    assert listener.command("recv", "RECV")["t"]["sender"]["disorder"] == 0


@pytest.mark.timeout(120)
def test_frozen_coordinator(coordinator_factory, agent):
    coord = coordinator_factory(heartbeat_interval=HB)
    listener = agent("listener", coord.address, heartbeat=HB, listen=("t",), service=("echo:echo",))
    sender = agent("sender", coord.address, heartbeat=HB)
    sender.command("sendloop t 0.01", "LOOPING")
    os.kill(coord.pid, signal.SIGSTOP)
    try:
        # a silent coordinator is detected by the nodes' own heartbeat (4 intervals)
        assert listener.wait_for_log("lost the coordinator", 20), listener.log[-2000:]
        before = _count(listener, "sender")
        assert wait_until(lambda: _count(listener, "sender") > before + 50, 15)
    finally:
        os.kill(coord.pid, signal.SIGCONT)
    t_cont = time.monotonic()
    heal = _new_node_reaches(coord.address, listener, t_cont)
    FIGURES["frozen_coordinator_heal_s"] = round(heal, 2)
    print(f"\nfrozen coordinator: healed {heal:.2f} s after SIGCONT")
    assert heal < 10
    _topology_settles(coord.address, {"listener", "sender"})
    stopped = sender.command("stopsend", "STOPPED")
    assert stopped["n_errors"] == 0, stopped["errors"]


@pytest.mark.timeout(60)
def test_coordinator_heartbeat_shorter_than_the_nodes(coordinator_factory, agent):
    """`easymesh --heartbeat-interval 0.2` with nodes at the default 1 s: the nodes must
    not be dropped (and re-register, and lose their peer links) every second."""
    coord = coordinator_factory(heartbeat_interval=0.2)
    n = agent("default-heartbeat", coord.address, listen=("t",))  # heartbeat 1 s
    time.sleep(4)  # observe: twenty coordinator heartbeat timeouts' worth of time
    assert "dropping" not in coord.log, coord.log[-1000:]
    assert "lost the coordinator" not in n.log
