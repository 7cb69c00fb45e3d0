"""The handshake as pure steps: right key, wrong key, missing key, reflection, freshness."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from easymesh.errors import AuthenticationError, ProtocolError
from easymesh.protocol import frames as F
from easymesh.protocol.auth import VERSION, ClientHandshake, ServerHandshake
from easymesh.protocol.frames import FrameDecoder


def frames_of(data: bytes):
    d = FrameDecoder(max_body=F.HANDSHAKE_MAX_BODY, allowed_types=F.HANDSHAKE_TYPES)
    d.feed(data)
    return d.frames()


def run(client_key, server_key):
    c = ClientHandshake(client_key)
    s = ServerHandshake(server_key)
    (hello,) = frames_of(c.start())
    out, done = s.receive(hello)
    (shello,) = frames_of(out)
    auth = c.receive(shello)
    if auth:
        (a,) = frames_of(auth)
        out, done = s.receive(a)
    return c, s, done


def test_no_key_both_sides():
    c, s, done = run(None, None)
    assert c.done and s.done and done


def test_same_key():
    c, s, done = run(b"secret", b"secret")
    assert c.done and s.done and done


def test_wrong_key_detected_by_client_first():
    with pytest.raises(AuthenticationError, match="different authkey"):
        run(b"secret", b"other")


def test_wrong_client_proof_rejected_by_server():
    c = ClientHandshake(b"k1")
    s = ServerHandshake(b"k1")
    (hello,) = frames_of(c.start())
    out, _ = s.receive(hello)
    c.receive(frames_of(out)[0])
    forged = F.frame_bytes(F.AUTH, body=b"\0" * 32)
    with pytest.raises(AuthenticationError):
        s.receive(frames_of(forged)[0])


def test_missing_key_on_client():
    with pytest.raises(AuthenticationError, match="no authkey"):
        run(None, b"secret")


def test_client_with_key_refuses_unauthenticated_server():
    with pytest.raises(AuthenticationError, match="does not authenticate"):
        run(b"secret", None)


def test_reflection_attack_fails():
    """An attacker replays the server's own challenge to it over a second connection
    and forwards the answer: the proofs are bound to role and nonces, so it fails."""
    key = b"secret"
    victim = ServerHandshake(key)
    attacker_nonce = b"A" * 32
    hello1 = frames_of(ClientHandshake(None, nonce=attacker_nonce).start())[0]
    hello1 = hello1._replace(body=b"EMSH" + bytes((VERSION, 1)) + attacker_nonce)
    out1, _ = victim.receive(hello1)
    s_nonce = frames_of(out1)[0].body[6:38]
    # second connection: send the server's nonce as our nonce
    victim2 = ServerHandshake(key)
    hello2 = hello1._replace(body=b"EMSH" + bytes((VERSION, 1)) + bytes(s_nonce))
    out2, _ = victim2.receive(hello2)
    proof_from_2 = frames_of(out2)[0].body[38:70]
    # try to use server-2's proof as our client proof on connection 1
    with pytest.raises(AuthenticationError):
        victim.receive(F.Frame(F.AUTH, 0, b"", 0, bytes(proof_from_2)))


def test_server_rejects_its_own_nonce_reflected():
    s = ServerHandshake(b"k")
    hello = F.Frame(F.HELLO, 0, b"", 0, b"EMSH" + bytes((VERSION, 1)) + s.nonce)
    with pytest.raises(AuthenticationError):
        s.receive(hello)


def test_nonces_are_fresh():
    assert len({ClientHandshake(b"k").nonce for _ in range(50)}) == 50
    assert len({ServerHandshake(b"k").nonce for _ in range(50)}) == 50


def test_version_mismatch():
    s = ServerHandshake(None)
    with pytest.raises(ProtocolError, match="version"):
        s.receive(F.Frame(F.HELLO, 0, b"", 0, b"EMSH\x09\x00" + b"n" * 32))


def test_error_frame_from_server_is_reported():
    c = ClientHandshake(None)
    c.start()
    with pytest.raises(AuthenticationError):
        c.receive(F.Frame(F.ERROR, 0, b"", 0, b"authentication failed: wrong authkey"))


@settings(max_examples=300, deadline=None)
@given(st.sampled_from([F.HELLO, F.AUTH, F.ERROR]), st.binary(max_size=F.HANDSHAKE_MAX_BODY),
       st.booleans())
def test_arbitrary_handshake_frames(ftype, body, with_key):
    """Any handshake frame gives a clean error or a valid step; never anything else."""
    key = b"k" if with_key else None
    frame = F.Frame(ftype, 0, b"", 0, body)
    for hs in (ServerHandshake(key),):
        try:
            hs.receive(frame)
        except (ProtocolError, AuthenticationError):
            pass
    c = ClientHandshake(key)
    c.start()
    try:
        c.receive(frame)
    except (ProtocolError, AuthenticationError):
        pass
    else:
        assert not with_key  # a random frame can never authenticate
