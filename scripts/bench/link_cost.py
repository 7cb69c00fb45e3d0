"""What the second link between two nodes costs (issue 12: traffic for a node only goes over a
link this node dialled, so two nodes that both send to each other hold two links, one each way,
where a design that trusted a peer's claimed id could share one).

Usage:
  link_cost.py [--peers=K] [--idle=S]

Options:
  --peers=K  Peer nodes, in one child process [default: 100].
  --idle=S   Seconds of idle CPU measured with and without the second links [default: 5].

Measured in this process, which holds one node H:
  1. H sends to the K peers (K links H dialled: the first links).
  2. The K peers send to H (K links they dialled: the second links, which H accepts).
Per second link: the change of H's RSS and open fds, the time from the peers' "go" until H has
the first message of every peer (dial + handshake + one message, K in parallel) against the same
for their second message (the link is up), and H's CPU while idle, with and without them.
A coordinator runs in another child process; its CPU is not counted.
"""

from __future__ import annotations

import os
import resource
import subprocess
import sys
import threading
import time
from typing import Any

from docopt import docopt
from node_cost import start_coordinator, stop_coordinator  # a sibling script

PEERS = """
import sys, easymesh
k, address = int(sys.argv[1]), sys.argv[2]
got = [0]
nodes = [easymesh.Node(f"peer-{i}", coordinator=address) for i in range(k)]
for n in nodes:
    n.listen("out", lambda t, d: got.__setitem__(0, got[0] + 1))
print("up", flush=True)
for line in sys.stdin:
    if line.startswith("go"):
        seq = int(line.split()[1])
        for i, n in enumerate(nodes):
            n.send("back", (i, seq))
        print("sent", flush=True)
    elif line.startswith("count"):
        print(got[0], flush=True)
    else:
        break
for n in nodes:
    n.close(0)
"""


def rss_kib() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def main() -> int:
    args = docopt(__doc__)
    k, idle = int(args["--peers"]), float(args["--idle"])
    import easymesh

    coord, address = start_coordinator()
    peers = subprocess.Popen([sys.executable, "-c", PEERS, str(k), address],
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert peers.stdin is not None and peers.stdout is not None

    def ask(line: str) -> str:
        peers.stdin.write(line + "\n")  # type: ignore[union-attr]
        peers.stdin.flush()  # type: ignore[union-attr]
        return peers.stdout.readline().strip()  # type: ignore[union-attr]

    assert peers.stdout.readline().strip() == "up"
    hub = easymesh.Node("hub", coordinator=address)
    seen: dict[int, set[int]] = {1: set(), 2: set()}
    cond = threading.Condition()

    def on_back(_topic: str, data: Any) -> None:
        with cond:
            seen[data[1]].add(data[0])
            cond.notify_all()

    hub.wait_for_listener("out", timeout=30)
    hub.send("out", "hello")  # dials the K peers: the first links
    deadline = time.monotonic() + 60
    while int(ask("count")) < k and time.monotonic() < deadline:
        time.sleep(0.05)
    hub.listen("back", on_back, queue_size=10 * k)
    time.sleep(1.0)  # the peers learn that hub listens
    base_rss, base_fds = rss_kib(), fds()
    c0 = cpu()
    time.sleep(idle)
    idle_one = (cpu() - c0) / idle

    def round_trip(seq: int) -> float:
        t0 = time.monotonic()
        assert ask(f"go {seq}") == "sent"
        with cond:
            assert cond.wait_for(lambda: len(seen[seq]) == k, 60), len(seen[seq])
        return time.monotonic() - t0

    first = round_trip(1)  # the peers dial hub: the second links
    second = round_trip(2)  # over links that are up
    time.sleep(0.5)
    rss, nfds = rss_kib(), fds()
    c0 = cpu()
    time.sleep(idle)
    idle_two = (cpu() - c0) / idle
    inbound = sum(1 for key in hub.stats()["peers"] if key.endswith("(in)"))
    print(f"{easymesh.__file__}: {k} peers, {inbound} second links")
    print(f"  per second link: RSS {(rss - base_rss) / k:+.1f} KiB, fds {(nfds - base_fds) / k:+.2f}")
    print(f"  first message of all {k} peers {first * 1000:.0f} ms (dial + handshake), "
          f"second {second * 1000:.0f} ms: {(first - second) * 1000 / k:.2f} ms per link set up")
    print(f"  hub idle CPU: {idle_one * 1e6 / k:.1f} us/s per peer with one link each, "
          f"{idle_two * 1e6 / k:.1f} with two")
    hub.close(0)
    ask("quit")
    peers.wait(30)
    stop_coordinator(coord)
    return 0


if __name__ == "__main__":
    sys.exit(main())
