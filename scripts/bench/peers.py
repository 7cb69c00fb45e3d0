"""The reference systems of the easymesh benchmark, with the workload of `easymesh.demo.speedtest`.

Runs in the peers virtual environment (rosy 0.8.3, pyzmq, docopt); the raw socket loop
needs only the standard library. Each process prints `READY` once it can be reached and one
result line `SPEEDTEST {json}` in the same shape as speedtest's, so scripts/bench/bench.py
reads every system alike.

Usage:
  peers.py SYSTEM ROLE --address=ADDR [options]

  SYSTEM  raw | zmq | rosy
  ROLE    recv | send (a topic, one way)   serve | call (request/response)

Options:
  --address=ADDR      unix:PATH or tcp:HOST:PORT (raw, zmq); for rosy: unix or tcp, and the
                      domain id after a comma, e.g. tcp,bench-7.
  --seconds=S         Measured seconds (send, call) [default: 2].
  --warmup=S          Warm-up seconds, not counted [default: 0.5].
  --message-size=N    Payload bytes [default: 1000].
  --rate=R            Messages (requests) per second; 0 = as fast as possible [default: 0].
  --in-flight=N       call: requests outstanding at once [default: 1].
  --timeout=S         Hard limit on this process [default: 60].

Method (as in speedtest): a message is the dict {"k": kind, "seq": n, "t": CLOCK_MONOTONIC
send time, "data": payload}; rosy gets the dict (it pickles it); zmq and the raw loop send
pickle.dumps(dict, protocol=5). The receiver counts data messages, drops from the sender's
count in the END message, and one-way latency. zmq: PUB/SUB for topics, REQ/REP for the
sequential round trip, DEALER/ROUTER for requests in flight. raw: one stream socket,
4-byte length prefix, blocking I/O in one thread per side (the sender is throttled by the
kernel instead of dropping).
"""

from __future__ import annotations

import json
import os
import pickle
import socket
import struct
import sys
import threading
import time
from array import array
from typing import Any

from docopt import docopt

WARMUP, DATA, END = 0, 1, 2
N_END = 3
_LEN = struct.Struct("<I")


def now() -> float:
    return time.clock_gettime(time.CLOCK_MONOTONIC)


def make_msg(kind: int, seq: int, payload: bytes, **extra: Any) -> dict[str, Any]:
    msg = {"k": kind, "seq": seq, "t": now(), "data": payload}
    msg.update(extra)
    return msg


def pct(values: Any, q: float) -> float:
    if not values:
        return float("nan")
    return values[min(len(values) - 1, max(0, int(round(q / 100.0 * (len(values) - 1)))))]


def us(seconds: float) -> float:
    return round(seconds * 1e6, 1)


def emit(result: dict[str, Any]) -> None:
    print("SPEEDTEST " + json.dumps(result), flush=True)


def ready() -> None:
    print("READY", flush=True)


class Pacer:
    def __init__(self, rate: float) -> None:
        self.period = 1.0 / rate if rate > 0 else 0.0
        self.next = now()

    def delay(self) -> float:
        if not self.period:
            return 0.0
        self.next += self.period
        d = self.next - now()
        if d < -0.1:
            self.next = now()
        return d


class Counter:
    """Receiver-side counting, the same as speedtest's RunStats."""

    def __init__(self) -> None:
        self.first = self.last = 0.0
        self.n = 0
        self.bytes = 0
        self.max_seq = -1
        self.ooo = 0
        self.lat = array("d")
        self.end: dict[str, Any] | None = None
        self.last_any = now()
        self.done = threading.Event()

    def on_msg(self, msg: dict[str, Any]) -> None:
        t = now()
        self.last_any = t
        kind = msg["k"]
        if kind == DATA:
            if not self.n:
                self.first = t
            self.last = t
            self.n += 1
            self.bytes += len(msg["data"])
            self.lat.append(t - msg["t"])
            if msg["seq"] < self.max_seq:
                self.ooo += 1
            else:
                self.max_seq = msg["seq"]
        elif kind == END:
            self.end = msg
            self.done.set()

    def idle(self, limit: float) -> bool:
        return (self.n > 0 or self.end is not None) and now() - self.last_any > limit

    def result(self) -> dict[str, Any]:
        n = self.n
        span = self.last - self.first
        rate = (n - 1) / span if n > 1 and span > 0 else 0.0
        sent = self.end["sent"] if self.end else None
        drops = (sent if sent is not None else max(self.max_seq + 1, n)) - n
        lat = sorted(self.lat)
        size = self.bytes / n if n else 0
        return {"role": "recv", "received": n, "sent": sent, "drops": drops,
                "drop_pct": round(100.0 * drops / sent, 2) if sent else None,
                "out_of_order": self.ooo, "msgs_per_s": round(rate, 1),
                "mb_per_s": round(rate * size / 1e6, 2), "lat_p50_us": us(pct(lat, 50)),
                "lat_p99_us": us(pct(lat, 99)), "lat_max_us": us(lat[-1]) if lat else None,
                "span_s": round(span, 4), "message_size": int(size),
                "complete": self.end is not None}


