"""A 100 Hz control loop embedded with easymesh, measuring its own cycle-time jitter.

The loop owns its state and is not thread-safe, so it never gets callbacks:
each cycle it reads the newest command with ``Subscription.latest()`` (never
blocks), steps its state, and publishes the state with ``send()`` (never
blocks). With ``--flood`` another process floods the command topic as fast as
it can, to show that the loop's timing holds.

Usage:
  control_loop.py [--coordinator=HOST:PORT] [--seconds=S] [--rate=HZ] [--flood] [--size=N] [--realtime=PRIO] [--json]
  control_loop.py (-h | --help)

Options:
  --coordinator=HOST:PORT  Coordinator to use; default: start one in this process.
  --seconds=S              How long to run the loop [default: 5].
  --rate=HZ                Loop rate [default: 100].
  --flood                  Start a process that floods the command topic.
  --size=N                 Bytes of payload per flood message [default: 1000].
  --realtime=PRIO          Run the loop thread with SCHED_FIFO priority PRIO (Linux; needs
                           root or an rtprio limit), as real robot control loops do.
  --json                   Print the result as one JSON line.
  -h --help                Show this screen.

Prints the cycle lateness (how late each cycle started versus its schedule)
p50/p99/max in milliseconds, the commands seen, and the subscription's drop count.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

from docopt import docopt

import easymesh

FLOODER = """
import sys, easymesh
n = easymesh.Node('flooder', coordinator=sys.argv[1])
n.wait_for_listener('cmd', timeout=10)
payload = b'x' * int(sys.argv[2])
print('flooding', flush=True)
i = 0
try:
    while True:
        n.send('cmd', {'seq': i, 'speed': i % 100, 'pad': payload})
        i += 1
except KeyboardInterrupt:
    pass
finally:
    n.close(linger=0)
"""


def percentile(values: list[float], q: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, int(q * (len(s) - 1)))] if s else float("nan")


def run_loop(node: easymesh.Node, seconds: float, rate: float, realtime: int = 0) -> dict:
    period = 1.0 / rate
    if realtime:
        # Only this thread: easymesh's I/O thread keeps normal priority. Under a flood that
        # thread uses a whole core; with normal priority the loop then waits for the
        # scheduler now and then (measured: cycle lateness p99 2-3 ms instead of 0.2 ms).
        os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(realtime))
    sub = node.subscribe("cmd", queue_size=1)
    state = {"position": 0.0, "cycle": 0}
    lateness: list[float] = []
    commands = 0
    last_seq = None
    start = time.monotonic()
    next_t = start
    while next_t - start < seconds:
        next_t += period
        cmd = sub.latest()  # the newest command; never blocks
        if cmd is not None and cmd.get("seq") != last_seq:
            last_seq = cmd["seq"]
            commands += 1
        speed = cmd["speed"] if cmd else 0.0
        state["position"] += speed * period
        state["cycle"] += 1
        node.send("state", state)  # never blocks
        delay = next_t - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        lateness.append(time.monotonic() - next_t)
    sub.close()
    ms = [x * 1000 for x in lateness]
    return {
        "cycles": len(ms),
        "lateness_p50_ms": round(percentile(ms, 0.50), 3),
        "lateness_p99_ms": round(percentile(ms, 0.99), 3),
        "lateness_max_ms": round(max(ms), 3),
        "distinct_commands_seen": commands,
        "dropped_by_subscription": sub.dropped,
        "received": sub.received,
    }


def main(argv: list[str] | None = None) -> int:
    args = docopt(__doc__, argv=argv)
    coordinator = None
    address = args["--coordinator"]
    if not address:
        coordinator = easymesh.Coordinator(host="127.0.0.1", port=0).start()
        address = f"127.0.0.1:{coordinator.port}"
    flooder = None
    try:
        with easymesh.Node("control-loop", coordinator=address) as node:
            node.subscribe("cmd")  # register interest before the flooder looks for a listener
            if args["--flood"]:
                flooder = subprocess.Popen(
                    [sys.executable, "-c", FLOODER, address, args["--size"]],
                    stdout=subprocess.PIPE, text=True, start_new_session=True,
                )
                assert flooder.stdout is not None
                if "flooding" not in flooder.stdout.readline():
                    print("control_loop: the flooder did not start", file=sys.stderr)
                    return 1
            realtime = int(args["--realtime"] or 0)
            result = run_loop(node, float(args["--seconds"]), float(args["--rate"]), realtime)
            result["flood"] = bool(args["--flood"])
            result["realtime"] = realtime
    finally:
        if flooder is not None:
            os.killpg(flooder.pid, 2)
            try:
                flooder.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(flooder.pid, 9)
                flooder.wait()
        if coordinator is not None:
            coordinator.close()
    if args["--json"]:
        print(json.dumps(result))
    else:
        for k, v in result.items():
            print(f"{k:>24}: {v}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
