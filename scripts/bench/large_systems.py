"""The reference systems of the large-message benchmark (scripts/bench/large.py).

Each is a sending side (``buffer()`` a writable uint8 frame, ``send(frame)``) and a receiving
side (``recv(timeout)`` a frame, ``done(frame)``), driven by the loops in large_roles.py, which
also has the frame header and the method. They run in the peers venv (numpy, pyzmq,
eclipse-zenoh, iceoryx2); each imports its system only when chosen.
"""

from __future__ import annotations

import json
import os
import socket
import struct
import time
from typing import Any

import numpy as np

WARMUP, DATA, END = 0, 1, 2
HEAD = struct.Struct("<IIQd")
IDLE = 10.0
now = time.monotonic


def emit(kind: str, payload: Any = None) -> None:
    print(kind if payload is None else f"{kind} {json.dumps(payload)}", flush=True)


class Sender:
    """A system's sending side: ``buffer()`` a writable uint8 frame, ``send(frame)`` -> bool."""

    size: int

    def buffer(self) -> Any:
        return np.empty(self.size, np.uint8)

    def send(self, frame: Any) -> bool:
        raise NotImplementedError

    def close(self) -> None:
        pass


class Receiver:
    """A system's receiving side: ``recv(timeout)`` a frame (buffer-like) or None."""

    def recv(self, timeout: float) -> Any:
        raise NotImplementedError

    def done(self, frame: Any) -> None:
        """The receiver is finished with ``frame`` (give it back where the system needs it)."""

    def close(self) -> None:
        pass


# --- the hand-written ring: memfd slots, fd over a Unix socket, slot numbers as messages ---

RING_SLOTS = 8
_SLOT = struct.Struct("<I")


class RingSender(Sender):
    def __init__(self, name: str, size: int, k: int) -> None:
        import mmap

        self.size = size
        fd = os.memfd_create("bench-ring", os.MFD_CLOEXEC)
        os.ftruncate(fd, size * RING_SLOTS)
        self.mm = mmap.mmap(fd, size * RING_SLOTS)
        srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        srv.bind(name)
        srv.listen(k)
        emit("READY")
        self.socks = []
        for _ in range(k):
            conn, _ = srv.accept()
            socket.send_fds(conn, [b"F"], [fd])
            self.socks.append(conn)
        os.close(fd)
        srv.close()
        self.busy = [0] * RING_SLOTS
        self.next = 0

    def _acks(self, block: bool) -> None:
        import select

        ready, _, _ = select.select(self.socks, [], [], None if block else 0)
        for s in ready:
            data = s.recv(4096)
            if not data:
                raise ConnectionError("receiver gone")
            for (slot,) in _SLOT.iter_unpack(data):
                self.busy[slot] -= 1

    def buffer(self) -> Any:
        self._acks(False)
        while True:
            for i in range(RING_SLOTS):
                slot = (self.next + i) % RING_SLOTS
                if not self.busy[slot]:
                    self.next = slot + 1
                    self.slot = slot
                    return np.frombuffer(self.mm, np.uint8, self.size, slot * self.size)
            self._acks(True)

    def send(self, frame: Any) -> bool:
        self.busy[self.slot] = len(self.socks)
        msg = _SLOT.pack(self.slot)
        for s in self.socks:
            s.sendall(msg)
        return True


class RingReceiver(Receiver):
    def __init__(self, name: str) -> None:
        import mmap

        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.connect(name)
        _, fds, _, _ = socket.recv_fds(self.sock, 1, 1)
        size = os.fstat(fds[0]).st_size
        self.mm = mmap.mmap(fds[0], size, prot=mmap.PROT_READ)
        os.close(fds[0])
        self.size = size // RING_SLOTS
        self.pending: list[int] = []
        self.buf = b""
        emit("READY")

    def recv(self, timeout: float) -> Any:
        import select

        while not self.pending:
            if not select.select([self.sock], [], [], timeout)[0]:
                return None
            try:
                data = self.sock.recv(4096)
            except OSError:
                data = b""
            if not data:  # the sender is gone: unmap its memory
                self.close()
                return None
            self.buf += data
            n = len(self.buf) // 4 * 4
            self.pending += [s for (s,) in _SLOT.iter_unpack(self.buf[:n])]
            self.buf = self.buf[n:]
        self.slot = self.pending.pop(0)
        return memoryview(self.mm)[self.slot * self.size : (self.slot + 1) * self.size]

    def done(self, frame: Any) -> None:
        frame.release()
        try:
            self.sock.sendall(_SLOT.pack(self.slot))
        except OSError:
            pass

    def close(self) -> None:
        if not self.mm.closed:
            self.mm.close()
        self.sock.close()


# --- pyzmq PUB/SUB, copy=False ---


