"""meshtopic — see the topics of an easymesh mesh, echo them, measure them, send to them.

Usage:
  meshtopic list [-v] [options]
  meshtopic echo TOPIC... [-n COUNT] [--raw] [options]
  meshtopic hz TOPIC [--window=N] [--duration=S] [options]
  meshtopic bw TOPIC [--window=N] [--duration=S] [options]
  meshtopic send TOPIC DATA [-r RATE] [-n COUNT] [--wait=S] [options]
  meshtopic (-h | --help)

Commands:
  list    Topics and the nodes listening to them.
  echo    Print each message on the topics, one per line ("topic: data" with several).
  hz      Rate of a topic and min/max/std dev of the intervals, every second.
  bw      Bytes per second of a topic and mean/min/max message size, every second.
  send    Send DATA, a Python literal such as "{'x': 1}" or "'text'", to a topic.

Options:
  -v --verbose             list: one row per listening node, with its id, host and pid.
  -n COUNT                 echo: exit after COUNT messages. send: send COUNT messages
                           (default: 1; with -r, until Ctrl-C).
  --raw                    echo: print repr(data) instead of the pretty one-line form.
  --window=N               hz, bw: statistics over the last N messages [default: 100].
  --duration=S             hz, bw: stop after S seconds (default: until Ctrl-C).
  -r RATE                  send: messages per second.
  --wait=S                 send: seconds to wait for a listener [default: 5].
  --name=NAME              Node name (default: meshtopic-PID, unique).
  --coordinator=HOST:PORT  Coordinator address [default: $EASYMESH_COORDINATOR or localhost:6374].
  --authkey=KEY            Shared secret; other users can read it in the process list
                           [default: $EASYMESH_AUTHKEY or none].
  --authkey-file=FILE      Read the shared secret from FILE (chmod 600).
  -h --help                Show this screen.
"""

from __future__ import annotations

import sys
from collections.abc import Callable

from easymesh.cli.options import node_kwargs, parse, run_main
from easymesh.node import Node
from easymesh.tools import topics
from easymesh.tools.session import literal, number, run_cli


def main(argv: list[str] | None = None) -> int:
    args = parse(__doc__, argv=argv)
    return run_cli("meshtopic", args, node_kwargs(args, "meshtopic"), _action)


def _action(args: dict) -> Callable[[Node], int]:
    """The call to make once the node is open; raises UsageError on bad values."""
    count = number(args["-n"], int, "COUNT", 1)
    if args["list"]:
        return lambda node: topics.list_topics(node, args["--verbose"])
    if args["echo"]:
        return lambda node: topics.echo(node, args["TOPIC"], count, args["--raw"])
    if args["hz"] or args["bw"]:
        window = number(args["--window"], int, "--window", 2)
        duration = number(args["--duration"], float, "--duration", 0)
        measure = topics.hz if args["hz"] else topics.bw
        return lambda node: measure(node, args["TOPIC"][0], window, duration)
    data = literal(args["DATA"])
    rate = number(args["-r"], float, "RATE", sys.float_info.min)
    wait = number(args["--wait"], float, "--wait", 0)
    return lambda node: topics.send(node, args["TOPIC"][0], data, rate, count, wait)


def entry() -> None:
    run_main(main)


if __name__ == "__main__":
    entry()
