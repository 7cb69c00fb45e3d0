"""The coordinator under many nodes: how long 200 nodes take to join, and how long one
topology change takes to reach all of them.

Usage:
  mesh_scale.py --coordinator=ADDR [--nodes=N] [--procs=P] [--reps=R]
  mesh_scale.py worker --coordinator=ADDR --count=K --prefix=NAME
  mesh_scale.py (-h | --help)

Options:
  --coordinator=ADDR  The easymesh coordinator (host:port).
  --nodes=N           Nodes in all [default: 200].
  --procs=P           Worker processes; each builds N/P nodes in N/P threads [default: 4].
  --reps=R            Repetitions [default: 1].
  --count=K           worker: nodes to build.
  --prefix=NAME       worker: node name prefix.

Method: the workers start and import easymesh first, then wait for "go <t>" on stdin
(t from CLOCK_MONOTONIC); each builds its nodes at once, one thread per node, and reports
when the last Node() returned (registered with the coordinator, topology received). Join
time = the last of these - t. Then, with every node waiting in wait_for_listener(), a
separate node starts listening to a new topic at time t2; each waiting node records when
the change reached it. Change time = the last arrival - t2. Prints `SPEEDTEST {json}`.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import threading
import time
from typing import Any

from docopt import docopt


def now() -> float:
    return time.clock_gettime(time.CLOCK_MONOTONIC)


def worker(coordinator: str, count: int, prefix: str) -> int:
    import easymesh

    print("ready", flush=True)
    nodes: list[Any] = [None] * count
    errors: list[str] = []
    line = sys.stdin.readline().split()
    if not line or line[0] != "go":
        return 1

    def build(i: int) -> None:
        try:
            nodes[i] = easymesh.Node(f"{prefix}-{i}", coordinator=coordinator, connect_timeout=20)
        except Exception as exc:  # report, do not hang
            errors.append(repr(exc))

    threads = [threading.Thread(target=build, args=(i,)) for i in range(count)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    t_joined = now()
    print(f"joined {t_joined} {len(errors)} {errors[:1]}", flush=True)
    topic = sys.stdin.readline().split()[1]  # "watch <topic>"
    seen = [0.0] * count

    def watch(i: int) -> None:
        node = nodes[i]
        if node is None:
            return
        try:
            node.wait_for_listener(topic, timeout=10)
            seen[i] = now()
        except Exception:
            pass

    watchers = [threading.Thread(target=watch, args=(i,)) for i in range(count)]
    for t in watchers:
        t.start()
    print("watching", flush=True)
    for t in watchers:
        t.join(15)
    missing = sum(1 for s in seen if not s)
    print(f"seen {max(seen)} {missing}", flush=True)
    closers = [threading.Thread(target=n.close, args=(0.5,)) for n in nodes if n is not None]
    for t in closers:
        t.start()
    for t in closers:
        t.join(10)
    return 0


def read_line(p: subprocess.Popen, prefix: str, timeout: float) -> list[str]:
    out: list[str] = []

    def read() -> None:
        assert p.stdout is not None
        for line in p.stdout:
            if line.startswith(prefix):
                out.append(line)
                return

    t = threading.Thread(target=read, daemon=True)
    t.start()
    t.join(timeout)
    if not out:
        raise RuntimeError(f"worker {p.pid}: no {prefix!r} line within {timeout} s")
    return out[0].split()


def one_rep(coordinator: str, nodes: int, procs: int, rep: int) -> dict[str, Any]:
    import easymesh

    per = nodes // procs
    workers = [subprocess.Popen([sys.executable, __file__, "worker", f"--coordinator={coordinator}",
                                 f"--count={per}", f"--prefix=scale{rep}-{i}"],
                                stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                                start_new_session=True) for i in range(procs)]
    try:
        for w in workers:
            read_line(w, "ready", 30)
        changer = easymesh.Node(f"scale{rep}-changer", coordinator=coordinator)
        t_go = now()
        for w in workers:
            assert w.stdin is not None
            w.stdin.write(f"go {t_go}\n")
            w.stdin.flush()
        joined = [read_line(w, "joined", 45) for w in workers]
        join_s = max(float(j[1]) for j in joined) - t_go
        errors = sum(int(j[2]) for j in joined)
        time.sleep(1.0)  # let the join storm settle: measure a change in a steady mesh
        topic = f"scale-change-{rep}"
        for w in workers:
            assert w.stdin is not None
            w.stdin.write(f"watch {topic}\n")
            w.stdin.flush()
        for w in workers:
            read_line(w, "watching", 15)
        time.sleep(0.3)  # every watcher thread is blocked in wait_for_listener by now
        t_change = now()
        changer.listen(topic, lambda *_: None)
        seen = [read_line(w, "seen", 20) for w in workers]
        change_ms = (max(float(s[1]) for s in seen) - t_change) * 1000
        missing = sum(int(s[2]) for s in seen)
        changer.close()
        for w in workers:
            w.wait(20)
        return {"join_s": round(join_s, 3), "change_ms": round(change_ms, 1), "errors": errors,
                "missing": missing}
    finally:
        for w in workers:
            if w.poll() is None:
                os.killpg(w.pid, 9)
                w.wait(5)


def main() -> int:
    args = docopt(__doc__)
    if args["worker"]:
        return worker(args["--coordinator"], int(args["--count"]), args["--prefix"])
    t = threading.Timer(300, lambda: os._exit(3))
    t.daemon = True
    t.start()
    runs = []
    for rep in range(int(args["--reps"])):
        r = one_rep(args["--coordinator"], int(args["--nodes"]), int(args["--procs"]), rep)
        print(f"mesh_scale: rep {rep + 1}: {r}", flush=True)
        runs.append(r)
    res = {"nodes": int(args["--nodes"]), "procs": int(args["--procs"]), "runs": runs,
           "join_s": statistics.median(r["join_s"] for r in runs),
           "change_ms": statistics.median(r["change_ms"] for r in runs),
           "errors": sum(r["errors"] for r in runs), "missing": sum(r["missing"] for r in runs)}
    print("SPEEDTEST " + json.dumps(res), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
