"""Regression from the second review of the composed node (failed before its fix): a
node nobody references any more is still closed, with its linger, at interpreter exit.

The nodes to close at exit were kept in a WeakSet: a node made in a function that
returned (``main()``, the usual script) was garbage collected as a Python object while
its threads and sockets lived on, so the exit hook never saw it and what still waited
in its queues was lost.
"""

from __future__ import annotations

from typing import Any

from .helpers import Collector

WAIT = 30.0  # generous: the machine is shared by several agents

# 200 x 200 kB: more than the kernel's socket buffers hold, so that at exit most of it
# still waits in the node's queue.
SENDER_IN_A_FUNCTION = """
import atexit
import gc
import threading

def report():
    alive = [t.name for t in threading.enumerate() if t.name.startswith("easymesh-exiter-")]
    print("at exit:", "still open" if alive else "closed", flush=True)

atexit.register(report)  # registered before easymesh's own exit hook: runs after it

import easymesh

def main():
    n = easymesh.Node("exiter", coordinator={address!r}, max_pending_bytes=1 << 28, linger=20)
    n.wait_for_listener("t", timeout=30)
    for i in range(200):
        n.send("t", (i, b"x" * 200_000))

main()
gc.collect()  # nothing references the node object any more
print("sent", flush=True)
"""


def test_a_node_dropped_without_close_still_delivers_at_exit(
    coordinator: Any, node_factory: Any, node_process: Any
) -> None:
    got = Collector()
    r = node_factory("r")
    r.listen("t", lambda topic, data: got(topic, data[0]), queue_size=1000)
    p = node_process(SENDER_IN_A_FUNCTION.format(address=coordinator.address))
    p.wait_for_line("sent", timeout=WAIT)
    assert p.wait_for_line("at exit:", timeout=WAIT).strip() == "at exit: closed"
    assert p.proc.wait(60) == 0
    assert got.wait_for(200, timeout=WAIT) == list(range(200))
