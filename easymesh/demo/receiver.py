"""Print every message on some topics.

Run it as `python -m easymesh.demo.receiver`.

Usage:
  easymesh.demo.receiver [--name=NAME] [--coordinator=HOST:PORT] [--authkey=KEY | --authkey-file=FILE] [--topic=T...] [--count=N]
  easymesh.demo.receiver (-h | --help)

Options:
  --name=NAME              Node name [default: receiver].
  --coordinator=HOST:PORT  Coordinator address [default: $EASYMESH_COORDINATOR or localhost:6374].
  --authkey=KEY            Shared secret [default: $EASYMESH_AUTHKEY or none].
  --authkey-file=FILE      Read the shared secret from FILE (chmod 600).
  --topic=T                Topic to listen to; repeat for several [default: some-topic].
  --count=N                Exit after N messages (default: run until Ctrl-C).
  -h --help                Show this screen.
"""

from __future__ import annotations

import threading

from docopt import docopt

import easymesh
from easymesh.cli.options import node_kwargs, run_main


def main(argv: list[str] | None = None) -> int:
    args = docopt(__doc__, argv=argv)
    count = int(args["--count"]) if args["--count"] else None
    lock = threading.Lock()
    seen = [0]
    node = easymesh.Node(args["--name"], **node_kwargs(args))

    def callback(topic: str, data: object) -> None:
        print(f"receiver got: topic={topic}; data={data}", flush=True)
        with lock:
            seen[0] += 1
            if count is not None and seen[0] >= count:
                node.close()

    for topic in args["--topic"]:
        node.listen(topic, callback)
    print(f"{args['--name']}: listening to {', '.join(args['--topic'])}", flush=True)
    node.forever()
    return 0


if __name__ == "__main__":
    run_main(main)
