"""Where a large frame's time goes between two easymesh nodes on one host (issue 13).

Usage:
  shm_stages.py [--size=N] [--rate=R] [--frames=N] [--loan] [--shm=BOOL]
  shm_stages.py recv --coordinator=ADDR [--frames=N] [--shm=BOOL]

The second form is the receiver process, which the first starts.

Options:
  --size=N      Frame bytes (uint8) [default: 8294400].
  --rate=R      Frames per second, paced [default: 30].
  --frames=N    Frames measured (after 10 not counted) [default: 90].
  --loan        Fill a ``Node.loan`` array instead of the sender's own.
  --shm=BOOL    ``Node(shm=...)`` on both sides [default: true].

One sender (this process) and one receiver process, a coordinator, paced sends of one uint8
frame refilled before each send, as in large.py. Timestamps (CLOCK_MONOTONIC, shared by the
processes) per frame, medians printed in microseconds from the sender's stamp ``t0`` (taken
after the refill, just before ``send``):

  sender:   encoded  ``ShmHub.encode`` returned (the copy into the pool; 0 with a loan)
            sent     ``send`` returned (the descriptor frame is in the socket)
  receiver: io       the receiver's I/O thread resolved the frame (``ShmHub.resolve``)
            callback the listener's callback started (worker thread, after the hand-off)
            touched  the callback read the first and last byte of the frame

With ``--shm=false`` the io stage is the router's delivery of the whole frame instead. The
hooks wrap methods of the node's parts in these two processes only (a measurement, not an
API); they cost a ``time.monotonic()`` call each.
"""

from __future__ import annotations

import bisect
import json
import os
import selectors
import statistics
import struct
import subprocess
import sys
import time
from typing import Any

import numpy as np
from docopt import docopt

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(os.path.dirname(HERE)))
sys.path.insert(0, HERE)

from large import start_coordinator  # noqa: E402  (a sibling script)

import easymesh  # noqa: E402
from easymesh.dispatch import Dispatcher  # noqa: E402
from easymesh.router import Router  # noqa: E402
from easymesh.shm.release import Ledger  # noqa: E402
from easymesh.shmhub import ShmHub  # noqa: E402
from easymesh.workers import TopicListener  # noqa: E402

HEAD = struct.Struct("<Qd")  # seq, t0
WARMUP = 10
now = time.monotonic


def hook(cls: Any, name: str, into: list[float], enter: bool = False) -> None:
    """Append the time each call of ``cls.name`` returned (``enter``: began) to ``into``."""
    original = getattr(cls, name)

    def timed(*args: Any, **kwargs: Any) -> Any:
        if enter:
            into.append(now())
        out = original(*args, **kwargs)
        if not enter:
            into.append(now())
        return out

    setattr(cls, name, timed)


def receiver(coordinator: str, frames: int, shm: bool) -> None:
    stamps: dict[str, list[float]] = {
        "read": [],
        "io": [],
        "queued": [],
        "worker": [],
        "freed": [],
        "flush": [],
    }
    selects: list[float] = []
    rows: list[tuple[int, float, float, float]] = []
    hook(selectors.DefaultSelector, "select", selects, enter=True)
    hook(Dispatcher, "put_many", stamps["queued"])
    if shm:
        hook(ShmHub, "resolve", stamps["read"], enter=True)
        hook(ShmHub, "resolve", stamps["io"])
        hook(TopicListener, "run", stamps["worker"], enter=True)
        hook(ShmHub, "_wake", stamps["freed"], enter=True)
        hook(ShmHub, "_flush", stamps["flush"], enter=True)
    else:
        hook(Router, "_deliver", stamps["io"])
    done = []
    node = easymesh.Node("stages-rx", coordinator=coordinator, shm=shm)

    def on_frame(_topic: str, frame: Any) -> None:
        t_cb = now()
        if not isinstance(frame, np.ndarray):
            return  # the "hello" messages
        seq, t0 = HEAD.unpack_from(frame, 0)
        _ = frame[len(frame) - 1]
        rows.append((seq, t0, t_cb, now()))
        if seq == frames + WARMUP - 1:
            done.append(True)

    node.listen("frames", on_frame, queue_size=16)
    print("READY", flush=True)
    deadline = now() + 120
    while not done and now() < deadline:
        time.sleep(0.05)
    node.close()
    # the first calls belong to the small "hello" messages (and the first large frame, which
    # takes the socket while shared memory is negotiated): keep the last ones, one per frame
    out = [
        {"seq": s, "t0": t0, "callback": c, "touched": t}
        | {k: v[i - len(rows)] for k, v in stamps.items() if len(v) >= len(rows) - i}
        for i, (s, t0, c, t) in enumerate(rows)
    ]
    for r in out:  # the I/O thread's first select after the hand-off: it lets the GIL go
        if "queued" in r:
            j = bisect.bisect_right(selects, r["queued"])
            if j < len(selects):
                r["select"] = selects[j]
    print("RESULT " + json.dumps(out), flush=True)


