"""meshfoxglove — see the live mesh in Foxglove (a Foxglove WebSocket server).

Usage:
  meshfoxglove [--host=HOST] [--port=PORT] [--coordinator=ADDR] [--authkey-file=F]
               [--topics=T1,T2] [--max-rate=HZ] [--allow-publish] [--name=NAME] [-v]
  meshfoxglove (-h | --help)

Every topic in the mesh becomes a channel (JSON, with a schema inferred from the
data; numpy uint8 arrays of shape (H, W) or (H, W, 3) as foxglove.RawImage),
every service can be called from the Service Call panel, and the Topic Graph
panel shows who publishes, listens to and provides what. The bridge listens to
a topic only while a viewer subscribes to it. Open the printed URL, or in
Foxglove: Open connection -> Foxglove WebSocket -> ws://HOST:PORT.

Options:
  --host=HOST              Address to serve on [default: 127.0.0.1]. Loopback by
                           default because anyone who reaches the port sees every
                           message and can call every service (and publish, with
                           --allow-publish): there is no authentication.
  --port=PORT              Port to serve on; 0 picks a free one [default: 8765].
  --coordinator=ADDR       Coordinator address [default: $EASYMESH_COORDINATOR or localhost:6374].
  --authkey-file=F         Read the mesh's shared secret from file F [default: $EASYMESH_AUTHKEY or none].
  --topics=T1,T2           Show only these topics (comma-separated; * and ? match
                           like file names) [default: all].
  --max-rate=HZ            Messages per second per channel towards the viewers;
                           more are dropped and counted; 0: no limit [default: 100].
  --allow-publish          Let viewers publish: JSON they send on a channel goes out
                           on the mesh topic of that name (Publish and Teleop panels).
  --name=NAME              Node name (default: meshfoxglove-PID, unique, so the bridge
                           forms its own group and takes no messages from other listeners).
  -v --verbose             Debug logging.
  -h --help                Show this screen.

Exit status: 0 after Ctrl-C or SIGTERM; 1 when the mesh or the port is unavailable;
2 for a malformed option.
"""

from __future__ import annotations

import logging
import os
import sys
import threading
from typing import Any

from docopt import docopt

from easymesh import signals
from easymesh.cli.options import run_main, setup_logging
from easymesh.errors import MeshError
from easymesh.tools.session import UsageError, number


def main(argv: list[str] | None = None) -> int:
    args = docopt(__doc__, argv=argv)
    try:
        options = _options(args)
    except UsageError as exc:
        print(f"meshfoxglove: {exc}", file=sys.stderr)
        return 2
    setup_logging(args["--verbose"])
    logging.getLogger("easymesh.foxglove").setLevel(
        logging.DEBUG if args["--verbose"] else logging.INFO
    )
    return serve(**options)


def _options(args: dict[str, Any]) -> dict[str, Any]:
    """The keyword arguments of :func:`serve`; raises UsageError on bad values."""
    node: dict[str, Any] = {"name": args["--name"] or f"meshfoxglove-{os.getpid()}"}
    coord = args["--coordinator"]
    if coord and not coord.startswith("$"):
        node["coordinator"] = coord
    key_file = args["--authkey-file"]
    if key_file and not key_file.startswith("$"):
        try:
            with open(key_file, "rb") as f:
                node["authkey"] = f.read().strip()
        except OSError as exc:
            raise UsageError(f"--authkey-file: {exc.strerror}: {key_file}") from None
    topics = args["--topics"]
    return {
        "node_kwargs": node,
        "host": args["--host"],
        "port": number(args["--port"], int, "--port", 0),
        "topics": None if topics in (None, "all") else [t for t in topics.split(",") if t],
        "max_rate": number(args["--max-rate"], float, "--max-rate", 0),
        "allow_publish": bool(args["--allow-publish"]),
    }


def serve(node_kwargs: dict[str, Any], **bridge_kwargs: Any) -> int:
    """Run the bridge until Ctrl-C or SIGTERM; returns the exit status."""
    try:
        from easymesh.foxglove.bridge import Bridge
    except ImportError as exc:
        print(
            f"meshfoxglove: needs the foxglove-sdk package ({exc}):"
            " pip install 'easymesh[foxglove]'",
            file=sys.stderr,
        )
        return 1
    from easymesh.node import Node

    try:
        node = Node(**{"watch": "all", **node_kwargs})  # the bridge shows the whole mesh
    except MeshError as exc:
        print(f"meshfoxglove: {exc}", file=sys.stderr)
        return 1
    with node:
        try:
            bridge = Bridge(node, **bridge_kwargs).start()
        except RuntimeError as exc:  # the SDK's error for a port that cannot be bound
            print(f"meshfoxglove: cannot serve: {exc}", file=sys.stderr)
            return 1
        with bridge:  # closed before the node, so it never works on a closed node
            print(
                f"meshfoxglove: serving mesh {node.coordinator} at {bridge.url}\n"
                f"meshfoxglove: open {bridge.app_url()}\n"
                f"meshfoxglove: (or in Foxglove: Open connection -> Foxglove WebSocket"
                f" -> {bridge.url}); Ctrl-C to stop",
                flush=True,
            )
            _wait_for_signal(node)
    return 0


def _wait_for_signal(node: Any) -> None:
    """Block until Ctrl-C, SIGTERM or the node closes (the signal helper sets ``stop``
    from its own thread: a handler that set it on the main thread could deadlock on the
    Event's lock that the main thread holds while it waits)."""
    stop = threading.Event()
    with signals.stopping_on(lambda _signum: stop.set()):
        while not stop.wait(signals.WAIT_SLICE) and not node.closed:
            pass


def entry() -> None:
    run_main(main)


if __name__ == "__main__":
    entry()
