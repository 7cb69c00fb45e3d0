"""Timestamps of one topology change, end to end (issue 15, ``MESH_SCALE_STAMPS=DIR``).

``mesh_scale.py`` loads this module when the variable is set. It wraps, at class level and
before any node or coordinator exists, the few functions on the chain from the coordinator's
write to a waiter's return, and stamps ``time.monotonic_ns()`` (the clock every process of
the machine shares) into a preallocated list while armed (no logging, no I/O in the hot
path):

* coordinator (the bench process): every ``Outbox.send`` (which connection, wall before and
  after, the thread's CPU before and after);
* a worker: every ``select`` of its I/O thread (when it returned, how many events, how long
  it blocked), every coordinator frame read (``CoordinatorClient._on_frames``, which node),
  every ``TopologyView`` wake run, and (from the bench) when each waiter returned.

``dump()`` writes DIR/<name>.json; ``report(DIR, t_change)`` prints the chain per worker.
"""

from __future__ import annotations

import json
import os
import sys
import threading
import time
from typing import Any

_ns = time.monotonic_ns
_tns = time.thread_time_ns
SIZE = 200_000

state: dict[str, Any] = {"armed": False, "buf": [None] * SIZE, "n": 0}


def _put(item: tuple[Any, ...]) -> None:
    n = state["n"]
    if n < SIZE:
        state["buf"][n] = item
        state["n"] = n + 1


def schedstat() -> tuple[int, int, int]:
    """This process's threads, summed: (ns on a CPU, ns runnable but waiting for a CPU,
    time slices), from /proc (zeros where it is missing)."""
    tot = [0, 0, 0]
    try:
        tasks = os.listdir("/proc/self/task")
    except OSError:
        return (0, 0, 0)
    for t in tasks:
        try:
            with open(f"/proc/self/task/{t}/schedstat") as f:
                vals = [int(x) for x in f.read().split()]
        except (OSError, ValueError):
            continue
        for i in range(3):
            tot[i] += vals[i]
    return (tot[0], tot[1], tot[2])


def thread_sched() -> tuple[int, int]:
    """The calling thread's (ns on a CPU, ns runnable but waiting for a CPU)."""
    try:
        with open("/proc/thread-self/schedstat") as f:
            vals = f.read().split()
        return (int(vals[0]), int(vals[1]))
    except (OSError, ValueError, IndexError):
        return (0, 0)


def _gc(phase: str, _info: dict[str, Any]) -> None:
    if not state["armed"]:
        return
    if phase == "start":
        state["gc0"] = _ns()
    else:
        state["gc_ns"] += _ns() - state.get("gc0", _ns())
        state["gcs"] += 1


def arm() -> None:
    import gc

    state["n"] = 0
    state["gc_ns"] = state["gcs"] = 0
    if _gc not in gc.callbacks:
        gc.callbacks.append(_gc)
    state["sched0"] = schedstat()
    state["armed"] = True


def disarm() -> None:
    state["armed"] = False
    state["sched"] = [b - a for a, b in zip(state["sched0"], schedstat(), strict=True)]


def install_worker() -> None:
    """Wrap the worker's chain (before any node exists)."""
    import selectors

    from easymesh import coordclient, view

    sel_cls = selectors.DefaultSelector
    orig_select = sel_cls.select

    def select(self: Any, timeout: float | None = None) -> Any:
        if not state["armed"]:
            return orig_select(self, timeout)
        t0 = _ns()
        ev = orig_select(self, timeout)
        _put(("s", _ns(), len(ev), t0, threading.get_ident()))
        return ev

    sel_cls.select = select  # type: ignore[method-assign]

    orig_frames = coordclient.CoordinatorClient._on_frames

    def on_frames(self: Any, conn: Any, frames: Any) -> None:
        if state["armed"]:
            _put(("r", _ns(), self.node_name, len(frames)))
        orig_frames(self, conn, frames)

    coordclient.CoordinatorClient._on_frames = on_frames  # type: ignore[method-assign]

    orig_apply = view.TopologyView.apply

    def apply(self: Any, msg: Any) -> bool:
        ok = orig_apply(self, msg)
        if state["armed"]:
            _put(("a", _ns(), id(self)))
        return ok

    view.TopologyView.apply = apply  # type: ignore[method-assign]

    for name in ("_wake", "_wake_all"):
        orig = getattr(view.TopologyView, name, None)
        if orig is None:
            continue

        def wake(self: Any, *a: Any, _orig: Any = orig, _name: str = name) -> Any:
            if state["armed"]:
                _put(("w", _ns(), id(self), _name))
            return _orig(self, *a)

        setattr(view.TopologyView, name, wake)


