"""One side (sender or receiver) of one system in the large-message benchmark (large.py).

Usage:
  large_roles.py SYSTEM send --name=NAME --size=N --receivers=K [--rate=R] [--seconds=S]
                 [--warmup=S] [--timeout=S] [--coordinator=ADDR]
  large_roles.py SYSTEM recv --name=NAME [--timeout=S] [--coordinator=ADDR] [--idle=S]
                 [--linger]

  SYSTEM  ring | zmq | zenoh | iceoryx2 | proto | proto-loan | node-off | node-shm | node-loan

Options:
  --name=NAME         Channel: a socket path (ring, proto, zmq ipc), a key (zenoh, iceoryx2;
                      zenoh uses tcp/127.0.0.1 on the port after a comma), a topic (node-*).
  --size=N            Frame bytes (uint8).
  --receivers=K       Receivers the sender waits for.
  --rate=R            Frames per second; 0 = saturated [default: 0].
  --seconds=S         Measured seconds [default: 2].
  --warmup=S          Seconds sent first and not counted [default: 0.5].
  --timeout=S         Hard limit on this process [default: 120].
  --coordinator=ADDR  easymesh coordinator HOST:PORT (node-*).
  --idle=S            recv: give up after S seconds without a frame [default: 10].
  --linger            recv: when done, print NOTICED and stay alive until stdin closes (before
                      closing the system), so large.py can look at what this process holds.

Protocol with large.py: the sender prints READY once receivers can attach, waits for a line
on stdin (all receivers are READY), runs, prints ``RESULT {json}``. A receiver prints READY
once subscribed and ``RESULT {json}`` after the END frames (or when idle for 10 s).

Every frame is one uint8 buffer whose first 24 bytes are the header (kind u32, pad u32, seq
u64, send time f64 CLOCK_MONOTONIC). Before every send the sender refills the whole frame from
a source buffer (``np.copyto``: the camera writing its image), then writes the header; for
loan systems the refill goes straight into the loaned shared memory. The receiver reads the
header and the last byte from the frame it got (touching the shared memory, no copy of it
where the system allows) and measures one-way latency from the header's time.
"""

from __future__ import annotations

import os
import socket
import sys
import threading
import time
from typing import Any

import numpy as np
from docopt import docopt

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from large_systems import (  # noqa: E402  (a sibling script, not a package)
    DATA,
    END,
    HEAD,
    WARMUP,
    IoxReceiver,
    IoxSender,
    Receiver,
    RingReceiver,
    RingSender,
    Sender,
    ZenohReceiver,
    ZenohSender,
    ZmqReceiver,
    ZmqSender,
    emit,
    now,
)

# --- the phase-1 prototype (easymesh.shm.link): automatic copy into the pool, or a loan ---


class ProtoSender(Sender):
    def __init__(self, name: str, size: int, k: int, loan: bool) -> None:
        from easymesh.shm.link import Publisher
        from easymesh.shm.pool import Pool

        self.size = size
        self.loan = loan
        srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        srv.bind(name)
        srv.listen(k)
        emit("READY")
        socks = [srv.accept()[0] for _ in range(k)]
        srv.close()
        # a full pool drops the frame (counted as lost), as iceoryx2 overwrites: sending it
        # through the socket instead would slow every receiver down behind it
        self.pub = Publisher(Pool(), socks, fallback=False)
        self.own = np.empty(size, np.uint8)  # the sender's own frame, refilled every time

    def buffer(self) -> Any:
        if self.loan:
            frame = self.pub.pool.loan(self.size, np.uint8)
            if frame is not None:
                return frame
        return self.own

    def send(self, frame: Any) -> bool:
        return self.pub.send(frame)

    def close(self) -> None:
        self.pub.close()


class ProtoReceiver(Receiver):
    def __init__(self, name: str) -> None:
        from easymesh.shm.link import Subscriber

        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.connect(name)
        self.sub = Subscriber(sock)
        emit("READY")

    def recv(self, timeout: float) -> Any:
        from easymesh.errors import ConnectionLost

        try:
            return self.sub.recv(timeout)
        except (TimeoutError, ConnectionLost):
            return None

    def close(self) -> None:
        self.sub.close()


