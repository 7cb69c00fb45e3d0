"""The futures thread (easymesh.completer): every batch handed over is finished or
abandoned, even when close() gives up on the thread just as it takes the next batch."""

from __future__ import annotations

import queue
import threading
import time
from typing import Any

from easymesh.completer import Completer

WAIT = 10.0


class _PausingQueue:
    """A SimpleQueue whose get() stops, once it took ``hold``, until ``go`` is set: the
    exact moment between the thread taking a batch and looking at it."""

    def __init__(self, hold: list[Any]) -> None:
        self._q: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._hold = hold
        self.took = threading.Event()
        self.go = threading.Event()

    def put(self, item: Any) -> None:
        self._q.put(item)

    def get_nowait(self) -> Any:
        return self._q.get_nowait()

    def get(self) -> Any:
        item = self._q.get()
        if item is self._hold:
            self.took.set()
            assert self.go.wait(WAIT)
        return item


def test_a_batch_taken_as_join_gives_up_is_still_abandoned_to_the_owner() -> None:
    started, release = threading.Event(), threading.Event()
    finished: list[Any] = []
    abandoned: list[Any] = []
    done = threading.Event()

    def finish(item: Any) -> None:
        if item == "blocks":
            started.set()
            assert release.wait(WAIT)
        finished.append(item)
        if item == "second":
            done.set()

    def on_abandoned(items: list[Any]) -> None:
        abandoned.extend(items)
        done.set()

    second = ["second"]
    c = Completer("test-futures", finish, on_abandoned)
    q = _PausingQueue(second)
    c._q = q  # type: ignore[assignment]
    assert c.put(["blocks"])
    assert c.put(second)
    assert started.wait(WAIT)
    release.set()  # the thread finishes "blocks" and takes the second batch...
    assert q.took.wait(WAIT)
    c.begin_stop()
    assert c.join(time.monotonic()) is False  # ...just as close() gives up on it
    q.go.set()
    assert done.wait(WAIT), "the second batch was neither finished nor abandoned"
    assert finished + abandoned == ["blocks", "second"]


def test_batches_are_finished_in_order_and_the_thread_ends() -> None:
    got: list[int] = []
    c = Completer("test-futures", got.append, lambda items: None)
    for i in range(5):
        assert c.put([2 * i, 2 * i + 1])
    c.begin_stop()
    assert not c.put([99])
    assert c.join(time.monotonic() + WAIT)
    assert got == list(range(10))
