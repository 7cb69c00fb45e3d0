"""meshlaunch — not yet implemented (see issue 4)."""

from __future__ import annotations

import sys


def main(argv: list[str] | None = None) -> int:
    print("meshlaunch: not yet implemented (issue 4)", file=sys.stderr)
    return 1


def entry() -> None:
    sys.exit(main())
