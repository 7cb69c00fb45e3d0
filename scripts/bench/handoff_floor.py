"""What one thread hand-off adds to a shared-memory frame's one-way latency (issue 13), with
no easymesh code at all.

Usage:
  handoff_floor.py [--size=N] [--rate=R] [--frames=N] [--repeats=N]

Options:
  --size=N     Frame bytes [default: 8294400].
  --rate=R     Frames per second, paced [default: 30].
  --frames=N   Frames per run [default: 90].
  --repeats=N  Interleaved runs of each layout [default: 3].

A forked receiver maps a memfd read-only; the sender refills the frame from a source buffer
(as large.py does), stamps the send time into it and writes 8 bytes on a Unix socket pair.
Four receiver layouts, one per run:

  direct  the thread blocked in ``recv`` reads the frame (the hand-written ring's receiver:
          one wake-up per frame);
  lock    a selector thread reads the socket and hands the frame to a worker thread, which
          waits on its own ``threading.Lock`` (two wake-ups: an easymesh node's I/O thread,
          then the listener's worker, as ``Dispatcher`` wakes it since issue 13);
  sq      the same through a ``queue.SimpleQueue``;
  cond    the same with a deque and a ``threading.Condition`` (the worker's hand-off before
          the doorbell).

Prints the one-way latency p50/p90 in µs per run. The difference between ``direct`` and
``lock`` is the floor of what a node's receiver, which never runs user code on its I/O thread,
pays over the ring before any Python of its own.
"""

from __future__ import annotations

import mmap
import os
import queue
import selectors
import socket
import statistics
import struct
import threading
import time
from collections import deque
from typing import Any

import numpy as np
from docopt import docopt

now = time.monotonic
HEAD = struct.Struct("<d")
RESULT = struct.Struct("<dd")


def receive(sock: socket.socket, frame: Any, mode: str, frames: int) -> tuple[float, float]:
    lat: list[float] = []
    last = len(frame) - 1

    def touch() -> None:
        (t0,) = HEAD.unpack_from(frame, 0)
        _ = frame[last]
        lat.append(now() - t0)

    if mode == "direct":
        for _ in range(frames):
            sock.recv(8)
            touch()
    else:
        sel = selectors.DefaultSelector()
        sel.register(sock, selectors.EVENT_READ)
        sq: queue.SimpleQueue[int] = queue.SimpleQueue()
        state = threading.Lock()
        bell = threading.Lock()
        bell.acquire()  # the worker's bell: released to wake it
        sleeping: list[bool] = [False]
        dq: deque[int] = deque()
        cond = threading.Condition(threading.Lock())

        def worker() -> None:
            for _ in range(frames):
                if mode == "sq":
                    sq.get()
                elif mode == "lock":
                    while True:
                        with state:
                            if dq:
                                dq.popleft()
                                break
                            sleeping[0] = True
                        bell.acquire()
                else:
                    with cond:
                        while not dq:
                            cond.wait()
                        dq.popleft()
                touch()

        w = threading.Thread(target=worker)
        w.start()
        for _ in range(frames):
            sel.select()
            sock.recv(8)
            if mode == "sq":
                sq.put(1)
            elif mode == "lock":
                with state:
                    dq.append(1)
                    ring, sleeping[0] = sleeping[0], False
                if ring:
                    bell.release()
            else:
                with cond:
                    dq.append(1)
                    cond.notify()
        w.join()
    lat.sort()
    return statistics.median(lat) * 1e6, lat[int(0.9 * (len(lat) - 1))] * 1e6


def run(mode: str, size: int, rate: float, frames: int) -> tuple[float, float]:
    fd = os.memfd_create("handoff-floor", os.MFD_CLOEXEC)
    os.ftruncate(fd, size)
    a, b = socket.socketpair()
    pid = os.fork()
    if pid == 0:  # the receiver
        try:
            a.close()
            mm = mmap.mmap(fd, size, prot=mmap.PROT_READ)
            b.send(RESULT.pack(*receive(b, np.frombuffer(mm, np.uint8), mode, frames)))
        finally:
            os._exit(0)
    b.close()
    mm = mmap.mmap(fd, size)
    frame = np.frombuffer(mm, np.uint8)
    source = np.random.default_rng(1).integers(0, 255, size, dtype=np.uint8)
    start = now()
    for i in range(frames):
        np.copyto(frame, source)
        HEAD.pack_into(frame, 0, now())
        a.send(b"12345678")
        wait = start + (i + 1) / rate - now()
        if wait > 0:
            time.sleep(wait)
    out = RESULT.unpack(a.recv(RESULT.size))
    os.waitpid(pid, 0)
    a.close()
    os.close(fd)
    return out


def main() -> None:
    args = docopt(__doc__)
    size, rate, frames = int(args["--size"]), float(args["--rate"]), int(args["--frames"])
    modes = ("direct", "lock", "sq", "cond")
    results: dict[str, list[tuple[float, float]]] = {m: [] for m in modes}
    for _ in range(int(args["--repeats"])):
        for m in modes:
            results[m].append(run(m, size, rate, frames))
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    print(f"{size:,} B at {rate:g} Hz, {frames} frames per run; load average {load}")
    for m in modes:
        print(
            f"  {m:6s} " + " | ".join(f"p50 {p50:5.0f} p90 {p90:5.0f}" for p50, p90 in results[m])
        )


if __name__ == "__main__":
    main()
