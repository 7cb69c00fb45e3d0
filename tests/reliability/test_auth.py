"""Issue 3, item 2: authentication over real sockets, beyond tests/integration/test_auth.py.

Here: node-to-node links across processes over TCP and Unix sockets, the
coordinator and the node saying who failed and from where, a reflection attack
on a live coordinator and a live node, fresh nonces on every link (server and
client side), and a node refusing a server that cannot prove it knows the key.
"""

from __future__ import annotations

import os
import socket
import threading
import time
from typing import Any

import pytest

import easymesh
from easymesh.protocol import frames as F
from easymesh.protocol.auth import FLAG_AUTH, MAGIC, VERSION
from easymesh.protocol.frames import frame_bytes

from .hostile import _read_frame
from .procs import wait_until

KEY = "s3cret-reliability"


def _unix(endpoint: str) -> str:
    return "\0" + endpoint[1:] if endpoint.startswith("@") else endpoint


def _server_hello(address: Any, family: int = socket.AF_INET, nonce: bytes | None = None) -> tuple[socket.socket, bytes, bytes]:
    """Open a connection, send a HELLO claiming a key; (socket, server nonce, server proof)."""
    s = socket.socket(family, socket.SOCK_STREAM)
    s.settimeout(10)
    s.connect(address)
    s.sendall(frame_bytes(F.HELLO, body=MAGIC + bytes((VERSION, FLAG_AUTH)) + (nonce or os.urandom(32))))
    hello = _read_frame(s, time.monotonic() + 10)
    assert hello.type == F.HELLO, hello
    body = bytes(hello.body)
    return s, body[6:38], body[38:70]


def _refused(s: socket.socket) -> bytes:
    """Everything the server sends until it closes (its ERROR frame)."""
    out = b""
    try:
        while chunk := s.recv(4096):
            out += chunk
    except OSError:
        pass
    return out


@pytest.fixture
def secure(coordinator_factory):
    return coordinator_factory(authkey=KEY)


def test_right_key_across_processes_over_unix_and_tcp(secure, agent):
    peer = agent("keyed", secure.address, authkey=KEY, listen=("t",), service=("echo:echo",))
    for transport in ("auto", "tcp"):  # auto: the Unix socket on this host
        with easymesh.Node(f"client-{transport}", coordinator=secure.address, authkey=KEY,
                           transport=transport) as n:
            n.wait_for_service("echo", timeout=15)
            assert n.request("echo", transport, timeout=15) == transport
            n.wait_for_listener("t", timeout=15)
            n.send("t", {"src": transport, "seq": 1})
            assert wait_until(lambda t=transport: t in peer.command("recv", "RECV")["t"], 15)


@pytest.mark.parametrize("key", ["wrong-key", None])
def test_wrong_or_missing_key_is_refused_promptly_and_logged_with_the_address(secure, key):
    t0 = time.monotonic()
    with pytest.raises(easymesh.AuthenticationError):
        easymesh.Node("intruder", coordinator=secure.address, authkey=key, connect_timeout=10)
    assert time.monotonic() - t0 < 8
    assert secure.wait_for_log("authentication failed")
    line = next(ln for ln in secure.log.splitlines() if "authentication failed" in ln)
    assert "connection from 127.0.0.1:" in line, line


def test_peer_link_with_the_wrong_key_is_refused_and_logged_by_the_node(secure, agent):
    from easymesh.protocol.auth import ClientHandshake, error_frame

    peer = agent("victim", secure.address, authkey=KEY, listen=("t",))
    for family, address in ((socket.AF_UNIX, _unix(peer.info["unix"])),
                            (socket.AF_INET, tuple(peer.info["tcp"].rsplit(":", 1)))):
        if family == socket.AF_INET:
            address = (address[0], int(address[1]))
        with socket.socket(family, socket.SOCK_STREAM) as s:
            s.settimeout(10)
            s.connect(address)
            hs = ClientHandshake(b"wrong-key")
            s.sendall(hs.start())
            with pytest.raises(easymesh.AuthenticationError) as info:
                hs.receive(_read_frame(s, time.monotonic() + 10))
            s.sendall(error_frame(f"authentication failed: {info.value}"))  # as a real node does
    assert wait_until(lambda: peer.log.count("authentication failed") >= 2, 10), peer.log[-2000:]
    assert f"pid={os.getpid()}" in peer.log  # the Unix-socket peer is named by its pid


