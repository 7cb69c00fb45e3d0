"""Large messages on one host: easymesh shared memory against the systems built for it (issue 13).

Usage:
  large.py [--quick] [--systems=LIST] [--sizes=LIST] [--receivers=LIST] [--rates=LIST]
           [--seconds=S] [--repeats=N] [--peers-python=PATH] [--out=DIR] [--no-kill]
           [--baseline=PATH]
  large.py --render=JSON
  large.py -h | --help

Options:
  --quick               A short run: 1 MiB and 8,294,400 B, K=1,3, saturated and 30 Hz,
                        1 s each, one repeat (about 2-3 minutes). Explicit options override it.
  --systems=LIST        Comma-separated, from: copyto, ring, iceoryx2, zmq, zenoh, proto,
                        proto-loan, node-off, node-shm, node-loan [default: all].
  --sizes=LIST          Frame sizes in bytes; k/M/Mi suffixes [default: 1Mi,8294400,32Mi].
  --receivers=LIST      Receiver counts K [default: 1,3].
  --rates=LIST          0 = saturated, else frames per second [default: 0,30,200].
  --seconds=S           Measured seconds per run [default: 3].
  --repeats=N           Interleaved repeats; medians are reported [default: 3].
  --peers-python=PATH   Python of the venv with pyzmq, eclipse-zenoh, iceoryx2, numpy, docopt
                        [default: $EASYMESH_BENCH_PEERS/bin/python, else
                        ~/.cache/easymesh-bench/large-venv/bin/python; created if missing].
  --out=DIR             Where the Markdown table goes [default: scripts/bench/results].
  --render=JSON         Print the Markdown report again from a run's .json (no runs).
  --baseline=PATH       Also run every node-* system from the easymesh checkout at PATH (as
                        ``node-*@base``, interleaved with this checkout's): before/after
                        ratios from the same run.
  --no-kill             Skip the SIGKILL check (after the runs, once per system: the sender
                        of a 1 MiB 30 Hz stream is killed; files left in /dev/shm and
                        shared-memory fds the surviving receiver holds once it noticed).

One sender and K receivers, each its own process, on this host. Before every send the sender
refills the whole frame from a source buffer (a camera writing its image; for loan systems
straight into the loaned shared memory), then stamps seq and send time into its first bytes;
each receiver reads them and the frame's last byte from what it got. Per receiver: frames/s,
GB/s delivered, loss (frames sent in the measured window and not received, or refused by the
sender), one-way latency p50/p99. Files a system leaves in /dev/shm (zenoh's ``*.zenoh``, iceoryx2's ``iox2_*``) are counted
after each run and removed. ``copyto`` is ``np.copyto`` of the same size in this process:
the memory-bandwidth ceiling (a frame that must be copied once can go no faster).

Systems: ``ring`` is a hand-written shared-memory ring (memfd slots, slot numbers over a Unix
socket, acks back); ``iceoryx2`` its Python binding with loaned slices and an event service to
wake receivers; ``zmq`` pyzmq PUB/SUB over ipc with ``copy=False``; ``zenoh`` zenoh-python peers
over tcp/127.0.0.1 (its Python ``put`` takes bytes and its payload gives bytes: one copy each
way; its SHM API exposes no writable buffer to Python in 1.10, so it is not measured);
``proto``/``proto-loan`` the phase-1 parts of easymesh.shm over their prototype link (copy into
the pool / loan); ``node-off``/``node-shm``/``node-loan`` easymesh.Node with ``shm=False``,
``shm=True`` (the default), and ``shm=True`` filling ``Node.loan`` arrays. Roles are in large_roles.py, the reference systems in
large_systems.py. The peers live in their own venv, never easymesh deps.
"""

from __future__ import annotations

import json
import os
import queue
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from docopt import docopt

ROOT = Path(__file__).resolve().parents[2]
ROLES = str(Path(__file__).with_name("large_roles.py"))
ALL = [
    "copyto",
    "ring",
    "iceoryx2",
    "zmq",
    "zenoh",
    "proto",
    "proto-loan",
    "node-off",
    "node-shm",
    "node-loan",
]
PEER_SYSTEMS = {"ring", "iceoryx2", "zmq", "zenoh"}
PEER_PACKAGES = ["pyzmq", "eclipse-zenoh", "iceoryx2", "numpy", "docopt"]
WAIT = 60.0


