"""A real coordinator process with limits a test chooses (reliability tests only).

``python coordproc.py '{"max_nodes": 50, "welcome_part_bytes": 65536, ...}'``: the JSON
holds Coordinator keyword arguments plus the Limits fields; the key comes from
``$EASYMESH_AUTHKEY`` (never the command line). Prints ``listening on 127.0.0.1:PORT``
like the ``easymesh`` command, logs to stderr in its format, runs until SIGINT.
"""

from __future__ import annotations

import json
import logging
import sys
from dataclasses import fields

from easymesh.coordinator import Coordinator
from easymesh.protocol.limits import Limits


def main() -> None:
    opts = json.loads(sys.argv[1]) if len(sys.argv) > 1 else {}
    limit_names = {f.name for f in fields(Limits)}
    limits = Limits(**{k: v for k, v in opts.items() if k in limit_names})
    kwargs = {k: v for k, v in opts.items() if k not in limit_names}
    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    coordinator = Coordinator(host="127.0.0.1", port=0, limits=limits, **kwargs).start()
    print(f"easymesh coordinator listening on {coordinator.address}", flush=True)
    coordinator.serve_forever()


if __name__ == "__main__":
    main()
