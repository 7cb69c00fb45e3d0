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

import time
from typing import Any

from easymesh.dispatch import Dispatcher


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