def send_result(n: int, t0: float, t1: float, cpu: float, cost: Any, size: int, rate: float) -> dict[str, Any]:
    c = sorted(cost)
    return {"role": "send", "sent": n, "seconds": round(t1 - t0, 4),
            "msgs_per_s": round(n / (t1 - t0), 1), "send_p50_us": us(pct(c, 50)),
            "send_p99_us": us(pct(c, 99)), "cpu_pct": round(100 * cpu / (t1 - t0), 1),
            "message_size": size, "rate_target": rate}


def call_result(rtts: Any, n: int, t0: float, t1: float, in_flight: int, size: int, errors: int = 0) -> dict[str, Any]:
    r = sorted(rtts)
    return {"role": "call", "requests": n, "answered": len(r), "errors": errors,
            "in_flight": in_flight, "seconds": round(t1 - t0, 4),
            "req_per_s": round(len(r) / (t1 - t0), 1), "rtt_p50_us": us(pct(r, 50)),
            "rtt_p99_us": us(pct(r, 99)), "message_size": size}


def parse_address(addr: str) -> tuple[int, Any]:
    kind, _, rest = addr.partition(":")
    if kind == "unix":
        return socket.AF_UNIX, rest
    host, _, port = rest.rpartition(":")
    return socket.AF_INET, (host, int(port))


def zmq_endpoint(addr: str) -> str:
    kind, _, rest = addr.partition(":")
    return f"ipc://{rest}" if kind == "unix" else f"tcp://{rest}"


# -- the raw socket loop ----------------------------------------------------------------------


