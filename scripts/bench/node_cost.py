"""What one ``Node()`` costs in a process that already holds many (issue 15): CPU and
context switches per node, the nodes built one after the other.

Usage:
  node_cost.py [--pre=P] [--nodes=N]

Options:
  --pre=P    Nodes built first (not measured) [default: 99].
  --nodes=N  Nodes then measured [default: 200].

A coordinator runs in a child process (its CPU is not counted). The figures are the
process's user and system CPU and its voluntary/involuntary context switches
(``getrusage``) from the first measured ``Node()`` until 0.3 s after the last, divided by
N; they include the heartbeats of the nodes already up meanwhile, as a storm does. CPU
is less noisy than wall time on a shared machine; compare two checkouts in turn with
``PYTHONPATH=<checkout> python node_cost.py``.
"""

from __future__ import annotations

import resource
import subprocess
import sys
import time

from docopt import docopt

CHILD = """
import sys
from easymesh.coordinator import Coordinator
c = Coordinator('127.0.0.1', 0).start()
print(c.port, flush=True)
sys.stdin.read()
"""


def usage() -> tuple[float, float, int, int]:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime, r.ru_stime, r.ru_nvcsw, r.ru_nivcsw


def start_coordinator() -> tuple[subprocess.Popen[str], str]:
    """A coordinator in a child process (its CPU is not this process's): (child, address)."""
    child = subprocess.Popen([sys.executable, "-c", CHILD], stdin=subprocess.PIPE,
                             stdout=subprocess.PIPE, text=True)
    assert child.stdin is not None and child.stdout is not None
    return child, f"127.0.0.1:{child.stdout.readline().strip()}"


def stop_coordinator(child: subprocess.Popen[str]) -> None:
    assert child.stdin is not None
    child.stdin.close()
    child.wait(10)


def main() -> int:
    args = docopt(__doc__)
    pre, n = int(args["--pre"]), int(args["--nodes"])
    import easymesh

    child, address = start_coordinator()
    nodes = [easymesh.Node(f"pre-{i}", coordinator=address) for i in range(pre)]
    time.sleep(0.5)
    u0, t0 = usage(), time.monotonic()
    nodes += [easymesh.Node(f"new-{i}", coordinator=address) for i in range(n)]
    wall = time.monotonic() - t0
    time.sleep(0.3)
    u1 = usage()
    user, system = ((u1[k] - u0[k]) * 1000 / n for k in (0, 1))
    vol, invol = ((u1[k] - u0[k]) / n for k in (2, 3))
    print(f"{easymesh.__file__}: {pre} nodes up, then {n}: CPU {user + system:.2f} ms per node "
          f"(user {user:.2f}, system {system:.2f}); context switches {vol:.1f} voluntary, "
          f"{invol:.1f} involuntary per node; wall {wall * 1000 / n:.2f} ms per node")
    for node in nodes:
        node.close(0)
    stop_coordinator(child)
    return 0


if __name__ == "__main__":
    sys.exit(main())
