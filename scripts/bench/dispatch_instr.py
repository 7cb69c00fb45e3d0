"""Instructions a Dispatcher spends per small item, for callgrind (deterministic, no timing).

Usage:
  dispatch_instr.py MODE [--items=N]

  MODE  none | worker | spin | handoff | handoff-none

Options:
  --items=N  Small items queued [default: 30000].

N items are queued first (``start=False``), then ``worker`` starts one worker thread that
drains them (batches of up to 64, as a topic listener does) and ``spin`` runs them with
``run_queued(limit=1)``, one call per item (a thread-less listener's worst case); ``none``
only queues them (process start, imports and the puts: subtract it). ``handoff`` puts one
item at a time into a started worker's queue and waits for it to have run (a
``queue.SimpleQueue`` the callback puts to), so each item wakes the idle worker: the path of
a frame that arrives alone; ``handoff-none`` is the same process without the items (subtract
it). Compare two checkouts
by instruction count, e.g.::

  PYTHONPATH=<checkout> valgrind --tool=callgrind --callgrind-out-file=/dev/null \\
      python scripts/bench/dispatch_instr.py worker

(the "Collected" line). Used for the dispatch counter fix (audit branch, 2026-12-01) and
the worker's doorbell (issue 13, 2026-12-02: ``handoff``).
"""

from __future__ import annotations

import queue
import threading
import time

from docopt import docopt

from easymesh.dispatch import Dispatcher


def main() -> None:
    args = docopt(__doc__)
    n, mode = int(args["--items"]), args["MODE"]
    if mode not in ("none", "worker", "spin", "handoff", "handoff-none"):
        raise SystemExit("MODE is none, worker, spin, handoff or handoff-none")
    if mode.startswith("handoff"):
        handoff(0 if mode == "handoff-none" else n)
        return
    done = threading.Event()
    count = [0]

    def run(item: int) -> None:
        count[0] += 1
        if count[0] == n:
            done.set()

    workers = 0 if mode == "spin" else 1
    d = Dispatcher("bench", run, workers=workers, queue_size=n + 10, start=False)
    for i in range(n):
        d.put(i, 100)
    if mode == "spin":
        while d.run_queued(limit=1):
            pass
    elif mode == "worker":
        d.start()
        done.wait(600)
        d.begin_stop(drain=True)
        d.join(time.monotonic() + 60)
    print(d.handled)


def handoff(n: int) -> None:
    """One item at a time: put, then wait until the worker ran it (a wake-up per item)."""
    ran: queue.SimpleQueue[int] = queue.SimpleQueue()
    d = Dispatcher("bench", ran.put, workers=1, queue_size=n + 10)
    for i in range(n):
        d.put(i, 100)
        ran.get()
    d.stop(timeout=60)
    print(d.handled)


if __name__ == "__main__":
    main()
