"""How often a node's I/O thread wakes (issue 15): per ``Node()`` and per node for one
topology change. Each turn of a node's loop is a thread waking among all the others of
the process (a GIL hand-over, a futex, a context switch): in a join storm of 100 nodes
per process these, not the Python work, are most of the cost.

Usage:
  loop_turns.py [--nodes=N]

Options:
  --nodes=N  Nodes built one after the other in this process [default: 50].

A coordinator and one more node (the one that starts listening) run in a child process.
This process counts every return from a selector's ``select()`` (a loop turn) and every
wake-up byte (``LoopThread._wake``: one I/O thread per process) by wrapping both, builds N nodes one after the other
(heartbeats every 60 s, so that none falls into the count), then has every node wait for
a listener of a topic while the child starts listening to it. The counts are exact, not
timings: compare two checkouts with ``PYTHONPATH=<checkout> python loop_turns.py``.
"""

from __future__ import annotations

import collections
import selectors
import subprocess
import sys
import threading
import time
from typing import Any

from docopt import docopt

CHILD = """
import sys, easymesh
from easymesh.coordinator import Coordinator
c = Coordinator('127.0.0.1', 0).start()
print(c.port, flush=True)
n = easymesh.Node('changer', coordinator=f'127.0.0.1:{c.port}')
for line in sys.stdin:
    n.listen(line.strip(), lambda *a: None)
"""

counts: collections.Counter[str] = collections.Counter()


def _count() -> None:
    from easymesh.transport import loopthread

    wake, select = loopthread.LoopThread._wake, selectors.EpollSelector.select

    def counted_wake(self: Any) -> None:
        counts["wake-up bytes"] += 1
        wake(self)

    def counted_select(self: Any, timeout: float | None = None) -> Any:
        events = select(self, timeout)
        counts["loop turns"] += 1
        return events

    loopthread.LoopThread._wake = counted_wake  # type: ignore[method-assign]
    selectors.EpollSelector.select = counted_select  # type: ignore[method-assign]


def main() -> int:
    n = int(docopt(__doc__)["--nodes"])
    _count()
    import easymesh

    child = subprocess.Popen([sys.executable, "-c", CHILD], stdin=subprocess.PIPE,
                             stdout=subprocess.PIPE, text=True)
    assert child.stdin is not None and child.stdout is not None
    address = f"127.0.0.1:{child.stdout.readline().strip()}"
    counts.clear()
    nodes = [easymesh.Node(f"w-{i}", coordinator=address, heartbeat_interval=60) for i in range(n)]
    join = dict(counts)
    waiters = [threading.Thread(target=node.wait_for_listener, args=("t", 30)) for node in nodes]
    for t in waiters:
        t.start()
    time.sleep(1.0)  # the waits are set up and their watches acked (a pause, not a sync)
    counts.clear()
    child.stdin.write("t\n")
    child.stdin.flush()
    for t in waiters:
        t.join(40)
    time.sleep(0.2)  # turns that follow the last wake-up (none expected)
    change = dict(counts)
    print(f"easymesh from {easymesh.__file__}")
    print("per Node():", {k: round(v / n, 2) for k, v in join.items()})
    print("per node for one change:", {k: round(v / n, 2) for k, v in change.items()})
    for node in nodes:
        node.close(0)
    child.stdin.close()
    child.wait(10)
    return 0


if __name__ == "__main__":
    sys.exit(main())
