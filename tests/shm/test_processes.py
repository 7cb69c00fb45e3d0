"""The prototype link between real processes: zero copy proven from /proc/self/maps, SIGKILL of
either side leaves nothing behind, pool exhaustion, and hostile peers refused."""

from __future__ import annotations

import gc
import os
import queue
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from easymesh.errors import ConnectionLost, ProtocolError
from easymesh.shm.arena import buffer_address
from easymesh.shm.descriptor import Entry, encode_arena, encode_message_head, encode_release
from easymesh.shm.fdpass import send_with_fds
from easymesh.shm.link import _FRAME, ARENA, MESSAGE, RELEASE, Publisher, Subscriber
from easymesh.shm.pool import Pool

from .procinfo import mapping_of, memfd_fds, memfd_maps

PEER = str(Path(__file__).with_name("peer.py"))
MB = 1 << 20
WAIT = 60.0


class Peer:
    """A peer.py process; its stdout lines are read by a thread into a queue."""

    def __init__(self, *args: str) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, PEER, *args],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            start_new_session=True,
        )
        self.lines: queue.Queue[str] = queue.Queue()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.put(line.strip())

    def expect(self, prefix: str) -> str:
        while True:
            line = self.lines.get(timeout=WAIT)
            if line.startswith(prefix):
                return line

    def kill(self) -> None:
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait(WAIT)
        self._reader.join(WAIT)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.kill()
        for f in (self.proc.stdin, self.proc.stdout):
            if f is not None:
                f.close()


@pytest.fixture
def listener(tmp_path: Path) -> Iterator[tuple[socket.socket, str]]:
    path = str(tmp_path / "shm.sock")
    srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    srv.bind(path)
    srv.listen(4)
    srv.settimeout(WAIT)
    yield srv, path
    srv.close()


@pytest.fixture
def peers() -> Iterator[list[Peer]]:
    started: list[Peer] = []
    yield started
    for p in started:
        p.stop()


@pytest.mark.parametrize("loan", [False, True], ids=["copy", "loan"])
def test_frames_lie_in_the_senders_memfd_and_a_killed_sender_leaves_nothing(
    listener: tuple[socket.socket, str], peers: list[Peer], loan: bool
) -> None:
    srv, path = listener
    dev_shm = set(os.listdir("/dev/shm"))
    sender = Peer("sender", path, "3", *(["--loan"] if loan else []))
    peers.append(sender)
    conn, _ = srv.accept()
    sub = Subscriber(conn)
    frames = [sub.recv(timeout=WAIT) for _ in range(3)]
    for i, obj in enumerate(frames, 1):
        f = obj["frame"]
        assert obj["seq"] == i and f.shape == (MB,) and int(f[0]) == i and int(f[-1]) == i
        line = mapping_of(buffer_address(f)[0])
        assert "/memfd:easymesh" in line and line.split()[1] == "r--s", line  # shared, read-only
        assert not f.flags.writeable
    assert memfd_fds() == []  # the receiver maps the arena and closes the fd at once
    sender.kill()
    with pytest.raises(ConnectionLost):
        sub.recv(timeout=WAIT)
    assert int(frames[2]["frame"][5]) == 3  # held memory stays valid after the sender died
    assert memfd_maps()
    del frames, obj, f
    gc.collect()
    assert memfd_maps() == [] and memfd_fds() == []
    assert set(os.listdir("/dev/shm")) == dev_shm


def test_a_killed_receiver_gives_everything_back(
    listener: tuple[socket.socket, str], peers: list[Peer]
) -> None:
    srv, path = listener
    dev_shm = set(os.listdir("/dev/shm"))
    receiver = Peer("receiver", path)
    peers.append(receiver)
    conn, _ = srv.accept()
    pool = Pool(16 * MB)
    pub = Publisher(pool, [conn])
    for i in (1, 2):
        assert pub.send({"seq": i, "frame": np.full(MB, i, np.uint8)})
    for i in (1, 2):
        got = receiver.expect("GOT").split()
        assert got[1:4] == [str(i), "True", "True"], got  # in a r--s memfd mapping, data right
    assert pool.stats()["blocks"] == 2  # the receiver keeps both
    receiver.kill()
    while pub.poll(timeout=WAIT):
        pass
    assert pool.stats()["blocks"] == 0
    assert len(memfd_fds()) == 1  # only the pool's own arena
    pool.close()
    assert memfd_fds() == [] and memfd_maps() == []
    assert set(os.listdir("/dev/shm")) == dev_shm


def test_pool_exhaustion_falls_back_inline_or_drops(
    listener: tuple[socket.socket, str], peers: list[Peer]
) -> None:
    srv, path = listener
    receiver = Peer("receiver", path)
    peers.append(receiver)
    conn, _ = srv.accept()
    with Pool(2 * MB) as pool:
        pub = Publisher(pool, [conn])
        assert pub.send({"seq": 1, "frame": np.full(MB, 1, np.uint8)})
        assert pub.send({"seq": 2, "frame": np.full(MB, 2, np.uint8)})
        pub.fallback = False
        assert not pub.send({"seq": 3, "frame": np.full(MB, 3, np.uint8)})
        assert pub.dropped == 1 and pool.stats()["exhausted"] >= 1
        pub.fallback = True
        assert pub.send({"seq": 4, "frame": np.full(MB, 4, np.uint8)})  # through the socket
        seen = [receiver.expect("GOT").split()[1:4] for _ in range(3)]
        assert seen == [["1", "True", "True"], ["2", "True", "True"], ["4", "False", "True"]]
        pub.close()


