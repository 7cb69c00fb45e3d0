"""A corpus of hostile inputs for any easymesh listening port, and a runner.

Each :class:`Attack` opens one connection, optionally completes a *keyless*
handshake first (only meaningful against a server without an authkey), sends
its payload, optionally drips more bytes slowly, and then waits for the server
to close the connection. The runner reports whether and when it did.
"""

from __future__ import annotations

import gzip
import os
import pickle
import random
import socket
import struct
import time
from collections.abc import Callable
from dataclasses import dataclass

from easymesh.protocol import frames as F
from easymesh.protocol.auth import FLAG_AUTH, MAGIC, VERSION, ClientHandshake
from easymesh.protocol.frames import FrameDecoder, frame_bytes

HEADER = struct.Struct("<BBHIQ")


@dataclass(frozen=True)
class Attack:
    name: str
    payload: bytes = b""
    drip: bytes = b""  # sent one byte per `drip_interval` seconds after the payload
    drip_interval: float = 1.0
    after_handshake: bool = False  # complete a keyless handshake first
    key_hello: bool = False  # send a HELLO that claims a key, read the server's HELLO, then the payload
    half_close: bool = False  # shut down our sending side after the payload
    reflect_proof: bool = False  # answer with the server's own proof (key_hello only)


@dataclass
class Outcome:
    attack: str
    closed: bool
    seconds: float
    local: str  # our address, as the server logs it
    detail: str = ""


class Marker:
    """A pickle that creates ``path`` when unpickled: proof that something decoded it."""

    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self):  # type: ignore[no-untyped-def]
        return (os.mkdir, (self.path,))


def _hello(flags: int = 0, nonce: bytes | None = None, magic: bytes = MAGIC, version: int = VERSION,
           extra: bytes = b"") -> bytes:
    return frame_bytes(F.HELLO, body=magic + bytes((version, flags)) + (nonce or os.urandom(32)) + extra)


def _header(ftype: int, nlen: int, blen: int, codec: int = 0, rid: int = 0) -> bytes:
    return HEADER.pack(ftype, codec, nlen, blen, rid)


def corpus(marker_dir: str) -> list[Attack]:
    """Attacks that make sense against any port, with or without an authkey."""
    rnd = random.Random(1234)
    rb = lambda n: bytes(rnd.getrandbits(8) for _ in range(n))  # noqa: E731
    rce = pickle.dumps(Marker(os.path.join(marker_dir, "pwned")), protocol=2)
    bomb = gzip.compress(b"\0" * (64 << 20), 9)  # 64 MiB of zeros in ~64 KiB
    valid_hello = _hello()
    attacks = [
        Attack("idle"),
        Attack("random-1", rb(1)),
        Attack("random-16", rb(16)),
        Attack("random-4k", rb(4096)),
        Attack("random-1M", os.urandom(1 << 20)),
        Attack("zeros-64k", b"\0" * 65536),
        Attack("ones-64k", b"\xff" * 65536),
        Attack("http-get", b"GET / HTTP/1.1\r\nHost: localhost\r\nUser-Agent: curl/8\r\n\r\n"),
        Attack("http-post", b"POST /x HTTP/1.1\r\nContent-Length: 99999999\r\n\r\n" + rb(512)),
        Attack("tls-client-hello", bytes.fromhex("16030100c4010000c00303") + rb(180)),
        Attack("ssh-banner", b"SSH-2.0-OpenSSH_9.6\r\n"),
        Attack("u64-length-2^63-le", struct.pack("<Q", 1 << 63) + rb(64)),
        Attack("u64-length-2^63-be", struct.pack(">Q", 1 << 63) + rb(64)),
        Attack("hello-body-len-max", _header(F.HELLO, 0, 0xFFFFFFFF, rid=1 << 63) + rb(1024)),
        Attack("hello-oversized-body", _header(F.HELLO, 0, 257) + rb(257)),
        Attack("hello-1M-body", _header(F.HELLO, 0, 1 << 20) + os.urandom(1 << 20)),
        Attack("hello-max-name", _header(F.HELLO, 0xFFFF, 38) + b"n" * 4096),
        Attack("truncated-header", valid_hello[:10]),
        Attack("truncated-hello", valid_hello[:30]),
        Attack("truncated-hello-half-close", valid_hello[:30], half_close=True),
        Attack("bad-magic", _hello(magic=b"HTTP")),
        Attack("bad-version", _hello(version=99)),
        Attack("short-hello", frame_bytes(F.HELLO, body=MAGIC + b"\x01")),
        Attack("client-hello-with-proof", _hello(extra=os.urandom(32))),
        Attack("auth-first", frame_bytes(F.AUTH, body=os.urandom(32))),
        Attack("error-first", frame_bytes(F.ERROR, body=b"authentication failed: nope")),
        Attack("ping-first", frame_bytes(F.PING)),
        Attack("control-register-first",
               frame_bytes(F.CONTROL, b"register", b"\x81\xa4node\x82\xa2id\xa1x\xa4name\xa1y")),
        Attack("pickle-rce-topic", frame_bytes(F.TOPIC, b"t", rce, codec=1)),
        Attack("pickle-rce-request", frame_bytes(F.REQUEST, b"echo", rce, codec=1, request_id=1)),
        Attack("pickle-in-hello-body", frame_bytes(F.HELLO, body=rce[:256])),
        Attack("gzip-bomb-topic", frame_bytes(F.TOPIC, b"t", bomb, codec=1)),
        Attack("gzip-bomb-control", frame_bytes(F.CONTROL, b"register", bomb)),
        Attack("slowloris-hello", drip=valid_hello),
        Attack("slowloris-http", drip=b"GET / HTTP/1.1\r\n\r\n"),
        Attack("many-small-writes", drip=rb(40), drip_interval=0.05),
    ]
    return attacks


