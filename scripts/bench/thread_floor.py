"""The floor under a topology change (issue 15): what waking N nodes costs in one process
when each node is an I/O thread, with no easymesh code at all.

Usage:
  thread_floor.py [--nodes=N] [--reps=R]

Options:
  --nodes=N  Nodes in this process [default: 100].
  --reps=R   Changes measured per layout [default: 5].

A "change" is one byte sent to each node's socket; the node's I/O thread reads it and
notifies a Condition. Four layouts: an I/O thread per node (as easymesh today) or one
shared I/O thread for all (a shared loop per process), each with a waiting user thread
per node (as ``mesh_scale.py``'s ``wait_for_listener`` threads) or one thread that waits
on every node in turn. Prints the process's CPU (user + system) per node per change and
the wall time until the last node knew, for each repetition. The difference between the
layouts is the price of the threads themselves: no parsing, no topology, no locks of
ours.
"""

from __future__ import annotations

import resource
import selectors
import socket
import sys
import threading
import time

from docopt import docopt


def cpu_seconds() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


class Nodes:
    """N socket pairs, their conditions, and the I/O thread(s) that serve them."""

    def __init__(self, n: int, shared: bool) -> None:
        self.n = n
        self.pairs = [socket.socketpair() for _ in range(n)]
        for r, _ in self.pairs:
            r.setblocking(False)
        self.conds = [threading.Condition(threading.Lock()) for _ in range(n)]
        self.flags = [False] * n
        if shared:
            self.threads = [threading.Thread(target=self._serve, args=(range(n),))]
        else:
            self.threads = [threading.Thread(target=self._serve, args=([i],)) for i in range(n)]
        for t in self.threads:
            t.start()

    def _serve(self, ids: range | list[int]) -> None:
        sel = selectors.DefaultSelector()
        for i in ids:
            sel.register(self.pairs[i][0], selectors.EVENT_READ, i)
        left = len(ids)
        while left:
            for key, _ in sel.select(1.0):
                i = key.data
                data = self.pairs[i][0].recv(4096)
                if b"x" in data:  # stop
                    sel.unregister(self.pairs[i][0])
                    left -= 1
                    continue
                with self.conds[i]:
                    self.flags[i] = True
                    self.conds[i].notify_all()
        sel.close()

    def wait(self, i: int) -> None:
        with self.conds[i]:
            while not self.flags[i]:
                self.conds[i].wait(10)

    def close(self) -> None:
        for _, w in self.pairs:
            w.send(b"x")
        for t in self.threads:
            t.join(10)
        for r, w in self.pairs:
            r.close()
            w.close()


def change(nodes: Nodes, waiter_per_node: bool) -> tuple[float, float]:
    """One change: (CPU ms per node, ms until the last node knew)."""
    nodes.flags = [False] * nodes.n
    if waiter_per_node:
        waiters = [threading.Thread(target=nodes.wait, args=(i,)) for i in range(nodes.n)]
    else:
        waiters = [threading.Thread(target=lambda: [nodes.wait(i) for i in range(nodes.n)])]
    for t in waiters:
        t.start()
    time.sleep(0.3)  # every waiter is blocked by now (a pause, not a synchronisation)
    c0, t0 = cpu_seconds(), time.monotonic()
    for _, w in nodes.pairs:
        w.send(b"a")
    for t in waiters:
        t.join()
    return (cpu_seconds() - c0) * 1000 / nodes.n, (time.monotonic() - t0) * 1000


def main() -> int:
    args = docopt(__doc__)
    n, reps = int(args["--nodes"]), int(args["--reps"])
    for shared in (False, True):
        for waiter_per_node in (True, False):
            nodes = Nodes(n, shared)
            runs = [change(nodes, waiter_per_node) for _ in range(reps)]
            nodes.close()
            io = "one shared I/O thread" if shared else "an I/O thread per node"
            who = "a waiting thread per node" if waiter_per_node else "one waiting thread"
            cpu = sorted(r[0] for r in runs)
            print(f"{io}, {who}: CPU per node {cpu[len(cpu) // 2]:.3f} ms (median; all: "
                  f"{', '.join(f'{r[0]:.3f}' for r in runs)}); last node knew after "
                  f"{', '.join(f'{r[1]:.0f}' for r in runs)} ms", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
