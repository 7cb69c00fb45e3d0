"""A peer process for tests/shm/test_processes.py: one end of a prototype shm link.

Usage: peer.py sender SOCKET COUNT [--loan] [--pool=BYTES] [--size=BYTES]
       peer.py receiver SOCKET

The sender connects, sends COUNT frames {"seq": i, "frame": uint8 array full of i}, prints
``SENT i`` after each, then waits for stdin to close. The receiver connects, keeps every
object it receives and prints ``GOT seq in_shm maps-line`` (in_shm: the array lies in a
read-only shared mapping of a memfd, from /proc/self/maps), then waits for stdin to close.
"""

from __future__ import annotations

import socket
import sys

import numpy as np

from easymesh.errors import ConnectionLost
from easymesh.shm.arena import buffer_address
from easymesh.shm.link import Publisher, Subscriber
from easymesh.shm.pool import Pool


def mapping_of(address: int) -> str:
    with open("/proc/self/maps") as f:
        for line in f:
            lo, hi = (int(x, 16) for x in line.split()[0].split("-"))
            if lo <= address < hi:
                return line.strip()
    return "none"


def option(name: str, default: int) -> int:
    for arg in sys.argv:
        if arg.startswith(f"--{name}="):
            return int(arg.split("=", 1)[1])
    return default


def sender(path: str, count: int) -> None:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.connect(path)
    size = option("size", 1 << 20)
    pub = Publisher(Pool(option("pool", 64 << 20)), [sock])
    for i in range(1, count + 1):
        if "--loan" in sys.argv:
            frame = pub.pool.loan(size, np.uint8)
            frame[:] = i
        else:
            frame = np.full(size, i, np.uint8)
        pub.send({"seq": i, "frame": frame})
        del frame
        print(f"SENT {i}", flush=True)
    sys.stdin.read()


def receiver(path: str) -> None:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.connect(path)
    sub = Subscriber(sock)
    kept = []
    while True:
        try:
            obj = sub.recv()
        except ConnectionLost:
            print("CLOSED", flush=True)
            break
        kept.append(obj)
        line = mapping_of(buffer_address(obj["frame"])[0])
        shared = "/memfd:easymesh" in line and line.split()[1] == "r--s"
        ok = bool((obj["frame"] == obj["seq"] % 256).all())
        print(f"GOT {obj['seq']} {shared} {ok} {line}", flush=True)
    sys.stdin.read()


if __name__ == "__main__":
    if sys.argv[1] == "sender":
        sender(sys.argv[2], int(sys.argv[3]))
    else:
        receiver(sys.argv[2])