def install_coordinator() -> None:
    """Wrap the coordinator's writes (before the Coordinator exists)."""
    from easymesh.transport import outbox

    orig_send = outbox.Outbox.send

    def send(self: Any, buffers: Any, nbytes: int, droppable: bool = True) -> bool:
        if not state["armed"]:
            return orig_send(self, buffers, nbytes, droppable)
        t0, c0 = _ns(), _tns()
        ok = orig_send(self, buffers, nbytes, droppable)
        _put(("x", t0, _ns(), c0, _tns(), id(self), nbytes))
        return ok

    outbox.Outbox.send = send  # type: ignore[method-assign]

    from easymesh import coordinator

    orig_broadcast = coordinator.Coordinator._broadcast

    def broadcast(self: Any) -> None:
        if not state["armed"]:
            return orig_broadcast(self)
        s0 = thread_sched()
        orig_broadcast(self)
        s1 = thread_sched()
        state.setdefault("passes", []).append((s1[0] - s0[0], s1[1] - s0[1]))

    coordinator.Coordinator._broadcast = broadcast  # type: ignore[method-assign]


def dump(path: str, extra: dict[str, Any]) -> None:
    items = state["buf"][: state["n"]]
    with open(path, "w") as f:
        json.dump(
            {
                "stamps": items,
                "passes": state.pop("passes", []),
                "sched": state.get("sched"),
                "gc_ns": state.get("gc_ns"),
                "gcs": state.get("gcs"),
                **extra,
            },
            f,
        )


def coordinator_extra(coord: Any) -> dict[str, Any]:
    """Which outbox is which worker process (for the report)."""
    names = {}
    for conn, node_id in list(coord._node_of.items()):
        rec = coord.topology.nodes.get(node_id)
        if rec is not None and rec.name.count("-") == 2:  # scale-<proc>-<i>: a worker's node
            names[id(conn._outbox)] = rec.name
    return {"outboxes": names}


def _ms(ns: int, t0: int) -> float:
    return round((ns - t0) / 1e6, 1)


