"""Join storms (issue 15): how long N nodes take to join at once, what a join costs the
coordinator in bytes, and how long one new listener takes to reach every node.

Usage:
  mesh_scale.py [--sizes=LIST] [--procs=P] [--netns] [--out=FILE]
  mesh_scale.py --coordinator=ADDR [--nodes=N] [--procs=P] [--reps=R]
  mesh_scale.py storm --nodes=N --procs=P --host=IP [--ns=TAG]
  mesh_scale.py worker --coordinator=ADDR --count=K --prefix=NAME
  mesh_scale.py (-h | --help)

Options:
  --sizes=LIST   Storm sizes, in one run [default: 100,1000].
  --procs=P      Worker processes; each builds N/P nodes, one thread per node [default: 10].
  --netns        Also the 1,000-node storm across 10 network namespaces (root only).
  --out=FILE     Also write the results as a Markdown table to FILE.
  --coordinator=ADDR  Storms against this coordinator (bench.py; no byte counts).
  --reps=R       With --coordinator: storms of --nodes nodes [default: 1].
  --nodes=N      storm: nodes in all.
  --host=IP      storm: the coordinator's address.
  --ns=TAG       storm: worker i runs in network namespace TAG-i.
  --count=K      worker: nodes to build.
  --prefix=NAME  worker: node name prefix.

Method (one storm): a coordinator runs in this process. The workers start and import
easymesh, then wait for "go"; each builds its nodes at once, one thread per node
(``Node()`` as a new user writes it), and reports when the last one returned. Join time
= the last of these - go. ``warnings``: log records at WARNING or above in the workers
and the coordinator during the storm (a handshake timing out, a retry). ``bytes/join``:
topology bytes the coordinator sent during the storm (``Coordinator.bytes_sent``: Welcomes
and diffs) / N. Then every node waits in ``wait_for_listener(topic)`` and a separate node
starts listening to that topic at t2; each waiting node records when it learned of it;
change time = the last arrival - t2 (``bytes/change``: what the coordinator sent for it).
CPU figures are user+system seconds of the processes (less noisy than wall time on a
shared machine): during the join; while the change propagates (``change_cpu_s``: from a
"mark" sent once every wait is set up until the last waiter returned); and at rest
between the two (``idle_cpu_us_per_node_s``: heartbeats, the background a change competes
with). ``coordinator_side`` (a coordinator in this process only): when, after t2, the new
listener's update reached the coordinator (``update_in_ms``) and when it had written the
last diff of it (``last_written_ms``), with the broadcast passes that wrote them (how
many, how long each took and its thread's CPU, bytes each wrote: one pass writes every
watcher's diff).
``MESH_SCALE_DEBUG=1`` also prints per worker when its first, median and last node
learned of the change, and the garbage collector's CPU during the join.
``MESH_SCALE_STAMPS=DIR`` stamps the change's chain end to end (``mesh_stamps.py``: each
coordinator write, each worker's selects, reads, wakes and waiter returns, the threads'
time on and waiting for a CPU) and prints it per worker process; files go to DIR.
``MESH_SCALE_PIN=1`` (a diagnosis, not a result) puts this process, with the coordinator,
on CPU 0 and every worker on CPU 1.

The netns storm: 10 namespaces ``emscale<pid>-0..9`` with 100 nodes each, plus one for
the coordinator, on a bridge in an 11th (10.201.0.0/24, veth pairs); every link is TCP.
They are deleted afterwards, also on failure. Prints ``SPEEDTEST {json}``.
"""

from __future__ import annotations

import json
import logging
import os
import resource
import shutil
import statistics
import subprocess
import sys
import threading
import time
from typing import Any

from docopt import docopt

HERE = os.path.abspath(__file__)


def now() -> float:
    return time.clock_gettime(time.CLOCK_MONOTONIC)


def cpu_seconds() -> float:
    """CPU time (user + system) of this process, all threads."""
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


