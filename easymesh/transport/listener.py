"""TCP and Unix-socket servers, address selection, and where a peer can be reached.

Unix sockets: on Linux a node's socket lives in the *abstract* namespace by
default (``@easymesh-<id>``): nothing on disk, so nothing is left behind when
a process is killed, and it is private to the network namespace, which is
exactly the scope in which "same host" is true. With ``socket_dir`` (or
``$EASYMESH_SOCKET_DIR``) the socket is a file in that folder instead, removed
on close; its name starts with the owner's pid (``<pid>-<node id>.sock``), and a
node creating its socket there removes the files of easymesh processes that
died without closing (kill -9): a file whose pid is not running *and* that
refuses a connection is stale. (The connection probe keeps a live socket of a
process in another pid namespace sharing the folder.)

That folder must be ours alone (:func:`private_socket_dir`): a missing one is
created with mode 0700; an existing one that is a symbolic link, not a folder,
writable by the group or others, or owned by another user is refused with
UnsafeSocketDir before anything is bound. Otherwise another local user could
swap our socket file for one of theirs (peers would then connect to them) or
point the folder elsewhere, as in the classic ``/tmp`` attacks. The checks are
made on the folder opened with ``O_NOFOLLOW`` (fstat of that descriptor), not on
a path that could change between check and use; the folder's own parents are
the user's choice and are not checked.

"Same host" is decided by :func:`host_key`: hostname, kernel boot id and
network-namespace inode. Two nodes with equal keys talk over the Unix socket;
all others over TCP.

Out of file descriptors (EMFILE and friends), a listening socket stays
readable while ``accept`` keeps failing, so a selector loop would spin at
100 % CPU and log on every turn. Instead the listener stops watching its
socket for ``ACCEPT_PAUSE`` seconds, logs once per episode (with the advice to
raise ``ulimit -n``), and logs again when it accepts once more. Pending
connections wait in the kernel's backlog meanwhile.
"""

from __future__ import annotations

import errno
import functools
import logging
import os
import socket
import stat
import struct
import sys
from collections.abc import Callable
from typing import Any

from easymesh.errors import MeshError, UnsafeSocketDir
from easymesh.transport.loop import READ, IOLoop

log = logging.getLogger("easymesh.transport")

ABSTRACT_OK = sys.platform.startswith("linux")
#: Seconds a listener stops accepting after running out of file descriptors.
ACCEPT_PAUSE = 0.5


def host_key() -> str:
    """An identity of this host *and* network namespace."""
    parts = [socket.gethostname()]
    if _boot_id():
        parts.append(_boot_id())
    try:
        parts.append(str(os.stat("/proc/self/ns/net").st_ino))
    except OSError:
        pass
    return "/".join(parts)


@functools.lru_cache(maxsize=1)
def _boot_id() -> str:
    """This boot's id, read once per process (it cannot change while the process runs;
    reading it cost a tenth of a millisecond per node in a 1,000-node join storm)."""
    try:
        with open("/proc/sys/kernel/random/boot_id") as f:
            return f.read().strip()
    except OSError:
        return ""


def unix_address(endpoint: str) -> str | bytes:
    """The socket address for a ``unix`` endpoint string (``@name`` = abstract)."""
    if endpoint.startswith("@"):
        return "\0" + endpoint[1:]
    return endpoint


def tcp_address(endpoint: str, numeric: bool = False) -> tuple[int, tuple[Any, ...]]:
    """(family, sockaddr) for a ``host:port`` endpoint. With ``numeric`` the host must be
    an IP address (no DNS lookup: safe on the I/O thread and under locks). Raises
    OSError (socket.gaierror) or ValueError for an address it cannot use."""
    from easymesh.config import parse_address

    host, port = parse_address(endpoint)
    flags = socket.AI_NUMERICHOST if numeric else 0
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=flags)
    family, _, _, _, sockaddr = infos[0]
    return family, sockaddr


