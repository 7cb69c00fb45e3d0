"""meshservice — list the services of an easymesh mesh and call one.

Usage:
  meshservice list [-v] [options]
  meshservice call NAME DATA [--timeout=S] [--wait=S] [--raw] [options]
  meshservice (-h | --help)

Commands:
  list    Services and the nodes providing them.
  call    Call service NAME with DATA, a Python literal such as "(2, 2)" or "'text'",
          and print the result. Exit status 1 if there is no provider, the call
          times out, or the handler raised (its traceback is printed).

Options:
  -v --verbose             list: one row per providing node, with its id, host and pid.
  --timeout=S              call: seconds to wait for the reply [default: 10].
  --wait=S                 call: seconds to wait for a provider to appear [default: 0].
  --raw                    call: print repr(result) instead of the pretty one-line form.
  --name=NAME              Node name (default: meshservice-PID, unique).
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
from easymesh.tools import services
from easymesh.tools.session import literal, number, run_cli


def main(argv: list[str] | None = None) -> int:
    args = parse(__doc__, argv=argv)
    return run_cli("meshservice", args, node_kwargs(args, "meshservice"), _action)


def _action(args: dict) -> Callable[[Node], int]:
    """The call to make once the node is open; raises UsageError on bad values."""
    if args["list"]:
        return lambda node: services.list_services(node, args["--verbose"])
    data = literal(args["DATA"])
    timeout = number(args["--timeout"], float, "--timeout", 0)
    wait = number(args["--wait"], float, "--wait", 0)
    return lambda node: services.call(node, args["NAME"], data, timeout, wait, args["--raw"])


def entry() -> None:
    run_main(main)


if __name__ == "__main__":
    entry()
