"""Arenas: anonymous shared memory (``memfd_create``), mapped once per process.

Sender side, :class:`Arena`: ``memfd_create`` (``MFD_CLOEXEC | MFD_ALLOW_SEALING``), sized with
``ftruncate``, mapped read-write once, then sealed:

- ``F_SEAL_SHRINK | F_SEAL_GROW``: the size can never change, so a receiver's mapping can never
  run past the end of the file and fault (SIGBUS) — the receiver checks the seal before mapping;
- ``F_SEAL_FUTURE_WRITE`` (Linux 5.1+): nobody can create a *new* writable mapping or ``write()``
  to it, while the sender's existing mapping stays writable. Without it a receiver could reopen
  ``/proc/self/fd/N`` read-write and write into the sender's memory; with it, it cannot, whatever
  the mode of the fd it got;
- ``F_SEAL_SEAL``: nobody can add seals later (a receiver could otherwise seal it further).

The descriptor handed to peers is a second, ``O_RDONLY`` open of the same file (through
``/proc/self/fd``); the read-write one is closed right after mapping. Nothing is ever named
in /dev/shm: the memory lives as long as some process maps it or holds an fd, and the kernel
drops both when a process dies, however it dies.

Receiver side, :class:`Mapping`: the fd received from the peer, checked (a memfd of the announced
size whose size is sealed), mapped ``PROT_READ`` and ``MAP_SHARED``, and the fd closed at once:
a receiver holds mappings, never descriptors, so a dead sender leaves no fd behind. Both sides
map through libc, not the ``mmap`` module, which keeps a duplicate fd per mapping before 3.13.

Views. Python's ``mmap`` does not tell its address, and slices of a memoryview keep the
memoryview's *buffer* alive, not the memoryview object, so a finalizer on a memoryview fires
while slices of it still live. A view is therefore built from a ctypes array at the block's
address (``from_address``): the ctypes object is the exporter every derived memoryview and numpy
array keeps alive, and it supports weak references, so a weakref callback on it runs exactly
when the last derived object is gone. ctypes does not know the memory is shared; the Arena or
Mapping object is kept alive by the finalizer and is unmapped only when its last view is gone
(unmapping under a live view would turn a later read into a crash).
"""

from __future__ import annotations

import ctypes
import errno
import fcntl
import mmap
import os
import stat
import threading
import weakref
from collections.abc import Callable
from typing import Any

from easymesh.errors import ProtocolError

#: ``F_SEAL_FUTURE_WRITE`` (Linux 5.1); the fcntl module does not export it.
F_SEAL_FUTURE_WRITE = 0x0010
BASE_SEALS = fcntl.F_SEAL_SHRINK | fcntl.F_SEAL_GROW


class _PyBuffer(ctypes.Structure):
    """CPython's ``Py_buffer`` (stable layout since 3.0), to read a buffer's address."""

    _fields_ = (
        ("buf", ctypes.c_void_p),
        ("obj", ctypes.py_object),
        ("len", ctypes.c_ssize_t),
        ("itemsize", ctypes.c_ssize_t),
        ("readonly", ctypes.c_int),
        ("ndim", ctypes.c_int),
        ("format", ctypes.c_char_p),
        ("shape", ctypes.c_void_p),
        ("strides", ctypes.c_void_p),
        ("suboffsets", ctypes.c_void_p),
        ("internal", ctypes.c_void_p),
    )


_libc = ctypes.CDLL(None, use_errno=True)
_mmap = _libc.mmap
_mmap.argtypes = [
    ctypes.c_void_p,
    ctypes.c_size_t,
    ctypes.c_int,
    ctypes.c_int,
    ctypes.c_int,
    ctypes.c_long,
]
_mmap.restype = ctypes.c_void_p
_munmap = _libc.munmap
_munmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t]
_munmap.restype = ctypes.c_int
_MAP_FAILED = ctypes.c_void_p(-1).value


def map_shared(fd: int, size: int, writable: bool) -> int:
    """``mmap(MAP_SHARED)`` of ``fd`` through libc; returns the address. OSError on failure.

    Not the ``mmap`` module: in Python < 3.13 every ``mmap.mmap`` keeps a ``dup`` of the fd for
    as long as it lives, and a receiver must hold no descriptor of a peer's memory."""
    prot = mmap.PROT_READ | (mmap.PROT_WRITE if writable else 0)
    address = _mmap(None, size, prot, mmap.MAP_SHARED, fd, 0)
    if address is None or address == _MAP_FAILED:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))
    return int(address)


def unmap(address: int, size: int) -> None:
    if _munmap(address, size) != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))


_get_buffer = ctypes.pythonapi.PyObject_GetBuffer
_get_buffer.argtypes = [ctypes.py_object, ctypes.POINTER(_PyBuffer), ctypes.c_int]
_get_buffer.restype = ctypes.c_int
_release_buffer = ctypes.pythonapi.PyBuffer_Release
_release_buffer.argtypes = [ctypes.POINTER(_PyBuffer)]
_release_buffer.restype = None


