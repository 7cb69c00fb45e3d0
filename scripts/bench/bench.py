"""easymesh against its peers, side by side in one run: writes a Markdown table of medians.

Normally started by `scripts/bench/run`, which prepares the virtual environments and a
private network namespace; run directly only inside such a namespace (or on a machine
where loopback traffic is all there is).

Usage:
  bench.py [--quick] [--reps=N] [--seconds=S] [--sections=LIST] [--systems=LIST]
           [--transports=LIST] [--peers-python=PY] [--out=DIR] [--time-limit=S] [--no-rosy]
           [--baseline=DIR] [--sizes=LIST]
  bench.py (-h | --help)

Options:
  --quick             One repetition of 1 s per measurement, fewer sizes (about 3 minutes).
  --reps=N            Repetitions of every measurement; medians are taken over them [default: 3].
  --seconds=S         Measured seconds per run [default: 1.5].
  --sections=LIST     Comma-separated: throughput,paced,rtt,inflight,sendcost,coordinator
                      [default: throughput,paced,rtt,inflight,sendcost,coordinator].
  --systems=LIST      Comma-separated: easymesh,rosy,zmq,raw [default: easymesh,rosy,zmq,raw].
  --transports=LIST   Comma-separated: unix,tcp [default: unix,tcp].
  --sizes=LIST        Throughput payload sizes in bytes, comma-separated [default: 0,1000,100000,1000000].
  --peers-python=PY   Python of the peers venv (rosy 0.8.3, pyzmq, zeroconf, docopt).
  --out=DIR           Where results go [default: scripts/bench/results].
  --time-limit=S      Stop starting runs after S seconds; the report is written anyway [default: 840].
  --no-rosy           Leave rosy out (e.g. no private network namespace for its mDNS).
  --baseline=DIR      Also measure the easymesh of another checkout (its own DIR/.venv, made
                      with scripts/setup there) as the system "baseline", interleaved with
                      this one: before/after ratios of a change from one run.
  -h --help           Show this screen.

The workload (see easymesh/demo/speedtest.py and scripts/bench/peers.py): one sender
process and one receiver process on loopback; messages {"k", "seq", "t", "data"} with a
payload of 0 B, 1 kB, 100 kB or 1 MB; sent as fast as the API accepts them for --seconds
after a warm-up; delivered msgs/s, drops and one-way latency counted at the receiver.
Every process is started in its own session, bounded by its own watchdog and by this
script's timeouts, and killed by process group if it overstays.
"""

from __future__ import annotations

import datetime
import json
import os
import platform
import resource
import signal
import socket
import subprocess
import sys
import threading
import time
from typing import Any

from docopt import docopt

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
SIZE_NAMES = {0: "0 B", 64: "64 B", 1000: "1 kB", 100_000: "100 kB", 1_000_000: "1 MB"}
SYSTEM_NAMES = {"easymesh": "easymesh", "baseline": "easymesh before", "rosy": "rosy 0.8.3", "zmq": "pyzmq", "raw": "raw socket"}


def now() -> float:
    return time.clock_gettime(time.CLOCK_MONOTONIC)


# -- processes --------------------------------------------------------------------------------


