"""meshlaunch — start a coordinator and a whole mesh of nodes from a launch file.

Usage:
  meshlaunch [options] [--exclude=NODE]... [CONFIG]
  meshlaunch (-h | --help)
  meshlaunch --version

CONFIG is the launch file (default: launch.yaml in the current folder). Every node command
gets `--name NAME --coordinator CLIENT_HOST:PORT` appended. The key (coordinator.authkey in
the file, or --authkey-file) reaches the coordinator and the nodes in their environment
(EASYMESH_AUTHKEY), never on a command line, which every local user can read.
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
  --authkey-file=FILE      The mesh key, read from FILE (chmod 600), instead of the file's
                           coordinator.authkey (giving both is an error).
  -h --help                Show this screen.
  --version                Show the version.

Exit status: 0 after Ctrl-C or SIGTERM; a required node's own status when it ends the
launch; 1 when the coordinator fails or all nodes end on their own and one failed; 2 for a
bad launch file or bad options.
"""

from __future__ import annotations

import dataclasses
import math
import sys

import easymesh
from easymesh.cli.options import authkey, parse, run_main
from easymesh.launch import ConfigError, LaunchConfig, Launcher, Printer, load_config, make_plan
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
        config = _with_key_file(config, authkey(args, "meshlaunch"))
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


def _with_key_file(config: LaunchConfig, key: bytes | str | None) -> LaunchConfig:
    """``config`` with the key read from --authkey-file; raises ConfigError when the launch
    file sets one too."""
    if key is None:
        return config
    if config.coordinator.authkey:
        raise ConfigError(
            [f"{config.source}: coordinator.authkey is set and --authkey-file given; keep one"]
        )
    text = key.decode("utf-8", "surrogateescape") if isinstance(key, bytes) else key
    coordinator = dataclasses.replace(config.coordinator, authkey=text)
    return dataclasses.replace(config, coordinator=coordinator)


def entry() -> None:
    run_main(main)


if __name__ == "__main__":
    entry()
