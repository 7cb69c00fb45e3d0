"""A process that makes nodes join and leave the mesh, fast, for the churn test.

``python churner.py --coordinator HOST:PORT --slots 10 --seconds 20 --socket-dir D --seed 1``

It keeps up to ``slots`` nodes alive at once. Each step it either closes the
node in a random slot or creates a new one there (random name from a small
pool, so load-balancing groups form and dissolve; half of them listen to
``churn``, some provide ``churn-svc``; half use a socket file in ``--socket-dir``,
the rest an abstract socket), then one live node sends to ``churn`` and calls
the stable ``echo`` service. At the end it closes everything and prints
``CHURNED {json}``: joins, leaves, request failures, and its thread and fd
counts before the first node and after the last one closed.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import random
import sys
import threading
import time
from typing import Any

import easymesh


def easymesh_threads() -> list[str]:
    return sorted(t.name for t in threading.enumerate() if t.name.startswith("easymesh-"))


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--coordinator", required=True)
    p.add_argument("--slots", type=int, default=10)
    p.add_argument("--seconds", type=float, default=20)
    p.add_argument("--socket-dir", required=True)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--heartbeat", type=float, default=0.5)
    args = p.parse_args()
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    rnd = random.Random(args.seed)
    threads0, fds0 = threading.active_count(), len(os.listdir("/proc/self/fd"))
    slots: list[easymesh.Node | None] = [None] * args.slots
    stats: dict[str, Any] = {"joins": 0, "leaves": 0, "sends": 0, "requests": 0, "request_errors": []}
    received = [0]

    def callback(topic: str, data: Any) -> None:
        received[0] += 1

    print("READY {}", flush=True)
    deadline = time.monotonic() + args.seconds
    seq = 0
    while time.monotonic() < deadline:
        i = rnd.randrange(args.slots)
        node = slots[i]
        if node is not None and rnd.random() < 0.2:  # slots stay about 80 % full
            node.close()
            slots[i] = None
            stats["leaves"] += 1
        elif node is None:
            node = easymesh.Node(
                f"churn-{rnd.randrange(12)}", coordinator=args.coordinator, heartbeat_interval=args.heartbeat,
                socket_dir=args.socket_dir if rnd.random() < 0.5 else None, connect_timeout=30,
            )
            role = rnd.random()
            if role < 0.5:
                node.listen("churn", callback)
            if role > 0.7:
                node.add_service("churn-svc", lambda d: d)
            slots[i] = node
            stats["joins"] += 1
        live = [n for n in slots if n is not None]
        if live:
            n = rnd.choice(live)
            n.send("churn", {"src": n.name, "seq": seq})
            seq += 1
            stats["sends"] += 1
            if rnd.random() < 0.3:
                stats["requests"] += 1
                try:
                    assert n.request("echo", seq, timeout=10) == seq
                except Exception as exc:  # noqa: BLE001 - reported, the test asserts on it
                    stats["request_errors"].append(f"{type(exc).__name__}: {exc}")
        time.sleep(rnd.uniform(0, 0.02))  # pacing of the churn itself, not synchronisation
    for n in slots:
        if n is not None:
            n.close()
            stats["leaves"] += 1
    deadline = time.monotonic() + 10
    while easymesh_threads() and time.monotonic() < deadline:
        time.sleep(0.05)
    stats.update({
        "threads_before": threads0, "threads_after": threading.active_count(),
        "leftover_threads": easymesh_threads(),
        "fds_before": fds0, "fds_after": len(os.listdir("/proc/self/fd")),
        "received": received[0],
    })
    print("CHURNED " + json.dumps(stats), flush=True)


if __name__ == "__main__":
    main()
