"""A hostile peer that *knows the mesh key* (reliability tests only).

It completes the real handshake, then speaks raw frames: registers whatever record it
likes with the coordinator, claims other nodes' ids, sends requests and never reads
the replies, announces a large frame and stalls. Blocking sockets and plain loops:
this is the attacker's side, not library code.
"""

from __future__ import annotations

import itertools
import os
import socket
import time
from typing import Any

from easymesh.protocol import frames as F
from easymesh.protocol.auth import ClientHandshake, ServerHandshake
from easymesh.protocol.frames import CONTROL, ERROR, Frame, FrameDecoder, encode_frame
from easymesh.protocol.messages import NodeInfo, Register, decode_control, encode_control


def new_id() -> str:
    return os.urandom(8).hex()


_ports = itertools.count(1)


def record(node_id: str | None = None, **fields: Any) -> NodeInfo:
    """A plausible record: a literal-IP TCP endpoint of its own (the coordinator refuses
    one that another live record advertises), no Unix socket."""
    port = next(_ports) % 65535 + 1
    base: dict[str, Any] = {"id": node_id or new_id(), "name": "keyholder", "tcp": f"127.0.0.9:{port}", "pid": 1}
    base.update(fields)
    return NodeInfo(**base)


class KeyHolder:
    """One authenticated connection to ``address`` (``(host, port)`` or a Unix path)."""

    def __init__(self, address: Any, authkey: str | None, timeout: float = 20.0) -> None:
        family = socket.AF_UNIX if isinstance(address, str) else socket.AF_INET
        self.sock = socket.socket(family, socket.SOCK_STREAM)
        self.sock.settimeout(timeout)
        self.sock.connect(address)
        self.decoder = FrameDecoder(max_body=F.HANDSHAKE_MAX_BODY, allowed_types=F.HANDSHAKE_TYPES,
                                    buffer_size=F.HANDSHAKE_BUFFER_SIZE, max_name=F.HANDSHAKE_MAX_NAME)
        hs = ClientHandshake(authkey.encode() if authkey else None)
        self.sock.sendall(hs.start())
        reply = hs.receive(self._next(time.monotonic() + timeout, handshake=True))
        if reply:
            self.sock.sendall(reply)
        self.decoder.set_limits(1 << 30, F.SESSION_TYPES)
        self.eof = False

    # -- sending ---------------------------------------------------------------------------------

    def send_raw(self, data: bytes) -> None:
        self.sock.sendall(data)

    def send_frame(self, ftype: int, name: bytes = b"", body: bytes = b"", codec: int = 0, rid: int = 0) -> None:
        self.sock.sendall(b"".join(bytes(b) for b in encode_frame(ftype, name, body, codec, rid)))

    def send_control(self, msg: Any) -> None:
        name, body = encode_control(msg)
        self.send_frame(CONTROL, name, body)

    def register(self, node: NodeInfo, secret: str = "") -> None:
        self.send_control(Register(node, secret))

    # -- reading ---------------------------------------------------------------------------------

    def _next(self, deadline: float, handshake: bool = False) -> Frame:
        while True:
            frame = self.decoder.next_frame()
            if frame is not None:
                return frame
            self.sock.settimeout(max(0.01, deadline - time.monotonic()))
            data = self.sock.recv(1 << 20)
            if not data:
                raise EOFError("closed by the server")
            self.decoder.feed(data)

    def next_frame(self, timeout: float = 20.0) -> Frame | None:
        """The next frame, or None once the server has closed the connection."""
        if self.eof:
            return None
        try:
            return self._next(time.monotonic() + timeout)
        except (EOFError, ConnectionResetError):
            self.eof = True
            return None

    def answer(self, timeout: float = 20.0) -> tuple[str, Any]:
        """The coordinator's answer to a registration: ``("welcome", [Welcome parts])``
        or ``("error", reason)``; ``("closed", None)`` if it closed without a word."""
        parts = []
        while True:
            frame = self.next_frame(timeout)
            if frame is None:
                return "closed", None
            if frame.type == ERROR:
                return "error", bytes(frame.body).decode("utf-8", "replace")
            if frame.type == CONTROL:
                msg = decode_control(frame.name, frame.body)
                if frame.name == b"welcome":
                    parts.append(msg)
                    if msg.part + 1 == msg.parts:
                        return "welcome", parts

    def closed_by_server(self, timeout: float = 20.0) -> bool:
        """Read (and discard) until the server closes; False if it is still open after ``timeout``."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.sock.settimeout(max(0.01, deadline - time.monotonic()))
            try:
                if not self.sock.recv(1 << 20):
                    return True
            except TimeoutError:
                return False
            except OSError:
                return True
        return False

    def close(self) -> None:
        self.sock.close()

    def __enter__(self) -> KeyHolder:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


class AcceptedKeyHolder(KeyHolder):
    """The same attacker on a link a node dialled to it: it accepts one connection on
    ``listener`` and completes the server side of the real handshake (it registered an
    endpoint of its own with the coordinator, so a node that wants its service dials it)."""

    def __init__(self, listener: socket.socket, authkey: str, timeout: float = 20.0) -> None:
        listener.settimeout(timeout)
        self.sock, _ = listener.accept()
        self.sock.settimeout(timeout)
        self.decoder = FrameDecoder(max_body=F.HANDSHAKE_MAX_BODY, allowed_types=F.HANDSHAKE_TYPES,
                                    buffer_size=F.HANDSHAKE_BUFFER_SIZE, max_name=F.HANDSHAKE_MAX_NAME)
        hs = ServerHandshake(authkey.encode())
        deadline = time.monotonic() + timeout
        done = False
        while not done:
            out, done = hs.receive(self._next(deadline, handshake=True))
            if out:
                self.sock.sendall(out)
        self.decoder.set_limits(1 << 30, F.SESSION_TYPES)
        self.eof = False