class Proc:
    """A child in its own session; its stdout lines are collected, stderr goes to a log file."""

    live: set[Proc] = set()

    def __init__(self, cmd: list[str], log_path: str) -> None:
        self.log = open(log_path, "ab")
        self.log.write(("$ " + " ".join(cmd) + "\n").encode())
        self.log.flush()
        self.p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=self.log, stdin=subprocess.DEVNULL,
                                  start_new_session=True, cwd=ROOT,
                                  env=dict(os.environ, PYTHONUNBUFFERED="1"))
        Proc.live.add(self)
        self.lines: list[str] = []
        self.cond = threading.Condition()
        self.t = threading.Thread(target=self._read, daemon=True)
        self.t.start()

    def _read(self) -> None:
        assert self.p.stdout is not None
        for raw in self.p.stdout:
            line = raw.decode("utf-8", "replace")
            self.log.write(b"> " + raw)
            with self.cond:
                self.lines.append(line)
                self.cond.notify_all()
        with self.cond:
            self.cond.notify_all()

    def wait_line(self, marker: str, timeout: float) -> bool:
        deadline = now() + timeout
        with self.cond:
            while not any(marker in ln for ln in self.lines):
                left = deadline - now()
                if left <= 0 or (self.p.poll() is not None and not self.t.is_alive()):
                    return False
                self.cond.wait(min(left, 0.2))
        return True

    def wait(self, timeout: float) -> bool:
        try:
            self.p.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            return False
        self.t.join(2)
        self.done()
        return True

    def kill(self) -> None:
        if self.p.poll() is None:
            try:
                os.killpg(self.p.pid, signal.SIGKILL)  # its own session: pgid == pid
            except ProcessLookupError:
                pass
            try:
                self.p.wait(5)
            except subprocess.TimeoutExpired:
                pass
        self.done()

    def done(self) -> None:
        Proc.live.discard(self)
        try:
            self.log.flush()
        except ValueError:
            pass

    def result(self) -> dict[str, Any] | None:
        for line in reversed(self.lines):
            if line.startswith("SPEEDTEST "):
                return json.loads(line[len("SPEEDTEST "):])
        return None


def kill_all() -> None:
    for p in list(Proc.live):
        p.kill()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# -- the bench --------------------------------------------------------------------------------