def parse_size(text: str) -> int:
    text = text.strip()
    for suffix, mult in (("Mi", 1 << 20), ("Ki", 1 << 10), ("M", 10**6), ("k", 10**3)):
        if text.endswith(suffix):
            return int(float(text[: -len(suffix)]) * mult)
    return int(text)


def peers_python(option: str | None) -> str:
    if option and not option.startswith("$"):
        return option
    venv = Path(
        os.environ.get("EASYMESH_BENCH_PEERS", Path.home() / ".cache/easymesh-bench/large-venv")
    )
    py = venv / "bin/python"
    check = "import zmq, zenoh, iceoryx2, numpy, docopt"
    if not py.exists() or subprocess.run([str(py), "-c", check], capture_output=True).returncode:
        print(
            f"large.py: preparing the peers venv {venv} ({' '.join(PEER_PACKAGES)})",
            file=sys.stderr,
        )
        if not py.exists():
            subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        subprocess.run(
            [
                str(py),
                "-m",
                "pip",
                "install",
                "--quiet",
                "--disable-pip-version-check",
                *PEER_PACKAGES,
            ],
            check=True,
            timeout=900,
        )
    return str(py)


class Proc:
    """A role process; its stdout lines go to a queue."""

    def __init__(self, python: str, *args: str, root: str = str(ROOT)) -> None:
        env = dict(os.environ, PYTHONPATH=root, PYTHONUNBUFFERED="1")
        self.p = subprocess.Popen(
            [python, ROLES, *args],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
            start_new_session=True,
        )
        self.lines: queue.Queue[str | None] = queue.Queue()
        self.err: list[str] = []
        threading.Thread(target=self._pump, daemon=True).start()
        threading.Thread(target=self._pump_err, daemon=True).start()

    def _pump(self) -> None:
        assert self.p.stdout is not None
        for line in self.p.stdout:
            self.lines.put(line.rstrip("\n"))
        self.lines.put(None)

    def _pump_err(self) -> None:
        assert self.p.stderr is not None
        for line in self.p.stderr:
            self.err.append(line.rstrip("\n"))

    def expect(self, *words: str, timeout: float = WAIT) -> tuple[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            try:
                line = self.lines.get(timeout=max(0.01, deadline - time.monotonic()))
            except queue.Empty:
                raise TimeoutError(f"no {words} in time") from None
            if line is None:
                raise RuntimeError("exited: " + " | ".join(self.err[-3:]))
            word, _, rest = line.partition(" ")
            if word in words:
                return word, json.loads(rest) if rest else None

    def go(self) -> None:
        assert self.p.stdin is not None
        self.p.stdin.write("\n")
        self.p.stdin.flush()

    def stop(self) -> None:
        if self.p.poll() is None:
            try:
                self.p.wait(5)
            except subprocess.TimeoutExpired:
                self.p.kill()
                self.p.wait(5)


#: The checkout that ``node-*@base`` systems run from (``--baseline``).
BASELINE: list[str] = []


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def copyto(size: int, seconds: float = 0.5) -> dict[str, Any]:
    import numpy as np

    src = np.random.default_rng(1).integers(0, 256, size, dtype=np.uint8)
    dst = np.empty_like(src)
    np.copyto(dst, src)
    n, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        np.copyto(dst, src)
        n += 1
    took = time.perf_counter() - start
    return {"fps": n / took, "gbps": n * size / took / 1e9, "loss": 0.0, "p50": None, "p99": None}


def channel(system: str, tmp: str, n: int) -> str:
    if system == "zenoh":
        return f"easymesh/bench{n},{free_port()}"
    if system == "iceoryx2":
        return f"easymesh-bench-{os.getpid()}-{n}"
    if system.startswith("node-"):
        return f"large-{n}"
    return os.path.join(tmp, f"s{n}")


def shm_fds(pid: int) -> int:
    """Descriptors of shared memory (memfd or /dev/shm) that process ``pid`` holds open."""
    count = 0
    try:
        fds = os.listdir(f"/proc/{pid}/fd")
    except OSError:
        return 0
    for fd in fds:
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        count += target.startswith(("/memfd:", "/dev/shm/"))
    return count


def kill_check(
    system: str, tmp: str, pyth: dict[str, str], coordinator: str, n: int
) -> dict[str, Any]:
    """SIGKILL the sender of a 1 MiB, 30 Hz stream with one receiver; then count the files left
    in /dev/shm and the shared-memory fds the surviving receiver still holds once it noticed."""
    name = channel(system, tmp, n)
    py = pyth["peers" if system in PEER_SYSTEMS else "mesh"]
    common = [f"--name={name}", f"--coordinator={coordinator}", "--timeout=90"]
    before = shm_files()
    sender = Proc(
        py,
        system,
        "send",
        *common,
        f"--size={1 << 20}",
        "--receivers=1",
        "--rate=30",
        "--seconds=60",
    )
    procs = [sender]
    try:
        if sender.expect("READY", "UNAVAILABLE")[0] == "UNAVAILABLE":
            return {"na": "unavailable"}
        rx = Proc(py, system, "recv", *common, "--idle=3", "--linger")
        procs.append(rx)
        rx.expect("READY")
        sender.go()
        time.sleep(1.0)  # a benchmark, not a test: let frames flow for a second
        sender.p.send_signal(signal.SIGKILL)
        sender.p.wait(10)
        rx.expect("NOTICED", timeout=30)
        held = shm_fds(rx.p.pid)
        left = shm_files() - before
        return {"left": len(left), "fds": held}
    except (TimeoutError, RuntimeError) as exc:
        return {"na": f"failed: {exc}"}
    finally:
        for p in procs:
            if p.p.stdin is not None:
                p.p.stdin.close()
            p.stop()
        for f in shm_files() - before:
            try:
                os.unlink(os.path.join("/dev/shm", f))
            except OSError:
                pass


def run_case(
    system: str,
    size: int,
    k: int,
    rate: float,
    seconds: float,
    tmp: str,
    pyth: dict[str, str],
    coordinator: str,
    n: int,
) -> dict[str, Any]:
    """One run of one system; a dict of metrics, or {"na": reason}."""
    if system == "copyto":
        return copyto(size)
    name = channel(system, tmp, n)
    py = pyth["peers" if system in PEER_SYSTEMS else "mesh"]
    before = shm_files()
    try:
        result = _run_processes(system, name, py, size, k, rate, seconds, coordinator)
    finally:
        left = shm_files() - before
        for f in left:  # ours: created by this case's processes; counted, then removed
            try:
                os.unlink(os.path.join("/dev/shm", f))
            except OSError:
                pass
    result["left"] = len(left)
    return result


def shm_files() -> set[str]:
    """Files in /dev/shm that the measured systems create (zenoh: *.zenoh, iceoryx2: iox2_*)."""
    try:
        names = os.listdir("/dev/shm")
    except OSError:
        return set()
    return {n for n in names if n.endswith(".zenoh") or n.startswith("iox2_")}


def _run_processes(
    system: str,
    name: str,
    py: str,
    size: int,
    k: int,
    rate: float,
    seconds: float,
    coordinator: str,
) -> dict[str, Any]:
    common = [f"--name={name}", f"--coordinator={coordinator}", f"--timeout={seconds + 90}"]
    system, _, base = system.partition("@")
    root = BASELINE[0] if base else str(ROOT)
    sender = Proc(
        py,
        system,
        "send",
        *common,
        f"--size={size}",
        f"--receivers={k}",
        f"--rate={rate}",
        f"--seconds={seconds}",
        root=root,
    )
    procs = [sender]
    try:
        word, info = sender.expect("READY", "UNAVAILABLE")
        if word == "UNAVAILABLE":
            return {"na": info["why"]}
        receivers = [Proc(py, system, "recv", *common, root=root) for _ in range(k)]
        procs += receivers
        for r in receivers:
            word, info = r.expect("READY", "UNAVAILABLE")
            if word == "UNAVAILABLE":
                return {"na": info["why"]}
        sender.go()
        _, sent = sender.expect("RESULT", timeout=seconds + 60)
        got = [r.expect("RESULT", timeout=30)[1] for r in receivers]
    except (TimeoutError, RuntimeError) as exc:
        return {"na": f"failed: {exc}"}
    finally:
        for p in procs:
            p.stop()
    secs = sent["seconds"] or seconds
    offered = sent["sent"] + sent["dropped"]
    fps = statistics.mean(g["received"] for g in got) / secs
    return {
        "fps": fps,
        "gbps": fps * size / 1e9,
        "loss": 1 - statistics.mean(g["received"] for g in got) / offered if offered else 1.0,
        "p50": statistics.median(g["p50_us"] for g in got if g["p50_us"] is not None)
        if any(g["p50_us"] is not None for g in got)
        else None,
        "p99": max((g["p99_us"] for g in got if g["p99_us"] is not None), default=None),
        # CPU of each process per frame it handled (all its threads, warm-up included)
        "cpu_tx": sent["cpu"] / sent["frames"] * 1e6 if sent.get("frames") else None,
        "cpu_rx": statistics.mean(g["cpu"] / g["seen"] * 1e6 for g in got)
        if all(g.get("seen") for g in got)
        else None,
    }


def start_coordinator(py: str) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    proc = subprocess.Popen(
        [py, "-m", "easymesh", "--host", "127.0.0.1", "--port", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            break
        except OSError:
            time.sleep(0.1)
    return proc, f"127.0.0.1:{port}"


def median_of(runs: list[dict[str, Any]]) -> dict[str, Any]:
    ok = [r for r in runs if "na" not in r]
    if not ok:
        return dict(runs[0], left=max(r.get("left", 0) for r in runs))
    out: dict[str, Any] = {"left": max(r.get("left", 0) for r in runs)}
    for key in ("fps", "gbps", "loss", "p50", "p99", "cpu_tx", "cpu_rx"):
        vals = [r[key] for r in ok if r.get(key) is not None]
        out[key] = statistics.median(vals) if vals else None
    return out


def fmt_cell(r: dict[str, Any]) -> list[str]:
    if "na" in r:
        return ["n/a", "", "", "", "", ""]

    def us(v: float | None) -> str:
        if v is None:
            return "-"
        return f"{v / 1000:.1f} ms" if v >= 1000 else f"{v:.0f} µs"

    return [
        f"{r['fps']:,.0f}",
        f"{r['gbps']:.2f}",
        f"{r['loss'] * 100:.0f} %",
        us(r["p50"]),
        us(r["p99"]),
        "-"
        if r.get("cpu_tx") is None
        else f"{r['cpu_tx']:,.0f} / {r['cpu_rx']:,.0f}"
        if r.get("cpu_rx") is not None
        else f"{r['cpu_tx']:,.0f} / -",
    ]


def ratios(
    results: dict[tuple[Any, ...], dict[str, Any]], size: int, k: int, rate: float
) -> list[str]:
    def get(system: str, key: str, case: tuple[Any, ...] | None = None) -> float | None:
        r = results.get((system, *(case or (size, k, rate))))
        return None if r is None or "na" in r else r.get(key)

    parts = []
    for s in ("node-shm", "node-loan"):  # this checkout against --baseline's
        a, b = get(s, "p50" if rate else "fps"), get(f"{s}@base", "p50" if rate else "fps")
        if a and b:
            parts.append(f"{s}/{s}@base {'p50' if rate else 'frames/s'} {a / b:.2f}")
    if rate:  # paced: latency against the loaned-memory systems, and loss
        for loan in ("proto-loan", "node-loan"):
            for ref in ("ring", "iceoryx2"):
                a, b = get(loan, "p50"), get(ref, "p50")
                if a and b:
                    parts.append(f"{loan}/{ref} p50 {a / b:.1f}x")
        for s in ("proto", "proto-loan", "node-shm", "node-loan"):
            loss = get(s, "loss")
            if loss is not None:
                parts.append(f"{s} loss {loss * 100:.0f} %")
        return parts
    for loan in ("proto-loan", "node-loan"):
        for ref in ("ring", "iceoryx2"):
            a, b = get(loan, "fps"), get(ref, "fps")
            if a and b:
                parts.append(f"{loan}/{ref} frames/s {a / b:.2f}")
    ceiling = get("copyto", "gbps", (size, 1, 0.0))
    for auto in ("proto", "node-shm"):
        a = get(auto, "gbps")
        if a and ceiling:
            parts.append(f"{auto}/copyto GB/s {a / ceiling:.2f}")
        k1, kk = get(auto, "fps", (size, 1, rate)), get(auto, "fps")
        if kk and k1 and k > 1:
            parts.append(f"{auto} K={k}/K=1 frames/s {kk / k1:.2f}")
    return parts


def report(
    results: dict[tuple[Any, ...], dict[str, Any]],
    systems: list[str],
    cases: list[tuple[int, int, float]],
    header: str,
) -> str:
    lines = [header, ""]
    lines.append(
        "| frame | K | rate | system | frames/s per receiver | GB/s per receiver | loss "
        "| one-way p50 | p99 | CPU µs per frame: sender / each receiver |"
    )
    lines.append("|---|---|---|---|---|---|---|---|---|---|")
    for size, k, rate in cases:
        for system in systems:
            r = results.get((system, size, k, rate))
            if r is None:
                continue
            cells = fmt_cell(r)
            rate_s = "saturated" if not rate else f"{rate:g} Hz"
            lines.append(f"| {size:,} B | {k} | {rate_s} | {system} | " + " | ".join(cells) + " |")
    lines += ["", "Ratios (the issue's goals):", ""]
    for size, k, rate in cases:
        parts = ratios(results, size, k, rate)
        if parts:
            rate_s = "saturated" if not rate else f"{rate:g} Hz"
            lines.append(f"- {size:,} B, K={k}, {rate_s}: " + "; ".join(parts))
    left: dict[str, int] = {}
    for (system, *_case), r in results.items():
        left[system] = left.get(system, 0) + r.get("left", 0)
    lines += [
        "",
        "Files the systems left in /dev/shm after their runs (the bench removes them): "
        + ", ".join(f"{s} {n}" for s, n in left.items() if s != "copyto"),
    ]
    return "\n".join(lines) + "\n"


def measure(
    systems: list[str],
    cases: list[tuple[int, int, float]],
    seconds: float,
    repeats: int,
    pyth: dict[str, str],
    coordinator: str,
    kill: bool,
) -> tuple[dict[tuple[Any, ...], list[dict[str, Any]]], dict[str, dict[str, Any]]]:
    """Every case for every system, interleaved, ``repeats`` times; then the SIGKILL checks."""
    runs: dict[tuple[Any, ...], list[dict[str, Any]]] = {}
    kills: dict[str, dict[str, Any]] = {}
    tmp = tempfile.mkdtemp(prefix="easymesh-large-")
    n = 0
    try:
        for rep in range(repeats):
            for size, k, rate in cases:
                for system in systems:  # interleaved: every system once per case per repeat
                    if system == "copyto" and (k, rate) != cases[0][1:]:
                        continue  # the ceiling depends on the size only
                    n += 1
                    r = run_case(system, size, k, rate, seconds, tmp, pyth, coordinator, n)
                    key = (system, size, k, rate) if system != "copyto" else (system, size, 1, 0.0)
                    runs.setdefault(key, []).append(r)
                    cell = " ".join(fmt_cell(r)) if "na" not in r else r["na"]
                    print(
                        f"[{rep + 1}/{repeats}] {system:10} {size:>10,} B K={k} rate={rate:g}: "
                        f"{cell}",
                        file=sys.stderr,
                        flush=True,
                    )
        for system in systems if kill else []:
            if system != "copyto" and "@" not in system:
                n += 1
                kills[system] = kill_check(system, tmp, pyth, coordinator, n)
                print(f"[kill] {system:10} {kills[system]}", file=sys.stderr, flush=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return runs, kills


def render(raw: dict[str, Any]) -> str:
    """The Markdown report of one run (from the .json that large.py writes beside it)."""
    results = {tuple(item[:-1]): item[-1] for item in raw["results"]}
    cases = [tuple(c) for c in raw["cases"]]
    text = report(results, raw["systems"], cases, raw["header"])  # type: ignore[arg-type]
    kills = raw["kills"]
    if kills:
        text += (
            "\nAfter a SIGKILL of the sender (1 MiB at 30 Hz, one receiver): files left in "
            "/dev/shm, shared-memory fds still open in the receiver once it noticed:\n\n"
        )
        text += (
            "\n".join(
                f"- {s}: " + (k["na"] if "na" in k else f"{k['left']} files, {k['fds']} fds")
                for s, k in kills.items()
            )
            + "\n"
        )
    copy_lines = [
        f"- np.copyto {size:,} B: {r['gbps']:.1f} GB/s, {r['fps']:,.0f} frames/s"
        for size in raw["sizes"]
        if (r := results.get(("copyto", size, 1, 0.0))) and "na" not in r
    ]
    if copy_lines:
        text += "\nMemory-bandwidth ceiling (same run):\n\n" + "\n".join(copy_lines) + "\n"
    return text


def main() -> int:
    args = docopt(__doc__)
    if args["--render"]:
        print(render(json.loads(Path(args["--render"]).read_text())), end="")
        return 0
    quick = args["--quick"]
    argv = " ".join(sys.argv[1:])

    def opt(name: str, quick_value: str) -> str:
        return quick_value if quick and f"{name}=" not in argv else args[name]

    systems = ALL if args["--systems"] == "all" else args["--systems"].split(",")
    unknown = set(systems) - set(ALL)
    if unknown:
        print(f"large.py: unknown systems {sorted(unknown)}", file=sys.stderr)
        return 2
    if args["--baseline"]:
        BASELINE.append(str(Path(args["--baseline"]).resolve()))
        systems = [x for s in systems for x in ([s, f"{s}@base"] if s.startswith("node-") else [s])]
    sizes = [parse_size(s) for s in opt("--sizes", "1Mi,8294400").split(",")]
    ks = [int(x) for x in opt("--receivers", "1,3").split(",")]
    rates = [float(x) for x in opt("--rates", "0,30").split(",")]
    seconds = float(opt("--seconds", "1"))
    repeats = int(opt("--repeats", "1"))
    pyth = {"mesh": sys.executable}
    if set(systems) & PEER_SYSTEMS:
        pyth["peers"] = peers_python(args["--peers-python"])
    coord_proc, coordinator = (None, "")
    if any(s.startswith("node-") for s in systems):
        coord_proc, coordinator = start_coordinator(sys.executable)
    cases = [(size, k, rate) for size in sizes for k in ks for rate in rates]
    try:
        runs, kills = measure(
            systems, cases, seconds, repeats, pyth, coordinator, not args["--no-kill"]
        )
    finally:
        if coord_proc is not None:
            coord_proc.terminate()
            coord_proc.wait(10)
    results = {key: median_of(v) for key, v in runs.items()}
    stamp = time.strftime("%Y-%m-%d %H:%M", time.gmtime())
    header = (
        f"# Large messages, {stamp} UTC, {os.cpu_count()} cores; {seconds:g} s per run, "
        f"median of {repeats}{' (--quick)' if quick else ''}"
    )
    raw = {
        "header": header,
        "systems": systems,
        "cases": cases,
        "sizes": sizes,
        "results": [[*key, value] for key, value in results.items()],
        "kills": kills,
    }
    text = render(raw)
    print(text)
    out = Path(args["--out"])
    if not out.is_absolute():
        out = ROOT / out
    out.mkdir(parents=True, exist_ok=True)
    name = f"large-{time.strftime('%Y-%m-%d-%H%M', time.gmtime())}{'-quick' if quick else ''}.md"
    (out / name).write_text(text)
    (out / name).with_suffix(".json").write_text(json.dumps(raw, indent=1) + "\n")
    print(f"large.py: wrote {out / name} (and .json)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
