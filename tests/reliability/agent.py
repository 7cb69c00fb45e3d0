"""A node in its own process, driven line by line over stdin (reliability tests only).

Run as a script (``python agent.py --name N --coordinator HOST:PORT ...``), possibly
inside a network namespace. It prints ``READY {json}`` once registered, then answers
each command on stdin with one ``TAG {json}`` line on stdout:

=========================  ===========  ==============================================
command                    answer       what it does
=========================  ===========  ==============================================
stats                      STATS        node.stats() plus rss_kb, threads, fds
send TOPIC N SIZE          SENT         N sends of {src, seq, pad: SIZE bytes}; timings
sendloop TOPIC INTERVAL    LOOPING      sends seq-numbered messages until stopsend
stopsend                   STOPPED      what the loop sent, errors, slowest send()
recv                       RECV         per sender: count, first/last seq, disorder
request SVC TIMEOUT [ARG]  REPLY        one request; result or error type and message
nodes                      NODES        the topology as this node sees it
release                    RELEASED     lets "stuck" service handlers return
close                      CLOSED       closes the node; threads and fds left; exits
=========================  ===========  ==============================================

Service kinds (``--service NAME:KIND``): echo, stuck, unencodable, unpicklable_exc,
bad_str_exc, system_exit, foreign_class, big (ARG bytes). Listeners
(``--listen TOPIC[:SECONDS]``) record what arrives and sleep SECONDS per message.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import threading
import time
from typing import Any

import easymesh

RELEASE = threading.Event()


class Unpicklable(Exception):
    def __init__(self, msg: str) -> None:
        super().__init__(msg)
        self.lock = threading.Lock()  # pickle refuses locks

    def __reduce__(self) -> Any:
        raise TypeError("this exception refuses to be pickled")


class BadStr(Exception):
    def __str__(self) -> str:
        raise RuntimeError("__str__ of this exception raises")


class OnlyHere:
    """Defined in this script's __main__: another process cannot unpickle it."""


def _service(kind: str) -> Any:
    def echo(d: Any) -> Any:
        return d

    def stuck(d: Any) -> Any:
        RELEASE.wait(600)
        return "released"

    def unencodable(d: Any) -> Any:
        return threading.Lock()

    def unpicklable_exc(d: Any) -> Any:
        raise Unpicklable("cannot pickle me")

    def bad_str_exc(d: Any) -> Any:
        raise BadStr()

    def system_exit(d: Any) -> Any:
        raise SystemExit(3)

    def foreign_class(d: Any) -> Any:
        return OnlyHere()

    def big(d: Any) -> Any:
        return b"x" * int(d)

    return locals()[kind]


class Recorder:
    def __init__(self, delay: float) -> None:
        self.delay = delay
        self.lock = threading.Lock()
        self.by_src: dict[str, dict[str, int]] = {}

    def __call__(self, topic: str, data: Any) -> None:
        if self.delay:
            time.sleep(self.delay)  # the slow user callback under test
        src, seq = (data.get("src", "?"), data.get("seq", -1)) if isinstance(data, dict) else ("?", -1)
        with self.lock:
            r = self.by_src.setdefault(src, {"count": 0, "first": seq, "last": -1, "disorder": 0})
            if seq <= r["last"]:
                r["disorder"] += 1
            r["count"] += 1
            r["last"] = max(r["last"], seq)

    def snapshot(self) -> dict[str, Any]:
        with self.lock:
            return {k: dict(v) for k, v in self.by_src.items()}


def _proc_status() -> dict[str, Any]:
    out: dict[str, Any] = {"fds": len(os.listdir("/proc/self/fd"))}
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(("VmRSS:", "VmHWM:")):
                out[line.split(":")[0].lower() + "_kb"] = int(line.split()[1])
    out["threads"] = sorted(t.name for t in threading.enumerate())
    return out


