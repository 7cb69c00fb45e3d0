"""meshbag — not yet implemented (see issue 5)."""

from __future__ import annotations

import sys


def main(argv: list[str] | None = None) -> int:
    print("meshbag: not yet implemented (issue 5)", file=sys.stderr)
    return 1


def entry() -> None:
    sys.exit(main())
