"""The demo: a coordinator, a receiver and a sender exchanging messages for a few seconds.

Run it as `python -m easymesh.demo` (or `scripts/demo`).

Usage:
  easymesh.demo [--seconds=S] [--port=PORT] [--print-config]
  easymesh.demo (-h | --help)

Options:
  --seconds=S     How long the sender sends (one message every 0.5 s) [default: 4].
  --port=PORT     Coordinator port; 0 picks a free one [default: 0].
  --print-config  Print the launch file the demo runs, and exit.
  -h --help       Show this screen.

It is meshlaunch (easymesh.launch) on a built-in launch file, like examples/launch.yaml: the
coordinator on 127.0.0.1 (port 0 = a free port, read from its "listening on" line and given
to the nodes), a receiver, and a sender marked `required: true`, so the sender finishing ends
the run (exit status: the sender's). Ctrl-C stops everything sooner (exit status 0).
"""

from __future__ import annotations

import json
import sys

from docopt import docopt

from easymesh.cli.options import run_main
from easymesh.launch import ConfigError, Launcher, make_plan, parse_config

INTERVAL = 0.5

LAUNCH = """\
coordinator:
  host: 127.0.0.1
  client_host: 127.0.0.1
  port: {port}
nodes:
  receiver:
    command: [{python}, -m, easymesh.demo.receiver]
    post_delay: 0.3
  sender:
    command: [{python}, -m, easymesh.demo.sender, --interval, "{interval}", --count, "{count}"]
    required: true
"""


def launch_text(seconds: float, port: int) -> str:
    """The demo's launch file."""
    count = max(1, round(seconds / INTERVAL))
    return LAUNCH.format(
        port=port, python=json.dumps(sys.executable), interval=INTERVAL, count=count
    )


def main(argv: list[str] | None = None) -> int:
    args = docopt(__doc__, argv=argv)
    try:
        seconds, port = float(args["--seconds"]), int(args["--port"])
    except ValueError:
        print("demo: --seconds must be a number and --port an integer", file=sys.stderr)
        return 2
    text = launch_text(seconds, port)
    if args["--print-config"]:
        print(text, end="")
        return 0
    try:
        plan = make_plan(parse_config(text, source="<demo>"))
    except ConfigError as exc:
        print(f"demo: {exc}", file=sys.stderr)
        return 2
    return Launcher(plan).run()


if __name__ == "__main__":
    run_main(main)