class Listener:
    """A listening socket whose accepted connections go to ``on_accept(sock, addr)``
    on the I/O thread."""

    def __init__(
        self,
        loop: IOLoop,
        sock: socket.socket,
        on_accept: Callable[[socket.socket, Any], None],
        path: str | None = None,
    ) -> None:
        self.loop = loop
        self.sock = sock
        self.on_accept = on_accept
        self.path = path  # a Unix socket file to remove on close
        self.closed = False
        self.refused = 0  # accept() failures for lack of resources in the current episode
        sock.setblocking(False)

    @property
    def address(self) -> Any:
        return self.sock.getsockname()

    def start(self) -> None:
        """(I/O thread) Begin accepting."""
        self.loop.register(self.sock, READ, self._on_ready)

    def _on_ready(self, _mask: int) -> None:
        for _ in range(64):
            try:
                sock, addr = self.sock.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                if exc.errno in (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM):
                    self._pause(exc)
                    return
                if exc.errno in (errno.ECONNABORTED, errno.EPROTO):
                    continue
                raise
            if self.refused:
                log.warning("easymesh: %s: accepting connections again", self._where())
                self.refused = 0
            try:
                self.on_accept(sock, addr)
            except Exception:
                log.exception("easymesh: accepting a connection failed")
                sock.close()

    def _pause(self, exc: OSError) -> None:
        if not self.refused:
            log.error(
                "easymesh: %s: cannot accept a connection: %s; pausing for %g s (raise the "
                "open-files limit, `ulimit -n`, if this node or coordinator needs more peers)",
                self._where(),
                exc,
                ACCEPT_PAUSE,
            )
        self.refused += 1
        self.loop.unregister(self.sock)
        self.loop.call_later(ACCEPT_PAUSE, self._resume)

    def _resume(self) -> None:
        if not self.closed:
            self.loop.register(self.sock, READ, self._on_ready)

    def _where(self) -> str:
        try:
            addr = self.sock.getsockname()
        except OSError:
            return "listener"
        if isinstance(addr, tuple):
            return f"listener {addr[0]}:{addr[1]}"
        return "listener unix:" + (
            addr.decode("utf-8", "replace") if isinstance(addr, bytes) else addr
        ).replace("\0", "@")

    def abort(self) -> None:
        self.close()

    def close(self) -> None:
        """(I/O thread, or after the loop stopped) Stop listening and remove the socket file."""
        if self.closed:
            return
        self.closed = True
        self.loop.unregister(self.sock)
        try:
            self.sock.close()
        except OSError:
            pass
        if self.path:
            try:
                os.unlink(self.path)
            except OSError:
                pass


def tcp_server_socket(host: str, port: int, backlog: int = 512) -> socket.socket:
    """A bound, listening TCP socket. ``host`` '' means all interfaces (IPv4 and IPv6
    where the system allows). Raises MeshError with the address on failure."""
    try:
        if host in ("", "::") and socket.has_dualstack_ipv6():
            sock = socket.create_server(
                ("", port), family=socket.AF_INET6, dualstack_ipv6=True, backlog=backlog
            )
        else:
            host = host or "0.0.0.0"
            infos = socket.getaddrinfo(
                host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
            )
            family, _, _, _, sockaddr = infos[0]
            sock = socket.socket(family, socket.SOCK_STREAM)
            try:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                sock.bind(sockaddr)
                sock.listen(backlog)
            except BaseException:
                sock.close()
                raise
    except OSError as exc:
        raise MeshError(f"cannot listen on {host or '*'}:{port}: {exc.strerror or exc}") from exc
    return sock


def unix_server_socket(
    node_id: str, socket_dir: str | None, backlog: int = 512
) -> tuple[socket.socket, str, str | None]:
    """A listening Unix socket for node ``node_id``: (socket, endpoint string, file path or None).

    Raises UnsafeSocketDir when the socket folder is not ours alone (see
    :func:`private_socket_dir`), MeshError when the socket cannot be made.
    """
    folder = None
    if socket_dir is not None or not ABSTRACT_OK:
        # Absolute and normalized: the coordinator accepts no other form (a peer dials
        # exactly this path, wherever its own working directory is).
        folder = os.path.abspath(
            socket_dir
            or os.path.join(os.environ.get("XDG_RUNTIME_DIR") or "/tmp", f"easymesh-{os.getuid()}")
        )
        private_socket_dir(folder)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        if folder is None:
            name = f"easymesh-{node_id}"
            sock.bind("\0" + name)
            endpoint, path = "@" + name, None
        else:
            remove_stale_sockets(folder)
            path = os.path.join(folder, f"{os.getpid()}-{node_id}.sock")
            try:
                os.unlink(path)
            except FileNotFoundError:
                pass
            sock.bind(path)
            endpoint = path
        sock.listen(backlog)
    except OSError as exc:
        sock.close()
        raise MeshError(f"cannot create the node's Unix socket: {exc}") from exc
    return sock, endpoint, path


