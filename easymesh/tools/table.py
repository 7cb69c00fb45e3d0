"""Plain text tables, aligned in columns, for the tools' listings.

Every cell is peer-supplied text (node names, ids, host names, topics), so each goes
through :func:`easymesh.escape.printable`: a newline or a terminal escape in a name
cannot add a row or repaint the operator's terminal.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from typing import Any, TextIO

from easymesh.escape import printable


def format_table(headers: Sequence[str], rows: Iterable[Sequence[object]], gap: int = 2) -> str:
    """Left-aligned columns separated by ``gap`` spaces; the last column is not padded.

    Returns the table as lines joined by newlines (no trailing newline).
    """
    cells = [[str(h) for h in headers]] + [[printable(c, 1100) for c in row] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    lines = []
    for r in cells:
        padded = [c.ljust(w) for c, w in zip(r[:-1], widths[:-1], strict=True)] + [r[-1]]
        lines.append((" " * gap).join(padded).rstrip())
    return "\n".join(lines)


def join_or(items: Iterable[str], empty: str = "-") -> str:
    """``'a, b'`` for a non-empty iterable, else ``empty``."""
    text = ", ".join(printable(i, 1100) for i in items)
    return text if text else empty


def print_membership(
    nodes: Iterable[Any],
    names_of: Callable[[Any], Iterable[str]],
    what: str,
    members: str,
    verbose: bool,
    out: TextIO,
) -> bool:
    """Print a listing of names (topics, services) with the nodes that have them.

    ``names_of(node)`` gives a node's names; ``what``/``members`` are the column titles
    (``TOPIC``/``LISTENERS``). Plain: one row per name with its groups (``worker (3
    nodes)``); ``verbose``: one row per node with id, host and pid. Returns False, and
    prints nothing, when no node has any name.
    """
    by_name: dict[str, list[Any]] = defaultdict(list)
    for info in nodes:
        for name in names_of(info):
            by_name[name].append(info)
    if not by_name:
        return False
    if verbose:
        rows: list[tuple[object, ...]] = [
            (name, info.name, info.id, info.hostname, info.pid)
            for name in sorted(by_name)
            for info in sorted(by_name[name], key=lambda i: (i.name, i.id))
        ]
        print(format_table((what, "NODE", "ID", "HOST", "PID"), rows), file=out, flush=True)
        return True
    rows = []
    for name in sorted(by_name):
        groups: dict[str, int] = defaultdict(int)
        for info in by_name[name]:
            groups[info.name] += 1
        rows.append(
            (
                name,
                ", ".join(g if n == 1 else f"{g} ({n} nodes)" for g, n in sorted(groups.items())),
            )
        )
    print(format_table((what, members), rows), file=out, flush=True)
    return True
