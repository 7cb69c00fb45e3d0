"""Issue 3, item 1: hostile input on every listening port, with and without an authkey.

Ports: the coordinator's TCP port, a node's TCP port and a node's Unix socket (the
node runs in its own process). Every attack in hostile.py runs at once against
the port; each connection must be closed by the server and logged once, no
thread may die, no process may exit, memory must stay bounded, and with an
authkey nothing from an unauthenticated peer is decoded (a pickle that would
create a marker directory never does). Afterwards the mesh still works.
"""

from __future__ import annotations

import os
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import easymesh

from . import hostile
from .procs import cpu_seconds, proc_status, wait_until

KEY = "k3y-for-tests"
FIGURES: dict[str, Any] = {}


def _connector(kind: str, address: Any) -> Any:
    def connect() -> socket.socket:
        if kind == "unix":
            deadline = time.monotonic() + 10
            while True:
                s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                s.settimeout(10)
                try:
                    s.connect(address)
                    return s
                except BlockingIOError:  # the backlog is full: the server is still accepting
                    s.close()
                    if time.monotonic() > deadline:
                        raise
                    time.sleep(0.01)
        return socket.create_connection(address, timeout=10)

    return connect


def _unix_address(endpoint: str) -> str:
    return "\0" + endpoint[1:] if endpoint.startswith("@") else endpoint


@pytest.fixture(params=[None, KEY], ids=["no-key", "key"])
def authkey(request: pytest.FixtureRequest) -> str | None:
    return request.param


def _target(port: str, authkey: str | None, coordinator_factory: Any, agent: Any) -> dict[str, Any]:
    coord = coordinator_factory(authkey=authkey)
    peer = agent("victim", coord.address, authkey=authkey, listen=("t",), service=("echo:echo",))
    if port == "coordinator":
        return {"pid": coord.pid, "log": lambda: coord.log, "kind": "tcp",
                "address": ("127.0.0.1", coord.port), "coord": coord, "peer": peer}
    if port == "node-tcp":
        host, p = peer.info["tcp"].rsplit(":", 1)
        return {"pid": peer.pid, "log": lambda: peer.log, "kind": "tcp", "address": (host, int(p)),
                "coord": coord, "peer": peer}
    return {"pid": peer.pid, "log": lambda: peer.log, "kind": "unix",
            "address": _unix_address(peer.info["unix"]), "coord": coord, "peer": peer}


def _mesh_still_works(coord: Any, peer: Any, authkey: str | None) -> None:
    with easymesh.Node("after-attack", coordinator=coord.address, authkey=authkey) as n:
        n.wait_for_listener("t", timeout=15)
        n.send("t", {"src": "after-attack", "seq": 0})
        n.wait_for_service("echo", timeout=15)
        assert n.request("echo", 42, timeout=15) == 42
        assert wait_until(lambda: "after-attack" in peer.command("recv", "RECV")["t"], 15)


@pytest.mark.timeout(120)
@pytest.mark.parametrize("port", ["coordinator", "node-tcp", "node-unix"])
def test_hostile_inputs_on_every_port(port, authkey, coordinator_factory, agent, tmp_path):
    target = _target(port, authkey, coordinator_factory, agent)
    pid = target["pid"]
    attacks = hostile.corpus(str(tmp_path))
    if authkey:
        attacks += hostile.keyed_corpus(str(tmp_path))
    else:
        attacks += hostile.session_corpus(str(tmp_path))
        if port == "coordinator":
            attacks += hostile.coordinator_session_corpus()
    before = proc_status(pid)
    peak = [before["vmrss"]]
    sampling = threading.Event()

    def sample() -> None:
        while not sampling.wait(0.1):
            try:
                peak[0] = max(peak[0], proc_status(pid)["vmrss"])
            except OSError:
                return

    sampler = threading.Thread(target=sample, name="test-rss-sampler")
    sampler.start()
    t0 = time.monotonic()
    try:
        with ThreadPoolExecutor(len(attacks), thread_name_prefix="test-attack") as pool:
            outcomes = list(pool.map(
                lambda a: hostile.run_attack(_connector(target["kind"], target["address"]), a), attacks))
    finally:
        sampling.set()
        sampler.join(5)
    elapsed = time.monotonic() - t0

    not_closed = [(o.attack, o.detail) for o in outcomes if not o.closed]
    assert not not_closed, f"connections the server never closed: {not_closed}"
    assert os.path.exists(f"/proc/{pid}"), "the target process exited"
    after = proc_status(pid)
    assert after["threads"] == before["threads"], "a thread died or was left behind"
    assert not os.path.exists(tmp_path / "pwned"), "a pickle from an attacker was decoded"
    _mesh_still_works(target["coord"], target["peer"], authkey)

    log = target["log"]()
    assert "Traceback" not in log and "handler failed" not in log, log[-3000:]
    if target["kind"] == "tcp":
        # every hostile connection leaves exactly one line naming its address
        lines = log.splitlines()
        counts = {o.attack: sum(1 for ln in lines if o.local in ln) for o in outcomes}
        assert all(c == 1 for c in counts.values()), {a: c for a, c in counts.items() if c != 1}
    else:
        assert wait_until(lambda: target["log"]().count(f"pid={os.getpid()}") >= len(attacks), 5)
    growth_mb = (peak[0] - before["vmrss"]) / 1024
    assert growth_mb < 100, f"RSS grew by {growth_mb:.0f} MB under attack"
    label = f"{port}/{'key' if authkey else 'no-key'}"
    FIGURES[label] = {
        "inputs": len(attacks), "rss_before_mb": before["vmrss"] // 1024,
        "rss_peak_mb": peak[0] // 1024, "seconds": round(elapsed, 1),
        "slowest_close_s": round(max(o.seconds for o in outcomes), 1),
    }
    print(f"\nhostile {label}: {FIGURES[label]}")


