"""Issue 12: a hostile peer that *knows the mesh key*, against a real coordinator process
and real node processes.

What it tries, and what must happen:

* take a live node's id at the coordinator (no secret, a guessed one): refused with a
  clear ERROR, the victim keeps its record and its traffic;
* the genuine node, back on a new connection with its secret, gets its id back (the
  old connection is closed) — with raw registrations and with a real Node whose old
  link is left half-open;
* a second Register on one link: refused, and the first record leaves with the link;
* endpoints that point anywhere but at the registering node: refused;
* too many topics, too large a record, a mesh filled to its limits: refused with clear
  errors (a real ``Node()`` gets RegistrationRefused with the reason at once); once the
  filler leaves, a real node joins a mesh whose Welcome takes several frames;
* requests whose replies it never reads (must-deliver frames): the node disconnects it
  once its queue passes the bound, and its memory stays under the stated bound;
* a frame header announcing a large body, then silence: the link is closed after the
  heartbeat timeout and the wait costs little memory (node and coordinator);
* newlines in a node name, a host name, an ERROR reason: never a second log line.

The key reaches every process through ``$EASYMESH_AUTHKEY``, never a command line.
"""

from __future__ import annotations

import json
import os
import pickle
import socket
import sys
from typing import Any

import pytest

from easymesh.protocol import frames as F
from easymesh.protocol.auth import FLAG_AUTH
from easymesh.protocol.codecs import PICKLE_ID
from easymesh.protocol.frames import ERROR, REQUEST, TOPIC, frame_bytes
from easymesh.protocol.messages import Update

from . import hostile
from .keyholder import KeyHolder, new_id, record
from .procs import AGENT, Proc, coordinator_port, wait_until

KEY = "keyholder-test-key"
COORDPROC = os.path.join(os.path.dirname(os.path.abspath(__file__)), "coordproc.py")
ENV = {"EASYMESH_AUTHKEY": KEY}


def start_coordinator(spawn: Any, **opts: Any) -> tuple[Proc, tuple[str, int]]:
    proc = spawn([sys.executable, COORDPROC, json.dumps(opts)], env=ENV, interrupt=True)
    return proc, ("127.0.0.1", coordinator_port(proc))


def start_agent(spawn: Any, name: str, addr: tuple[str, int], *args: str) -> Proc:
    proc = spawn([sys.executable, AGENT, "--name", name, "--coordinator", f"{addr[0]}:{addr[1]}", *args],
                 env=ENV)
    proc.info = proc.expect("READY", 30)
    return proc


def topology(addr: tuple[str, int]) -> dict[str, Any]:
    """The topology as a fresh registration sees it (the observer leaves at once)."""
    with KeyHolder(addr, KEY) as kh:
        kh.register(record(name="observer"))
        kind, parts = kh.answer()
        assert kind == "welcome", parts
        return {n.id: n for p in parts for n in p.nodes if n.name != "observer"}


def refusal(addr: tuple[str, int], node: Any, secret: str = "") -> str:
    """Register ``node`` on a new link; the ERROR reason (the link must then close)."""
    with KeyHolder(addr, KEY) as kh:
        kh.register(node, secret)
        kind, reason = kh.answer()
        assert kind == "error", (kind, reason)
        assert kh.closed_by_server()
        return str(reason)


def tcp_of(agent: Proc) -> tuple[str, int]:
    host, port = agent.info["tcp"].rsplit(":", 1)
    return host, int(port)


# -- identity ------------------------------------------------------------------------------------


def test_a_live_id_cannot_be_taken_without_its_secret(spawn: Any) -> None:
    coord, addr = start_coordinator(spawn)
    victim = start_agent(spawn, "victim", addr, "--listen", "news")
    sender = start_agent(spawn, "sender", addr)
    vid = victim.info["id"]
    for secret in ("", "a-guessed-secret"):
        why = refusal(addr, record(vid, name="impostor", topics=frozenset({"news"})), secret)
        assert why.startswith("refused:") and "another connection" in why
    topo = topology(addr)
    assert topo[vid].name == "victim" and topo[vid].tcp == victim.info["tcp"]
    # The victim's traffic still reaches the victim.
    sender.command("send news 20 10", "SENT")
    assert wait_until(lambda: victim.command("recv", "RECV")["news"].get("sender", {}).get("count") == 20, 20)
    assert "another connection" in coord.log


