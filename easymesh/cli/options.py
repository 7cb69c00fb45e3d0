"""What every command that builds a node shares: --name, --coordinator, --authkey, -v."""

from __future__ import annotations

import logging
import sys
from typing import Any


def node_kwargs(args: dict[str, Any]) -> dict[str, Any]:
    """Keyword arguments for easymesh.Node from parsed docopt options."""
    kwargs: dict[str, Any] = {}
    coord = args.get("--coordinator")
    if coord and not coord.startswith("$"):
        kwargs["coordinator"] = coord
    key = args.get("--authkey")
    if key and not key.startswith("$"):
        kwargs["authkey"] = key
    return kwargs


def setup_logging(verbose: bool = False) -> None:
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )


def run_main(main: Any) -> None:
    """Run a command's main(); Ctrl-C exits quietly with status 130."""
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        sys.exit(130)