class Bench:
    def __init__(self, args: dict[str, Any]) -> None:
        self.quick = args["--quick"]
        self.reps = 1 if self.quick else int(args["--reps"])
        self.seconds = 1.0 if self.quick else float(args["--seconds"])
        self.warmup = 0.3
        self.sections = args["--sections"].split(",")
        self.systems = [s for s in args["--systems"].split(",") if s]
        if args["--no-rosy"] and "rosy" in self.systems:
            self.systems.remove("rosy")
        self.transports = args["--transports"].split(",")
        self.sizes = [int(x) for x in args["--sizes"].split(",")]
        self.peers_py = args["--peers-python"]
        if not self.peers_py:
            self.systems = [s for s in self.systems if s not in ("rosy", "zmq")]
            self.peers_py = sys.executable  # enough for the raw loop if docopt is there
        self.em_py = sys.executable
        self.base_dir = args["--baseline"]
        if self.base_dir:
            self.base_dir = os.path.abspath(self.base_dir)
            if "baseline" not in self.systems:
                self.systems.insert(1, "baseline")
        self.t_start = now()
        self.time_limit = float(args["--time-limit"])
        stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
        self.out = os.path.join(ROOT, args["--out"]) if not os.path.isabs(args["--out"]) else args["--out"]
        self.work = os.path.join("/tmp", f"easymesh-bench-{stamp}-{os.getpid()}")
        os.makedirs(self.work, exist_ok=True)
        os.makedirs(self.out, exist_ok=True)
        self.stamp = stamp
        self.records: list[dict[str, Any]] = []
        self.skipped: list[str] = []
        self.problems: list[str] = []
        self.n = 0
        self.coordinator = ""
        self.base_coordinator = ""
        self.coord_procs: list[Proc] = []
        self.stub: Proc | None = None

    def log(self, msg: str) -> None:
        print(f"[{now() - self.t_start:6.1f}s] {msg}", flush=True)

    def logfile(self, what: str) -> str:
        return os.path.join(self.work, f"{what}.log")

    def out_of_time(self) -> bool:
        return now() - self.t_start > self.time_limit

    # -- infrastructure ---------------------------------------------------------------------

    def start_coordinator(self, py: list[str], name: str) -> tuple[Proc, str]:
        """A coordinator run by ``py`` (each checkout's nodes talk to its own: the protocol
        version may differ between them); (its process, its address)."""
        port = free_port()
        limit = str(int(self.time_limit + 300))
        proc = Proc(["timeout", "-s", "KILL", limit, *py, "-m", "easymesh",
                     "--host", "127.0.0.1", "--port", str(port)], self.logfile(name))
        deadline = now() + 20
        while now() < deadline:
            try:
                socket.create_connection(("127.0.0.1", port), 0.5).close()
                return proc, f"127.0.0.1:{port}"
            except OSError:
                time.sleep(0.1)
        raise RuntimeError("the easymesh coordinator did not start; see " + self.logfile(name))

    def base_py(self) -> list[str]:
        """The baseline checkout's Python, run from its own tree (so `-m` imports its easymesh)."""
        return ["env", f"--chdir={self.base_dir}", os.path.join(self.base_dir, ".venv/bin/python")]

    def start_stub(self) -> None:
        if "rosy" not in self.systems:
            return
        limit = str(int(self.time_limit + 300))
        self.stub = Proc([self.peers_py, os.path.join(HERE, "mdns_stub.py"), limit], self.logfile("mdns_stub"))
        if not self.stub.wait_line("mdns_stub:", 20):
            self.problems.append("the mDNS stub did not start: rosy left out")
            self.systems.remove("rosy")

    # -- one measurement --------------------------------------------------------------------

    def commands(self, system: str, transport: str, role: str, size: int, rate: float,
                 in_flight: int, tag: str) -> tuple[list[str], str]:
        """The command line of one side, and the line that says a server side is ready."""
        common = [f"--seconds={self.seconds}", f"--warmup={self.warmup}",
                  f"--message-size={size}", f"--rate={rate}", f"--in-flight={in_flight}"]
        timeout = self.seconds + self.warmup + 40
        if system in ("easymesh", "baseline"):
            py, coordinator = [self.em_py], self.coordinator
            if system == "baseline":
                py, coordinator = self.base_py(), self.base_coordinator
            cmd = [*py, "-m", "easymesh.demo.speedtest", role, "--once", "--json",
                   f"--coordinator={coordinator}", f"--topic=bench-{tag}",
                   f"--transport={'tcp' if transport == 'tcp' else 'auto'}", f"--timeout={timeout}",
                   *common]
            if role in ("recv", "serve"):
                cmd.remove(f"--in-flight={in_flight}")
            marker = "listening to" if role == "recv" else "providing"
            return cmd, marker
        if system == "rosy":
            address = f"{transport},bench-{tag}"
        elif transport == "unix":
            address = f"unix:{self.work}/{tag}.sock"
        else:
            address = f"tcp:127.0.0.1:{self.port_for(tag)}"
        return [self.peers_py, os.path.join(HERE, "peers.py"), system, role, f"--address={address}",
                f"--timeout={timeout}", *common], "READY"

    _ports: dict[str, int] = {}

    def port_for(self, tag: str) -> int:
        if tag not in self._ports:
            self._ports[tag] = free_port()
        return self._ports[tag]

    def measure(self, section: str, system: str, transport: str, size: int, rep: int,
                kind: str = "topic", rate: float = 0.0, in_flight: int = 1) -> dict[str, Any] | None:
        key = f"{section} {system} {transport} {SIZE_NAMES.get(size, size)} rate={rate:g} inflight={in_flight} rep {rep + 1}"
        if self.out_of_time():
            self.skipped.append(key)
            return None
        self.n += 1
        tag = f"{self.n}-{system}-{transport}"
        server_role, client_role = ("recv", "send") if kind == "topic" else ("serve", "call")
        s_cmd, marker = self.commands(system, transport, server_role, size, rate, in_flight, tag)
        c_cmd, _ = self.commands(system, transport, client_role, size, rate, in_flight, tag)
        rec: dict[str, Any] = {"section": section, "system": system, "transport": transport,
                               "size": size, "rep": rep, "rate": rate, "in_flight": in_flight}
        log = self.logfile(f"{self.n:03d}-{section}-{system}-{transport}-{size}")
        server = Proc(s_cmd, log)
        budget = self.seconds + self.warmup + 30
        try:
            if not server.wait_line(marker, 25):
                rec["error"] = "the receiving side did not start"
                return self._keep(rec, key)
            client = Proc(c_cmd, log)
            if not client.wait(budget):
                rec["error"] = "the sending side timed out"
            if not server.wait(15 if kind == "topic" else 5):
                if kind == "topic":
                    rec.setdefault("error", "the receiving side did not finish")
            rec["client"] = client.result()
            rec["server"] = server.result()
            if rec["client"] is None and "error" not in rec:
                rec["error"] = f"no result from the sending side (exit {client.p.returncode})"
            if kind == "topic" and rec["server"] is None and "error" not in rec:
                rec["error"] = f"no result from the receiving side (exit {server.p.returncode})"
        finally:
            server.kill()
        return self._keep(rec, key)

    def _keep(self, rec: dict[str, Any], key: str) -> dict[str, Any]:
        self.records.append(rec)
        if "error" in rec:
            self.problems.append(f"{key}: {rec['error']}")
            self.log(f"{key}: FAILED: {rec['error']}")
        else:
            c, s = rec.get("client") or {}, rec.get("server") or {}
            if "msgs_per_s" in s:
                self.log(f"{key}: {s['msgs_per_s']:,.0f} msgs/s delivered ({s['drop_pct']}% dropped),"
                         f" one-way p50 {s['lat_p50_us']:,.0f} us; sent {c.get('msgs_per_s', 0):,.0f}/s")
            else:
                self.log(f"{key}: {c.get('req_per_s', 0):,.0f} req/s, rtt p50 {c.get('rtt_p50_us', 0):,.0f} us")
        with open(os.path.join(self.work, "records.jsonl"), "a") as f:
            f.write(json.dumps(rec) + "\n")
        return rec

    # -- sections ---------------------------------------------------------------------------

    def rotated(self, rep: int) -> list[str]:
        k = rep % len(self.systems)
        return self.systems[k:] + self.systems[:k]

    def throughput(self) -> None:
        sizes = [0, 1000, 1_000_000] if self.quick else self.sizes
        for rep in range(self.reps):
            for size in sizes:
                for transport in self.transports:
                    for system in self.rotated(rep):
                        self.measure("throughput", system, transport, size, rep)

    def paced(self) -> None:
        for rep in range(self.reps):
            for transport in self.transports:
                for system in self.rotated(rep):
                    self.measure("paced", system, transport, 1000, rep, rate=1000)

    def rtt(self) -> None:
        for rep in range(self.reps):
            for transport in self.transports:
                for system in self.rotated(rep):
                    self.measure("rtt", system, transport, 64, rep, kind="service")

    def inflight(self) -> None:
        for rep in range(self.reps):
            for transport in self.transports:
                for system in self.rotated(rep):
                    self.measure("inflight", system, transport, 64, rep, kind="service", in_flight=100)

    def sendcost(self) -> None:
        """send() in the caller's thread, paced (1,000 msg/s) so the kernel keeps up: 1 kB comes
        from the paced section; 100 kB here. Saturated figures come from the throughput runs."""
        systems = [s for s in ("easymesh", "zmq") if s in self.systems]
        for rep in range(self.reps):
            for system in systems:
                self.measure("sendcost", system, "unix", 100_000, rep, rate=1000)

    def coordinator_scale(self) -> None:
        if self.out_of_time():
            self.skipped.append("coordinator")
            return
        cmd = [self.em_py, os.path.join(HERE, "mesh_scale.py"), f"--coordinator={self.coordinator}",
               "--nodes=200", "--procs=4", f"--reps={self.reps}"]
        self.log("coordinator: 200 nodes join (4 processes x 50 threads), then one topology change")
        p = Proc(cmd, self.logfile("coordinator-scale"))
        if not p.wait(60 + 40 * self.reps):
            self.problems.append("coordinator scale bench timed out")
        res = p.result()
        if res is None:
            self.problems.append("coordinator scale bench gave no result")
        else:
            self.records.append({"section": "coordinator", "result": res})
            self.log(f"coordinator: join {res['join_s']} s, change reaches all in {res['change_ms']} ms")

    # -- run --------------------------------------------------------------------------------

    def run(self) -> str:
        cpu0 = cpu_times()
        self_cpu0 = resource.getrusage(resource.RUSAGE_SELF)
        kids0 = resource.getrusage(resource.RUSAGE_CHILDREN)
        wall0 = now()
        proc, self.coordinator = self.start_coordinator([self.em_py], "coordinator")
        self.coord_procs.append(proc)
        if self.base_dir:
            proc, self.base_coordinator = self.start_coordinator(self.base_py(), "coordinator-base")
            self.coord_procs.append(proc)
        self.start_stub()
        self.log(f"systems: {', '.join(self.systems)}; transports: {', '.join(self.transports)}; "
                 f"{self.reps} rep(s) x {self.seconds} s; logs in {self.work}")
        try:
            for section in self.sections:
                getattr(self, "coordinator_scale" if section == "coordinator" else section)()
        finally:
            for p in (self.stub, *self.coord_procs):
                if p is not None:
                    p.kill()
            kill_all()
        wall = now() - wall0
        cpu1 = cpu_times()
        kids1 = resource.getrusage(resource.RUSAGE_CHILDREN)
        self_cpu1 = resource.getrusage(resource.RUSAGE_SELF)
        ours = (kids1.ru_utime + kids1.ru_stime - kids0.ru_utime - kids0.ru_stime
                + self_cpu1.ru_utime + self_cpu1.ru_stime - self_cpu0.ru_utime - self_cpu0.ru_stime)
        busy = (cpu1[0] - cpu0[0]) / os.sysconf("SC_CLK_TCK")
        noise = {"wall_s": round(wall, 1), "busy_cpu_s": round(busy, 1), "ours_cpu_s": round(ours, 1),
                 "other_pct_of_machine": round(100 * max(0.0, busy - ours) / (wall * (os.cpu_count() or 1)), 1)}
        return self.write_report(noise)

    def write_report(self, noise: dict[str, Any]) -> str:
        from report import render  # scripts/bench/report.py

        with open(os.path.join(self.out, f"bench-{self.stamp}.jsonl"), "w") as f:
            for rec in self.records:  # first: a report that fails to render loses no run
                f.write(json.dumps(rec) + "\n")
        text = render(self, noise)
        path = os.path.join(self.out, f"bench-{self.stamp}.md")
        with open(path, "w") as f:
            f.write(text)
        with open(os.path.join(self.out, "latest.md"), "w") as f:
            f.write(text)
        print(text)
        return path


