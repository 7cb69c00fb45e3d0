"""The connection handshake as pure steps: version check and mutual HMAC-SHA256 auth.

Every link (node to coordinator, node to node) starts with this exchange; the
side that connected is the *client*, the side that accepted is the *server*::

    client -> server  HELLO  magic "EMSH", version, flags, nonce_c (32 random bytes)
    server -> client  HELLO  magic "EMSH", version, flags, nonce_s [, proof_s]
    client -> server  AUTH   proof_c                     (only when an authkey is used)

HELLO body layout (all sizes in bytes)::

    0  4   magic b"EMSH"
    4  1   protocol version (VERSION: 2; a peer of another version is refused)
    5  1   flags: bit 0 = "I use an authkey"
    6  32  nonce
    38 32  proof (server HELLO only, when the server uses an authkey)

    proof_s = HMAC-SHA256(key, b"easymesh-1 server" + nonce_c + nonce_s)
    proof_c = HMAC-SHA256(key, b"easymesh-1 client" + nonce_c + nonce_s)

The role label and both nonces are bound into each proof, so a proof seen on
one connection is worth nothing on another, and a server's challenge
reflected back at it does not produce a client proof. The server proves
first: a client with the wrong key learns it at once, before it sends data.
A client that has a key refuses a server that does not authenticate (so it
never decodes data from an unauthenticated peer), and a server that has a
key refuses a client without one. Nonces are fresh for every connection.

What this does not do: encrypt, or stop a man in the middle from relaying or
reading traffic. See the README's security notes.
"""

from __future__ import annotations

import hashlib
import hmac
import os

from easymesh.errors import AuthenticationError, ProtocolError
from easymesh.escape import printable
from easymesh.protocol.frames import AUTH, ERROR, HELLO, Frame, frame_bytes

MAGIC = b"EMSH"
#: 2 since shared memory is negotiated per link on demand (SHM_ASK, 2026-12-01): a node of
#: version 1 would send its arena's fd to a plain read and have its links closed; the
#: handshake refuses the mix instead, with a message that says why.
VERSION = 2
NONCE_SIZE = 32
PROOF_SIZE = 32
FLAG_AUTH = 0x01
_HELLO_SIZE = 4 + 1 + 1 + NONCE_SIZE
_SERVER_LABEL = b"easymesh-1 server"
_CLIENT_LABEL = b"easymesh-1 client"


def _proof(key: bytes, label: bytes, nonce_c: bytes, nonce_s: bytes) -> bytes:
    return hmac.new(key, label + nonce_c + nonce_s, hashlib.sha256).digest()


def _hello_body(flags: int, nonce: bytes, proof: bytes = b"") -> bytes:
    return MAGIC + bytes((VERSION, flags)) + nonce + proof


def _parse_hello(frame: Frame) -> tuple[int, bytes, bytes]:
    """(flags, nonce, proof) from a HELLO frame; raises ProtocolError or AuthenticationError."""
    if frame.type == ERROR:
        reason = printable(frame.body[:200])
        if "auth" in reason.lower():
            raise AuthenticationError(f"peer refused the handshake: {reason}")
        raise ProtocolError(f"peer refused the handshake: {reason}")
    if frame.type != HELLO:
        raise ProtocolError(f"expected HELLO, got frame type {frame.type}")
    body = bytes(frame.body)
    if len(body) < _HELLO_SIZE or body[:4] != MAGIC:
        raise ProtocolError("not an easymesh peer (bad HELLO)")
    if body[4] != VERSION:
        raise ProtocolError(f"peer speaks protocol version {body[4]}, this node speaks {VERSION}")
    flags = body[5]
    nonce = body[6:_HELLO_SIZE]
    proof = body[_HELLO_SIZE:]
    if len(proof) not in (0, PROOF_SIZE):
        raise ProtocolError("bad HELLO length")
    return flags, nonce, proof


