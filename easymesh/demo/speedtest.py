"""Measure easymesh between two processes: topics (send/recv) and services (serve/call).

Run it as `python -m easymesh.demo.speedtest`. Start the receiving side first, then the
sending side, against the same coordinator. The figures that count are taken where the
messages arrive: delivered messages/s and MB/s, drops (from sequence numbers) and one-way
latency (send and receive times from CLOCK_MONOTONIC, which is one clock for every process
on a Linux host, so the two processes must run on the same machine).

Usage:
  speedtest recv [options]
  speedtest send [options]
  speedtest serve [options]
  speedtest call [options]
  speedtest (-h | --help)

Options:
  --coordinator=HOST:PORT  Coordinator address [default: $EASYMESH_COORDINATOR or localhost:6374].
  --authkey=KEY            Shared secret [default: $EASYMESH_AUTHKEY or none].
  --authkey-file=FILE      Read the shared secret from FILE (chmod 600).
  --name=NAME              Node name (default: speedtest-<mode>).
  --seconds=S              How long send/call measure, after the warm-up [default: 5].
  --warmup=S               Seconds of warm-up traffic that is not counted [default: 0.5].
  --message-size=N         Payload bytes per message or request [default: 1000].
  --codec=C                pickle, msgpack, json or raw [default: pickle].
  --topic=T                Topic (send/recv) or service (serve/call) name [default: speedtest].
  --rate=R                 Messages or requests per second; 0 = as fast as possible [default: 0].
  --in-flight=N            call: requests kept in flight at once (request_future) [default: 1].
  --transport=MODE         auto (Unix socket on this host) or tcp [default: auto].
  --queue-size=N           recv: the listener's queue bound [default: 1000].
  --once                   recv/serve: exit after one run instead of waiting for the next.
  --wait=S                 Seconds to wait for the other side to appear [default: 20].
  --timeout=S              Hard limit on the whole process; 0 = seconds + warmup + 60 [default: 0].
  --json                   Also print each result as one line: SPEEDTEST {json}.
  -h --help                Show this screen.

What each mode prints:
  recv   per run: delivered msgs/s, MB/s, drops, out-of-order, one-way latency p50/p99/max.
  send   the sender's rate and the cost of send() in the calling thread (p50/p99), then the
         receiver's figures for the same run (fetched from the receiver at the end).
  call   round-trip p50/p99 and requests/s (with --in-flight N: N requests outstanding).
  serve  requests served per run.

Method: every message is {"k": kind, "seq": n, "t": send time, "data": payload} (raw codec:
a 17-byte struct header then the payload; json: the payload as a str). Warm-up messages are
not counted; at the end the sender sends three END messages carrying how many it sent, so
the receiver counts drops at the tail too. Delivered msgs/s = (received - 1) / (time of the
last - time of the first data message), measured at the receiver. Unloaded latency needs a
paced run (--rate); at full speed latency includes the queueing of a saturated pipeline.
"""

from __future__ import annotations

import functools
import json
import os
import sys
import threading
import time
import uuid
from array import array
from concurrent.futures import Future
from typing import Any

from docopt import docopt

import easymesh
from easymesh.cli.options import node_kwargs, run_main
from easymesh.demo.measure import (
    DATA,
    END,
    N_END,
    WARMUP,
    Pacer,
    RunStats,
    _us,
    make_msg,
    make_payload,
    now,
    parse_msg,
    percentile,
)


