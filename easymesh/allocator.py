"""Keep glibc from returning large blocks to the kernel after every message.

Measured on this project's 2-core VM: ``pickle.dumps`` of a dict holding 1 MB of
bytes took 1,460 µs with glibc's default malloc settings and 44 µs after the
change below; a plain copy of 1 MB takes about 20 µs. The cost was not the
copy but page faults: each block above the mmap threshold (128 KiB by
default) is a fresh ``mmap`` whose pages fault in one by one, and freeing it
gives them back to the kernel, so every large message paid for all its pages
again, on both the sending and the receiving side.

:func:`tune` raises the mmap threshold to 32 MiB and the trim threshold to
64 MiB (``mallopt``), so freed large blocks are reused. The price: a process
may keep up to about 64 MiB of freed memory for reuse instead of returning it
to the kernel at once. It is applied once per process, only with glibc, never
when ``EASYMESH_MALLOC_TUNING=0``, and only once large messages actually flow:
when a node first sends or receives a message of at least ``LARGE_MESSAGE``
bytes (glibc's default mmap threshold, below which the settings change nothing).
A process that embeds a node but only exchanges small messages keeps its own
malloc settings.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import platform
import threading

M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD = 32 * 1024 * 1024
TRIM_THRESHOLD = 64 * 1024 * 1024

#: Messages at least this large make a node apply the settings (glibc's default mmap
#: threshold: smaller blocks never took the slow path).
LARGE_MESSAGE = 128 * 1024

_done = False
_lock = threading.Lock()


def tune() -> bool:
    """Apply the malloc settings above (once per process). True if they were applied."""
    global _done
    with _lock:
        if _done:
            return True
        _done = True
        if os.environ.get("EASYMESH_MALLOC_TUNING", "1") == "0":
            return False
        if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
            return False
        try:
            libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
            ok = libc.mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD) == 1
            ok = libc.mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD) == 1 and ok
        except (OSError, AttributeError):
            return False
        return ok