# --- easymesh.Node: shm off, shm (the default), shm with loans ---

NODE_SHM = {"node-off": {"shm": False}, "node-shm": {"shm": True}, "node-loan": {"shm": True}}


def _node(system: str, role: str, coordinator: str) -> Any:
    import easymesh

    kwargs = NODE_SHM[system]
    try:
        return easymesh.Node(f"large-{role}-{os.getpid()}", coordinator=coordinator, **kwargs)
    except TypeError:
        if system == "node-off":  # before phase 2 every link is the socket path
            return easymesh.Node(f"large-{role}-{os.getpid()}", coordinator=coordinator)
        emit("UNAVAILABLE", {"why": "easymesh.Node has no shm option yet (issue 13 phase 2)"})
        sys.exit(3)


class NodeSender(Sender):
    def __init__(self, system: str, topic: str, size: int, k: int, coordinator: str) -> None:
        self.size = size
        self.topic = topic
        self.node = _node(system, "send", coordinator)
        self.loan = system == "node-loan"
        if self.loan and not hasattr(self.node, "loan"):
            emit("UNAVAILABLE", {"why": "easymesh.Node has no loan() yet (issue 13 phase 2)"})
            sys.exit(3)
        self.own = np.empty(size, np.uint8)
        emit("READY")

    def buffer(self) -> Any:
        if self.loan:
            frame = self.node.loan((self.size,), np.uint8)
            if frame is not None:
                return frame
        return self.own

    def send(self, frame: Any) -> bool:
        return self.node.send(self.topic, frame) is not False

    def close(self) -> None:
        self.node.close()


class NodeReceiver(Receiver):
    """Callback-driven: frames are measured in the listener's callback, not handed over."""

    def __init__(self, system: str, topic: str, coordinator: str) -> None:
        self.node = _node(system, "recv", coordinator)
        self.topic = topic

    def run(self, tally: Tally, idle: float) -> None:
        self.node.listen(self.topic, lambda _topic, frame: tally.on_frame(frame), queue_size=16)
        emit("READY")
        while not tally.finished.wait(1.0):
            if now() - tally.last_seen > idle:
                break

    def close(self) -> None:
        self.node.close()


def make_sender(system: str, args: dict[str, Any]) -> Sender:
    name, size, k = args["--name"], int(args["--size"]), int(args["--receivers"])
    if system == "ring":
        return RingSender(name, size, k)
    if system == "zmq":
        return ZmqSender(name, size, k)
    if system == "zenoh":
        return ZenohSender(name, size, k)
    if system == "iceoryx2":
        return IoxSender(name, size, k)
    if system in ("proto", "proto-loan"):
        return ProtoSender(name, size, k, loan=system == "proto-loan")
    if system in NODE_SHM:
        return NodeSender(system, name, size, k, args["--coordinator"])
    raise SystemExit(f"unknown system {system}")


def make_receiver(system: str, args: dict[str, Any]) -> Receiver:
    name = args["--name"]
    if system == "ring":
        return RingReceiver(name)
    if system == "zmq":
        return ZmqReceiver(name)
    if system == "zenoh":
        return ZenohReceiver(name)
    if system == "iceoryx2":
        return IoxReceiver(name)
    if system in ("proto", "proto-loan"):
        return ProtoReceiver(name)
    if system in NODE_SHM:
        return NodeReceiver(system, name, args["--coordinator"])
    raise SystemExit(f"unknown system {system}")