def cpu_times() -> tuple[float, float]:
    """(busy, total) jiffies of the whole machine from /proc/stat."""
    with open("/proc/stat") as f:
        parts = [float(x) for x in f.readline().split()[1:]]
    idle = parts[3] + parts[4]
    return sum(parts) - idle, sum(parts)


def machine() -> str:
    cpu = platform.processor() or ""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return (f"{socket.gethostname()}: {os.cpu_count()} CPUs ({cpu}), Linux {platform.release()}, "
            f"Python {platform.python_version()}")


def main() -> int:
    args = docopt(__doc__)
    sys.path.insert(0, HERE)
    bench = Bench(args)
    watchdog_s = bench.time_limit + 240

    def watchdog() -> None:
        print(f"bench.py: watchdog after {watchdog_s:.0f} s: killing every child and exiting",
              file=sys.stderr, flush=True)
        kill_all()
        os._exit(3)

    wd = threading.Timer(watchdog_s, watchdog)
    wd.daemon = True
    wd.start()

    def on_signal(signum: int, _frame: Any) -> None:
        kill_all()
        print(f"bench.py: interrupted by signal {signum}", file=sys.stderr, flush=True)
        os._exit(130)

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    path = bench.run()
    print(f"results written to {os.path.relpath(path, ROOT)}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