@pytest.mark.parametrize("where", ["coordinator", "node"])
def test_reflection_attack_on_a_live_port_fails(secure, agent, where):
    """Connection 1 gets the server's challenge; the attacker replays it as its own nonce
    on connection 2 to make the server compute a proof, and sends that proof back on
    connection 1. Also: the server's own proof sent back to it. Both are refused."""
    if where == "coordinator":
        family, address = socket.AF_INET, ("127.0.0.1", secure.port)
        log = lambda: secure.log  # noqa: E731
    else:
        peer = agent("victim", secure.address, authkey=KEY)
        family, address = socket.AF_UNIX, _unix(peer.info["unix"])
        log = lambda: peer.log  # noqa: E731
    s1, nonce_s1, proof_s1 = _server_hello(address, family)
    s2, _, proof_s2 = _server_hello(address, family, nonce=nonce_s1)
    s3, _, proof_s3 = _server_hello(address, family)
    try:
        s1.sendall(frame_bytes(F.AUTH, body=proof_s2))  # the server's answer to its own challenge
        s3.sendall(frame_bytes(F.AUTH, body=proof_s3))  # the server's proof, reflected as is
        assert b"authentication failed" in _refused(s1)
        assert b"authentication failed" in _refused(s3)
    finally:
        for s in (s1, s2, s3):
            s.close()
    assert wait_until(lambda: log().count("authentication failed") >= 2, 10)


def test_every_link_uses_fresh_server_nonces(secure, agent):
    peer = agent("victim", secure.address, authkey=KEY)
    seen: set[bytes] = set()
    targets = [(socket.AF_INET, ("127.0.0.1", secure.port)), (socket.AF_UNIX, _unix(peer.info["unix"]))]
    for family, address in targets:
        for _ in range(50):
            s, nonce, proof = _server_hello(address, family)
            s.close()
            assert len(nonce) == 32 and len(proof) == 32
            assert nonce not in seen
            seen.add(nonce)


def test_every_connection_attempt_uses_a_fresh_client_nonce():
    """A fake coordinator records each HELLO a node sends while it retries."""
    server = socket.create_server(("127.0.0.1", 0))
    server.settimeout(0.2)
    nonces: list[bytes] = []
    stop = threading.Event()

    def accept_loop() -> None:
        while not stop.is_set():
            try:
                conn, _ = server.accept()
            except OSError:
                continue
            with conn:
                try:
                    hello = _read_frame(conn, time.monotonic() + 5)
                    nonces.append(bytes(hello.body[6:38]))
                except OSError:
                    pass

    t = threading.Thread(target=accept_loop, name="test-fake-coordinator")
    t.start()
    try:
        with pytest.raises(easymesh.CoordinatorUnavailable):
            easymesh.Node("retrier", coordinator=f"127.0.0.1:{server.getsockname()[1]}", authkey=KEY,
                          connect_timeout=3)
    finally:
        stop.set()
        t.join(5)
        server.close()
    assert len(nonces) >= 3, nonces
    assert len(set(nonces)) == len(nonces)


def test_node_refuses_a_server_that_cannot_prove_the_key():
    """Mutual authentication: a fake coordinator that claims a key but answers with a
    made-up proof is refused by the node, promptly, before it sends anything else."""
    server = socket.create_server(("127.0.0.1", 0))
    received: list[bytes] = []

    def serve() -> None:
        conn, _ = server.accept()
        with conn:
            _read_frame(conn, time.monotonic() + 10)
            conn.sendall(frame_bytes(F.HELLO, body=MAGIC + bytes((VERSION, FLAG_AUTH)) + os.urandom(64)))
            conn.settimeout(5)
            try:
                while chunk := conn.recv(4096):
                    received.append(chunk)
            except OSError:
                pass

    t = threading.Thread(target=serve, name="test-fake-coordinator")
    t.start()
    t0 = time.monotonic()
    try:
        with pytest.raises(easymesh.AuthenticationError, match="different authkey"):
            easymesh.Node("careful", coordinator=f"127.0.0.1:{server.getsockname()[1]}", authkey=KEY,
                          connect_timeout=10)
        assert time.monotonic() - t0 < 8
    finally:
        t.join(10)
        server.close()
    sent = b"".join(received)
    assert sent[:1] in (b"", bytes((F.ERROR,))), f"the node sent {sent[:40]!r} to an unproven server"