def keyed_corpus(marker_dir: str) -> list[Attack]:
    """Attacks on a server that has an authkey, by a client that does not know it."""
    rce = pickle.dumps(Marker(os.path.join(marker_dir, "pwned")), protocol=2)
    return [
        Attack("keyless-hello", _hello(flags=0)),
        Attack("key-hello-then-pickle-topic", frame_bytes(F.TOPIC, b"t", rce, codec=1), key_hello=True),
        Attack("key-hello-then-register", frame_bytes(
            F.CONTROL, b"register", b"\x81\xa4node\x82\xa2id\xa1x\xa4name\xa1y"), key_hello=True),
        Attack("key-hello-then-zero-proof", frame_bytes(F.AUTH, body=b"\0" * 32), key_hello=True),
        Attack("key-hello-then-long-proof", frame_bytes(F.AUTH, body=os.urandom(200)), key_hello=True),
        Attack("key-hello-then-reflected-proof", key_hello=True, reflect_proof=True),
        Attack("key-hello-then-silence", key_hello=True),
        Attack("key-hello-then-hello", _hello(flags=FLAG_AUTH), key_hello=True),
    ]


def session_corpus(marker_dir: str) -> list[Attack]:
    """Attacks after a successful keyless handshake (servers without an authkey)."""
    rnd = random.Random(99)
    rb = lambda n: bytes(rnd.getrandbits(8) for _ in range(n))  # noqa: E731
    bomb = gzip.compress(b"\0" * (64 << 20), 9)
    return [
        Attack("session-random-4k", b"\x63" + rb(4095), after_handshake=True),
        Attack("session-unknown-type", frame_bytes(99, b"x", b"y"), after_handshake=True),
        Attack("session-body-len-max", _header(F.TOPIC, 1, 0xFFFFFFFF) + b"t", after_handshake=True),
        Attack("session-hello-again", _hello(), after_handshake=True),
        Attack("session-auth-again", frame_bytes(F.AUTH, body=os.urandom(32)), after_handshake=True),
        Attack("session-control-garbage", frame_bytes(F.CONTROL, b"register", rb(300)), after_handshake=True),
        Attack("session-control-unknown-op", frame_bytes(F.CONTROL, b"rm -rf", b"\x80"), after_handshake=True),
        Attack("session-control-gzip-bomb", frame_bytes(F.CONTROL, b"register", bomb), after_handshake=True),
        Attack("session-control-deep-nesting", frame_bytes(F.CONTROL, b"ident", b"\x91" * 200_000),
               after_handshake=True),
        Attack("session-control-huge-array", frame_bytes(F.CONTROL, b"ident", b"\xdd\xff\xff\xff\xff"),
               after_handshake=True),
        Attack("session-control-wrong-types",
               frame_bytes(F.CONTROL, b"ident", b"\x82\xa2id\x01\xa4name\xc0"), after_handshake=True),
    ]