class Warnings(logging.Handler):
    """Counts easymesh log records at WARNING or above; keeps the first few."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.count = 0
        self.first: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.count += 1
        if len(self.first) < 3:
            self.first.append(record.getMessage()[:200])


def _gc_timer() -> list[float]:
    """[CPU seconds the garbage collector ran] (each collection starts and ends on one thread)."""
    import gc

    total = [0.0, 0.0]

    def on_gc(phase: str, _info: dict[str, Any]) -> None:
        if phase == "start":
            total[1] = time.thread_time()
        else:
            total[0] += time.thread_time() - total[1]

    gc.callbacks.append(on_gc)
    return total


def _io_profile(nodes: list[Any], prefix: str) -> Any:
    """``MESH_SCALE_PROFILE=DIR``: profile this worker's shared I/O thread (where every
    node of the process reads and applies the change) with cProfile from "mark" until the
    last waiter returned; writes DIR/<prefix>.prof and a summary line (the I/O thread's
    CPU, the process's, Python calls per node) to stderr. ``MESH_SCALE_PROFILE=cpu``: the
    summary's CPU figures only, without the profiler (its overhead). Returns the function
    that ends it, or None when off."""
    out = os.environ.get("MESH_SCALE_PROFILE")
    live = [n for n in nodes if n is not None]
    if not out or not live:
        return None
    cProfile, pstats = _profilers()

    loop = live[0]._loop
    prof = cProfile.Profile(time.thread_time)  # CPU, not the wall (GIL waits)
    if out == "cpu":
        prof.enable = prof.disable = lambda *_: None  # type: ignore[method-assign]
    started = threading.Event()
    t0 = [0.0]

    def begin() -> None:
        t0[0] = time.thread_time()
        prof.enable()
        started.set()

    loop.call_soon(begin)
    started.wait(5)

    def end(process_cpu: float) -> None:
        done = threading.Event()
        io_cpu = [0.0]

        def stop() -> None:
            prof.disable()
            io_cpu[0] = time.thread_time() - t0[0]
            done.set()

        loop.call_soon(stop)
        done.wait(5)
        if out == "cpu":
            print(f"profile {prefix}: I/O thread {io_cpu[0] * 1e3:.1f} ms CPU "
                  f"(process {process_cpu * 1e3:.1f} ms)", file=sys.stderr, flush=True)
            return
        os.makedirs(out, exist_ok=True)
        path = os.path.join(out, f"{prefix}.prof")
        prof.dump_stats(path)
        calls = pstats.Stats(path).total_calls  # type: ignore[attr-defined]
        print(f"profile {prefix}: I/O thread {io_cpu[0] * 1e3:.1f} ms CPU under the profiler "
              f"(process {process_cpu * 1e3:.1f} ms), {calls} Python calls, "
              f"{calls / len(live):.0f} per node -> {path}", file=sys.stderr, flush=True)

    return end


def _profilers() -> tuple[Any, Any]:
    """The standard ``cProfile`` and ``pstats`` (this folder's profile.py would shadow the
    standard ``profile`` module they import)."""
    here = os.path.dirname(HERE)
    saved, sys.path[:] = sys.path[:], [p for p in sys.path if os.path.abspath(p) != here]
    try:
        import cProfile
        import pstats
    finally:
        sys.path[:] = saved
    return cProfile, pstats


def worker(coordinator: str, count: int, prefix: str) -> int:
    import easymesh

    stamps = _stamps("worker")
    _pin(1)
    warnings = Warnings()
    logging.getLogger("easymesh").addHandler(warnings)
    print("ready", flush=True)
    nodes: list[Any] = [None] * count
    errors: list[str] = []
    gc_time = _gc_timer()
    line = sys.stdin.readline().split()
    if not line or line[0] != "go":
        return 1
    cpu0 = cpu_seconds()
    gc_time[0] = 0.0

    def build(i: int) -> None:
        try:
            nodes[i] = easymesh.Node(f"{prefix}-{i}", coordinator=coordinator, connect_timeout=30)
        except Exception as exc:  # report, do not hang
            errors.append(repr(exc))

    threads = [threading.Thread(target=build, args=(i,)) for i in range(count)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    t_joined = now()
    cpu = cpu_seconds() - cpu0
    if os.environ.get("MESH_SCALE_DEBUG"):
        print(f"debug: gc {gc_time[0]:.3f} s of {cpu:.3f} s CPU during the join", file=sys.stderr)
    print(f"joined {t_joined} {len(errors)} {warnings.count} {cpu:.3f} "
          f"{json.dumps(errors[:1] + warnings.first[:1])}", flush=True)
    cpu_idle0 = cpu_seconds()
    topic = sys.stdin.readline().split()[1]  # "watch <topic>" (after the bench's 1 s pause)
    idle_s, idle_cpu = now() - t_joined, cpu_seconds() - cpu_idle0
    seen = [0.0] * count
    sched: list[Any] = [None] * count  # (MESH_SCALE_STAMPS) each waiter's CPU and run delay

    def watch(i: int) -> None:
        node = nodes[i]
        if node is None:
            return
        s0 = stamps.thread_sched() if stamps is not None else None
        try:
            node.wait_for_listener(topic, timeout=20)
            seen[i] = now()
        except Exception:
            pass
        if s0 is not None:
            s1 = stamps.thread_sched()
            sched[i] = (s1[0] - s0[0], s1[1] - s0[1])

    watchers = [threading.Thread(target=watch, args=(i,)) for i in range(count)]
    for t in watchers:
        t.start()
    print("watching", flush=True)
    sys.stdin.readline()  # "mark": the change comes next (the waits are set up by now)
    profile = _io_profile(nodes, prefix)
    if stamps is not None:
        stamps.arm()
    cpu1 = cpu_seconds()
    for t in watchers:
        t.join(30)
    change_cpu = cpu_seconds() - cpu1
    if stamps is not None:
        stamps.disarm()
        stamps.dump(os.path.join(os.environ["MESH_SCALE_STAMPS"], f"{prefix}.json"),
                    {"seen": seen, "waiter_sched": sched})
    if profile is not None:
        profile(change_cpu)
    missing = sum(1 for s in seen if not s)
    arrived = sorted(s for s in seen if s) or [0.0]
    idle = idle_cpu / idle_s / max(1, count) * 1e6  # us of CPU per node per second
    print(f"seen {max(seen)} {missing} {arrived[len(arrived) // 2]} {arrived[0]} {change_cpu:.3f} {idle:.0f}",
          flush=True)
    closers = [threading.Thread(target=n.close, args=(0.5,)) for n in nodes if n is not None]
    for t in closers:
        t.start()
    for t in closers:
        t.join(10)
    return 0


def _stamps(side: str) -> Any:
    """``MESH_SCALE_STAMPS=DIR``: the mesh_stamps module, installed on this side (see its
    docstring); None when off."""
    folder = os.environ.get("MESH_SCALE_STAMPS")
    if not folder:
        return None
    os.makedirs(folder, exist_ok=True)
    sys.path.insert(0, os.path.dirname(HERE))
    import mesh_stamps

    if not mesh_stamps.state.get(side):
        mesh_stamps.state[side] = True
        getattr(mesh_stamps, f"install_{side}")()
    return mesh_stamps


def _pin(cpu: int) -> None:
    """``MESH_SCALE_PIN=1`` (a diagnosis, not a result): the coordinator's process on CPU 0,
    the workers on CPU 1, so that no worker thread the coordinator wakes can run on its CPU."""
    if os.environ.get("MESH_SCALE_PIN") and hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {cpu})


def read_line(p: subprocess.Popen, prefix: str, timeout: float, fields: int = 5) -> list[str]:
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
    return out[0].split(maxsplit=fields - 1)


def tell(workers: list[subprocess.Popen], line: str) -> None:
    for w in workers:
        assert w.stdin is not None
        w.stdin.write(line + "\n")
        w.stdin.flush()


def storm(nodes: int, procs: int, host: str, ns: str | None = None, address: str = "") -> dict[str, Any]:
    """One storm of ``nodes`` nodes in ``procs`` processes against a fresh coordinator in
    this process (or the one at ``address``)."""
    import easymesh
    from easymesh.coordinator import Coordinator

    load = os.getloadavg()[0]
    stamps = _stamps("coordinator")
    _pin(0)
    coord: Any = None
    if not address:
        coord = Coordinator(host, 0).start()  # (its warning about no authkey is not counted)
        address = f"{host}:{coord.port}"
    passes = _watch_broadcasts(coord) if coord is not None else None
    warnings = Warnings()
    logging.getLogger("easymesh").addHandler(warnings)
    per = nodes // procs
    workers = []
    try:
        for i in range(procs):
            prefix = ["ip", "netns", "exec", f"{ns}-{i}"] if ns else []
            workers.append(subprocess.Popen(
                [*prefix, sys.executable, HERE, "worker", f"--coordinator={address}", f"--count={per}",
                 f"--prefix=scale-{i}"],
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, start_new_session=True))
        for w in workers:
            read_line(w, "ready", 60)
        changer = easymesh.Node("scale-changer", coordinator=address)
        sent0 = getattr(coord, "bytes_sent", None)
        t_go = now()
        cpu0 = cpu_seconds()
        tell(workers, f"go {t_go}")
        joined = [read_line(w, "joined", 120, 6) for w in workers]
        coord_cpu = cpu_seconds() - cpu0  # the coordinator (and this bench's idle threads)
        join_s = max(float(j[1]) for j in joined) - t_go
        errors = sum(int(j[2]) for j in joined)
        worker_warnings = sum(int(j[3]) for j in joined)
        first = [m for j in joined for m in json.loads(j[5])][:2]
        worker_cpu = sum(float(j[4]) for j in joined)
        time.sleep(1.0)  # the storm settles: measure a change in a steady mesh
        sent1 = getattr(coord, "bytes_sent", None)
        topic = "scale-change"
        tell(workers, f"watch {topic}")
        for w in workers:
            read_line(w, "watching", 30)
        time.sleep(1.0)  # every watcher thread is blocked in wait_for_listener by now
        sent2 = getattr(coord, "bytes_sent", None)
        tell(workers, "mark")
        time.sleep(0.1)  # each worker has read it
        if passes is not None:
            passes["armed"].append(True)
        if stamps is not None:
            stamps.arm()
        t_change = now()
        cpu2 = cpu_seconds()
        changer.listen(topic, lambda *_: None)
        seen = [read_line(w, "seen", 40, 8) for w in workers]
        if stamps is not None:
            stamps.disarm()
            folder = os.environ["MESH_SCALE_STAMPS"]
            stamps.dump(os.path.join(folder, "coordinator.json"), stamps.coordinator_extra(coord))
            print(f"stamps, {nodes} nodes:", file=sys.stderr)
            stamps.report(folder, t_change)
        change_coord_cpu = cpu_seconds() - cpu2
        change_ms = (max(float(s[1]) for s in seen) - t_change) * 1000
        # the median of the workers' medians: about when half the nodes knew
        mids = sorted(float(s[3]) for s in seen)
        change_mid_ms = (mids[len(mids) // 2] - t_change) * 1000
        if os.environ.get("MESH_SCALE_DEBUG"):
            print("per worker (first, median, last) ms:", [
                tuple(round((float(x) - t_change) * 1000) for x in (s[4], s[3], s[1])) for s in seen])
        missing = sum(int(s[2]) for s in seen)
        sent3 = getattr(coord, "bytes_sent", None)
        coord_side = _coordinator_side(passes, t_change) if passes is not None else None
        if passes is not None and passes["profile"][0] is not None:
            out_dir = os.environ["MESH_SCALE_PROFILE"]
            os.makedirs(out_dir, exist_ok=True)
            passes["profile"][0].dump_stats(os.path.join(out_dir, f"coordinator-{nodes}.prof"))
        changer.close()
        for w in workers:
            w.wait(30)
        out = {"nodes": nodes, "procs": procs, "load_1min_before": load, "join_s": round(join_s, 3), "errors": errors,
               "warnings": worker_warnings + warnings.count,
               "join_cpu_s": {"coordinator": round(coord_cpu, 2), "workers": round(worker_cpu, 2)},
               "change_ms": round(change_ms, 1),
               "change_cpu_s": {"coordinator": round(change_coord_cpu, 3),
                                "workers": round(sum(float(s[5]) for s in seen), 3)},
               # the mesh at rest (heartbeats) between the join and the change
               "idle_cpu_us_per_node_s": round(statistics.mean(float(s[6]) for s in seen)),
               "change_half_ms": round(change_mid_ms, 1), "missing": missing, "first_problems": first + warnings.first[:1]}
        if coord_side is not None:
            out["coordinator_side"] = coord_side
        if sent0 is not None:
            out["bytes_per_join"] = round((sent1 - sent0) / nodes)
            out["bytes_per_change"] = sent3 - sent2
        return out
    finally:
        for w in workers:
            if w.poll() is None:
                os.killpg(w.pid, 9)
                w.wait(5)
        if coord is not None:
            coord.close()
        logging.getLogger("easymesh").removeHandler(warnings)


def _watch_broadcasts(coord: Any) -> dict[str, list[Any]]:
    """Record, in the coordinator of this process, when a node's change arrives
    (``_change``) and each broadcast pass (``_broadcast``: start, end, bytes written)."""
    seen: dict[str, list[Any]] = {"changes": [], "passes": []}
    profile = _pass_profiler()
    seen["profile"] = [profile]
    seen["armed"] = []  # (non-empty once the change is next: only its passes are profiled)
    change, broadcast = coord._change, coord._broadcast

    def timed_change(node_id: str, changed: bool) -> None:
        seen["changes"].append(now())
        change(node_id, changed)

    def timed_broadcast() -> None:
        t0, b0, c0 = now(), coord.bytes_sent, time.thread_time()
        if profile is not None and seen["armed"]:
            profile.enable()
            broadcast()
            profile.disable()
        else:
            broadcast()
        seen["passes"].append((t0, now(), coord.bytes_sent - b0, time.thread_time() - c0))

    coord._change, coord._broadcast = timed_change, timed_broadcast
    return seen


def _pass_profiler() -> Any:
    """``MESH_SCALE_PROFILE=DIR``: a cProfile (CPU clock) of the coordinator's broadcast
    passes for the change, dumped to DIR/coordinator-<nodes>.prof by storm(); None
    otherwise."""
    out = os.environ.get("MESH_SCALE_PROFILE")
    if not out or out == "cpu":
        return None
    cProfile, _ = _profilers()
    return cProfile.Profile(time.thread_time)


def _coordinator_side(seen: dict[str, list[Any]], t_change: float) -> dict[str, Any]:
    """The coordinator's part of "a new listener reaches all": from ``t_change`` to the
    listener's update arriving, to the last diff written; the passes that wrote it."""
    changes = [t for t in seen["changes"] if t >= t_change]
    passes = [p for p in seen["passes"] if p[0] >= t_change and p[2] > 0]
    out: dict[str, Any] = {"passes": len(passes)}
    if changes:
        out["update_in_ms"] = round((changes[0] - t_change) * 1000, 1)
    if passes:
        out["last_written_ms"] = round((passes[-1][1] - t_change) * 1000, 1)
        out["pass_ms"] = [round((p[1] - p[0]) * 1000, 1) for p in passes]
        out["pass_bytes"] = [p[2] for p in passes]
        out["pass_cpu_ms"] = [round(p[3] * 1000, 1) for p in passes]  # the coordinator thread's
    return out


# -- network namespaces ------------------------------------------------------------------


def _ip(*args: str) -> None:
    out = subprocess.run(["ip", *args], capture_output=True, text=True, timeout=20)
    if out.returncode != 0:
        raise RuntimeError(f"ip {' '.join(args)}: {out.stderr.strip()}")


def netns_storm(procs: int) -> dict[str, Any]:
    """The 1,000-node storm with worker i in namespace i and the coordinator in its own."""
    if os.geteuid() != 0:
        return {"skipped": "needs root (ip netns add)"}
    if shutil.which("ip") is None:
        return {"skipped": "needs iproute2's `ip` command"}
    tag = f"emscale{os.getpid()}"
    names = [f"{tag}-{i}" for i in range(procs)] + [f"{tag}-c", f"{tag}-hub"]
    created: list[str] = []
    try:
        for ns in names:
            _ip("netns", "add", ns)
            created.append(ns)
            _ip("-n", ns, "link", "set", "lo", "up")
        hub = f"{tag}-hub"
        _ip("-n", hub, "link", "add", "br0", "type", "bridge")
        _ip("-n", hub, "link", "set", "br0", "up")
        for k, ns in enumerate(names[:-1]):
            addr = "10.201.0.100" if ns.endswith("-c") else f"10.201.0.{k + 1}"
            _ip("link", "add", "veth0", "netns", ns, "type", "veth", "peer", "name", f"p{k}", "netns", hub)
            _ip("-n", hub, "link", "set", f"p{k}", "master", "br0", "up")
            _ip("-n", ns, "addr", "add", f"{addr}/24", "dev", "veth0")
            _ip("-n", ns, "link", "set", "veth0", "up")
        out = subprocess.run(
            ["ip", "netns", "exec", f"{tag}-c", sys.executable, HERE, "storm", f"--nodes={procs * 100}",
             f"--procs={procs}", "--host=10.201.0.100", f"--ns={tag}"],
            capture_output=True, text=True, timeout=400)
        for line in out.stdout.splitlines():
            if line.startswith("STORM "):
                return json.loads(line[6:])
        return {"failed": (out.stdout + out.stderr)[-500:]}
    except (RuntimeError, OSError, subprocess.TimeoutExpired) as exc:
        return {"failed": str(exc)}
    finally:
        for ns in reversed(created):
            pids = subprocess.run(["ip", "netns", "pids", ns], capture_output=True, text=True).stdout.split()
            for pid in pids:  # only this bench's processes live in these namespaces
                try:
                    os.kill(int(pid), 9)
                except (ProcessLookupError, ValueError):
                    pass
            subprocess.run(["ip", "netns", "del", ns], capture_output=True, timeout=20)


def against(address: str, nodes: int, procs: int, reps: int) -> int:
    """bench.py's section: storms against a running coordinator, its result format."""
    runs = []
    for _ in range(reps):
        r = storm(nodes, procs, "", address=address)
        print(f"mesh_scale: {r}", flush=True)
        runs.append(r)
    res = {"nodes": nodes, "procs": procs, "runs": runs,
           "join_s": statistics.median(r["join_s"] for r in runs),
           "change_ms": statistics.median(r["change_ms"] for r in runs),
           "errors": sum(r["errors"] for r in runs), "missing": sum(r["missing"] for r in runs)}
    print("SPEEDTEST " + json.dumps(res), flush=True)
    return 0


def markdown(res: dict[str, Any]) -> str:
    rows = ["| storm | load before | join (s) | CPU s (workers + coordinator) | warnings/errors "
            "| bytes/join | new listener reaches half / all (ms) | change CPU s (workers + coordinator) "
            "| at rest, us CPU per node per s | bytes/change | missing |",
            "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in res["storms"] + ([res["netns"]] if "join_s" in res.get("netns", {}) else []):
        where = "10 netns, TCP" if r is res.get("netns") else "loopback"
        cpu = r["join_cpu_s"]
        rows.append(f"| {r['nodes']} nodes, {r['procs']} procs, {where} | {r['load_1min_before']:.1f} "
                    f"| {r['join_s']} | {cpu['workers']} + {cpu['coordinator']} "
                    f"| {r['warnings']}/{r['errors']} | {r.get('bytes_per_join', 'n/a')} "
                    f"| {r['change_half_ms']} / {r['change_ms']} "
                    f"| {r['change_cpu_s']['workers']} + {r['change_cpu_s']['coordinator']} "
                    f"| {r['idle_cpu_us_per_node_s']} | {r.get('bytes_per_change', 'n/a')} "
                    f"| {r['missing']} |")
    return "\n".join(rows) + "\n"


def main() -> int:
    args = docopt(__doc__)
    if args["worker"]:
        return worker(args["--coordinator"], int(args["--count"]), args["--prefix"])
    t = threading.Timer(900, lambda: os._exit(3))
    t.daemon = True
    t.start()
    procs = int(args["--procs"])
    if args["--coordinator"]:
        return against(args["--coordinator"], int(args["--nodes"] or 200), procs, int(args["--reps"]))
    if args["storm"]:
        r = storm(int(args["--nodes"]), procs, args["--host"], args["--ns"])
        print("STORM " + json.dumps(r), flush=True)
        return 0
    storms = []
    load_before = os.getloadavg()[0]
    for size in (int(s) for s in args["--sizes"].split(",")):
        r = storm(size, procs, "127.0.0.1")
        print(f"mesh_scale: {r}", flush=True)
        storms.append(r)
    res: dict[str, Any] = {"storms": storms, "load_before": load_before}
    if len(storms) >= 2:
        res["join_ratio"] = round(storms[-1]["join_s"] / storms[0]["join_s"], 1)
    if args["--netns"]:
        res["netns"] = netns_storm(procs)
        print(f"mesh_scale: netns {res['netns']}", flush=True)
    print("SPEEDTEST " + json.dumps(res), flush=True)
    if args["--out"]:
        with open(args["--out"], "w") as f:
            f.write(markdown(res))
    return 0


if __name__ == "__main__":
    sys.exit(main())