class Receiver:
    """Counts runs on one topic; serves ``<topic>.report`` so the sender can fetch them."""

    def __init__(self, node: easymesh.Node, topic: str, once: bool, as_json: bool) -> None:
        self.node = node
        self.topic = topic
        self.once = once
        self.as_json = as_json
        self.run: RunStats | None = None
        self.reports: dict[str, dict[str, Any]] = {}
        self.cond = threading.Condition()
        self.done = threading.Event()

    def on_message(self, _topic: str, data: Any) -> None:
        t = now()
        kind, seq, t_sent, size, extra = parse_msg(data)
        run = self.run
        if run is None:
            if kind == END:
                return  # a late END of a run already reported
            run = self.run = RunStats()
        run.last_any = t
        if kind == DATA:
            if not run.received:
                run.first = t
                run.cpu_first = time.process_time()
            run.last = t
            run.received += 1
            run.bytes += size
            run.lat.append(t - t_sent)
            if seq < run.max_seq:
                run.out_of_order += 1
            else:
                run.max_seq = seq
        elif kind == WARMUP:
            run.warmup += 1
        else:
            self.finish(extra)

    def finish(self, end: dict[str, Any] | None) -> None:
        run, self.run = self.run, None
        if run is None:
            return
        report = run.report(end)
        print_report("recv", report, self.as_json)
        with self.cond:
            self.reports[str(report["run"])] = report
            self.cond.notify_all()
        if self.once:
            self.done.set()

    def watch_idle(self, idle: float) -> None:
        """Close a run whose sender vanished without END (runs in its own thread)."""
        while not self.done.wait(0.25):
            run = self.run
            if run is not None and now() - run.last_any > idle:
                self.finish(None)

    def serve_report(self, run_id: Any) -> dict[str, Any] | None:
        deadline = now() + 10.0
        with self.cond:
            while str(run_id) not in self.reports:
                left = deadline - now()
                if left <= 0:
                    return None
                self.cond.wait(left)
            return self.reports.pop(str(run_id))


def cmd_recv(node: easymesh.Node, args: dict[str, Any]) -> int:
    topic = args["--topic"]
    r = Receiver(node, topic, args["--once"], args["--json"])
    node.add_service(f"{topic}.report", r.serve_report, workers=1)
    node.listen(topic, r.on_message, queue_size=int(args["--queue-size"]))
    threading.Thread(target=r.watch_idle, args=(3.0,), name="speedtest-idle", daemon=True).start()
    print(f"speedtest recv: listening to {topic!r} (Ctrl-C to stop)", flush=True)
    while not r.done.wait(0.5):
        if node.closed:
            break
    time.sleep(0.2)  # let the report request (if any) be answered before closing
    return 0


# -- sending ----------------------------------------------------------------------------------


def cmd_send(node: easymesh.Node, args: dict[str, Any]) -> int:
    topic = args["--topic"]
    codec = args["--codec"]
    size = int(args["--message-size"])
    seconds = float(args["--seconds"])
    payload = make_payload(size, codec)
    node.wait_for_listener(topic, timeout=float(args["--wait"]))
    pacer = Pacer(float(args["--rate"]))
    send = node.send
    t_end = now() + float(args["--warmup"])
    while now() < t_end:
        send(topic, make_msg(codec, WARMUP, -1, payload))
        pacer.wait()
    cost = array("d")
    perf = time.perf_counter
    n = 0
    cpu0 = time.process_time()
    t0 = now()
    t_stop = t0 + seconds
    pacer = Pacer(float(args["--rate"]))
    while now() < t_stop:
        msg = make_msg(codec, DATA, n, payload)
        a = perf()
        send(topic, msg)
        cost.append(perf() - a)
        n += 1
        pacer.wait()
    t1 = now()
    cpu = time.process_time() - cpu0
    run_id = uuid.uuid4().hex[:12]
    for _ in range(N_END):
        send(topic, make_msg(codec, END, n, b"", {"sent": n, "run": run_id}))
        time.sleep(0.01)
    c = sorted(cost)
    stats = node.stats()
    report = {
        "role": "send", "sent": n, "seconds": round(t1 - t0, 4),
        "msgs_per_s": round(n / (t1 - t0), 1) if t1 > t0 else 0.0,
        "send_p50_us": _us(percentile(c, 50)), "send_p99_us": _us(percentile(c, 99)),
        "cpu_pct": round(100.0 * cpu / (t1 - t0), 1) if t1 > t0 else 0.0,
        "cpu_us_per_msg": round(1e6 * cpu / n, 2) if n else None,
        "dropped_outbound": stats.get("dropped_outbound"), "message_size": size, "run": run_id,
        "rate_target": float(args["--rate"]),
    }
    print_report("send", report, args["--json"])
    service = f"{topic}.report"
    try:
        node.wait_for_service(service, timeout=2.0)
        theirs = node.request(service, run_id, timeout=15.0)
    except (easymesh.MeshError, TimeoutError) as exc:
        print(f"speedtest send: no report from the receiver ({exc})", file=sys.stderr)
        return 0
    if theirs is not None:
        print_report("recv (as seen by the receiver)", theirs, False)
    return 0


