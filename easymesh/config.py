"""Defaults, environment variables and address parsing.

Environment variables (read when a node or tool starts, never cached):

``EASYMESH_COORDINATOR``  ``host[:port]`` of the coordinator (default ``localhost:6374``)
``EASYMESH_AUTHKEY``      shared secret for the HMAC handshake (default: none)
``EASYMESH_SOCKET_DIR``   folder for node Unix sockets; unset on Linux = abstract sockets
``EASYMESH_IO_LOOP``      ``shared`` (default: every node of a process on one I/O thread)
                          or ``own`` (a thread per node; see easymesh/transport/loop.py)

The key on a command line (``--authkey KEY``) can be read by every local user in
``/proc/<pid>/cmdline``; a process's environment (``/proc/<pid>/environ``) only by its
owner and root. So meshlaunch hands the key to the processes it starts in
``EASYMESH_AUTHKEY``, and the commands also take ``--authkey-file FILE``
(:func:`read_authkey_file`). Key file policy, as ssh does for private keys: a file other
users could read or change is refused (and one the group can change, or owned by someone
else than us or root); a file the group can read is used with a warning, for a key shared
on purpose with a group (0440). The message says the fix (``chmod 600 FILE``).
"""

from __future__ import annotations

import ipaddress
import logging
import os
import stat

log = logging.getLogger("easymesh.config")

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
    if value is None:  # the bytes as set: a key need not be valid UTF-8
        value = os.environb.get(b"EASYMESH_AUTHKEY") or None
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


#: Largest key file read (a key is a short secret; this bounds a mistaken path like a log).
MAX_KEY_FILE = 64 * 1024


def io_loop() -> str:
    """``EASYMESH_IO_LOOP``: ``shared`` (default) or ``own``; anything else logs a warning and
    means ``shared``."""
    value = os.environ.get("EASYMESH_IO_LOOP", "shared").strip().lower() or "shared"
    if value not in ("shared", "own"):
        log.warning("EASYMESH_IO_LOOP=%r: expected 'shared' or 'own'; using 'shared'", value)
        return "shared"
    return value


def read_authkey_file(path: str) -> bytes:
    """The key stored in the file ``path``: its bytes without one trailing line end
    (``\\n`` or ``\\r\\n``), so ``echo secret > FILE`` works.

    Raises ValueError (with the path and the fix) when the file cannot be read, is empty,
    larger than MAX_KEY_FILE, readable or writable by others, writable by the group, or
    owned by another user than us or root. Logs a warning when the group may read it.
    """
    try:
        # O_NONBLOCK: a FIFO in place of the file must not hang us before the check below
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NOCTTY | os.O_NONBLOCK)
    except OSError as exc:
        raise ValueError(f"cannot read the key file {path}: {exc.strerror or exc}") from None
    try:
        _check_key_file(path, os.fstat(fd))  # the file opened, not what the path names now
        chunks, size = [], 0
        while size <= MAX_KEY_FILE:
            chunk = os.read(fd, MAX_KEY_FILE + 1 - size)
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
        data = b"".join(chunks)
    except OSError as exc:
        raise ValueError(f"cannot read the key file {path}: {exc.strerror or exc}") from None
    finally:
        os.close(fd)
    if len(data) > MAX_KEY_FILE:
        raise ValueError(f"the key file {path} is larger than {MAX_KEY_FILE} bytes")
    if data.endswith(b"\n"):
        data = data[:-2] if data.endswith(b"\r\n") else data[:-1]
    if not data:
        raise ValueError(f"the key file {path} is empty")
    return data


def _check_key_file(path: str, st: os.stat_result) -> None:
    if not stat.S_ISREG(st.st_mode):
        raise ValueError(f"the key file {path} is not a regular file")
    mode = stat.S_IMODE(st.st_mode)
    if st.st_uid not in (os.geteuid(), 0):
        raise ValueError(
            f"the key file {path} belongs to user {st.st_uid}, who can change it; "
            "use a file of your own"
        )
    if mode & (stat.S_IRWXO | stat.S_IWGRP):
        raise ValueError(
            f"the key file {path} can be read or changed by other users (mode {mode:04o}); "
            f"run `chmod 600 {path}`"
        )
    if mode & stat.S_IRGRP:
        log.warning(
            "easymesh: the key file %s can be read by its group (mode %04o); "
            "`chmod 600` it unless the group is meant to share the key",
            path,
            mode,
        )


def is_loopback(host: str) -> bool:
    """True for a numeric loopback address (127.0.0.0/8, ::1, ::ffff:127.x.y.z) and for
    ``localhost``; False for anything else, ``""``/``0.0.0.0``/``::`` (all interfaces) and
    other names included (a name is not resolved here)."""
    host = host.strip("[]").split("%", 1)[0]
    if host == "localhost":
        return True
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        return False
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped.is_loopback
    return ip.is_loopback