class SendLoop:
    def __init__(self, node: easymesh.Node, topic: str, interval: float) -> None:
        self.node, self.topic, self.interval = node, topic, interval
        self.sent = 0
        self.errors: list[str] = []
        self.max_send = 0.0
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.run, name="agent-sendloop", daemon=True)
        self.thread.start()

    def run(self) -> None:
        while not self.stop.wait(self.interval):
            t0 = time.perf_counter()
            try:
                self.node.send(self.topic, {"src": self.node.name, "seq": self.sent})
            except Exception as exc:  # noqa: BLE001 - recorded, the test asserts on it
                self.errors.append(f"{type(exc).__name__}: {exc}")
            self.max_send = max(self.max_send, time.perf_counter() - t0)
            self.sent += 1


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--name", required=True)
    p.add_argument("--coordinator", required=True)
    p.add_argument("--authkey")
    p.add_argument("--heartbeat", type=float, default=1.0)
    p.add_argument("--listen", action="append", default=[])
    p.add_argument("--service", action="append", default=[])
    p.add_argument("--socket-dir")
    p.add_argument("--queue-size", type=int)
    p.add_argument("--max-pending", type=int)
    p.add_argument("--connect-timeout", type=float, default=20.0)
    # The tests read an agent's whole topology ("nodes"): it watches every node.
    p.add_argument("--watch", default="all")
    args = p.parse_args()
    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    kwargs: dict[str, Any] = {}
    if args.queue_size:
        kwargs["queue_size"] = args.queue_size
    if args.max_pending:
        kwargs["max_pending_bytes"] = args.max_pending
    node = easymesh.Node(args.name, coordinator=args.coordinator, authkey=args.authkey,
                         heartbeat_interval=args.heartbeat, socket_dir=args.socket_dir,
                         connect_timeout=args.connect_timeout, watch=args.watch, **kwargs)
    recorders: dict[str, Recorder] = {}
    for spec in args.listen:
        topic, _, delay = spec.partition(":")
        recorders[topic] = Recorder(float(delay or 0))
        node.listen(topic, recorders[topic])
    for spec in args.service:
        name, _, kind = spec.partition(":")
        node.add_service(name, _service(kind or "echo"))
    me = next(n for n in node.nodes() if n.id == node.id)
    say("READY", {"id": node.id, "name": node.name, "pid": os.getpid(), "tcp": me.tcp, "unix": me.unix})
    loop: SendLoop | None = None
    for line in sys.stdin:
        cmd, *rest = line.split() or [""]
        if cmd == "stats":
            st = node.stats()
            st.update(_proc_status())
            say("STATS", st)
        elif cmd == "send":
            topic, n, size = rest[0], int(rest[1]), int(rest[2])
            pad = b"x" * size
            worst = 0.0
            t0 = time.perf_counter()
            for i in range(n):
                t1 = time.perf_counter()
                node.send(topic, {"src": node.name, "seq": i, "pad": pad})
                worst = max(worst, time.perf_counter() - t1)
            say("SENT", {"n": n, "max_send_s": worst, "total_s": time.perf_counter() - t0})
        elif cmd == "sendloop":
            loop = SendLoop(node, rest[0], float(rest[1]))
            say("LOOPING", {})
        elif cmd == "stopsend":
            assert loop is not None
            loop.stop.set()
            loop.thread.join(10)
            say("STOPPED", {"sent": loop.sent, "errors": loop.errors[:20], "n_errors": len(loop.errors),
                            "max_send_s": loop.max_send})
        elif cmd == "recv":
            say("RECV", {t: r.snapshot() for t, r in recorders.items()})
        elif cmd == "request":
            arg: Any = json.loads(rest[2]) if len(rest) > 2 else None
            t0 = time.perf_counter()
            try:
                result = node.request(rest[0], arg, timeout=float(rest[1]))
                out: dict[str, Any] = {"ok": True, "result": repr(result)[:200]}
            except Exception as exc:  # noqa: BLE001 - reported to the test
                out = {"ok": False, "type": type(exc).__name__, "message": str(exc)[:500]}
            out["elapsed"] = time.perf_counter() - t0
            say("REPLY", out)
        elif cmd == "nodes":
            say("NODES", [{"id": n.id, "name": n.name, "tcp": n.tcp, "unix": n.unix,
                           "topics": sorted(n.topics), "services": sorted(n.services)}
                          for n in node.nodes()])
        elif cmd == "release":
            RELEASE.set()
            say("RELEASED", {})
        elif cmd == "close":
            break
    if loop is not None:
        loop.stop.set()
    RELEASE.set()
    node.close()
    deadline = time.monotonic() + 2
    while time.monotonic() < deadline and any(t.name.startswith("easymesh-") for t in threading.enumerate()):
        time.sleep(0.05)
    say("CLOSED", _proc_status())


def say(tag: str, obj: Any) -> None:
    sys.stdout.write(f"{tag} {json.dumps(obj, default=str)}\n")
    sys.stdout.flush()


if __name__ == "__main__":
    main()