# -- services ---------------------------------------------------------------------------------


def cmd_serve(node: easymesh.Node, args: dict[str, Any]) -> int:
    name = args["--topic"]
    finished = threading.Event()
    count = [0]
    cpu0 = [0.0]
    lock = threading.Lock()

    def echo(data: Any) -> Any:
        kind = parse_msg(data)[0]
        if kind == END:
            with lock:
                served, count[0] = count[0], 0
                cpu = time.process_time() - cpu0[0]
            per = f"{1e6 * cpu / served:.2f}" if served else "?"
            print(f"speedtest serve: served {served} requests; cpu {per} us/request "
                  "(this process, warm-up included)", flush=True)
            if args["--once"]:
                finished.set()
            return data
        with lock:
            if not count[0]:
                cpu0[0] = time.process_time()
            count[0] += 1
        return data

    node.add_service(name, echo, workers=1, queue_size=100000)
    print(f"speedtest serve: providing {name!r} (Ctrl-C to stop)", flush=True)
    while not finished.wait(0.5):
        if node.closed:
            break
    time.sleep(0.1)  # the END reply leaves before close()
    return 0


def _call_sequential(node: easymesh.Node, name: str, codec: str, payload: Any, seconds: float,
                     args: dict[str, Any], rtts: array) -> tuple[int, float, float, float]:
    """One request at a time; returns (requests, t0, t1, cpu at t0)."""
    pacer = Pacer(float(args["--rate"]))
    t_end = now() + float(args["--warmup"])
    while now() < t_end:
        node.request(name, make_msg(codec, WARMUP, -1, payload), timeout=10)
    cpu0 = time.process_time()
    t0 = now()
    t_stop = t0 + seconds
    n = 0
    while True:
        t = now()
        if t >= t_stop:
            break
        node.request(name, make_msg(codec, DATA, n, payload), timeout=10)
        rtts.append(now() - t)
        n += 1
        pacer.wait()
    return n, t0, now(), cpu0


def _call_in_flight(node: easymesh.Node, name: str, codec: str, payload: Any, seconds: float,
                    args: dict[str, Any], rtts: array, errors: list[int],
                    in_flight: int) -> tuple[int, float, float, float]:
    """``in_flight`` futures at once; returns (requests, t0, t1, cpu at t0)."""
    slots = threading.BoundedSemaphore(in_flight)
    lock = threading.Lock()

    def done(f: Future, t: float) -> None:
        dt = now() - t
        slots.release()
        with lock:
            if f.exception() is None:
                rtts.append(dt)
            else:
                errors[0] += 1

    def one(kind: int, seq: int) -> None:
        slots.acquire(timeout=15)
        t = now()
        future = node.request_future(name, make_msg(codec, kind, seq, payload), timeout=10)
        future.add_done_callback(functools.partial(done, t=t))

    t_end = now() + float(args["--warmup"])
    while now() < t_end:
        one(WARMUP, -1)
    for _ in range(in_flight):  # drain the warm-up
        slots.acquire(timeout=15)
    for _ in range(in_flight):
        slots.release()
    with lock:
        del rtts[:]
        errors[0] = 0
    cpu0 = time.process_time()
    t0 = now()
    t_stop = t0 + seconds
    n = 0
    while now() < t_stop:
        one(DATA, n)
        n += 1
    for _ in range(in_flight):  # wait for the last ones
        slots.acquire(timeout=15)
    return n, t0, now(), cpu0


