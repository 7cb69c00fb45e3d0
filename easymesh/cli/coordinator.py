"""easymesh — run the coordinator.

Usage:
  easymesh [--host=HOST] [--port=PORT] [--authkey=KEY | --authkey-file=FILE]
           [--heartbeat-interval=S] [--log-heartbeats] [-v]
  easymesh (-h | --help)
  easymesh --version

Options:
  --host=HOST              Address to listen on; "" = all interfaces [default: ].
  --port=PORT              TCP port; 0 picks a free one [default: 6374].
  --authkey=KEY            Shared secret every node must know; other users can read it in
                           the process list [default: $EASYMESH_AUTHKEY or none].
  --authkey-file=FILE      Read the shared secret from FILE (chmod 600).
  --heartbeat-interval=S   Seconds between node heartbeats; a node silent for four is dropped [default: 1.0].
  --log-heartbeats         Log every heartbeat.
  -v                       Verbose (debug) logging.
  -h --help                Show this screen.
  --version                Show the version.

Listening beyond loopback (the default host is every interface) without a key logs a
warning: anyone who can reach the port could join the mesh.
"""

from __future__ import annotations

import sys
import threading

import easymesh
from easymesh import signals
from easymesh.cli.options import authkey, parse, run_main, setup_logging
from easymesh.coordinator import Coordinator
from easymesh.errors import MeshError


def main(argv: list[str] | None = None) -> int:
    args = parse(__doc__, argv=argv, version=f"easymesh {easymesh.__version__}")
    setup_logging(args["-v"])
    try:
        port = int(args["--port"])
        interval = float(args["--heartbeat-interval"])
    except ValueError:
        print(
            "easymesh: --port must be an integer and --heartbeat-interval a number", file=sys.stderr
        )
        return 2
    coordinator = Coordinator(
        host=args["--host"] or "",
        port=port,
        authkey=authkey(args, "easymesh"),
        heartbeat_interval=interval,
        log_heartbeats=args["--log-heartbeats"],
    )
    stop = threading.Event()
    # Handlers first: meshlaunch may stop us as soon as it reads the "listening" line.
    with signals.stopping_on(lambda signum: stop.set()):
        try:
            coordinator.start()
        except MeshError as exc:
            print(f"easymesh: {exc}", file=sys.stderr)
            return 1
        try:
            auth = "with authentication" if coordinator.authkey else "without authentication"
            print(
                f"easymesh coordinator listening on {coordinator.address} ({auth}); Ctrl-C to stop",
                flush=True,
            )
            while not stop.wait(signals.WAIT_SLICE):
                pass
        finally:
            coordinator.close()
    print("easymesh coordinator stopped", flush=True)
    return 0


def entry() -> None:
    run_main(main)


if __name__ == "__main__":
    entry()