def test_the_same_node_reclaims_its_id_with_its_secret(spawn: Any) -> None:
    coord, addr = start_coordinator(spawn)
    nid = new_id()
    with KeyHolder(addr, KEY) as old, KeyHolder(addr, KEY) as new:
        old.register(record(nid, name="genuine"), "the-secret")
        assert old.answer()[0] == "welcome"
        # The node gave up on `old` (a half-open link the coordinator has not noticed)
        # and comes back on a new connection with its secret.
        new.register(record(nid, name="genuine", tcp="127.0.0.1:10"), "the-secret")
        assert new.answer()[0] == "welcome"
        assert old.closed_by_server()
        why = refusal(addr, record(nid, name="thief"), "another-secret")
        assert "another connection" in why
        topo = topology(addr)
        assert topo[nid].name == "genuine" and topo[nid].tcp == "127.0.0.1:10"
    assert wait_until(lambda: nid not in topology(addr), 20)  # gone with its connection
    assert "registered again" in coord.log


def test_a_real_node_gets_its_id_back_after_a_half_open_link(spawn: Any) -> None:
    """A Node in this process: its coordinator socket is duplicated (so closing it sends
    no FIN: the coordinator still sees the old link alive), then the node drops the
    link and reconnects. Only its secret lets it register its id again."""
    import easymesh
    from easymesh.errors import ConnectionLost

    coord, addr = start_coordinator(spawn)
    with easymesh.Node("halfopen", coordinator=f"{addr[0]}:{addr[1]}", authkey=KEY) as node:
        node.add_service("echo", lambda d: d)
        old = node._p.coordinator._conn  # the live coordinator link (coordclient.py)
        assert old is not None and old.sock is not None
        stale = os.dup(old.sock.fileno())
        try:
            old.close(ConnectionLost("test: the node gives up on this link"))
            assert coord.wait_for_log("registered again", 30), coord.log[-2000:]
            caller = start_agent(spawn, "caller", addr)
            reply = caller.command("request echo 20 7", "REPLY")
            assert reply["ok"] and reply["result"] == "7"
            assert [n.name for n in topology(addr).values()].count("halfopen") == 1
        finally:
            os.close(stale)


def test_one_registration_per_connection(spawn: Any) -> None:
    _, addr = start_coordinator(spawn)
    first, second = new_id(), new_id()
    with KeyHolder(addr, KEY) as kh:
        kh.register(record(first))
        assert kh.answer()[0] == "welcome"
        kh.register(record(second))
        kind, why = kh.answer()
        assert kind == "error" and "already registered" in why
        assert kh.closed_by_server()
    topo = topology(addr)
    assert first not in topo and second not in topo  # no ghost: the record left with its link


@pytest.mark.parametrize("field, value", [
    ("tcp", "localhost:22"),
    ("tcp", "127.0.0.1:0"),
    ("unix", "/var/run/docker.sock"),
    ("unix", "@easymesh-0123456789abcdef"),  # someone else's socket
    ("unix", "/tmp/1-0123456789abcdef.sock"),
])
def test_endpoints_that_point_elsewhere_are_refused(spawn: Any, field: str, value: str) -> None:
    _, addr = start_coordinator(spawn)
    nid = new_id()
    why = refusal(addr, record(nid, **{field: value}))
    assert "endpoint" in why
    assert nid not in topology(addr)


def test_another_nodes_tcp_endpoint_is_refused(spawn: Any) -> None:
    """A record may only point at its own node: the TCP endpoint a live node advertises
    (in any spelling that reaches the same socket) is refused for anyone else, at
    registration and in an Update, so peers never dial the victim for the impostor."""
    import easymesh

    _, addr = start_coordinator(spawn)
    with easymesh.Node("victim", coordinator=f"{addr[0]}:{addr[1]}", authkey=KEY) as victim:
        victim.listen("news", lambda topic, data: None)
        tcp = victim._p.router.tcp_endpoint
        host, port = tcp.rsplit(":", 1)
        for value in (tcp, f"[::ffff:{host}]:{port}"):
            why = refusal(addr, record(tcp=value, topics=frozenset({"news"})))
            assert why.startswith("refused:") and "endpoint" in why, why
        with KeyHolder(addr, KEY) as kh:
            nid = new_id()
            kh.register(record(nid))
            assert kh.answer()[0] == "welcome"
            kh.send_control(Update(record(nid, tcp=tcp)))
            kind, why = kh.answer()
            assert kind == "error" and "endpoint" in why, (kind, why)
        assert [n.id for n in topology(addr).values() if n.tcp == tcp] == [victim.id]
        # The genuine node keeps its endpoint through its own Updates.
        victim.listen("more", lambda topic, data: None)
        assert wait_until(lambda: "more" in topology(addr)[victim.id].topics, 20)


