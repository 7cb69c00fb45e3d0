"""meshservice: list the services in the mesh and call one."""

from __future__ import annotations

import sys
from typing import Any, TextIO

from easymesh.errors import MeshError, RequestTimeout, ServiceError
from easymesh.escape import printable
from easymesh.node import Node
from easymesh.tools.display import format_data
from easymesh.tools.session import others
from easymesh.tools.table import print_membership


def list_services(node: Node, verbose: bool = False, out: TextIO | None = None) -> int:
    """Print each service with its providing groups (``-v``: one row per providing
    node with id, host and pid). Prints a note on stderr when there are none."""
    roles = [("PROVIDERS", "provider", lambda n: n.services)]
    if not print_membership(others(node), "SERVICE", roles, verbose, out or sys.stdout):
        print("meshservice: no node provides any service", file=sys.stderr)
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
        print(f"meshservice: {printable(exc, 2000)}", file=err)
        if exc.remote_traceback:  # text from the serving process: escaped line by line
            lines = exc.remote_traceback.rstrip().splitlines()
            print("remote traceback:", *(printable(x, 2000) for x in lines), sep="\n", file=err)
        err.flush()
        return 1
    except RequestTimeout as exc:
        print(f"meshservice: {printable(exc, 2000)}", file=err, flush=True)
        return 1
    except MeshError as exc:  # NoProviderError, ConnectionLost, CodecError
        print(f"meshservice: {printable(exc, 2000)}", file=err, flush=True)
        return 1
    print(format_data(result, raw), file=out, flush=True)
    return 0
