"""Authentication on every link: right key, wrong key, missing key, env var."""

from __future__ import annotations

import time

import pytest

import easymesh

from .helpers import Collector


@pytest.fixture
def secure(coordinator_factory):
    return coordinator_factory(authkey="s3cret")


def test_right_key_works_end_to_end(secure):
    c = Collector()
    with easymesh.Node("r", coordinator=secure.address, authkey="s3cret") as r, \
            easymesh.Node("s", coordinator=secure.address, authkey=b"s3cret") as s:
        r.listen("t", c)
        r.add_service("echo", lambda d: d)
        s.wait_for_listener("t", timeout=10)
        s.send("t", "hi")
        assert c.wait_for(1) == ["hi"]
        s.wait_for_service("echo", timeout=10)
        assert s.request("echo", 1, timeout=10) == 1


@pytest.mark.parametrize("key", ["wrong", None])
def test_wrong_or_missing_key_fails_promptly(secure, key):
    t0 = time.monotonic()
    with pytest.raises(easymesh.AuthenticationError) as info:
        easymesh.Node("intruder", coordinator=secure.address, authkey=key, connect_timeout=10)
    assert time.monotonic() - t0 < 5
    assert "authkey" in str(info.value)
    assert secure.wait_for_log("authentication failed" if key else "requires one")


def test_key_on_node_but_not_on_coordinator(coordinator):
    with pytest.raises(easymesh.AuthenticationError, match="does not authenticate"):
        easymesh.Node("n", coordinator=coordinator.address, authkey="k", connect_timeout=5)


def test_authkey_from_environment(secure, monkeypatch):
    monkeypatch.setenv("EASYMESH_AUTHKEY", "s3cret")
    monkeypatch.setenv("EASYMESH_COORDINATOR", secure.address)
    with easymesh.Node("env") as n:
        assert n.coordinator == secure.address


def test_peer_links_are_authenticated_too(secure):
    """A node that somehow knows a peer's address but not the key gets nothing."""
    import socket

    from easymesh.protocol.auth import ClientHandshake
    from easymesh.protocol.frames import HANDSHAKE_TYPES, FrameDecoder

    with easymesh.Node("r", coordinator=secure.address, authkey="s3cret") as r:
        r.listen("t", lambda t, d: None)
        info = next(n for n in r.nodes() if n.id == r.id)
        host, port = info.tcp.rsplit(":", 1)
        sock = socket.create_connection((host, int(port)), timeout=5)
        try:
            hs = ClientHandshake(b"wrong")
            sock.sendall(hs.start())
            dec = FrameDecoder(max_body=256, allowed_types=HANDSHAKE_TYPES)
            while True:
                data = sock.recv(4096)
                assert data
                dec.feed(data)
                frame = dec.next_frame()
                if frame:
                    break
            with pytest.raises(easymesh.AuthenticationError):
                hs.receive(frame)
        finally:
            sock.close()
