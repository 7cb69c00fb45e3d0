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


#: A column of a membership listing: its title (``LISTENERS``), the word for one
#: member in the verbose listing (``listener``) and what names a node has in it.
Role = tuple[str, str, Callable[[Any], Iterable[str]]]


def print_membership(
    nodes: Iterable[Any], what: str, roles: Sequence[Role], verbose: bool, out: TextIO
) -> bool:
    """Print a listing of names (topics, services) with the nodes that have them.

    ``what`` titles the first column (``TOPIC``); each role adds one column, like
    ``rostopic info``'s publishers and subscribers. Plain: one row per name with the
    groups in each role (``worker (3 nodes)``, ``-`` for none); ``verbose``: one row
    per node and role with id, host and pid (the role column only when there are
    several roles). Returns False, and prints nothing, when no node has any name.
    """
    by_name: dict[str, list[list[Any]]] = defaultdict(lambda: [[] for _ in roles])
    for info in nodes:
        for k, (_title, _word, names_of) in enumerate(roles):
            for name in names_of(info):
                by_name[name][k].append(info)
    if not by_name:
        return False
    if verbose:
        several = len(roles) > 1
        rows: list[tuple[object, ...]] = [
            (name, *((word,) if several else ()), info.name, info.id, info.hostname, info.pid)
            for name in sorted(by_name)
            for (_title, word, _names_of), members in zip(roles, by_name[name], strict=True)
            for info in sorted(members, key=lambda i: (i.name, i.id))
        ]
        head = (what, *(("ROLE",) if several else ()), "NODE", "ID", "HOST", "PID")
        print(format_table(head, rows), file=out, flush=True)
        return True
    plain = [(name, *(_groups(m) for m in by_name[name])) for name in sorted(by_name)]
    print(format_table((what, *(r[0] for r in roles)), plain), file=out, flush=True)
    return True


def _groups(members: list[Any]) -> str:
    groups: dict[str, int] = defaultdict(int)
    for info in members:
        groups[info.name] += 1
    return join_or(g if n == 1 else f"{g} ({n} nodes)" for g, n in sorted(groups.items()))
