"""Threads that can be preempted between any two bytecodes (for tests of lost updates).

Since CPython 3.10 a thread gives up the GIL only at a few points of the evaluation
loop (function entry, backward jumps), none of them inside ``self.n += 1``: a counter
kept that way loses no count in practice, so a test that runs it from eight threads
passes whether or not the counter is atomic — it cannot fail. Under an opcode tracer
(``frame.f_trace_opcodes``) a Python call runs before every bytecode, and the GIL can
change hands there: ``n += 1`` split into its load, add and store is then torn within
a few thousand increments (measured on Python 3.11: 8 threads x 5,000 increments kept
about 18,000 of 40,000), while a C-level increment (``itertools.count.__next__``,
what :class:`easymesh.counters.Counter` uses) stays exact.
"""

from __future__ import annotations

import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from types import FrameType
from typing import Any


def _local(frame: FrameType, event: str, arg: Any) -> Any:
    return _local


def _tracer(frame: FrameType, event: str, arg: Any) -> Any:
    frame.f_trace_opcodes = True
    return _local


@contextmanager
def preemptible_threads() -> Iterator[None]:
    """Threads started inside the block may lose the GIL between any two bytecodes."""
    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    threading.settrace(_tracer)
    try:
        yield
    finally:
        threading.settrace(None)  # type: ignore[arg-type]
        sys.setswitchinterval(interval)


def run_preempted(target: Callable[[], Any], threads: int = 8, timeout: float = 120.0) -> None:
    """Run ``target`` in ``threads`` preemptible threads at once (see above); return once
    all of them ended, or ``timeout`` seconds after the last was started."""
    with preemptible_threads():
        started = [threading.Thread(target=target) for _ in range(threads)]
        for t in started:
            t.start()
        for t in started:
            t.join(timeout)
