"""What one diff write costs the coordinator (issue 15): a 262-byte frame (as a 1,000-node
storm's change) written to each of N loopback TCP sockets, as a ``sendmsg`` of its three
pieces (header, diff prefix, shared record: what ``encode_frame_parts`` gives) or as one
``send`` of the pieces joined once. Prints the writing thread's CPU per write, alternating
the two ways R times (the machine is noisy). No reader waits in ``select`` here, so the
kernel's wake-up of a reader is not in these figures; the storm adds it to both ways.

Usage:
  diff_write.py [--sockets=N] [--reps=R]

Options:
  --sockets=N  Connections [default: 1000].
  --reps=R     Rounds of both ways [default: 5].
"""

from __future__ import annotations

import socket
import statistics
import sys
import time

from docopt import docopt


def main() -> int:
    args = docopt(__doc__)
    n, reps = int(args["--sockets"]), int(args["--reps"])
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(n)
    pairs = []
    for _ in range(n):
        c = socket.create_connection(srv.getsockname())
        s, _ = srv.accept()
        c.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        c.setblocking(False)
        pairs.append((c, s))
    pieces = [b"h" * 16, b"p" * 30, b"r" * 216]
    joined = b"".join(pieces)
    us: dict[str, list[float]] = {"sendmsg of 3 pieces": [], "send of 1 buffer": []}
    for _ in range(reps):
        for way in us:
            t0 = time.thread_time_ns()
            if way.startswith("sendmsg"):
                for c, _s in pairs:
                    c.sendmsg(pieces)
            else:
                for c, _s in pairs:
                    c.send(joined)
            us[way].append((time.thread_time_ns() - t0) / n / 1000)
            for _c, s in pairs:
                s.recv(4096)
    for way, xs in us.items():
        print(
            f"{way}: {statistics.median(xs):.2f} us CPU per write (median of {reps}; "
            f"{', '.join(f'{x:.2f}' for x in xs)})"
        )
    for c, s in pairs:
        c.close()
        s.close()
    srv.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
