"""meshnode: list the nodes in the mesh and ping them."""

from __future__ import annotations

import sys
import threading
from typing import Any, TextIO

from easymesh.errors import MeshError
from easymesh.escape import printable
from easymesh.node import Node
from easymesh.tools.session import others
from easymesh.tools.table import format_table, join_or


def list_nodes(node: Node, verbose: bool = False, out: TextIO | None = None) -> int:
    """Print one row per node: name, id, host, pid and how many topics it listens to
    and services it provides. ``verbose`` prints a block per node instead, with its
    endpoints and the topics and services by name."""
    out = out or sys.stdout
    infos = sorted(others(node), key=lambda i: (i.name, i.id))
    if not infos:
        print("meshnode: no other node in the mesh", file=sys.stderr)
        return 0
    if not verbose:
        rows = [(i.name, i.id, i.hostname, i.pid, len(i.topics), len(i.services)) for i in infos]
        print(
            format_table(("NAME", "ID", "HOST", "PID", "TOPICS", "SERVICES"), rows),
            file=out,
            flush=True,
        )
        return 0
    blocks = []
    for i in infos:
        fields: list[tuple[str, Any]] = [
            ("id", printable(i.id)),
            ("host", f"{printable(i.hostname)} (pid {i.pid})"),
            ("tcp", printable(i.tcp or "-")),
            ("unix", printable(i.unix or "-")),
            ("topics", join_or(sorted(i.topics))),
            ("services", join_or(sorted(i.services))),
        ]
        lines = (f"  {k + ':':<10}{v}" for k, v in fields)  # every value escaped above
        blocks.append(printable(i.name, 1100) + "\n" + "\n".join(lines))
    print("\n\n".join(blocks), file=out, flush=True)
    return 0


def ping(
    node: Node,
    name: str,
    count: int = 1,
    interval: float = 0.5,
    timeout: float = 5.0,
    out: TextIO | None = None,
    err: TextIO | None = None,
    stop: threading.Event | None = None,
) -> int:
    """Ping every node named ``name`` (or the node with that id) ``count`` times,
    ``interval`` seconds apart, and print each round-trip time over the mesh link.

    Returns 0 if every ping was answered, 1 otherwise (no such node, timeouts).
    """
    out = out or sys.stdout
    err = err or sys.stderr
    stop = stop or threading.Event()
    targets = [i for i in others(node) if name in (i.name, i.id)]
    if not targets:
        print(f"meshnode: no node named or with id {name!r}", file=err, flush=True)
        return 1
    ok = True
    times: list[float] = []
    for k in range(count):
        if k and stop.wait(interval):
            break
        for t in targets:
            try:
                rtt = node.ping(t.id, timeout=timeout)
            except MeshError as exc:
                ok = False
                print(f"{printable(t.name)} ({printable(t.id)}): {printable(exc, 500)}", file=out, flush=True)
                continue
            times.append(rtt)
            print(
                f"reply from {printable(t.name)} ({printable(t.id)}, {printable(t.hostname)}): "
                f"time={rtt * 1000:.3f} ms",
                file=out,
                flush=True,
            )
    if len(times) > 1:
        print(
            f"{len(times)} replies: min/avg/max = {min(times) * 1000:.3f}/"
            f"{sum(times) / len(times) * 1000:.3f}/{max(times) * 1000:.3f} ms",
            file=out,
            flush=True,
        )
    return 0 if ok else 1
