"""Passing arena descriptors over a Unix stream socket (``SCM_RIGHTS``), in stream order.

Sending: the fd rides on the ``sendmsg`` that carries the ARENA frame's bytes. The kernel
attaches it to the first byte that call queues; if the call raises ``BlockingIOError`` nothing
was queued and the fd must go again with the retry; once any byte was taken, the fd went.

Receiving: a Unix stream socket hands ancillary fds to the ``recvmsg`` that returns the first
byte of the ``sendmsg`` they came with, and a read never runs past a chunk that carried fds, so
fds reach the reader no later than the bytes of their ARENA frame. The reader pushes every fd it
gets onto a per-link FIFO (:class:`FdQueue`); decoding an ARENA frame pops the oldest. Sender
order = FIFO order, so the pairing is exact without numbering.

A truncated control message (``MSG_CTRUNC``: the peer sent more fds than we have room for)
loses fds irrecoverably, so it closes the link; so do more pending fds than ``max_pending``
(a peer sending fds without ARENA frames) and an ARENA frame with no fd queued.
"""

from __future__ import annotations

import array
import os
import socket
from collections import deque
from collections.abc import Sequence
from typing import Any

from easymesh.errors import ProtocolError

#: Most fds a single read accepts; an ARENA frame carries one.
MAX_FDS_PER_READ = 4
_FD_SIZE = array.array("i").itemsize
_ANC_SPACE = socket.CMSG_SPACE(MAX_FDS_PER_READ * _FD_SIZE)
# Plain ints: socket.MSG_* are IntFlag members, whose | and & run Python code (enum), a
# cost paid on every read of every same-host link.
_CLOEXEC = int(socket.MSG_CMSG_CLOEXEC)
_CTRUNC = int(socket.MSG_CTRUNC)
_SOL_SOCKET = int(socket.SOL_SOCKET)
_SCM_RIGHTS = int(socket.SCM_RIGHTS)


def send_with_fds(sock: socket.socket, buffers: Sequence[Any], fds: Sequence[int]) -> int:
    """``sendmsg(buffers)`` with ``fds`` attached; returns bytes sent (may be partial).
    Raises what ``sendmsg`` raises (BlockingIOError: nothing sent, fds not sent either)."""
    anc = [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", fds).tobytes())] if fds else []
    return sock.sendmsg(list(buffers), anc)


def recv_into_with_fds(sock: socket.socket, buffer: Any, flags: int = 0) -> tuple[int, list[int]]:
    """``recvmsg_into`` one buffer; returns (bytes read, fds received, close-on-exec).
    ProtocolError if ancillary data was truncated (the fds that did arrive are closed);
    what ``recvmsg_into`` raises otherwise (BlockingIOError with ``MSG_DONTWAIT``)."""
    n, anc, flags, _addr = sock.recvmsg_into([buffer], _ANC_SPACE, _CLOEXEC | int(flags))
    if not anc and not flags & _CTRUNC:
        return n, []  # the usual read: bytes only
    fds: list[int] = []
    for level, kind, data in anc:
        if level == _SOL_SOCKET and kind == _SCM_RIGHTS:
            usable = len(data) - len(data) % _FD_SIZE
            fds.extend(array.array("i", data[:usable]))
    if flags & _CTRUNC:
        close_all(fds)
        raise ProtocolError("peer sent more descriptors than one read accepts")
    return n, fds


def close_all(fds: Sequence[int]) -> None:
    for fd in fds:
        try:
            os.close(fd)
        except OSError:
            pass


class FdQueue:
    """The fds received on one link, oldest first, waiting for their ARENA frames."""

    def __init__(self, max_pending: int = 8) -> None:
        self.max_pending = max_pending
        self._fds: deque[int] = deque()

    def push(self, fds: Sequence[int]) -> None:
        """Queue fds in arrival order; ProtocolError (and all of them closed) past the bound."""
        self._fds.extend(fds)
        if len(self._fds) > self.max_pending:
            self.close()
            raise ProtocolError(f"peer sent more than {self.max_pending} descriptors unclaimed")

    def pop(self) -> int:
        """The oldest fd (the caller owns it now); ProtocolError if none came."""
        if not self._fds:
            raise ProtocolError("ARENA frame without a descriptor")
        return self._fds.popleft()

    def __len__(self) -> int:
        return len(self._fds)

    def close(self) -> None:
        """Close every fd still queued (the link is closing). Idempotent."""
        fds = list(self._fds)
        self._fds.clear()
        close_all(fds)