def private_socket_dir(folder: str) -> None:
    """Make sure ``folder`` exists and is ours alone: create it with mode 0700 when it is
    missing (its parents with the default mode), else check it.

    Raises UnsafeSocketDir (a MeshError and PermissionError) when it is a symbolic link, not
    a folder, writable by the group or others, or owned by another user; MeshError when it
    cannot be created or opened.
    """
    created = False
    try:
        parent = os.path.dirname(os.path.abspath(folder))
        os.makedirs(parent, exist_ok=True)
        os.mkdir(folder, 0o700)
        created = True
    except FileExistsError:
        pass
    except OSError as exc:
        raise MeshError(f"cannot create the socket folder {folder}: {exc.strerror or exc}") from exc
    flags = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
    try:
        fd = os.open(folder, flags)
    except OSError as exc:
        if exc.errno in (errno.ELOOP, errno.ENOTDIR):
            what = "a symbolic link" if os.path.islink(folder) else "not a folder"
            raise UnsafeSocketDir(f"the socket folder {folder} is {what}; refusing it") from None
        raise MeshError(f"cannot open the socket folder {folder}: {exc.strerror or exc}") from exc
    try:
        if created:
            os.fchmod(fd, 0o700)  # exactly 0700, whatever the umask took away
        _check_private(folder, os.fstat(fd))
    finally:
        os.close(fd)


def _check_private(folder: str, st: os.stat_result) -> None:
    mode = stat.S_IMODE(st.st_mode)
    if st.st_uid != os.geteuid():
        raise UnsafeSocketDir(
            f"the socket folder {folder} belongs to user {st.st_uid}, not to us "
            f"({os.geteuid()}); refusing it: use a folder of your own"
        )
    if mode & (stat.S_IWGRP | stat.S_IWOTH):
        raise UnsafeSocketDir(
            f"the socket folder {folder} is writable by the group or others (mode {mode:04o}); "
            f"refusing it: run `chmod 700 {folder}` or use a folder of your own"
        )


def remove_stale_sockets(folder: str) -> int:
    """Remove ``<pid>-<id>.sock`` files in ``folder`` left by processes that are gone.
    Returns how many were removed; never raises."""
    removed = 0
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return 0
    for entry in entries:
        pid_text, sep, rest = entry.name.partition("-")
        if not (sep and pid_text.isdigit() and rest.endswith(".sock")) or _pid_running(
            int(pid_text)
        ):
            continue
        probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            probe.settimeout(1.0)
            probe.connect(entry.path)
        except ConnectionRefusedError:  # nobody listens: stale
            try:
                os.unlink(entry.path)
                removed += 1
            except OSError:
                pass
        except OSError:
            pass  # not a socket, no permission, a full backlog...: leave it
        finally:
            probe.close()
    if removed:
        log.info("easymesh: removed %d stale socket file(s) from %s", removed, folder)
    return removed


def _pid_running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # EPERM: it exists, owned by someone else
        return True
    return True


def peer_credentials(sock: socket.socket) -> str:
    """'unix:pid=1234,uid=1000' for an accepted Unix-socket peer (Linux), else 'unix:(anonymous)'."""
    try:
        pid, uid, _gid = struct.unpack(
            "3i", sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
        )
        return f"unix:pid={pid},uid={uid}"
    except (OSError, AttributeError, struct.error):
        return format_peer("")


def describe_link(label: str, is_client: bool, peer_address: str) -> str:
    """A link for log lines (``label`` already made printable): 'connection from
    10.0.0.7:50112', 'connection to coordinator at 10.0.0.1:6374'."""
    if is_client:
        return (
            f"connection to {label} at {peer_address}" if label else f"connection to {peer_address}"
        )
    known = label not in ("", "node", "peer")
    return f"connection from {peer_address}" + (f" ({label})" if known else "")


def format_peer(address: Any) -> str:
    if isinstance(address, tuple):
        host, port = address[0], address[1]
        return f"[{host}]:{port}" if ":" in str(host) else f"{host}:{port}"
    if isinstance(address, bytes):
        address = address.decode("utf-8", "replace")
    if isinstance(address, str) and address.startswith("\0"):
        return "unix:@" + address[1:]
    return f"unix:{address}" if address else "unix:(anonymous)"


def tune_stream(sock: socket.socket, socket_buffer: int = 0) -> None:
    """Options for a connected stream: TCP_NODELAY and TCP_USER_TIMEOUT on TCP, and
    ``socket_buffer`` bytes of send/receive buffer if asked (best effort: the kernel
    caps these at net.core.wmem_max / rmem_max)."""
    from easymesh.config import TCP_USER_TIMEOUT

    if sock.family in (socket.AF_INET, socket.AF_INET6):
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if TCP_USER_TIMEOUT and hasattr(socket, "TCP_USER_TIMEOUT"):
            try:  # see config.TCP_USER_TIMEOUT: a vanished peer fails sends in seconds
                sock.setsockopt(
                    socket.IPPROTO_TCP, socket.TCP_USER_TIMEOUT, int(TCP_USER_TIMEOUT * 1000)
                )
            except OSError:
                pass
    if socket_buffer:
        for opt in (socket.SO_SNDBUF, socket.SO_RCVBUF):
            try:
                sock.setsockopt(socket.SOL_SOCKET, opt, socket_buffer)
            except OSError:
                pass