def sender(args: dict[str, Any]) -> None:
    size, rate, frames = int(args["--size"]), float(args["--rate"]), int(args["--frames"])
    shm = args["--shm"].lower() in ("1", "true", "yes")
    coord, addr = start_coordinator(sys.executable)
    rx = subprocess.Popen(
        [sys.executable, __file__, "recv", f"--coordinator={addr}", f"--frames={frames}"]
        + ([] if shm else ["--shm=false"]),
        stdout=subprocess.PIPE,
        text=True,
    )
    stamps: dict[str, list[float]] = {"inband": [], "encoded": [], "written": [], "back": []}
    try:
        assert rx.stdout is not None and rx.stdout.readline().strip() == "READY"
        if shm:
            hook(ShmHub, "encode", stamps["encoded"])
            hook(ShmHub, "send", stamps["written"])
            hook(Ledger, "released", stamps["back"], enter=True)
        node = easymesh.Node("stages-tx", coordinator=addr, shm=shm)
        node.wait_for_listener("frames", 30)
        for _ in range(5):  # dial, let the offers cross
            node.send("frames", b"hello")
            time.sleep(0.05)
        if shm:
            hook(ShmHub, "inband", stamps["inband"])  # after the hellos: one call per frame
        source = np.random.default_rng(1).integers(0, 255, size, dtype=np.uint8)
        own = np.empty(size, np.uint8)
        t0s: list[float] = []
        sent: list[float] = []
        start = now()
        for seq in range(frames + WARMUP):
            frame = node.loan((size,), np.uint8) if args["--loan"] else own
            np.copyto(frame, source)
            t0 = now()
            HEAD.pack_into(frame, 0, seq, t0)
            node.send("frames", frame)
            sent.append(now())
            t0s.append(t0)
            del frame
            wait = start + (seq + 1) / rate - now()
            if wait > 0:
                time.sleep(wait)
        line = rx.stdout.readline()
        rows = json.loads(line.split(" ", 1)[1])
        node.close()
    finally:
        rx.wait(30)
        coord.terminate()
        coord.wait(10)
    n = len(t0s)
    # (the first frame may lack stamps: it takes the socket while shared memory is negotiated)
    mine = {k: [None] * (n - len(v)) + v[-n:] for k, v in stamps.items() if v}
    mine["sent"] = sent
    report(args, rows, t0s, mine)


#: Stages in the order a frame passes them: (name, whose stamp, what it marks).
STAGES = (
    ("inband", "tx", "ShmHub.inband returned (pickle stopped at the array)"),
    ("encoded", "tx", "ShmHub.encode returned (the copy into the pool; none for a loan)"),
    ("written", "tx", "ShmHub.send returned (descriptor frame written)"),
    ("sent", "tx", "Node.send returned"),
    ("read", "rx", "receiver I/O thread: ShmHub.resolve began"),
    ("io", "rx", "receiver I/O thread: resolved (or, shm off, router delivered)"),
    ("queued", "rx", "receiver I/O thread: Dispatcher.put_many returned (worker notified)"),
    ("select", "rx", "receiver I/O thread: its next select() began (the GIL goes)"),
    ("worker", "rx", "worker: TopicListener.run began (after the hand-off)"),
    ("callback", "rx", "the callback began (after decoding)"),
    ("touched", "rx", "the callback read the frame's first and last bytes"),
    ("freed", "rx", "the frame's last view died: release queued (finalizer)"),
    ("flush", "rx", "receiver I/O thread: SHM_RELEASE being written"),
    ("back", "tx", "sender I/O thread: the release arrived (Ledger.released)"),
)


def report(args: dict[str, Any], rows: Any, t0s: list[float], mine: dict[str, list[float]]) -> None:
    got = [r for r in rows if r["seq"] >= WARMUP]
    stages: dict[str, list[float]] = {}
    for r in got:
        seq, t0 = r["seq"], r["t0"]
        for name, who, _what in STAGES:
            t = r.get(name) if who == "rx" else (mine[name][seq] if name in mine else None)
            if t is not None:
                stages.setdefault(name, []).append(t - t0)
    total = int(args["--frames"])
    print(
        f"size {int(args['--size']):,} B, {float(args['--rate']):g} Hz, shm={args['--shm']},"
        f" loan={bool(args['--loan'])}: {len(got)}/{total} frames received;"
        f" load average {os.getloadavg()[0]:.2f}; µs after t0 (the refill done, before send)"
    )
    for name, _who, what in STAGES:
        values = sorted(stages.get(name, ()))
        if values:
            p90 = values[int(0.9 * (len(values) - 1))]
            print(
                f"  {name:9s} p50 {statistics.median(values) * 1e6:7.0f}   p90 {p90 * 1e6:7.0f}"
                f"   {what}"
            )


def main() -> None:
    args = docopt(__doc__)
    if args["recv"]:
        receiver(args["--coordinator"], int(args["--frames"]), args["--shm"].lower() == "true")
    else:
        sender(args)


if __name__ == "__main__":
    main()
