"""Finding the buffers of a message that are worth sharing (sans-IO, no state).

The shared-memory hub asks, for every message a node sends while shared memory is on, whether
it holds a buffer of at least the threshold. The answer must cost almost nothing for the
common small message, so it rides on the pickling that happens anyway: ``pickle.dumps(obj, 5)``
with a ``buffer_callback`` (:func:`stopper`) that stops at the first large out-of-band-capable
buffer (numpy arrays, PickleBuffer) before it is copied. ``bytes`` and ``bytearray`` pickle in
band, so a large one is found by type at the top level, or by :func:`scan` through a few
container levels when the body came out large anyway. A plain numpy array is recognised by
its type (:func:`ndarray_type`, which never imports numpy) without pickling at all.
"""

from __future__ import annotations

import pickle
import sys
from collections.abc import Callable
from itertools import islice
from typing import Any

#: How deep and how wide :func:`scan` looks for large bytes-likes in containers.
SCAN_DEPTH = 3
SCAN_ITEMS = 64
_BYTES = (bytes, bytearray)
_SCALARS = frozenset((str, int, float, bool, type(None), complex))


class Large(Exception):
    """Raised by the buffer callback to stop pickling at the first large buffer."""


def stopper(threshold: int) -> Callable[[pickle.PickleBuffer], bool]:
    """A ``buffer_callback`` for ``pickle.dumps(obj, 5)`` that raises :class:`Large` at the
    first out-of-band-capable buffer (numpy arrays, PickleBuffer) of at least ``threshold``
    bytes, before it is copied. (A closure, not a bound method: none is built per call;
    and not in a ``functools.partial``, whose keyword merge costs more than the pickling of
    a small message.)"""

    def stop_at_large(buffer: pickle.PickleBuffer) -> bool:
        try:
            nbytes = buffer.raw().nbytes
        except BufferError:  # not contiguous: pickled in band anyway
            return True
        if nbytes >= threshold:
            raise Large
        return True

    return stop_at_large


def scan(data: Any, threshold: int, depth: int) -> bool:
    """Whether ``data`` holds a large buffer (itself, or down ``depth`` container levels)."""
    t = type(data)
    if t in _SCALARS:
        return False
    if t in _BYTES:
        return len(data) >= threshold
    if t is dict:
        items: Any = data.values()
    elif t is list or t is tuple:
        items = data
    else:
        nbytes = getattr(data, "nbytes", None)  # numpy arrays, memoryview
        if type(nbytes) is int:
            if nbytes < threshold:
                return False
            dtype = getattr(data, "dtype", None)  # an array of objects pickles in band
            return dtype is None or not getattr(dtype, "hasobject", False)
        if t is pickle.PickleBuffer:
            return memoryview(data).nbytes >= threshold
        items = getattr(data, "__dict__", None)
        if type(items) is not dict:
            return False
        items = items.values()
    if depth == 0:
        return False
    depth -= 1
    for item in islice(items, SCAN_ITEMS):
        ti = type(item)
        if ti in _SCALARS:
            continue
        if ti in _BYTES:
            if len(item) >= threshold:
                return True
        elif scan(item, threshold, depth):
            return True
    return False


def ndarray_type() -> Any:
    """``numpy.ndarray`` if numpy is imported (never imports it), else None."""
    return getattr(sys.modules.get("numpy"), "ndarray", None)
