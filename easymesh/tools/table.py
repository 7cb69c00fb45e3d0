"""Plain text tables, aligned in columns, for the tools' listings."""

from __future__ import annotations

from collections.abc import Iterable, Sequence


def format_table(headers: Sequence[str], rows: Iterable[Sequence[object]], gap: int = 2) -> str:
    """Left-aligned columns separated by ``gap`` spaces; the last column is not padded.

    Returns the table as lines joined by newlines (no trailing newline).
    """
    cells = [[str(h) for h in headers]] + [[str(c) for c in row] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    lines = []
    for r in cells:
        padded = [c.ljust(w) for c, w in zip(r[:-1], widths[:-1], strict=True)] + [r[-1]]
        lines.append((" " * gap).join(padded).rstrip())
    return "\n".join(lines)


def join_or(items: Iterable[str], empty: str = "-") -> str:
    """``'a, b'`` for a non-empty iterable, else ``empty``."""
    text = ", ".join(items)
    return text if text else empty
