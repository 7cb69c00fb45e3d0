"""meshnode — not yet implemented (see issue 7)."""

from __future__ import annotations

import sys


def main(argv: list[str] | None = None) -> int:
    print("meshnode: not yet implemented (issue 7)", file=sys.stderr)
    return 1


def entry() -> None:
    sys.exit(main())
