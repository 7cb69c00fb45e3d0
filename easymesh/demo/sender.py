"""Send a message to a topic (once, or every --interval seconds).

Run it as `python -m easymesh.demo.sender`.

Usage:
  easymesh.demo.sender [--name=NAME] [--coordinator=HOST:PORT] [--authkey=KEY | --authkey-file=FILE] [--topic=T] [--data=D] [--interval=S] [--count=N] [--wait=S]
  easymesh.demo.sender (-h | --help)

Options:
  --name=NAME              Node name [default: sender].
  --coordinator=HOST:PORT  Coordinator address [default: $EASYMESH_COORDINATOR or localhost:6374].
  --authkey=KEY            Shared secret [default: $EASYMESH_AUTHKEY or none].
  --authkey-file=FILE      Read the shared secret from FILE (chmod 600).
  --topic=T                Topic to send to [default: some-topic].
  --data=D                 A Python literal to send [default: {'hello': 'world!'}].
  --interval=S             Send every S seconds until Ctrl-C (or --count); default: send once.
  --count=N                With --interval: stop after N messages.
  --wait=S                 Seconds to wait for a listener before giving up [default: 10].
  -h --help                Show this screen.
"""

from __future__ import annotations

import ast
import sys
import threading

from docopt import docopt

import easymesh
from easymesh.cli.options import node_kwargs, run_main


def main(argv: list[str] | None = None) -> int:
    args = docopt(__doc__, argv=argv)
    try:
        data = ast.literal_eval(args["--data"])
    except (ValueError, SyntaxError):
        data = args["--data"]  # not a literal: send the string itself
    topic = args["--topic"]
    interval = float(args["--interval"]) if args["--interval"] else None
    count = int(args["--count"]) if args["--count"] else None
    with easymesh.Node(args["--name"], **node_kwargs(args)) as node:
        try:
            node.wait_for_listener(topic, timeout=float(args["--wait"]))
        except TimeoutError:
            print(f"sender: nobody listens to {topic!r}", file=sys.stderr)
            return 1
        stop = threading.Event()
        sent = 0
        while True:
            if isinstance(data, dict) and interval is not None:
                payload = dict(data, n=sent)
            else:
                payload = data
            node.send(topic, payload)
            sent += 1
            print(f"sender sent: topic={topic}; data={payload}", flush=True)
            if interval is None or (count is not None and sent >= count):
                break
            if stop.wait(interval):
                break
    return 0


if __name__ == "__main__":
    run_main(main)