# -- limits --------------------------------------------------------------------------------------


def test_limits_are_refused_clearly_and_the_mesh_stays_joinable(spawn: Any) -> None:
    limits = {"max_topics": 100, "max_record_bytes": 20_000, "max_topology_bytes": 300_000,
              "welcome_part_bytes": 32_768}
    coord, addr = start_coordinator(spawn, **limits)
    assert "topics" in refusal(addr, record(topics=frozenset(f"t{i}" for i in range(101))))
    assert "record" in refusal(addr, record(topics=frozenset(f"{i:04d}" + "t" * 996 for i in range(30))))
    fillers: list[KeyHolder] = []
    try:
        for n in range(40):  # records of ~19 kB until the mesh is full
            kh = KeyHolder(addr, KEY)
            kh.register(record(topics=frozenset(f"{n:03d}-{i:03d}" + "t" * 993 for i in range(19))))
            kind, answer = kh.answer()
            if kind == "error":
                assert "the mesh is full" in answer
                break
            fillers.append(kh)
        else:
            pytest.fail("the topology grew without limit")
        assert len(fillers) > 10
        for kh in fillers[:3]:  # some leave: their records go with them
            kh.close()
        fillers = fillers[3:]
        assert wait_until(lambda: len(topology(addr)) == len(fillers), 20)
        # A real node joins; the Welcome it gets takes several frames.
        with KeyHolder(addr, KEY) as probe:
            probe.register(record(name="probe"))
            kind, parts = probe.answer()
            assert kind == "welcome" and len(parts) > 3
        joiner = start_agent(spawn, "joiner", addr)
        seen = joiner.command("nodes", "NODES")
        assert len(seen) == len(fillers) + 1
    finally:
        for kh in fillers:
            kh.close()
    assert "refused: the mesh is full" in coord.log


def test_a_real_node_refused_by_the_coordinator_fails_at_once_with_the_reason(spawn: Any) -> None:
    """The node that exceeds a limit is told so: ``Node()`` raises RegistrationRefused with
    the coordinator's reason at once, instead of retrying until ``connect_timeout`` and
    reporting the coordinator as unavailable."""
    import time

    import easymesh

    coord, addr = start_coordinator(spawn, max_nodes=1)
    start_agent(spawn, "first", addr)
    start = time.monotonic()
    with pytest.raises(easymesh.RegistrationRefused, match="the mesh is full"):
        easymesh.Node("second", coordinator=f"{addr[0]}:{addr[1]}", authkey=KEY, connect_timeout=20)
    assert time.monotonic() - start < 10.0
    assert "refused: the mesh is full" in coord.log


# -- memory --------------------------------------------------------------------------------------


def test_a_peer_that_stops_reading_replies_is_disconnected(spawn: Any) -> None:
    """200 requests for 1 MB replies, never read: without a bound on must-deliver frames
    the server would queue 200 MB. It must disconnect us once its queue passes
    ``max_pending`` (8 MB here), and its memory must stay under baseline + 8 MB + 60 MB
    (socket buffers, one reply being encoded per worker, allocator slack)."""
    _, addr = start_coordinator(spawn)
    server = start_agent(spawn, "server", addr, "--service", "big:big", "--max-pending", str(8 << 20))
    base = server.status()["vmrss"]
    with KeyHolder(tcp_of(server), KEY) as kh:
        kh.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)
        body = pickle.dumps(1_000_000)
        peak = 0
        try:
            for rid in range(1, 201):
                kh.send_frame(REQUEST, b"big", body, PICKLE_ID, rid)
                if rid % 20 == 0:
                    peak = max(peak, server.status()["vmrss"])
        except OSError:
            pass  # it hung up on us while we were still sending: what we want
        assert server.wait_for_log("stopped reading", 60), server.log[-3000:]
        peak = max(peak, server.status()["vmrss"])
    assert peak - base < (8 << 10) + 60 * 1024, f"RSS grew by {peak - base} kB"
    caller = start_agent(spawn, "caller", addr)
    reply = caller.command("request big 20 10", "REPLY")
    assert reply["ok"], reply  # the server still serves everyone else


