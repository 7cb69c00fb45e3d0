"""Small helpers for integration tests: collecting callbacks with timeouts, running a call
on an I/O thread."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any


class Collector:
    """A callback that records (topic, data) and lets a test wait for N of them."""

    def __init__(self) -> None:
        self.items: list[tuple[str, Any]] = []
        self.threads: set[str] = set()
        self._cond = threading.Condition()

    def __call__(self, topic: str, data: Any) -> None:
        with self._cond:
            self.items.append((topic, data))
            self.threads.add(threading.current_thread().name)
            self._cond.notify_all()

    @property
    def data(self) -> list[Any]:
        with self._cond:
            return [d for _, d in self.items]

    def wait_for(self, n: int, timeout: float = 10.0) -> list[Any]:
        deadline = time.monotonic() + timeout
        with self._cond:
            while len(self.items) < n:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"got {len(self.items)} of {n} messages in {timeout} s")
                self._cond.wait(left)
            return [d for _, d in self.items]


def wait_until(predicate: Any, timeout: float = 10.0, interval: float = 0.02) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return bool(predicate())


def run_on_loop(loop: Any, fn: Callable[[], Any], timeout: float = 30.0) -> tuple[Any, float]:
    """Run ``fn`` on ``loop``'s I/O thread (``loop.call_soon``) and wait for it: (its result
    or the exception it raised, the seconds it took)."""
    out: list[Any] = []
    done = threading.Event()

    def run() -> None:
        start = time.monotonic()
        try:
            result: Any = fn()
        except BaseException as exc:  # noqa: B036 - handed back to the test
            result = exc
        out.append((result, time.monotonic() - start))
        done.set()

    loop.call_soon(run)
    assert done.wait(timeout), "the I/O thread never ran the call"
    return out[0]
