"""meshservice: list the services in the mesh and call one."""

from __future__ import annotations

import sys
from collections import defaultdict
from typing import Any, TextIO

from easymesh.errors import MeshError, RequestTimeout, ServiceError
from easymesh.node import Node
from easymesh.tools.display import format_data
from easymesh.tools.session import others
from easymesh.tools.table import format_table


def list_services(node: Node, verbose: bool = False, out: TextIO | None = None) -> int:
    """Print each service with its providing groups (``-v``: one row per providing
    node with id, host and pid). Prints a note on stderr when there are none."""
    out = out or sys.stdout
    by_service: dict[str, list[Any]] = defaultdict(list)
    for info in others(node):
        for name in info.services:
            by_service[name].append(info)
    if not by_service:
        print("meshservice: no node provides any service", file=sys.stderr)
        return 0
    if verbose:
        rows = [
            (name, info.name, info.id, info.hostname, info.pid)
            for name in sorted(by_service)
            for info in sorted(by_service[name], key=lambda i: (i.name, i.id))
        ]
        print(format_table(("SERVICE", "NODE", "ID", "HOST", "PID"), rows), file=out, flush=True)
        return 0
    rows2 = []
    for name in sorted(by_service):
        groups: dict[str, int] = defaultdict(int)
        for info in by_service[name]:
            groups[info.name] += 1
        rows2.append(
            (
                name,
                ", ".join(g if n == 1 else f"{g} ({n} nodes)" for g, n in sorted(groups.items())),
            )
        )
    print(format_table(("SERVICE", "PROVIDERS"), rows2), file=out, flush=True)
    return 0


def call(
    node: Node,
    name: str,
    data: Any,
    timeout: float = 10.0,
    wait: float = 0.0,
    raw: bool = False,
    out: TextIO | None = None,
    err: TextIO | None = None,
) -> int:
    """Call service ``name`` with ``data`` and print the result (pretty, or ``repr``
    with ``raw``). Waits up to ``wait`` seconds for a provider to appear first.

    Returns 0 on success, 1 when there is no provider, the call times out, or the
    remote handler raised (its type, message and traceback go to ``err``).
    """
    out = out or sys.stdout
    err = err or sys.stderr
    try:
        if wait > 0:
            node.wait_for_service(name, timeout=wait)
        result = node.request(name, data, timeout=timeout)
    except ServiceError as exc:
        print(f"meshservice: {exc}", file=err)
        if exc.remote_traceback:
            print(f"remote traceback:\n{exc.remote_traceback.rstrip()}", file=err)
        err.flush()
        return 1
    except RequestTimeout as exc:
        print(f"meshservice: {exc}", file=err, flush=True)
        return 1
    except MeshError as exc:  # NoProviderError, ConnectionLost, CodecError
        print(f"meshservice: {exc}", file=err, flush=True)
        return 1
    print(format_data(result, raw), file=out, flush=True)
    return 0