@pytest.mark.timeout(120)
@pytest.mark.parametrize("port", ["coordinator", "node-tcp", "node-unix"])
def test_connection_flood_costs_little_memory(port, coordinator_factory, agent):
    """1,000 idle connections at once: each costs a socket and a small buffer, not a
    full read buffer; the handshake timeout then closes them all and the port works."""
    target = _target(port, None, coordinator_factory, agent)
    pid = target["pid"]
    before = proc_status(pid)
    connect = _connector(target["kind"], target["address"])
    socks = []
    try:
        for _ in range(1000):
            socks.append(connect())
        assert wait_until(lambda: proc_status(pid)["fds"] >= before["fds"] + 1000, 20)
        time.sleep(0.5)
        growth_mb = (proc_status(pid)["vmrss"] - before["vmrss"]) / 1024
        FIGURES[f"flood-{port}"] = {"rss_before_mb": before["vmrss"] // 1024, "growth_mb": round(growth_mb, 1)}
        print(f"\nflood {port}: {FIGURES[f'flood-{port}']}")
        assert growth_mb < 64, f"1,000 idle connections cost {growth_mb:.0f} MB"
        # the handshake timeout (or the coordinator's heartbeat sweep) closes them all
        assert wait_until(lambda: proc_status(pid)["fds"] <= before["fds"] + 5, 30)
    finally:
        for s in socks:
            s.close()
    _mesh_still_works(target["coord"], target["peer"], None)


@pytest.mark.timeout(90)
def test_out_of_file_descriptors_does_not_spin(coordinator_factory):
    """With its fd limit reached, the coordinator pauses accepting instead of spinning
    on EMFILE (one log line per episode, little CPU), and recovers."""
    import resource

    coord = coordinator_factory()
    resource.prlimit(coord.pid, resource.RLIMIT_NOFILE, (64, 64))
    socks = []
    try:
        for _ in range(150):
            socks.append(socket.create_connection(("127.0.0.1", coord.port), timeout=10))
        cpu0, t0 = cpu_seconds(coord.pid), time.monotonic()
        time.sleep(3)
        busy = (cpu_seconds(coord.pid) - cpu0) / (time.monotonic() - t0)
        FIGURES["emfile-cpu-share"] = round(busy, 2)
        assert busy < 0.5, f"the coordinator used {busy:.0%} of a core while out of fds"
    finally:
        for s in socks:
            s.close()
    assert wait_until(lambda: proc_status(coord.pid)["fds"] < 20, 30)
    with easymesh.Node("after-emfile", coordinator=coord.address, connect_timeout=15) as n:
        assert any(x.id == n.id for x in n.nodes())
    episodes = coord.log.count("cannot accept")
    assert 1 <= episodes <= 20, f"{episodes} 'cannot accept' lines"


@pytest.fixture(scope="module")
def fuzz_targets() -> Any:
    """A coordinator with a key, one without, and a node (own process) on the latter."""
    from tests.conftest import CoordinatorProcess

    from .procs import Proc, agent_argv

    keyed, open_ = CoordinatorProcess(authkey=KEY), CoordinatorProcess()
    peer = Proc(agent_argv("fuzzed", open_.address, listen=("t",), service=("echo:echo",)))
    info = peer.expect("READY", 30)
    host, port = info["tcp"].rsplit(":", 1)
    targets = {
        "coordinator-key": (socket.AF_INET, ("127.0.0.1", keyed.port), keyed.proc),
        "coordinator-no-key": (socket.AF_INET, ("127.0.0.1", open_.port), open_.proc),
        "node-tcp-no-key": (socket.AF_INET, (host, int(port)), peer.proc),
        "node-unix-no-key": (socket.AF_UNIX, _unix_address(info["unix"]), peer.proc),
    }
    yield targets
    peer.stop()
    keyed.stop()
    open_.stop()


@pytest.mark.timeout(300)
@pytest.mark.parametrize("target", ["coordinator-key", "coordinator-no-key", "node-tcp-no-key", "node-unix-no-key"])
@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.one_of(
    st.binary(max_size=2048),
    st.builds(lambda t, n, b, tail: hostile._header(t, n, b) + tail,
              st.integers(0, 255), st.integers(0, 0xFFFF), st.integers(0, 0xFFFFFFFF), st.binary(max_size=300)),
))
def test_wire_fuzz(fuzz_targets, target, data):
    """Arbitrary bytes (and arbitrary headers) straight at a live port, then EOF: the
    server closes the connection and stays up."""
    family, address, proc = fuzz_targets[target]
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.settimeout(10)
        s.connect(address)
        try:
            s.sendall(data)
            s.shutdown(socket.SHUT_WR)
            while s.recv(4096):
                pass
        except OSError:
            pass  # reset: closed on us, which is what we want
    assert proc.poll() is None
