"""meshnode — list the nodes of an easymesh mesh and ping them.

Usage:
  meshnode list [-v] [options]
  meshnode ping NAME [-n COUNT] [--interval=S] [--timeout=S] [options]
  meshnode (-h | --help)

Commands:
  list    Nodes with their ids, hosts and pids (-v: endpoints, topics, services).
  ping    Round-trip time over the mesh link to every node named NAME (or the node
          with id NAME). Exit status 1 if a ping went unanswered.

Options:
  -v --verbose             list: a block per node with endpoints, topics and services.
  -n COUNT                 ping: pings per node [default: 1].
  --interval=S             ping: seconds between pings [default: 0.5].
  --timeout=S              ping: seconds to wait for each reply [default: 5].
  --name=NAME              Node name (default: meshnode-PID, unique).
  --coordinator=HOST:PORT  Coordinator address [default: $EASYMESH_COORDINATOR or localhost:6374].
  --authkey=KEY            Shared secret; other users can read it in the process list
                           [default: $EASYMESH_AUTHKEY or none].
  --authkey-file=FILE      Read the shared secret from FILE (chmod 600).
  -h --help                Show this screen.
"""

from __future__ import annotations

from collections.abc import Callable

from easymesh.cli.options import node_kwargs, parse, run_main
from easymesh.node import Node
from easymesh.tools import nodes
from easymesh.tools.session import number, run_cli


def main(argv: list[str] | None = None) -> int:
    args = parse(__doc__, argv=argv)
    return run_cli("meshnode", args, node_kwargs(args, "meshnode"), _action)


def _action(args: dict) -> Callable[[Node], int]:
    """The call to make once the node is open; raises UsageError on bad values."""
    if args["list"]:
        return lambda node: nodes.list_nodes(node, args["--verbose"])
    count = number(args["-n"], int, "COUNT", 1)
    interval = number(args["--interval"], float, "--interval", 0)
    timeout = number(args["--timeout"], float, "--timeout", 0)
    return lambda node: nodes.ping(node, args["NAME"], count, interval, timeout)


def entry() -> None:
    run_main(main)


if __name__ == "__main__":
    entry()