class ZmqSender(Sender):
    def __init__(self, name: str, size: int, k: int) -> None:
        import zmq

        self.size = size
        self.ctx = zmq.Context()
        self.sock = self.ctx.socket(zmq.PUB)
        hwm = max(2, (256 << 20) // size)  # bound the memory queued per subscriber
        self.sock.setsockopt(zmq.SNDHWM, hwm)
        self.sock.bind(f"ipc://{name}")
        emit("READY")

    def send(self, frame: Any) -> bool:
        self.sock.send(frame, copy=False)
        return True

    def close(self) -> None:
        self.sock.close(linger=1000)
        self.ctx.term()


class ZmqReceiver(Receiver):
    def __init__(self, name: str) -> None:
        import zmq

        self.zmq = zmq
        self.ctx = zmq.Context()
        self.sock = self.ctx.socket(zmq.SUB)
        self.sock.setsockopt(zmq.RCVHWM, 64)
        self.sock.connect(f"ipc://{name}")
        self.sock.setsockopt(zmq.SUBSCRIBE, b"")
        emit("READY")

    def recv(self, timeout: float) -> Any:
        if not self.sock.poll(int(timeout * 1000)):
            return None
        return self.sock.recv(copy=False).buffer

    def close(self) -> None:
        self.sock.close(linger=0)
        self.ctx.term()


# --- zenoh-python (its put takes bytes, its payload gives bytes: one copy each way) ---


def _zenoh_config(listen: str | None, connect: str | None) -> Any:
    import zenoh

    c = zenoh.Config()
    c.insert_json5("mode", '"peer"')
    c.insert_json5("scouting/multicast/enabled", "false")
    if listen:
        c.insert_json5("listen/endpoints", json.dumps([listen]))
    if connect:
        c.insert_json5("connect/endpoints", json.dumps([connect]))
    return c


class ZenohSender(Sender):
    def __init__(self, name: str, size: int, k: int) -> None:
        import zenoh

        key, port = name.split(",")
        self.size = size
        self.session = zenoh.open(_zenoh_config(f"tcp/127.0.0.1:{port}", None))
        self.pub = self.session.declare_publisher(key)
        emit("READY")

    def send(self, frame: Any) -> bool:
        self.pub.put(frame.tobytes())
        return True

    def close(self) -> None:
        self.session.close()


class ZenohReceiver(Receiver):
    def __init__(self, name: str) -> None:
        import queue

        import zenoh

        key, port = name.split(",")
        self.q: queue.Queue[Any] = queue.Queue()
        self.session = zenoh.open(_zenoh_config(None, f"tcp/127.0.0.1:{port}"))
        self.sub = self.session.declare_subscriber(key, lambda s: self.q.put(s.payload))
        emit("READY")

    def recv(self, timeout: float) -> Any:
        import queue

        try:
            return self.q.get(timeout=timeout).to_bytes()
        except queue.Empty:
            return None

    def close(self) -> None:
        self.session.close()


# --- iceoryx2: loaned slices, an event service to wake receivers ---


def _iox_services(name: str, k: int) -> tuple[Any, Any, Any]:
    import ctypes

    import iceoryx2 as iox

    iox.set_log_level(iox.LogLevel.Error)
    node = iox.NodeBuilder.new().create(iox.ServiceType.Ipc)
    svc = (
        node.service_builder(iox.ServiceName.new(name))
        .publish_subscribe(iox.Slice[ctypes.c_uint8])
        .max_subscribers(max(k, 4))
        .subscriber_max_buffer_size(4)
        .history_size(0)
        .open_or_create()
    )
    ev = node.service_builder(iox.ServiceName.new(name + "-ev")).event().open_or_create()
    return node, svc, ev


class IoxSender(Sender):
    def __init__(self, name: str, size: int, k: int) -> None:
        self.size = size
        self.node, svc, ev = _iox_services(name, k)
        self.pub = svc.publisher_builder().initial_max_slice_len(size).create()
        self.notifier = ev.notifier_builder().create()
        emit("READY")

    def buffer(self) -> Any:
        self.sample = self.pub.loan_slice_uninit(self.size)
        return np.frombuffer(self.sample.payload().as_memory_view(), np.uint8)

    def send(self, frame: Any) -> bool:
        del frame
        self.sample.assume_init().send()
        self.notifier.notify()
        return True


class IoxReceiver(Receiver):
    def __init__(self, name: str) -> None:
        import iceoryx2 as iox

        self.iox = iox
        self.node, svc, ev = _iox_services(name, 4)
        self.sub = svc.subscriber_builder().create()
        self.listener = ev.listener_builder().create()
        emit("READY")

    def recv(self, timeout: float) -> Any:
        deadline = now() + timeout
        while True:
            self.sample = self.sub.receive()
            if self.sample is not None:
                return np.frombuffer(self.sample.payload().as_memory_view(), np.uint8)
            left = deadline - now()
            if left <= 0:
                return None
            self.listener.timed_wait(self.iox.Duration.from_millis(max(1, int(left * 1000))))

    def done(self, frame: Any) -> None:
        del frame
        self.sample.delete()
