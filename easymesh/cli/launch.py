"""meshlaunch — start a coordinator and a whole mesh of nodes from a launch file.

Usage:
  meshlaunch [options] [--exclude=NODE]... [CONFIG]
  meshlaunch (-h | --help)
  meshlaunch --version

CONFIG is the launch file (default: launch.yaml in the current folder). Every node command
gets `--name NAME --coordinator CLIENT_HOST:PORT` (and `--authkey KEY` when set) appended.
Ctrl-C stops everything: SIGINT, then SIGTERM after --grace seconds, then SIGKILL; a second
Ctrl-C goes straight to SIGKILL.

Options:
  --no-coordinator         Do not start the coordinator (one already runs); nodes are still
                           given its client_host and port from the file.
  -e NODE, --exclude=NODE  Do not start this node; repeat, or separate names with commas.
  --check                  Check the file and print what would start; start nothing.
  --grace=S                Seconds the nodes get to exit after SIGINT [default: 5].
  --as-host=NAME           Match on_host against NAME instead of this machine's name.
  --color=WHEN             Colour the prefixes: auto, always or never [default: auto].
  -h --help                Show this screen.
  --version                Show the version.

Exit status: 0 after Ctrl-C or SIGTERM; a required node's own status when it ends the
launch; 1 when the coordinator fails or all nodes end on their own and one failed; 2 for a
bad launch file or bad options.
"""

from __future__ import annotations

import math
import sys

import easymesh
from easymesh.cli.options import parse, run_main
from easymesh.launch import ConfigError, Launcher, Printer, load_config, make_plan
from easymesh.launch.plan import describe


def main(argv: list[str] | None = None) -> int:
    args = parse(__doc__, argv=argv, version=f"meshlaunch {easymesh.__version__}")
    try:
        grace = float(args["--grace"])
        if not math.isfinite(grace) or grace < 0:
            raise ValueError
    except ValueError:
        print("meshlaunch: --grace must be a number of seconds >= 0", file=sys.stderr)
        return 2
    if args["--color"] not in ("auto", "always", "never"):
        print("meshlaunch: --color must be auto, always or never", file=sys.stderr)
        return 2
    exclude = [n.strip() for item in args["--exclude"] for n in item.split(",") if n.strip()]
    try:
        config = load_config(args["CONFIG"] or "launch.yaml")
        plan = make_plan(
            config,
            exclude=exclude,
            no_coordinator=args["--no-coordinator"],
            hostname=args["--as-host"],
        )
    except ConfigError as exc:
        print(f"meshlaunch: {exc}", file=sys.stderr)
        print("meshlaunch: nothing was started", file=sys.stderr)
        return 2
    if args["--check"]:
        print(f"{config.source}: OK")
        for line in describe(plan):
            print(f"  {line}")
        return 0
    color = {"auto": None, "always": True, "never": False}[args["--color"]]
    printer = Printer(color=color, labels=plan.labels())
    return Launcher(plan, printer=printer, grace=grace).run()


def entry() -> None:
    run_main(main)


if __name__ == "__main__":
    entry()