def run_send(tx: Sender, size: int, rate: float, seconds: float, warmup: float) -> dict[str, Any]:
    source = np.random.default_rng(1).integers(0, 256, size, dtype=np.uint8)
    sys.stdin.readline()  # GO: every receiver is attached
    cpu0 = time.process_time()
    period = 1.0 / rate if rate > 0 else 0.0
    start = now()
    measure_at, end_at = start + warmup, start + warmup + seconds
    seq = sent = dropped = 0
    first = last = 0.0
    while True:
        t = now()
        if t >= end_at:
            break
        kind = DATA if t >= measure_at else WARMUP
        frame = tx.buffer()
        np.copyto(frame, source)
        t_send = now()
        HEAD.pack_into(frame, 0, kind, 0, seq, t_send)
        ok = tx.send(frame)
        del frame
        if kind == DATA:
            first = first or t_send
            last = t_send
            sent += ok
            dropped += not ok
        seq += 1
        if period:
            pause = start + seq * period - now()
            if pause > 0:
                time.sleep(pause)
    for _ in range(3):  # END, repeated for systems that may lose one
        try:
            frame = tx.buffer()
            HEAD.pack_into(frame, 0, END, 0, seq, now())
            tx.send(frame)
        except OSError:  # receivers that saw the first END may be gone already
            break
        del frame
        seq += 1
        time.sleep(0.05)
    cpu = time.process_time() - cpu0  # this process, all its threads, from GO (warm-up too)
    out = {"sent": sent, "dropped": dropped, "seconds": last - first, "frames": seq, "cpu": cpu}
    node = getattr(tx, "node", None)
    if isinstance(tx, NodeSender):  # easymesh: the pool's figures (fallbacks when it was full)
        out["shm"] = node.stats().get("shm")
    return out


class Tally:
    def __init__(self) -> None:
        self.received = 0
        self.seen = 0  # warm-up frames too
        self.cpu0 = time.process_time()
        self.nbytes = 0
        self.lat: list[float] = []
        self.finished = threading.Event()
        self.last_seen = now()

    def on_frame(self, frame: Any) -> None:
        t = now()
        kind, _, _seq, t_send = HEAD.unpack_from(frame, 0)
        n = len(frame) if not isinstance(frame, memoryview) else frame.nbytes
        _ = frame[n - 1]  # touch the end of the frame too
        self.last_seen = t
        if not self.seen:
            self.cpu0 = time.process_time()  # from the first frame (the sender's GO)
        self.seen += 1
        if kind == DATA:
            self.received += 1
            self.nbytes += n
            self.lat.append(t - t_send)
        elif kind == END:
            self.finished.set()

    def result(self) -> dict[str, Any]:
        lat = sorted(self.lat)

        def pct(q: float) -> float | None:
            return round(lat[min(len(lat) - 1, int(q * len(lat)))] * 1e6, 1) if lat else None

        return {
            "received": self.received,
            "bytes": self.nbytes,
            "p50_us": pct(0.5),
            "p99_us": pct(0.99),
            "seen": self.seen,
            "cpu": time.process_time() - self.cpu0,
        }


def run_recv(rx: Receiver, idle: float) -> dict[str, Any]:
    tally = Tally()
    if isinstance(rx, NodeReceiver):
        rx.run(tally, idle)
        return tally.result()
    while not tally.finished.is_set():
        frame = rx.recv(idle)
        if frame is None:
            break
        tally.on_frame(frame)
        rx.done(frame)
        del frame
    return tally.result()


def _watchdog(seconds: float) -> None:
    timer = threading.Timer(seconds, lambda: os._exit(124))
    timer.daemon = True
    timer.start()


def main() -> int:
    args = docopt(__doc__)
    _watchdog(float(args["--timeout"]))
    system = args["SYSTEM"]
    if args["send"]:
        tx = make_sender(system, args)
        try:
            result = run_send(
                tx,
                int(args["--size"]),
                float(args["--rate"]),
                float(args["--seconds"]),
                float(args["--warmup"]),
            )
        finally:
            tx.close()
        emit("RESULT", result)
    else:
        rx = make_receiver(system, args)
        try:
            result = run_recv(rx, float(args["--idle"]))
            if args["--linger"]:
                emit("NOTICED")
                sys.stdin.read()
        finally:
            rx.close()
        emit("RESULT", result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