@pytest.mark.parametrize("target", ["node", "coordinator"])
def test_a_stalled_partial_frame_closes_the_link(spawn: Any, target: str) -> None:
    """A header announcing 200 MB, ten bytes of body, then nothing: closed after the
    heartbeat timeout (4 x 0.5 s here), and the wait costs less than 8 MB."""
    coord, addr = start_coordinator(spawn, heartbeat_interval=0.5)
    victim = start_agent(spawn, "victim", addr, "--heartbeat", "0.5")
    proc, where = (victim, tcp_of(victim)) if target == "node" else (coord, addr)
    base = proc.status()["vmrss"]
    with KeyHolder(where, KEY) as kh:
        ftype, name = (TOPIC, b"t") if target == "node" else (F.CONTROL, b"register")
        kh.send_raw(F.HEADER.pack(ftype, PICKLE_ID, len(name), 200 << 20, 0) + name + b"x" * 10)
        grew = proc.status()["vmrss"] - base
        assert kh.closed_by_server(30), "the stalled link was never closed"
    assert grew < 8 * 1024, f"RSS grew by {grew} kB for a frame that never came"
    if target == "node":  # logged before the close; its stderr line may still be in flight
        assert victim.wait_for_log("partial frame received nothing", 30), victim.log[-3000:]


@pytest.mark.parametrize("target", ["coordinator", "node"])
def test_a_control_body_that_expands_when_decoded_is_refused(spawn: Any, target: str) -> None:
    """15 MB of empty msgpack arrays in one CONTROL frame (a Register to the coordinator,
    an Ident to a node) decode into 15 million lists: about 900 MB and ten seconds on the
    I/O thread, long enough for the coordinator to drop every node as silent. The frame
    must be refused at once and nobody dropped (heartbeat timeout 2 s here)."""
    import msgpack

    coord, addr = start_coordinator(spawn, heartbeat_interval=0.5)
    victim = start_agent(spawn, "victim", addr, "--heartbeat", "0.5")
    op, where = (b"register", addr) if target == "coordinator" else (b"ident", tcp_of(victim))
    bomb = msgpack.packb({f"k{i}": [[]] * 1_000_000 for i in range(15)})  # within every limit
    with KeyHolder(where, KEY) as kh:
        kh.send_frame(F.CONTROL, op, bomb)
        assert kh.closed_by_server(60), "the link that sent the bomb stayed open"
    assert victim.info["id"] in topology(addr)  # also: the coordinator ran its sweep since
    assert "dropping node 'victim'" not in coord.log, coord.log[-2000:]


# -- logs ----------------------------------------------------------------------------------------


def test_newlines_from_a_peer_never_make_a_log_line(spawn: Any) -> None:
    coord, addr = start_coordinator(spawn)
    # A name and a host name with newlines: registered, then leaving (two log lines).
    with KeyHolder(addr, KEY) as kh:
        kh.register(record(name="evil\nFORGED name line", hostname="host\nFORGED host line"))
        assert kh.answer()[0] == "welcome"
    assert coord.wait_for_log("left", 20)
    # An ERROR reason during the handshake (before authenticating).
    with socket.create_connection(addr, timeout=10) as s:
        s.sendall(hostile._hello(flags=FLAG_AUTH))
        s.recv(4096)
        s.sendall(frame_bytes(ERROR, body=b"bye\nFORGED error line\r\nFORGED again"))
        s.settimeout(10)
        while s.recv(4096):
            pass
    assert coord.wait_for_log("gave up the handshake", 20), coord.log[-2000:]
    # A refusal (its reason echoes nothing unchecked, but it is logged too).
    refusal(addr, record(tcp="evil.example:1"))
    lines = coord.log.splitlines()
    assert not [line for line in lines if line.startswith("FORGED")], coord.log
    assert "\\x0aFORGED name line" in coord.log and "\\x0aFORGED host line" in coord.log
    assert "\\x0aFORGED error line" in coord.log