def buffer_address(obj: Any) -> tuple[int, int]:
    """(address, nbytes) of a C-contiguous buffer; BufferError if it has none."""
    view = _PyBuffer()
    _get_buffer(obj, ctypes.byref(view), 0)  # PyBUF_SIMPLE: raises unless contiguous
    try:
        return view.buf or 0, view.len
    finally:
        _release_buffer(ctypes.byref(view))


def raw_view(address: int, nbytes: int, readonly: bool) -> tuple[Any, memoryview]:
    """(exporter, memoryview of ``nbytes`` at ``address``); the view keeps the exporter alive."""
    exporter = (ctypes.c_char * nbytes).from_address(address)
    view = memoryview(exporter).cast("B")
    return exporter, (view.toreadonly() if readonly else view)


class _Mapped:
    """A mapping whose unmapping waits until every view handed out is gone."""

    def __init__(self, base: int, size: int) -> None:
        self.size = size
        self.base = base
        self._mapped = True
        self._views = 0
        self._live: dict[int, tuple[weakref.ref[Any], Callable[[], None] | None]] = {}
        self._closing = False
        self._lock = threading.Lock()

    def view(
        self, offset: int, nbytes: int, readonly: bool, on_release: Callable[[], None] | None = None
    ) -> memoryview:
        """A memoryview of ``[offset, offset + nbytes)``; ``on_release`` runs (on any thread) when
        it and everything derived from it are gone. ValueError if the range is outside."""
        if offset < 0 or nbytes < 0 or offset + nbytes > self.size:
            raise ValueError(f"range {offset}+{nbytes} outside an arena of {self.size} bytes")
        with self._lock:
            if not self._mapped:
                raise ValueError("arena is closed")
            self._views += 1
        exporter, view = raw_view(self.base + offset, nbytes, readonly)
        ref = weakref.ref(exporter, self._view_gone)  # cheaper than weakref.finalize
        self._live[id(ref)] = (ref, on_release)
        return view

    def _view_gone(self, ref: weakref.ref[Any]) -> None:
        _ref, on_release = self._live.pop(id(ref))
        if on_release is not None:
            on_release()
        with self._lock:
            self._views -= 1
            done = self._closing and self._views == 0
        if done:
            self._unmap()

    def close(self) -> None:
        """Unmap now if no view is alive, else when the last one goes. Idempotent."""
        with self._lock:
            self._closing = True
            done = self._views == 0 and self._mapped
        if done:
            self._unmap()

    def _unmap(self) -> None:
        with self._lock:
            mapped, self._mapped = self._mapped, False
        if mapped:
            unmap(self.base, self.size)

    @property
    def live_views(self) -> int:
        return self._views

    @property
    def closed(self) -> bool:
        return not self._mapped


class Arena(_Mapped):
    """Sender side: a sealed memfd of ``size`` bytes mapped read-write (see the module doc).

    Raises OSError if the kernel refuses memfd_create or the mapping."""

    def __init__(self, size: int, name: str = "easymesh") -> None:
        fd = os.memfd_create(name, os.MFD_CLOEXEC | os.MFD_ALLOW_SEALING)
        base = 0
        try:
            os.ftruncate(fd, size)
            base = map_shared(fd, size, writable=True)
            fcntl.fcntl(fd, fcntl.F_ADD_SEALS, BASE_SEALS)
            try:
                fcntl.fcntl(fd, fcntl.F_ADD_SEALS, F_SEAL_FUTURE_WRITE)
                self.write_sealed = True
            except OSError:  # kernel before 5.1: receivers could map it writable themselves
                self.write_sealed = False
            fcntl.fcntl(fd, fcntl.F_ADD_SEALS, fcntl.F_SEAL_SEAL)
            self.fd = os.open(f"/proc/self/fd/{fd}", os.O_RDONLY | os.O_CLOEXEC)
        except BaseException:
            if base:
                unmap(base, size)
            raise
        finally:
            os.close(fd)
        super().__init__(base, size)

    def _unmap(self) -> None:
        super()._unmap()
        fd, self.fd = self.fd, -1
        if fd >= 0:
            os.close(fd)


class Mapping(_Mapped):
    """Receiver side: a peer's arena, mapped read-only. Takes ownership of ``fd`` (closed here,
    whatever happens). Raises :class:`ProtocolError` if the fd is not a sealed memfd of ``size``."""

    def __init__(self, fd: int, size: int) -> None:
        try:
            check_shared_fd(fd, size)
            base = map_shared(fd, size, writable=False)
        except OSError as exc:
            raise ProtocolError(f"cannot map the peer's arena: {exc}") from exc
        finally:
            os.close(fd)
        super().__init__(base, size)


def check_shared_fd(fd: int, size: int) -> None:
    """ProtocolError unless ``fd`` is a regular file of exactly ``size`` bytes whose size is sealed
    (a file that could shrink under our mapping would SIGBUS us)."""
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode) or st.st_size != size:
        raise ProtocolError(f"peer's arena is not a file of {size} bytes")
    try:
        seals = fcntl.fcntl(fd, fcntl.F_GET_SEALS)
    except OSError as exc:
        if exc.errno == errno.EINVAL:
            raise ProtocolError("peer's arena is not a sealable memfd") from exc
        raise
    if seals & BASE_SEALS != BASE_SEALS:
        raise ProtocolError("peer's arena size is not sealed")