def error_frame(reason: str) -> bytes:
    """An ERROR frame carrying ``reason`` (sent just before closing a connection)."""
    return frame_bytes(ERROR, body=reason.encode("utf-8")[:200])


class ClientHandshake:
    """The connecting side. ``start()`` gives the first bytes; feed the server's HELLO
    to ``receive()``, which returns the bytes to send next (maybe empty) and marks
    the handshake done, or raises AuthenticationError / ProtocolError."""

    def __init__(self, authkey: bytes | None, nonce: bytes | None = None) -> None:
        self.authkey = authkey
        self.nonce = nonce if nonce is not None else os.urandom(NONCE_SIZE)
        self.done = False

    def start(self) -> bytes:
        return frame_bytes(HELLO, body=_hello_body(FLAG_AUTH if self.authkey else 0, self.nonce))

    def receive(self, frame: Frame) -> bytes:
        if self.done:
            raise ProtocolError("handshake already complete")
        flags, nonce_s, proof_s = _parse_hello(frame)
        server_auth = bool(flags & FLAG_AUTH)
        if not self.authkey:
            if server_auth:
                raise AuthenticationError(
                    "the peer requires an authkey and none is set "
                    "(pass authkey=... or set EASYMESH_AUTHKEY)"
                )
            self.done = True
            return b""
        if not server_auth:
            raise AuthenticationError(
                "an authkey is set but the peer does not authenticate; refusing to talk to it"
            )
        if len(proof_s) != PROOF_SIZE or nonce_s == self.nonce:
            raise AuthenticationError("the peer sent a malformed authentication proof")
        expected = _proof(self.authkey, _SERVER_LABEL, self.nonce, nonce_s)
        if not hmac.compare_digest(expected, proof_s):
            raise AuthenticationError("authentication failed: the peer uses a different authkey")
        self.done = True
        return frame_bytes(AUTH, body=_proof(self.authkey, _CLIENT_LABEL, self.nonce, nonce_s))


class ServerHandshake:
    """The accepting side. Feed each handshake frame to ``receive()``; it returns
    ``(bytes_to_send, done)`` or raises AuthenticationError / ProtocolError (send
    :func:`error_frame` and close)."""

    def __init__(self, authkey: bytes | None, nonce: bytes | None = None) -> None:
        self.authkey = authkey
        self.nonce = nonce if nonce is not None else os.urandom(NONCE_SIZE)
        self.done = False
        self._nonce_c: bytes | None = None

    def receive(self, frame: Frame) -> tuple[bytes, bool]:
        if self.done:
            raise ProtocolError("handshake already complete")
        if self._nonce_c is None:
            flags, nonce_c, proof = _parse_hello(frame)
            if proof:
                raise ProtocolError("client HELLO must not carry a proof")
            if nonce_c == self.nonce:
                raise AuthenticationError("reflected nonce")
            if not self.authkey:
                if flags & FLAG_AUTH:
                    # The client insists on auth; it will refuse us. Answer anyway so it can say why.
                    pass
                self._nonce_c = nonce_c
                self.done = True
                return frame_bytes(HELLO, body=_hello_body(0, self.nonce)), True
            if not flags & FLAG_AUTH:
                raise AuthenticationError("client has no authkey but this peer requires one")
            self._nonce_c = nonce_c
            proof_s = _proof(self.authkey, _SERVER_LABEL, nonce_c, self.nonce)
            return frame_bytes(HELLO, body=_hello_body(FLAG_AUTH, self.nonce, proof_s)), False
        if frame.type != AUTH:
            if frame.type == ERROR:
                reason = printable(frame.body[:200])
                raise AuthenticationError(f"client gave up the handshake: {reason}")
            raise ProtocolError(f"expected AUTH, got frame type {frame.type}")
        expected = _proof(self.authkey, _CLIENT_LABEL, self._nonce_c, self.nonce)  # type: ignore[arg-type]
        if not hmac.compare_digest(expected, bytes(frame.body)):
            raise AuthenticationError("authentication failed: wrong authkey")
        self.done = True
        return b"", True
