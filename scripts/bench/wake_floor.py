"""How fast can one process wake N threads, each blocked on its own Condition (issue 15)?
No easymesh code: the floor under "a new listener reaches all nodes".

Usage:
  wake_floor.py [--nodes=N] [--procs=P] [--reps=R]
  wake_floor.py one --nodes=N --reps=R --how=HOW --at=T

Options:
  --nodes=N  Waiting threads per process [default: 100].
  --procs=P  Processes doing it at the same time (as the storm's workers) [default: 10].
  --reps=R   Changes per process and way [default: 5].
  --how=HOW  all | chain.
  --at=T     one: the monotonic time of the first change (0.5 s apart after it).

Two ways, measured alternately (each process does R changes of one way, then R of the
other; the processes change at the same moments, as a storm's workers learn of a change
together): ``all``: one thread (the I/O thread's role) notifies every Condition in turn, as
``TopologyView`` did; ``chain``: it notifies the first, and each woken thread notifies the
next before it returns. Prints, per way, the median over processes and changes of the wall
time until the last thread of a process returned (and over all processes of a change), and the CPU per woken thread.
"""

from __future__ import annotations

import os
import resource
import statistics
import subprocess
import sys
import threading
import time

from docopt import docopt


def cpu_seconds() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def one(n: int, reps: int, how: str, at: float) -> None:
    for rep in range(reps):
        wall, cpu = one_change(n, how, at + rep * 0.5)
        print(f"{rep} {wall:.2f} {cpu:.4f}", flush=True)


def one_change(n: int, how: str, at: float) -> tuple[float, float]:
    """N threads wait, each on its own Condition; at ``at`` (monotonic) they are woken
    ``how``; (ms until the last returned, CPU ms per thread)."""
    conds = [threading.Condition(threading.Lock()) for _ in range(n)]
    flags = [False] * n
    done = [0.0] * n
    ready = threading.Barrier(n + 1)

    def wait(i: int) -> None:
        c = conds[i]
        with c:
            ready.wait()
            while not flags[i]:
                c.wait(10)
        if how == "chain" and i + 1 < n:
            with conds[i + 1]:
                flags[i + 1] = True
                conds[i + 1].notify_all()
        done[i] = time.monotonic()

    threads = [threading.Thread(target=wait, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    ready.wait()
    for c in conds:  # every waiter is inside wait() (it released the lock)
        with c:
            pass
    time.sleep(max(0.0, at - time.monotonic()))
    c0, t0 = cpu_seconds(), time.monotonic()
    for i in range(n if how == "all" else 1):
        with conds[i]:
            flags[i] = True
            conds[i].notify_all()
    for t in threads:
        t.join()
    return (max(done) - t0) * 1000, (cpu_seconds() - c0) * 1000 / n


def main() -> int:
    args = docopt(__doc__)
    n, reps = int(args["--nodes"]), int(args["--reps"])
    if args["one"]:
        one(n, reps, args["--how"], float(args["--at"]))
        return 0
    procs = int(args["--procs"])
    results: dict[str, list[tuple[float, float]]] = {"all": [], "chain": []}
    every: dict[str, list[float]] = {"all": [], "chain": []}  # per change: the last process
    for _ in range(2):
        for how in ("all", "chain"):
            at = time.monotonic() + 1.0
            ps = [
                subprocess.Popen(
                    [
                        sys.executable,
                        os.path.abspath(__file__),
                        "one",
                        f"--nodes={n}",
                        f"--reps={reps}",
                        f"--how={how}",
                        f"--at={at}",
                    ],
                    stdout=subprocess.PIPE,
                    text=True,
                )
                for _ in range(procs)
            ]
            last: dict[str, float] = {}
            for p in ps:
                out, _ = p.communicate(timeout=60)
                for line in out.splitlines():
                    rep, wall, cpu = line.split()
                    results[how].append((float(wall), float(cpu)))
                    last[rep] = max(last.get(rep, 0.0), float(wall))
            every[how].extend(last.values())
    for how, rs in results.items():
        print(
            f"{how}: last thread back after {statistics.median(r[0] for r in rs):.1f} ms median "
            f"(max {max(r[0] for r in rs):.1f}); every process's: median {statistics.median(every[how]):.1f} ms; CPU per thread {statistics.median(r[1] for r in rs):.3f} ms "
            f"(load {os.getloadavg()[0]:.1f})"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
