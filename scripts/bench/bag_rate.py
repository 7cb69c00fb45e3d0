#!/usr/bin/env python3
"""Benchmark: the highest rate `meshbag record` sustains with zero loss (issue 5 target:
10,000 msg/s of 1 kB with no message lost by the recorder).

Usage:
  bag_rate.py [--rates=LIST] [--seconds=S] [--size=BYTES] [--payload=P] [--keep]
  bag_rate.py (-h | --help)

Options:
  --rates=LIST    Comma-separated target rates in msg/s [default: 5000,10000,20000,30000,40000,60000,80000].
  --seconds=S     Seconds of sending per rate [default: 10].
  --size=BYTES    Message body size [default: 1000].
  --payload=P     random (incompressible, the worst case for zstd) or zeros [default: random].
  --keep          Keep the bag files (printed at the end).
  -h --help       Show this screen.

Method. A real coordinator process and a real `meshbag record bench` process (the CLI,
zstd, default queues); this process is the sender: one node, raw codec, each body a
sequence number padded to --size bytes (random padding cycled from a pool of 4096, so a
1 MiB chunk holds no repeats), paced against the monotonic clock (sends what
is due, then waits ~1 ms). After --seconds the sender stops and notes the wall time of
its last send; the recorder's status lines (--status-every) are watched until it has
written every message (or makes no progress for 3 s); then it gets SIGINT and the bag
is read back with the mcap reader. Per rate:

* lost      = messages sent - distinct sequence numbers in the bag (0 = zero loss);
* lag       = recorder's last log_time - sender's last send time: how far behind the
              recorder was when the flow stopped. A recorder that keeps up has a lag of
              a few ms; one that only buffers shows a lag that grows with the run;
* achieved  = the rate the sender really produced (on 2 cores the sender, the recorder
              and the kernel share the CPU; when achieved < 95% of the target the limit
              measured is the sender's, and the run is marked so).

"Sustained" = zero loss, lag under 0.5 s and the target rate achieved. Losses are
accounted for: the recorder's listener-queue drops (printed by meshbag as a warning)
plus the sender's outbound drops (out-drop) add up to "lost". The ladder stops at the
first rate with a loss or where the sender cannot reach the target.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import struct
import subprocess
import sys
import tempfile
import threading
import time
from typing import Any

from docopt import docopt
from mcap.reader import make_reader

import easymesh

TOPIC = "bench"


class Proc:
    """A child process whose stdout and stderr lines are collected."""

    def __init__(self, cmd: list[str], cwd: str | None = None) -> None:
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        self.p = subprocess.Popen(
            cmd,
            cwd=cwd,
            env=env,
            text=True,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            start_new_session=True,
        )
        self.lines: list[str] = []
        self.cond = threading.Condition()
        for stream in (self.p.stdout, self.p.stderr):
            threading.Thread(target=self._read, args=(stream,), daemon=True).start()

    def _read(self, stream: object) -> None:
        for line in stream:  # type: ignore[attr-defined]
            with self.cond:
                self.lines.append(line)
                self.cond.notify_all()

    def wait_for(self, pattern: str, timeout: float) -> re.Match[str]:
        deadline = time.monotonic() + timeout
        rx = re.compile(pattern)
        with self.cond:
            while True:
                for line in self.lines:
                    m = rx.search(line)
                    if m:
                        return m
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(f"no {pattern!r} in {''.join(self.lines)[-2000:]}")
                self.cond.wait(left)

    def last_count(self) -> int:
        with self.cond:
            for line in reversed(self.lines):
                m = re.search(rf"{TOPIC}: (\d+) msgs", line)
                if m:
                    return int(m.group(1))
        return 0

    def stop(self, sig: int = signal.SIGINT, timeout: float = 60.0) -> int:
        if self.p.poll() is None:
            os.kill(self.p.pid, sig)
        try:
            return self.p.wait(timeout)
        except subprocess.TimeoutExpired:
            os.kill(self.p.pid, signal.SIGKILL)
            return self.p.wait(5)


def start_coordinator() -> tuple[Proc, str]:
    coord = Proc([sys.executable, "-m", "easymesh", "--host", "127.0.0.1", "--port", "0"])
    m = coord.wait_for(r"listening on (\S+)", 20)
    return coord, m.group(1)


def run_rate(
    address: str, folder: str, rate: int, seconds: float, size: int, random_payload: bool
) -> dict[str, Any]:
    path = os.path.join(folder, f"bench_{rate}.bag")
    rec = Proc(
        [
            sys.executable,
            "-m",
            "easymesh.cli.bag",
            "record",
            TOPIC,
            "-o",
            path,
            "-f",
            "--coordinator",
            address,
            "--status-every",
            "0.2",
        ],
    )
    pads = [os.urandom(size - 8) if random_payload else bytes(size - 8) for _ in range(4096)]
    pack = struct.Struct("<Q").pack
    wake = threading.Event()
    try:
        rec.wait_for("recording", 20)
        with easymesh.Node("bag-rate-sender", coordinator=address, load_balancer=None) as node:
            node.wait_for_listener(TOPIC, timeout=20)
            send_raw = node.send_raw
            sent = 0
            t0 = time.monotonic()
            end = t0 + seconds
            while True:
                now = time.monotonic()
                if now >= end:
                    break
                due = min(int((now - t0) * rate) + 1, int(seconds * rate))
                while sent < due:
                    send_raw(TOPIC, 0, pack(sent) + pads[sent & 4095])
                    sent += 1
                wake.wait(0.001)
            last_send_ns = time.time_ns()
            elapsed = time.monotonic() - t0
            # keep the sender open (its queued bytes still leaving) until the recorder has
            # written everything, or makes no progress for 3 s
            seen, still = -1, time.monotonic()
            while True:
                count = rec.last_count()
                if count >= sent:
                    break
                if count != seen:
                    seen, still = count, time.monotonic()
                elif time.monotonic() - still > 3.0:
                    break
                with rec.cond:
                    rec.cond.wait(0.3)
            dropped_out = node.stats()["dropped_outbound"]
    finally:
        rc = rec.stop()
        rec_warnings = [ln.strip() for ln in rec.lines if "warning" in ln or "wrote" in ln]
    seqs: set[int] = set()
    last_log = 0
    with open(path, "rb") as f:
        for _, _, msg in make_reader(f).iter_messages(log_time_order=False):
            seqs.add(struct.unpack_from("<Q", msg.data)[0])
            last_log = max(last_log, msg.log_time)
    return {
        "target": rate,
        "sent": sent,
        "achieved": sent / elapsed,
        "recorded": len(seqs),
        "lost": sent - len(seqs),
        "lag": (last_log - last_send_ns) / 1e9,
        "dropped_out": dropped_out,
        "rc": rc,
        "size": os.path.getsize(path),
        "path": path,
        "notes": rec_warnings,
    }


def main() -> int:
    args = docopt(__doc__)
    rates = [int(r) for r in args["--rates"].split(",")]
    seconds, size = float(args["--seconds"]), int(args["--size"])
    folder = tempfile.mkdtemp(prefix="bag_rate_")
    coord, address = start_coordinator()
    print(
        f"coordinator {address}; {seconds:g} s per rate; {size} B {args['--payload']} messages; "
        f"bags in {folder}"
    )
    print(
        f"{'target/s':>9} {'achieved/s':>10} {'sent':>8} {'recorded':>8} {'lost':>6} "
        f"{'lag s':>6} {'out-drop':>8} {'file MB':>8}  verdict"
    )
    best = 0
    try:
        for rate in rates:
            r = run_rate(address, folder, rate, seconds, size, args["--payload"] == "random")
            sender_limited = r["achieved"] < 0.95 * rate
            ok = r["lost"] == 0 and r["lag"] < 0.5 and not sender_limited
            if ok:
                verdict = "sustained"
            elif r["lost"]:
                verdict = "LOSS"
            else:
                verdict = "sender-limited" if sender_limited else "no loss, but falling behind"
            if ok:
                best = max(best, rate)
            print(
                f"{rate:>9} {r['achieved']:>10.0f} {r['sent']:>8.0f} {r['recorded']:>8.0f} "
                f"{r['lost']:>6.0f} {r['lag']:>6.3f} {r['dropped_out']:>8.0f} "
                f"{r['size'] / 1e6:>8.1f}  {verdict}",
                flush=True,
            )
            for note in r["notes"]:
                if r["lost"] or "warning" in note:
                    print(f"          recorder: {note}")
            if not args["--keep"]:
                os.remove(r["path"])
            if sender_limited or r["lost"]:
                break
    finally:
        coord.stop()
        if not args["--keep"]:
            shutil.rmtree(folder, ignore_errors=True)
    print(f"highest sustained rate with zero loss: {best} msg/s of {size} B")
    return 0


if __name__ == "__main__":
    sys.exit(main())
