"""Defaults, environment variables and address parsing.

Environment variables (read when a node or tool starts, never cached):

``EASYMESH_COORDINATOR``  ``host[:port]`` of the coordinator (default ``localhost:6374``)
``EASYMESH_AUTHKEY``      shared secret for the HMAC handshake (default: none)
``EASYMESH_SOCKET_DIR``   folder for node Unix sockets; unset on Linux = abstract sockets
"""

from __future__ import annotations

import os

DEFAULT_PORT = 6374
DEFAULT_HOST = "localhost"

#: Largest body a frame may carry (bytes). A peer announcing more is disconnected.
DEFAULT_MAX_MESSAGE_SIZE = 256 * 1024 * 1024
#: Bound on the bytes waiting to be written to one peer; past it the oldest
#: unsent topic messages to that peer are dropped (and counted).
DEFAULT_MAX_PENDING_BYTES = 32 * 1024 * 1024
#: Socket send/receive buffer asked for on node-to-node links (the kernel may give less).
#: Large buffers let a sender hand a whole large message to the kernel in one call.
PEER_SOCKET_BUFFER = 4 * 1024 * 1024
#: Default bound on a listener's queue, in messages (drop-oldest past it).
DEFAULT_QUEUE_SIZE = 10_000
#: Requests that may wait for an answer at once, per node (beyond: TooManyRequests).
DEFAULT_MAX_IN_FLIGHT = 100_000
#: Default bound on a listener's queue, in bytes of encoded messages.
DEFAULT_QUEUE_BYTES = 64 * 1024 * 1024
#: Seconds between heartbeats on the coordinator link.
DEFAULT_HEARTBEAT_INTERVAL = 1.0
#: A link with nothing received for this many heartbeat intervals is dead.
HEARTBEAT_TIMEOUT_FACTOR = 4.0
#: Seconds Node() keeps trying to reach the coordinator.
DEFAULT_CONNECT_TIMEOUT = 10.0
#: Seconds request() waits when called with timeout=None.
DEFAULT_REQUEST_TIMEOUT = 60.0
#: Seconds close() waits for queued outbound messages to leave.
DEFAULT_LINGER = 2.0
#: Seconds a peer has to complete the handshake after connecting.
HANDSHAKE_TIMEOUT = 5.0
#: Seconds data sent over TCP may stay unacknowledged before the kernel declares the
#: link dead (TCP_USER_TIMEOUT, Linux). A peer that vanishes without a word (cable cut,
#: host down) is then noticed this fast when we send to it, instead of after TCP's
#: exponential retransmission backoff, which kept a healed link dead for another 27 s
#: after a 30 s outage. A frozen but running peer still acknowledges: it is not affected.
TCP_USER_TIMEOUT = 10.0


def parse_address(text: str | None, default_host: str = DEFAULT_HOST) -> tuple[str, int]:
    """Parse ``'host:port'``, ``'host'``, ``':port'`` or ``'[::1]:port'``.

    Raises ValueError for a port that is not an integer in 0..65535.
    """
    if text is None or not str(text).strip():
        return default_host, DEFAULT_PORT
    text = str(text).strip()
    host, port_text = text, ""
    if text.startswith("["):  # [ipv6]:port
        end = text.find("]")
        if end < 0:
            raise ValueError(f"bad address {text!r}: missing ']'")
        host, rest = text[1:end], text[end + 1 :]
        if rest.startswith(":"):
            port_text = rest[1:]
        elif rest:
            raise ValueError(f"bad address {text!r}")
    elif text.count(":") == 1:
        host, port_text = text.split(":")
    host = host or default_host
    if not port_text:
        return host, DEFAULT_PORT
    try:
        port = int(port_text)
    except ValueError:
        raise ValueError(f"bad port in address {text!r}") from None
    if not 0 <= port <= 65535:
        raise ValueError(f"port out of range in address {text!r}")
    return host, port


def format_address(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def coordinator_address(value: str | None = None) -> tuple[str, int]:
    """The coordinator address: ``value``, else ``$EASYMESH_COORDINATOR``, else the default."""
    return parse_address(value if value else os.environ.get("EASYMESH_COORDINATOR"))


def authkey_bytes(value: bytes | str | None = None) -> bytes | None:
    """The authkey as bytes: ``value``, else ``$EASYMESH_AUTHKEY``, else None (no auth)."""
    if value is None:
        value = os.environ.get("EASYMESH_AUTHKEY") or None
    if value is None:
        return None
    if isinstance(value, str):
        value = value.encode("utf-8")
    if not isinstance(value, (bytes, bytearray)):
        raise TypeError(f"authkey must be bytes or str, not {type(value).__name__}")
    if not value:
        return None
    return bytes(value)


def socket_dir(value: str | None = None) -> str | None:
    """Where node Unix sockets live; None means the Linux abstract namespace."""
    return value or os.environ.get("EASYMESH_SOCKET_DIR") or None
