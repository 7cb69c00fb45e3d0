"""Issue 3, item 7: across hosts, with Linux network namespaces.

Three "hosts" (namespaces A, B, C) hang off a bridge in a fourth ("hub") by veth
pairs, 10.200.0.1-3/24: traffic never leaves these namespaces. A runs the
coordinator and listener "a"; B runs the sender/client "b"; C runs listener and
service "c". Nodes on different namespaces have different host keys, so every
link between them is TCP.

* topics and services cross hosts;
* cut B's link for longer than the heartbeat timeout, restore it: the mesh heals
  (the coordinator dropped b and takes it back; a and c hear from b again);
* cut A's link (the coordinator's host): b and c go on talking directly, and all
  re-register when it comes back.

Needs root and iproute2; skipped with the reason otherwise. Marked ``netns``.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from typing import Any

import pytest

from .procs import coordinator_argv, coordinator_port, wait_until

pytestmark = pytest.mark.netns

HB = 0.5
DOWN = float(os.environ.get("EASYMESH_NETNS_DOWN", "4"))  # seconds a link stays cut (> 4 x HB)
FIGURES: dict[str, float] = {}


def _ip(*args: str) -> None:
    out = subprocess.run(["ip", *args], capture_output=True, text=True, timeout=20)
    if out.returncode != 0:
        raise RuntimeError(f"ip {' '.join(args)}: {out.stderr.strip()}")


class Hosts:
    """Namespaces A, B, C on a bridge; ``prefix(h)`` runs a command on host ``h``."""

    def __init__(self) -> None:
        tag = f"emrel{os.getpid()}"
        self.ns = {h: f"{tag}-{h}" for h in ("hub", "a", "b", "c")}
        self.ip = {"a": "10.200.0.1", "b": "10.200.0.2", "c": "10.200.0.3"}
        self.created: list[str] = []

    def create(self) -> None:
        for ns in self.ns.values():
            _ip("netns", "add", ns)
            self.created.append(ns)
            _ip("-n", ns, "link", "set", "lo", "up")
        hub = self.ns["hub"]
        _ip("-n", hub, "link", "add", "br0", "type", "bridge")
        _ip("-n", hub, "link", "set", "br0", "up")
        for h, addr in self.ip.items():
            _ip("link", "add", "veth0", "netns", self.ns[h], "type", "veth", "peer", "name", f"port-{h}",
                "netns", hub)
            _ip("-n", hub, "link", "set", f"port-{h}", "master", "br0", "up")
            _ip("-n", self.ns[h], "addr", "add", f"{addr}/24", "dev", "veth0")
            _ip("-n", self.ns[h], "link", "set", "veth0", "up")

    def prefix(self, h: str) -> list[str]:
        return ["ip", "netns", "exec", self.ns[h]]

    def link(self, h: str, up: bool, how: str = "down") -> None:
        """Cut or restore host ``h``'s link: ``down`` sets its interface down (the host
        sees it: no route, sends fail at once); ``blackhole`` detaches its port from the
        bridge (the host sees nothing: packets vanish, like a cable cut further away)."""
        if how == "down":
            _ip("-n", self.ns[h], "link", "set", "veth0", "up" if up else "down")
        elif up:
            _ip("-n", self.ns["hub"], "link", "set", f"port-{h}", "master", "br0")
        else:
            _ip("-n", self.ns["hub"], "link", "set", f"port-{h}", "nomaster")

    def destroy(self) -> None:
        for ns in reversed(self.created):
            pids = subprocess.run(["ip", "netns", "pids", ns], capture_output=True, text=True).stdout.split()
            for pid in pids:  # only processes this test started live in these namespaces
                try:
                    os.kill(int(pid), 9)
                except (ProcessLookupError, ValueError):
                    pass
            subprocess.run(["ip", "netns", "del", ns], capture_output=True, timeout=20)


@pytest.fixture
def hosts() -> Iterator[Hosts]:
    if os.geteuid() != 0:
        pytest.skip("network-namespace tests need root (ip netns add)")
    if shutil.which("ip") is None:
        pytest.skip("network-namespace tests need iproute2's `ip` command")
    h = Hosts()
    try:
        h.create()
    except (RuntimeError, OSError, subprocess.TimeoutExpired) as exc:
        h.destroy()
        pytest.skip(f"cannot create network namespaces here: {exc}")
    yield h
    h.destroy()


def _count(p: Any, topic: str, src: str) -> int:
    return p.command("recv", "RECV")[topic].get(src, {}).get("count", 0)


def _names(p: Any) -> list[str]:
    return sorted(n["name"] for n in p.command("nodes", "NODES"))


@pytest.mark.timeout(180)
@pytest.mark.parametrize("how", ["down", "blackhole"])
def test_mesh_across_namespaces_heals_after_link_loss(hosts, spawn, agent, how):
    coord = spawn(coordinator_argv(hosts.ip["a"], heartbeat=HB), prefix=hosts.prefix("a"), interrupt=True)
    address = f"{hosts.ip['a']}:{coordinator_port(coord)}"
    a = agent("a", address, prefix=hosts.prefix("a"), heartbeat=HB, listen=("t",))
    c = agent("c", address, prefix=hosts.prefix("c"), heartbeat=HB, listen=("t",), service=("echo:echo",))
    b = agent("b", address, prefix=hosts.prefix("b"), heartbeat=HB)
    assert a.info["tcp"].startswith(hosts.ip["a"]) and c.info["tcp"].startswith(hosts.ip["c"])

    # topics and services cross hosts (over TCP: b cannot even see the others' Unix sockets)
    assert wait_until(lambda: _names(b) == ["a", "b", "c"], 15)
    b.command("sendloop t 0.01", "LOOPING")
    assert wait_until(lambda: _count(a, "t", "b") > 20 and _count(c, "t", "b") > 20, 15)
    reply = b.command('request echo 10 "across"', "REPLY")
    assert reply["ok"] and reply["result"] == "'across'", reply

    # cut B off for longer than the heartbeat timeout
    hosts.link("b", up=False, how=how)
    t_cut = time.monotonic()
    assert coord.wait_for_log("heartbeat timeout", 15)
    assert wait_until(lambda: "b" not in _names(a), 10)
    time.sleep(max(0.0, DOWN - (time.monotonic() - t_cut)))  # the outage lasts DOWN seconds
    before_a, before_c = _count(a, "t", "b"), _count(c, "t", "b")
    hosts.link("b", up=True, how=how)
    t_up = time.monotonic()
    assert wait_until(lambda: _count(a, "t", "b") > before_a and _count(c, "t", "b") > before_c, 60)
    heal_topic = time.monotonic() - t_up
    assert wait_until(lambda: b.command('request echo 5 "back"', "REPLY")["ok"], 60)
    FIGURES["link_b_heal_topic_s"] = round(heal_topic, 2)
    FIGURES["link_b_heal_service_s"] = round(time.monotonic() - t_up, 2)
    assert wait_until(lambda: _names(a) == ["a", "b", "c"] == _names(c) == _names(b), 30)

    # cut the coordinator's host: b and c talk on without it
    hosts.link("a", up=False, how=how)
    assert b.wait_for_log("lost the coordinator", 15) and c.wait_for_log("lost the coordinator", 15)
    before_c = _count(c, "t", "b")
    assert wait_until(lambda: _count(c, "t", "b") > before_c + 50, 15)
    assert b.command('request echo 5 "no-coordinator"', "REPLY")["ok"]
    hosts.link("a", up=True, how=how)
    t_up = time.monotonic()
    assert wait_until(lambda: _names(a) == ["a", "b", "c"] == _names(c) == _names(b), 60)
    before_a = _count(a, "t", "b")
    assert wait_until(lambda: _count(a, "t", "b") > before_a, 60)
    FIGURES["link_a_heal_s"] = round(time.monotonic() - t_up, 2)

    stopped = b.command("stopsend", "STOPPED")
    print(f"\nnetns {how} (down {DOWN:g} s): {FIGURES}; sender: {stopped}")
    assert stopped["n_errors"] == 0, stopped["errors"]
    assert stopped["max_send_s"] < 2
    for p in (a, c):
        assert p.command("recv", "RECV")["t"]["b"]["disorder"] == 0