# hostile peers, over real socketpairs (the kernel passes the fds)


def frame(kind: int, body: bytes) -> bytes:
    return _FRAME.pack(kind, len(body)) + body


@pytest.fixture
def hostile() -> Iterator[tuple[socket.socket, Subscriber, Pool]]:
    evil, mine = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    sub = Subscriber(mine)
    with Pool(4 * MB) as pool:
        pool.alloc(1)
        yield evil, sub, pool
    sub.close()
    evil.close()


def share(evil: socket.socket, pool: Pool, size: int | None = None) -> None:
    assert pool.arena is not None
    body = encode_arena(1, size or pool.size)
    send_with_fds(evil, [frame(ARENA, body)], [pool.arena.fd])


def send_pipe(evil: socket.socket) -> None:
    r, w = os.pipe()
    send_with_fds(evil, [frame(ARENA, encode_arena(1, 4096))], [r])
    os.close(r)
    os.close(w)


def message(entries: list[Entry], stream: bytes = b"\x80\x05N.") -> bytes:
    return frame(MESSAGE, encode_message_head(len(stream), entries) + stream)


HOSTILE: dict[str, Any] = {
    "unknown arena": lambda e, p: e.sendall(message([Entry(9, 0, 0, 0, 10)])),
    "past the end": lambda e, p: (share(e, p), e.sendall(message([Entry(1, 0, 0, 4 * MB - 4, 5)]))),
    "overflow": lambda e, p: (share(e, p), e.sendall(message([Entry(1, 0, 0, 2**64 - 1, 2)]))),
    "arena without fd": lambda e, p: e.sendall(frame(ARENA, encode_arena(1, 4 * MB))),
    "arena larger than the file": lambda e, p: share(e, p, 8 * MB),
    "a pipe as arena": lambda e, p: send_pipe(e),
    "fd flood": lambda e, p: [send_with_fds(e, [b"\0"], [p.arena.fd]) for _ in range(12)],
    "release to a receiver": lambda e, p: e.sendall(frame(RELEASE, encode_release([]))),
    "huge frame": lambda e, p: e.sendall(_FRAME.pack(MESSAGE, 2**32 - 1)),
}


@pytest.mark.parametrize("attack", HOSTILE.values(), ids=list(HOSTILE))
def test_hostile_senders_are_refused_and_leave_no_fd(
    hostile: tuple[socket.socket, Subscriber, Pool], attack: Any
) -> None:
    evil, sub, pool = hostile
    before = len(os.listdir("/proc/self/fd"))
    attack(evil, pool)
    with pytest.raises((ProtocolError, ConnectionLost)):
        sub.recv(timeout=WAIT)
    assert sub.closed
    assert len(os.listdir("/proc/self/fd")) <= before - 1  # the socket closed, no fd kept
    assert memfd_maps() == [] or all("rw-s" in line for line in memfd_maps())  # only the pool's


def test_a_bogus_release_drops_that_receiver_only() -> None:
    with Pool(4 * MB) as pool:
        a1, b1 = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        a2, b2 = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        pub = Publisher(pool, [a1, a2])
        good, bad = Subscriber(b1), Subscriber(b2)
        assert pub.send({"f": np.ones(MB, np.uint8)})
        kept = good.recv(timeout=WAIT)
        bad.recv(timeout=WAIT)
        bad.sock.sendall(frame(RELEASE, encode_release([(1, 0), (1, 0)])))  # held once only
        while len(pub.links) == 2:
            pub.poll(timeout=WAIT)
        assert pool.stats()["blocks"] == 1  # still held by the good receiver
        assert int(kept["f"][0]) == 1
        del kept
        gc.collect()
        good.flush_releases()
        while pool.stats()["blocks"]:
            pub.poll(timeout=WAIT)
        pub.close()
        good.close()
        bad.close()


def test_fan_out_copies_once_and_every_receiver_reads_the_same_block() -> None:
    with Pool(16 * MB) as pool:
        pairs = [socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM) for _ in range(3)]
        pub = Publisher(pool, [a for a, _ in pairs])
        subs = [Subscriber(b) for _, b in pairs]
        assert pub.send({"f": np.full(4 * MB, 7, np.uint8)})
        assert pool.stats()["blocks"] == 1 and pool.refs(0) == 3  # one copy, three holders
        got = [s.recv(timeout=WAIT)["f"] for s in subs]
        addrs = {
            buffer_address(g)[0] - s.remote._mappings[1].base
            for g, s in zip(got, subs, strict=True)
        }
        assert addrs == {0}  # the same offset of the same memfd in every receiver
        assert all(int(g[-1]) == 7 for g in got)
        del got
        gc.collect()
        for s in subs:
            s.flush_releases()
        while pool.stats()["blocks"]:
            pub.poll(timeout=WAIT)
        pub.close()
        for s in subs:
            s.close()