def cmd_call(node: easymesh.Node, args: dict[str, Any]) -> int:
    name = args["--topic"]
    codec = args["--codec"]
    size = int(args["--message-size"])
    seconds = float(args["--seconds"])
    in_flight = max(1, int(args["--in-flight"]))
    payload = make_payload(size, codec)
    node.wait_for_service(name, timeout=float(args["--wait"]))
    rtts = array("d")
    errors = [0]
    if in_flight == 1:
        n, t0, t1, cpu0 = _call_sequential(node, name, codec, payload, seconds, args, rtts)
    else:
        n, t0, t1, cpu0 = _call_in_flight(
            node, name, codec, payload, seconds, args, rtts, errors, in_flight
        )
    cpu = time.process_time() - cpu0
    r = sorted(rtts)
    done_n = len(r)
    report = {
        "role": "call", "requests": n, "answered": done_n, "errors": errors[0], "in_flight": in_flight, "seconds": round(t1 - t0, 4),
        "req_per_s": round(done_n / (t1 - t0), 1) if t1 > t0 else 0.0,
        "rtt_p50_us": _us(percentile(r, 50)), "rtt_p99_us": _us(percentile(r, 99)),
        "cpu_pct": round(100.0 * cpu / (t1 - t0), 1) if t1 > t0 else 0.0, "message_size": size,
        "cpu_us_per_req": round(1e6 * cpu / done_n, 2) if done_n else None,
    }
    print_report("call", report, args["--json"])
    try:
        node.request(name, make_msg(codec, END, n, b"", {"sent": n}), timeout=5)
    except (easymesh.MeshError, TimeoutError):
        pass
    return 0


# -- output and main --------------------------------------------------------------------------


def print_report(what: str, r: dict[str, Any], as_json: bool) -> None:
    role = r.get("role")
    if role == "recv":
        sent = "?" if r["sent"] is None else r["sent"]
        text = (f"{r['received']} of {sent} delivered ({r['drops']} dropped, "
                f"{r['out_of_order']} out of order), {r['msgs_per_s']:,.0f} msgs/s, "
                f"{r['mb_per_s']:,.2f} MB/s; one-way latency p50 {r['lat_p50_us']:,.0f} us, "
                f"p99 {r['lat_p99_us']:,.0f} us, max {r['lat_max_us']:,.0f} us; "
                f"cpu {r.get('cpu_us_per_msg')} us/msg"
                + ("" if r["complete"] else " (no END: the sender vanished?)"))
    elif role == "send":
        text = (f"sent {r['sent']} messages of {r['message_size']} B in {r['seconds']} s, "
                f"{r['msgs_per_s']:,.0f} msgs/s; send() p50 {r['send_p50_us']} us, "
                f"p99 {r['send_p99_us']} us; cpu {r['cpu_pct']}% = {r['cpu_us_per_msg']} us/msg")
    else:
        text = (f"{r['answered']} requests of {r['message_size']} B in {r['seconds']} s with "
                f"{r['in_flight']} in flight: {r['req_per_s']:,.0f} req/s; round trip p50 "
                f"{r['rtt_p50_us']:,.0f} us, p99 {r['rtt_p99_us']:,.0f} us; caller cpu "
                f"{r['cpu_us_per_req']} us/request")
    print(f"speedtest {what}: {text}", flush=True)
    if as_json:
        print("SPEEDTEST " + json.dumps(r), flush=True)


def _watchdog(seconds: float) -> None:
    def fire() -> None:
        print(f"speedtest: watchdog: still running after {seconds:g} s, exiting", file=sys.stderr,
              flush=True)
        os._exit(3)

    t = threading.Timer(seconds, fire)
    t.daemon = True
    t.start()


def main(argv: list[str] | None = None) -> int:
    args = docopt(__doc__, argv=argv)
    mode = next(m for m in ("send", "recv", "serve", "call") if args[m])
    if args["--codec"] not in ("pickle", "msgpack", "json", "raw"):
        print("speedtest: --codec must be pickle, msgpack, json or raw", file=sys.stderr)
        return 2
    if args["--transport"] not in ("auto", "tcp"):
        print("speedtest: --transport must be auto or tcp", file=sys.stderr)
        return 2
    timeout = float(args["--timeout"])
    if timeout <= 0 and mode in ("send", "call"):
        timeout = float(args["--seconds"]) + float(args["--warmup"]) + 60.0
    if timeout > 0:
        _watchdog(timeout)
    kwargs = node_kwargs(args)
    if args["--transport"] != "auto":
        kwargs["transport"] = args["--transport"]
    name = args["--name"] or f"speedtest-{mode}"
    with easymesh.Node(name, codec=args["--codec"], **kwargs) as node:
        try:
            if mode == "recv":
                return cmd_recv(node, args)
            if mode == "send":
                return cmd_send(node, args)
            if mode == "serve":
                return cmd_serve(node, args)
            return cmd_call(node, args)
        except TimeoutError as exc:
            print(f"speedtest {mode}: {exc}", file=sys.stderr)
            return 1


if __name__ == "__main__":
    run_main(main)