def report(folder: str, t_change: float) -> None:
    """Print the chain: the coordinator's writes per process, then per worker when its
    diffs were read, its wakes run and its waiters returned."""
    t0 = int(t_change * 1e9)
    out = sys.stderr
    with open(os.path.join(folder, "coordinator.json")) as f:
        c = json.load(f)
    names = {int(k): v for k, v in c["outboxes"].items()}
    writes = [s for s in c["stamps"] if s[0] == "x" and s[5] in names]
    if writes:  # the diff's writes (not the PONGs of heartbeats meanwhile): its size
        sizes = [s[6] for s in writes]
        size = max(set(sizes), key=sizes.count)
        writes = [s for s in writes if s[6] == size]
    per_proc: dict[str, list[Any]] = {}
    for s in writes:
        per_proc.setdefault(names[s[5]].rsplit("-", 1)[0], []).append(s)
    sc = c.get("sched") or [0, 0, 0]
    print(
        f"bench process (coordinator): on CPU {sc[0] / 1e6:.1f} ms, waiting for a CPU {sc[1] / 1e6:.1f} ms",
        file=out,
    )
    for p in c.get("passes", []):
        print(
            f"  a pass's thread: on CPU {p[0] / 1e6:.1f} ms, runnable waiting for a CPU {p[1] / 1e6:.1f} ms",
            file=out,
        )
    if writes:
        wall = sum(s[2] - s[1] for s in writes) / 1e6
        cpu = sum(s[4] - s[3] for s in writes) / 1e6
        gaps = [(b[1] - a[2]) / 1e6 for a, b in zip(writes, writes[1:], strict=False)]
        order = []
        for s in writes:
            p = names[s[5]].rsplit("-", 1)[0]
            if not order or order[-1] != p:
                order.append(p)
        print(
            f"coordinator: {len(writes)} writes from {_ms(writes[0][1], t0)} to {_ms(writes[-1][2], t0)} ms; "
            f"inside send() {wall:.1f} ms wall / {cpu:.1f} ms CPU; between sends {sum(gaps):.1f} ms "
            f"(max {max(gaps or [0]):.2f}); process runs in write order: {len(order)}",
            file=out,
        )
        big = sorted(((s[2] - s[1]) / 1e6, _ms(s[1], t0), names[s[5]]) for s in writes)[-5:]
        print(f"  slowest sends (ms, at, to): {big}", file=out)
    for proc in sorted(per_proc, key=lambda p: int(p.rsplit("-", 1)[1])):
        path = os.path.join(folder, f"{proc}.json")
        if not os.path.exists(path):
            continue
        with open(path) as f:
            w = json.load(f)
        ws = per_proc[proc]
        st = w["stamps"]
        reads = [s[1] for s in st if s[0] == "r"]
        wakes = [s[1] for s in st if s[0] == "w"]
        sels = [s for s in st if s[0] == "s"]
        seen = sorted(int(x * 1e9) for x in w["seen"] if x)
        busy = [s for s in sels if s[2] > 0 and s[1] >= t0]
        line = (
            f"{proc}: written {_ms(ws[0][1], t0)}..{_ms(ws[-1][2], t0)}; "
            f"read {_ms(reads[0], t0) if reads else '-'}..{_ms(reads[-1], t0) if reads else '-'} ({len(reads)}); "
            f"wakes {_ms(wakes[0], t0) if wakes else '-'}..{_ms(wakes[-1], t0) if wakes else '-'} ({len(wakes)}); "
            f"waiters {_ms(seen[0], t0) if seen else '-'}..{_ms(seen[-1], t0) if seen else '-'}; "
            f"selects with events {len(busy)} (events {sum(s[2] for s in busy)})"
        )
        print(line, file=out)
        ws_ = [x for x in w.get("waiter_sched") or [] if x]
        print(
            f"   waiter threads (wait to return): on CPU {sum(x[0] for x in ws_) / 1e6:.1f} ms, runnable "
            f"waiting for a CPU {sum(x[1] for x in ws_) / 1e6:.1f} ms; gc {w.get('gc_ns', 0) / 1e6:.1f} ms "
            f"in {w.get('gcs')} collections",
            file=out,
        )
        if seen:
            g = [(b - a) / 1e6 for a, b in zip(seen, seen[1:], strict=False)]
            g.sort()
            print(
                f"   waiter gaps ms: median {g[len(g) // 2]:.2f} p90 {g[int(len(g) * 0.9)]:.2f} "
                f"max {g[-1]:.2f}; sum of gaps > 2 ms: {sum(x for x in g if x > 2):.1f}",
                file=out,
            )
        if os.environ.get("MESH_SCALE_STAMPS_VERBOSE"):
            ev = sorted(
                [(s[1], "read " + s[2]) for s in st if s[0] == "r"]
                + [(s[1], "wake") for s in st if s[0] == "w"]
                + [(s[1], f"select {s[2]} ev blocked {(s[1] - s[3]) / 1e6:.2f}") for s in sels]
                + [(x, "waiter back") for x in seen]
                + [(s[1], "coord write") for s in ws]
            )
            for t, what in ev:
                print(f"     {_ms(t, t0):8.2f} {what}", file=out)
