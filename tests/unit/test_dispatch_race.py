"""Regression from the second review (failed before its fix): a Dispatcher stopped while
another thread is starting it.

``start()`` marks the dispatcher started under its lock and starts the worker threads
after releasing it. A replacing listener is started that way by the last worker of the
listener it replaced; if the node closes at that moment, ``join()`` met a worker thread
not started yet and ``Thread.join`` raised RuntimeError, out of ``Node.close()``, which
then never stopped the I/O thread. The moment is reproduced exactly: the worker's
``start`` is wrapped so that the stop happens between the two steps.
"""

from __future__ import annotations

import itertools
import logging
import time
from typing import Any

import pytest

from easymesh.dispatch import Dispatcher

from ..preempt import preemptible_threads, run_preempted


def test_join_while_another_thread_is_starting_the_workers() -> None:
    ran: list[Any] = []
    d = Dispatcher("easymesh-test-race", ran.append, workers=2, start=False)
    d.put("queued before start", 1)
    outcome: list[Any] = []
    real_start = d._threads[0].start

    def start_after_a_stop() -> None:
        # start() has released its lock; the workers are not started yet. Now the owner
        # closes (in the real case from another thread; here, deterministically, at once).
        d.begin_stop(drain=True)
        try:
            outcome.append(d.join(time.monotonic() + 5.0))
        except RuntimeError as exc:
            outcome.append(exc)
        real_start()

    d._threads[0].start = start_after_a_stop  # type: ignore[method-assign]
    d.start()
    assert outcome == [False]  # not ended (not even started), no exception
    assert d.join(time.monotonic() + 10.0)  # the workers then end at once
    assert not any(t.is_alive() for t in d._threads)
    assert ran in ([], ["queued before start"])  # abandoned, or run before the abandon


def test_handled_and_errors_stay_exact_with_several_workers(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Issue 11: counters updated from several threads stay exact. The workers of one
    dispatcher count what they ran and what raised; run preemptible between any two
    bytecodes (tests/preempt.py), an unlocked ``self.handled += len(batch)`` lost counts."""
    ran = itertools.count()

    def run(item: int) -> None:
        next(ran)
        if item % 10 == 0:
            raise ValueError("counted as an error")

    caplog.set_level(logging.CRITICAL, logger="easymesh.dispatch")  # 6,000 tracebacks
    with preemptible_threads():
        d = Dispatcher("easymesh-test-count", run, workers=8, queue_size=100_000)
        for i in range(60_000):
            d.put(i, 1)
        d.begin_stop(drain=True)
        assert d.join(time.monotonic() + 120)
    assert next(ran) == 60_000  # every item ran once
    assert (d.handled, d.errors) == (60_000, 6_000)


def test_handled_stays_exact_when_several_threads_spin(caplog: pytest.LogCaptureFixture) -> None:
    """The same for a thread-less dispatcher whose queue several threads run."""
    caplog.set_level(logging.CRITICAL, logger="easymesh.dispatch")
    d = Dispatcher("easymesh-test-spin", lambda item: 1 // (item % 10), workers=0,
                   queue_size=100_000)  # fmt: skip
    for i in range(60_000):
        d.put(i, 1)

    def spin() -> None:
        while d.run_queued(limit=8):
            pass

    run_preempted(spin)
    assert (d.handled, d.errors) == (60_000, 6_000)