class FrameReader:
    """Length-prefixed frames from a blocking socket, read into one reusable buffer."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.buf = bytearray(1 << 20)
        self.view = memoryview(self.buf)
        self.start = self.end = 0

    def frames(self) -> Any:
        """Yield bodies (bytes-like) until the peer closes."""
        sock = self.sock
        while True:
            avail = self.end - self.start
            if avail >= 4:
                (n,) = _LEN.unpack_from(self.buf, self.start)
                if avail >= 4 + n:
                    body = self.view[self.start + 4:self.start + 4 + n]
                    self.start += 4 + n
                    yield body
                    continue
                if 4 + n > len(self.buf):  # a large frame: read it into its own buffer
                    big = bytearray(n)
                    have = avail - 4
                    big[:have] = self.view[self.start + 4:self.end]
                    mv = memoryview(big)
                    while have < n:
                        k = sock.recv_into(mv[have:])
                        if not k:
                            return
                        have += k
                    self.start = self.end = 0
                    yield big
                    continue
            if self.start:  # compact
                self.buf[:avail] = self.view[self.start:self.end]
                self.start, self.end = 0, avail
            k = sock.recv_into(self.view[self.end:])
            if not k:
                return
            self.end += k


def raw_send_frame(sock: socket.socket, body: bytes) -> None:
    head = _LEN.pack(len(body))
    if len(body) < 16384:
        sock.sendall(head + body)
        return
    sent = sock.sendmsg([head, body])  # scatter/gather: no copy of the body
    if sent < 4:
        sock.sendall(head[sent:])
        sock.sendall(body)
    elif sent < 4 + len(body):
        sock.sendall(memoryview(body)[sent - 4:])


def raw_listen(addr: str) -> socket.socket:
    family, sa = parse_address(addr)
    srv = socket.socket(family, socket.SOCK_STREAM)
    if family == socket.AF_INET:
        srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    srv.bind(sa)
    srv.listen(1)
    ready()
    conn, _ = srv.accept()
    srv.close()
    if family == socket.AF_INET:
        conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return conn


def raw_connect(addr: str) -> socket.socket:
    family, sa = parse_address(addr)
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.connect(sa)
    if family == socket.AF_INET:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def raw_main(role: str, o: dict[str, Any]) -> None:
    payload = b"x" * o["size"]
    if role == "recv":
        conn = raw_listen(o["address"])
        c = Counter()
        loads = pickle.loads
        for body in FrameReader(conn).frames():
            c.on_msg(loads(body))
            if c.done.is_set():
                break
        emit(c.result())
        return
    if role == "serve":
        conn = raw_listen(o["address"])
        for body in FrameReader(conn).frames():
            raw_send_frame(conn, bytes(body))  # echo
        return
    sock = raw_connect(o["address"])
    dumps = pickle.dumps
    if role == "send":
        run_sender(lambda m: raw_send_frame(sock, dumps(m, 5)), payload, o)
        return
    reader = FrameReader(sock).frames()

    def call(m: dict[str, Any]) -> Any:
        raw_send_frame(sock, dumps(m, 5))
        return pickle.loads(next(reader))

    if o["in_flight"] == 1:
        run_sequential_caller(call, payload, o)
        return
    k = o["in_flight"]
    sent_t: dict[int, float] = {}
    rtts = array("d")
    t_warm = now() + o["warmup"]
    while now() < t_warm:
        call(make_msg(WARMUP, -1, payload))
    n = got = 0
    t0 = now()
    t_stop = t0 + o["seconds"]
    while True:
        while n - got < k and now() < t_stop:
            m = make_msg(DATA, n, payload)
            sent_t[n] = m["t"]
            raw_send_frame(sock, dumps(m, 5))
            n += 1
        if got == n:
            break
        rep = pickle.loads(next(reader))
        rtts.append(now() - sent_t.pop(rep["seq"]))
        got += 1
    emit(call_result(rtts, n, t0, now(), k, o["size"]))


# -- shared sender / caller loops (blocking APIs) --------------------------------------------


def run_sender(send: Any, payload: bytes, o: dict[str, Any]) -> None:
    pacer = Pacer(o["rate"])
    t_warm = now() + o["warmup"]
    while now() < t_warm:
        send(make_msg(WARMUP, -1, payload))
        d = pacer.delay()
        if d > 0:
            time.sleep(d)
    pacer = Pacer(o["rate"])
    cost = array("d")
    perf = time.perf_counter
    n = 0
    cpu0 = time.process_time()
    t0 = now()
    t_stop = t0 + o["seconds"]
    while now() < t_stop:
        m = make_msg(DATA, n, payload)
        a = perf()
        send(m)
        cost.append(perf() - a)
        n += 1
        d = pacer.delay()
        if d > 0:
            time.sleep(d)
    t1 = now()
    cpu = time.process_time() - cpu0
    for _ in range(N_END):
        try:
            send(make_msg(END, n, b"", sent=n))
        except OSError:  # raw: the receiver closed after the first END
            break
        time.sleep(0.01)
    emit(send_result(n, t0, t1, cpu, cost, o["size"], o["rate"]))


def run_sequential_caller(call: Any, payload: bytes, o: dict[str, Any]) -> None:
    t_warm = now() + o["warmup"]
    while now() < t_warm:
        call(make_msg(WARMUP, -1, payload))
    rtts = array("d")
    n = 0
    t0 = now()
    t_stop = t0 + o["seconds"]
    while True:
        t = now()
        if t >= t_stop:
            break
        rep = call(make_msg(DATA, n, payload))
        rtts.append(now() - t)
        assert rep["seq"] == n, "bad echo"
        n += 1
    emit(call_result(rtts, n, t0, now(), 1, o["size"]))


# -- pyzmq ------------------------------------------------------------------------------------


def zmq_main(role: str, o: dict[str, Any]) -> None:
    import zmq

    ctx = zmq.Context()
    ep = zmq_endpoint(o["address"])
    payload = b"x" * o["size"]
    dumps, loads = pickle.dumps, pickle.loads
    if role == "recv":
        s = ctx.socket(zmq.SUB)
        s.setsockopt(zmq.SUBSCRIBE, b"")
        s.bind(ep)
        ready()
        c = Counter()
        deadline = now() + o["timeout"] - 2
        while not c.done.is_set() and now() < deadline:
            if s.poll(200):
                c.on_msg(loads(s.recv(copy=False).buffer))
            elif c.idle(3.0):
                break
        emit(c.result())
    elif role == "send":
        s = ctx.socket(zmq.PUB)
        s.connect(ep)
        time.sleep(0.3)  # the slow-joiner: let the subscription arrive
        run_sender(lambda m: s.send(dumps(m, 5), copy=len(m["data"]) < 65536), payload, o)
        time.sleep(0.2)
    elif role == "serve":
        s = ctx.socket(zmq.ROUTER)
        s.bind(ep)
        ready()
        deadline = now() + o["timeout"] - 2
        while now() < deadline:
            if s.poll(500):
                parts = s.recv_multipart(copy=False)
                s.send_multipart(parts, copy=False)  # echo, envelope included
                if parts[-1].buffer.nbytes == 3 and parts[-1].bytes == b"END":
                    time.sleep(0.1)
                    break
    else:
        k = o["in_flight"]
        if k == 1:
            s = ctx.socket(zmq.REQ)
            s.connect(ep)

            def call(m: dict[str, Any]) -> Any:
                s.send(dumps(m, 5))
                return loads(s.recv())

            run_sequential_caller(call, payload, o)
            s.send(b"END")
            s.poll(2000)
        else:
            s = ctx.socket(zmq.DEALER)
            s.connect(ep)
            call_pipelined(lambda m: s.send_multipart([b"", dumps(m, 5)]),
                           lambda: loads(s.recv_multipart()[-1]), payload, o)
            s.send_multipart([b"", b"END"])
            s.poll(2000)
    os._exit(0)


def call_pipelined(send: Any, recv: Any, payload: bytes, o: dict[str, Any]) -> None:
    k = o["in_flight"]
    t_warm = now() + o["warmup"]
    while now() < t_warm:
        send(make_msg(WARMUP, -1, payload))
        recv()
    sent_t: dict[int, float] = {}
    rtts = array("d")
    n = got = 0
    t0 = now()
    t_stop = t0 + o["seconds"]
    while True:
        while n - got < k and now() < t_stop:
            m = make_msg(DATA, n, payload)
            sent_t[n] = m["t"]
            send(m)
            n += 1
        if got == n:
            break
        rep = recv()
        rtts.append(now() - sent_t.pop(rep["seq"]))
        got += 1
    emit(call_result(rtts, n, t0, now(), k, o["size"]))


# -- rosy 0.8.3 -------------------------------------------------------------------------------


def rosy_main(role: str, o: dict[str, Any]) -> None:
    import asyncio
    import logging

    import rosy

    logging.basicConfig(level=logging.ERROR)
    transport, _, domain = o["address"].partition(",")
    payload = b"x" * o["size"]

    async def build(name: str) -> Any:
        if transport == "tcp":
            return await rosy.build_node(
                name=name, domain_id=domain, data_codec="pickle", allow_unix_connections=False,
                allow_tcp_connections=True, node_server_host="127.0.0.1",
                node_client_host="127.0.0.1")
        return await rosy.build_node(name=name, domain_id=domain, data_codec="pickle",
                                     allow_unix_connections=True, allow_tcp_connections=False)

    async def wait_until(event: asyncio.Event, counter: Counter | None) -> None:
        deadline = now() + o["timeout"] - 2
        while not event.is_set() and now() < deadline:
            try:
                await asyncio.wait_for(event.wait(), 0.2)
            except asyncio.TimeoutError:
                pass
            if counter is not None and counter.idle(3.0):
                break

    async def amain() -> None:
        if role == "recv":
            node = await build("bench-recv")
            c = Counter()
            done = asyncio.Event()

            async def on_msg(_topic: str, msg: dict[str, Any]) -> None:
                c.on_msg(msg)
                if c.done.is_set():
                    done.set()

            await node.listen("bench", on_msg)
            ready()
            await wait_until(done, c)
            emit(c.result())
            return
        if role == "serve":
            node = await build("bench-serve")
            stop = asyncio.Event()

            async def echo(_service: str, msg: dict[str, Any]) -> dict[str, Any]:
                if msg["k"] == END:
                    asyncio.get_running_loop().call_later(0.2, stop.set)
                return msg

            await node.add_service("bench", echo)
            ready()
            await wait_until(stop, None)
            return
        if role == "send":
            node = await build("bench-send")
            await asyncio.wait_for(node.wait_for_listener("bench", poll_interval=0.02), 15)
            topic = node.get_topic("bench")
            pacer = Pacer(o["rate"])
            t_warm = now() + o["warmup"]
            while now() < t_warm:
                await topic.send(make_msg(WARMUP, -1, payload))
                d = pacer.delay()
                await asyncio.sleep(max(0.0, d))  # also yields to rosy's writer tasks
            pacer = Pacer(o["rate"])
            cost = array("d")
            perf = time.perf_counter
            n = 0
            cpu0 = time.process_time()
            t0 = now()
            t_stop = t0 + o["seconds"]
            while now() < t_stop:
                m = make_msg(DATA, n, payload)
                a = perf()
                await topic.send(m)
                cost.append(perf() - a)
                n += 1
                d = pacer.delay()
                if d > 0:
                    await asyncio.sleep(d)
            t1 = now()
            cpu = time.process_time() - cpu0
            for _ in range(N_END):
                await topic.send(make_msg(END, n, b"", sent=n))
                await asyncio.sleep(0.02)
            await asyncio.sleep(0.5)  # let rosy's outboxes drain
            emit(send_result(n, t0, t1, cpu, cost, o["size"], o["rate"]))
            return
        node = await build("bench-call")
        await asyncio.wait_for(node.wait_for_service_provider("bench", poll_interval=0.02), 15)
        svc = node.get_service("bench")
        k = o["in_flight"]
        t_warm = now() + o["warmup"]
        while now() < t_warm:
            await svc(make_msg(WARMUP, -1, payload))
        rtts = array("d")
        n = 0
        t0 = now()
        t_stop = t0 + o["seconds"]
        if k == 1:
            while now() < t_stop:
                t = now()
                await svc(make_msg(DATA, n, payload))
                rtts.append(now() - t)
                n += 1
        else:
            sem = asyncio.Semaphore(k)
            tasks = set()

            async def one(seq: int) -> None:
                try:
                    t = now()
                    await svc(make_msg(DATA, seq, payload))
                    rtts.append(now() - t)
                finally:
                    sem.release()

            while now() < t_stop:
                await sem.acquire()
                task = asyncio.ensure_future(one(n))
                tasks.add(task)
                task.add_done_callback(tasks.discard)
                n += 1
            if tasks:
                await asyncio.wait(tasks, timeout=10)
        emit(call_result(rtts, n, t0, now(), k, o["size"]))
        try:
            await asyncio.wait_for(svc(make_msg(END, n, b"")), 3)
        except Exception:
            pass

    async def run() -> None:
        await amain()
        sys.stdout.flush()
        os._exit(0)  # skip rosy's teardown (zeroconf goodbyes)

    asyncio.run(run())


def main() -> None:
    args = docopt(__doc__)
    o = {"address": args["--address"], "seconds": float(args["--seconds"]),
         "warmup": float(args["--warmup"]), "size": int(args["--message-size"]),
         "rate": float(args["--rate"]), "in_flight": int(args["--in-flight"]),
         "timeout": float(args["--timeout"])}
    t = threading.Timer(o["timeout"], lambda: (print("peers.py: watchdog fired", file=sys.stderr,
                                                     flush=True), os._exit(3)))
    t.daemon = True
    t.start()
    system, role = args["SYSTEM"], args["ROLE"]
    {"raw": raw_main, "zmq": zmq_main, "rosy": rosy_main}[system](role, o)
    sys.stdout.flush()
    os._exit(0)


if __name__ == "__main__":
    main()