def coordinator_session_corpus() -> list[Attack]:
    """Session attacks only the coordinator is expected to close (it knows every peer
    must register): a slowloris inside a frame, and frames a coordinator never takes."""
    return [
        Attack("session-slowloris-frame", _header(F.CONTROL, 8, 1000) + b"register", drip=b"x" * 60,
               after_handshake=True),
        Attack("session-no-register", after_handshake=True),
        Attack("session-topic-to-coordinator", frame_bytes(F.TOPIC, b"t", b"x", 1), after_handshake=True),
        Attack("session-update-unregistered", frame_bytes(
            F.CONTROL, b"update", b"\x81\xa4node\x82\xa2id\xa1x\xa4name\xa1y"), after_handshake=True),
    ]


def _read_frame(sock: socket.socket, deadline: float) -> F.Frame:
    dec = FrameDecoder(max_body=F.HANDSHAKE_MAX_BODY, allowed_types=F.HANDSHAKE_TYPES)
    while True:
        frame = dec.next_frame()
        if frame is not None:
            return frame
        sock.settimeout(max(0.01, deadline - time.monotonic()))
        data = sock.recv(4096)
        if not data:
            raise ConnectionError("closed during the handshake")
        dec.feed(data)


def _closed(sock: socket.socket) -> bool:
    """Whether the server closed the connection (non-blocking check; drains data)."""
    try:
        sock.setblocking(False)
        while True:
            data = sock.recv(65536)
            if not data:
                return True
    except (BlockingIOError, InterruptedError):
        return False
    except OSError:
        return True
    finally:
        sock.setblocking(True)


def run_attack(connect: Callable[[], socket.socket], attack: Attack, limit: float = 20.0) -> Outcome:
    """Run one attack; wait up to ``limit`` seconds for the server to close the connection."""
    sock = connect()
    local = sock.getsockname()
    local_s = f"{local[0]}:{local[1]}" if isinstance(local, tuple) else "unix"
    t0 = time.monotonic()
    deadline = t0 + limit
    detail = ""
    try:
        try:
            if attack.after_handshake:
                hs = ClientHandshake(None)
                sock.sendall(hs.start())
                hs.receive(_read_frame(sock, deadline))
                t0 = time.monotonic()
            payload = attack.payload
            if attack.key_hello:
                nonce = os.urandom(32)
                sock.sendall(_hello(flags=FLAG_AUTH, nonce=nonce))
                server_hello = _read_frame(sock, deadline)
                if attack.reflect_proof:
                    payload = frame_bytes(F.AUTH, body=bytes(server_hello.body[38:70]))
            if payload:
                sock.settimeout(limit)
                sock.sendall(payload)
            if attack.half_close:
                sock.shutdown(socket.SHUT_WR)
            for b in attack.drip:
                if _closed(sock):
                    return Outcome(attack.name, True, time.monotonic() - t0, local_s, "while dripping")
                sock.sendall(bytes((b,)))
                time.sleep(attack.drip_interval)
        except OSError as exc:  # reset while we were still sending: the server closed on us
            return Outcome(attack.name, True, time.monotonic() - t0, local_s, f"{type(exc).__name__}")
        except Exception as exc:  # noqa: BLE001 - e.g. the server refused our HELLO
            detail = f"{type(exc).__name__}: {exc}"
        while time.monotonic() < deadline:
            if _closed(sock):
                return Outcome(attack.name, True, time.monotonic() - t0, local_s, detail)
            time.sleep(0.05)
        return Outcome(attack.name, False, time.monotonic() - t0, local_s, detail)
    finally:
        sock.close()
