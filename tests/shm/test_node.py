"""Shared memory through real nodes: delivery, zero copy proven from /proc/self/maps, fan-out
with one block, fallbacks, pool exhaustion, releases, the receive faces (subscriptions,
wait_for_message, threaded=False, raw listeners), SIGKILL of either process, and hostile
descriptors from a peer that holds the key."""

from __future__ import annotations

import gc
import os
import threading
import time
from typing import Any

import numpy as np
import pytest

import easymesh
from easymesh.protocol import frames as F
from easymesh.protocol.codecs import PICKLE_SHM_ID
from easymesh.shm.arena import Arena, buffer_address
from easymesh.shm.body import decode_body
from easymesh.shm.descriptor import Entry, encode_arena, encode_message_head
from easymesh.shm.fdpass import send_with_fds
from easymesh.transport.listener import unix_address
from tests.integration.helpers import Collector, wait_until
from tests.reliability.keyholder import KeyHolder

from .procinfo import mapping_of, memfd_fds

MB = 1 << 20
WAIT = 30.0

pytestmark = pytest.mark.skipif(not hasattr(os, "memfd_create"), reason="Linux only")


def in_shared_memory(obj: Any) -> bool:
    """Whether ``obj``'s buffer lies in a read-only shared mapping of an easymesh memfd."""
    line = mapping_of(buffer_address(obj)[0])
    return "/memfd:easymesh" in line and line.split()[1] == "r--s"


def shm(node: easymesh.Node) -> dict[str, Any]:
    return node.stats()["shm"]


#: A large message that goes before the test's own: on each link the first one travels the
#: socket and asks the receiver for shared memory (SHM_ASK, SHM_OFFER, SHM_ARENA follow).
WARM = b"w" * MB


def linked(tx: easymesh.Node, topic: str, rx: list[Collector], links: int | None = None) -> None:
    """Send a large message until every receiver has it and ``tx`` has ``links`` links that
    carry its shared memory (the first message dials and asks; the arena follows)."""
    tx.send(topic, WARM)
    for c in rx:
        assert c.wait_for(1, WAIT)[0] == WARM  # and nothing before it
    assert wait_until(lambda: shm(tx)["links"] >= (links or len(rx)), WAIT), shm(tx)
    for c in rx:
        with c._cond:
            c.items.clear()


def test_links_read_descriptors_only_while_an_arena_is_on_its_way(node_factory: Any) -> None:
    """Small traffic never negotiates (every read stays a plain ``recv_into``, the cheap one);
    the first large message takes the socket and starts the round trip; after the arena came,
    the receiver reads plainly again and the next large message is in shared memory."""
    rx = node_factory("rx", shm=True)
    got = Collector()
    rx.listen("t", got)
    rx.add_service("echo", lambda x: x)
    tx = node_factory("tx", shm=True)
    tx.wait_for_listener("t", WAIT)
    for i in range(20):
        tx.send("t", i)
        assert tx.request("echo", i, timeout=WAIT) == i
    assert got.wait_for(20, WAIT) == list(range(20))
    assert shm(tx)["links"] == 0 and shm(rx)["links"] == 0

    def fd_reads(node: easymesh.Node) -> list[bool]:
        return [p["reads_fds"] for p in node.stats()["peers"].values()]

    assert fd_reads(rx) and not any(fd_reads(rx)) and not any(fd_reads(tx))
    frame = np.arange(MB, dtype=np.uint8)
    tx.send("t", frame)
    first = got.wait_for(21, WAIT)[20]
    assert (first == frame).all() and not in_shared_memory(first)  # the socket; it asked
    assert wait_until(lambda: shm(tx)["links"] == 1, WAIT)
    tx.send("t", frame)
    second = got.wait_for(22, WAIT)[21]
    assert (second == frame).all() and in_shared_memory(second)
    assert not any(fd_reads(rx))  # the arena came: plain reads again
    assert shm(rx)["links"] == 0  # rx never sent anything large: it never asked


def released(node: easymesh.Node) -> bool:
    gc.collect()
    return wait_until(lambda: shm(node)["blocks"] == 0, WAIT)


def test_arrays_and_bytes_arrive_as_read_only_views_of_shared_memory(node_factory: Any) -> None:
    rx = node_factory("rx", shm=True)
    got = Collector()
    rx.listen("frames", got)
    tx = node_factory("tx", shm=True)
    tx.wait_for_listener("frames", WAIT)
    linked(tx, "frames", [got])
    frame = np.arange(2 * MB, dtype=np.uint8).reshape(1024, 2048)
    blob = os.urandom(300_000)
    tx.send("frames", frame)
    tx.send("frames", blob)
    tx.send("frames", {"image": frame, "stamp": 1.5})
    tx.send("frames", [{"blob": blob}])  # bytes inside containers too
    a, b, d, e = got.wait_for(4, WAIT)
    assert isinstance(a, np.ndarray) and a.shape == frame.shape and (a == frame).all()
    assert in_shared_memory(a) and not a.flags.writeable
    with pytest.raises(ValueError):
        a[0, 0] = 1
    assert isinstance(b, memoryview) and b.readonly and bytes(b) == blob and in_shared_memory(b)
    assert d["stamp"] == 1.5 and in_shared_memory(d["image"]) and (d["image"] == frame).all()
    assert bytes(e[0]["blob"]) == blob and in_shared_memory(e[0]["blob"])
    assert shm(tx)["sent"] == 4 and shm(rx)["received"] == 4
    assert shm(tx)["blocks"] == 4  # held by the receiver
    del a, b, d, e
    got.items.clear()
    assert released(tx)  # the last reference went: every block came back


def test_shared_memory_is_the_default(node_factory: Any) -> None:
    """Nodes built without ``shm``: a large array to a same-host peer takes shared memory."""
    rx = node_factory("rx")
    got = Collector()
    rx.listen("frames", got)
    tx = node_factory("tx")
    assert shm(tx)["enabled"] and shm(rx)["enabled"]
    tx.wait_for_listener("frames", WAIT)
    linked(tx, "frames", [got])
    frame = np.arange(MB, dtype=np.uint8)
    tx.send("frames", frame)
    (a,) = got.wait_for(1, WAIT)
    assert (a == frame).all() and in_shared_memory(a) and shm(tx)["sent"] == 1
    del a
    got.items.clear()
    assert released(tx)


def test_small_messages_and_a_loan(node_factory: Any) -> None:
    rx = node_factory("rx", shm=True)
    got = Collector()
    rx.listen("t", got)
    tx = node_factory("tx", shm=True)
    tx.wait_for_listener("t", WAIT)
    linked(tx, "t", [got])
    tx.send("t", np.zeros(100, dtype=np.uint8))  # under the threshold: the socket path
    loaned = tx.loan((480, 640, 3), np.uint8)
    assert in_tx_pool(tx, loaned)
    loaned[:] = 9
    tx.send("t", loaned)
    small, big = got.wait_for(2, WAIT)
    assert small.nbytes == 100 and not in_shared_memory(small)
    assert big.shape == (480, 640, 3) and int(big[7, 7, 2]) == 9 and in_shared_memory(big)
    assert shm(tx)["sent"] == 1
    raw = tx.loan(100_000)
    assert isinstance(raw, memoryview) and not raw.readonly and raw.nbytes == 100_000


def test_arrays_kept_past_close_free_the_mapping_when_they_go(coordinator: Any) -> None:
    """The callback object keeps an array after both nodes closed: once it lets go, the
    mapping goes too (no reference cycle through the array back to the node)."""

    def run() -> Collector:
        with easymesh.Node("rx", coordinator=coordinator.address, shm=True) as rx:
            got = Collector()
            rx.listen("t", got)
            with easymesh.Node("tx-cycle", coordinator=coordinator.address, shm=True) as tx:
                tx.wait_for_listener("t", WAIT)
                linked(tx, "t", [got])
                tx.send("t", np.full(MB, 6, dtype=np.uint8))
                got.wait_for(1, WAIT)
        return got

    got = run()
    assert int(got.data[0][0]) == 6 and in_shared_memory(got.data[0])  # still readable
    del got
    gc.collect()
    assert not [m for m in _maps() if "/memfd:easymesh-tx-cycle" in m]


def in_tx_pool(tx: easymesh.Node, array: Any) -> bool:
    line = mapping_of(buffer_address(array)[0])
    return "/memfd:easymesh-tx" in line and line.split()[1] == "rw-s"


def test_fan_out_to_three_receivers_uses_one_block(node_factory: Any) -> None:
    cols = []
    for i in range(3):
        rx = node_factory(f"rx{i}", shm=True)
        c = Collector()
        rx.listen("cam", c)
        cols.append(c)
    tx = node_factory("tx", shm=True)
    tx.wait_for_listener("cam", WAIT)  # asks the coordinator for the listeners of "cam"
    assert wait_until(lambda: len([n for n in tx.nodes() if n.name.startswith("rx")]) == 3, WAIT)
    linked(tx, "cam", cols)
    tx.send("cam", np.full(4 * MB, 3, dtype=np.uint8))
    arrays = [c.wait_for(1, WAIT)[0] for c in cols]
    assert all(in_shared_memory(a) and int(a[-1]) == 3 for a in arrays)
    offsets = {
        buffer_address(a)[0] - int(mapping_of(buffer_address(a)[0]).split("-")[0], 16)
        for a in arrays
    }
    assert len(offsets) == 1  # each receiver node maps the arena; the same block in each
    stats = shm(tx)
    assert stats["blocks"] == 1 and stats["used_bytes"] == 4 * MB and stats["sent"] == 3
    del arrays
    for c in cols:
        c.items.clear()
    assert released(tx)


@pytest.mark.parametrize("kind", ["shm-off", "tcp", "msgpack-receiver"])
def test_fallbacks_take_the_socket_path(node_factory: Any, kind: str) -> None:
    opts: dict[str, Any] = {"shm": kind != "shm-off"}
    if kind == "tcp":
        opts["transport"] = "tcp"
    if kind == "msgpack-receiver":  # accepts pickle, but shares no memory of its own
        opts.update(codec="msgpack", accept_codecs=["pickle"])
    rx = node_factory("rx", **opts)
    got = Collector()
    rx.listen("t", got)
    tx = node_factory("tx", shm=True, transport=opts.get("transport", "auto"))
    tx.wait_for_listener("t", WAIT)
    tx.send("t", b"hello")
    got.wait_for(1, WAIT)
    frame = np.arange(MB, dtype=np.uint8)
    tx.send("t", frame)  # would ask for shared memory
    tx.ping("rx", timeout=WAIT)  # a round trip after the ask: an offer would be in by now
    tx.send("t", frame)  # so this one would take shared memory, had rx offered
    _hello, a, b = got.wait_for(3, WAIT)
    assert (a == frame).all() and (b == frame).all()
    assert not in_shared_memory(a) and not in_shared_memory(b)
    assert shm(tx)["sent"] == 0 and shm(tx)["links"] == 0


def test_pool_exhaustion_falls_back_and_counts(node_factory: Any) -> None:
    rx = node_factory("rx", shm=True)
    got = Collector()  # keeps every array: the receiver holds the whole pool
    rx.listen("t", got, queue_size=100)
    tx = node_factory("tx", shm=True, shm_pool_size=4 * MB)
    tx.wait_for_listener("t", WAIT)
    linked(tx, "t", [got])
    for i in range(8):
        tx.send("t", np.full(MB, i, dtype=np.uint8))  # never blocks
    arrays = got.wait_for(8, WAIT)
    assert [int(a[0]) for a in arrays] == list(range(8))
    shared = [in_shared_memory(a) for a in arrays]
    assert shared[:4] == [True] * 4 and not any(shared[4:])
    stats = shm(tx)
    assert stats["exhausted"] == 4 and stats["used_bytes"] == 4 * MB
    del arrays
    got.items.clear()
    assert released(tx)
    tx.send("t", np.full(MB, 9, dtype=np.uint8))  # room again
    assert in_shared_memory(got.wait_for(1, WAIT)[0])


def test_receive_faces_subscription_wait_spin_and_raw(node_factory: Any) -> None:
    rx = node_factory("rx", shm=True)
    sub = rx.subscribe("s", queue_size=10)
    spun = Collector()
    rx.listen("spin", spun, threaded=False)
    raw = Collector()
    rx.listen("raw", raw, raw=True)
    tx = node_factory("tx", shm=True)
    for topic in ("s", "spin", "raw"):
        tx.wait_for_listener(topic, WAIT)
    tx.send("raw", WARM)  # through the socket; asks for shared memory
    raw.wait_for(1, WAIT)
    assert wait_until(lambda: shm(tx)["links"] >= 1, WAIT)
    frame = np.arange(MB, dtype=np.uint8)
    tx.send("s", frame)
    a = sub.get(WAIT)
    assert in_shared_memory(a) and (a == frame).all()
    tx.send("spin", frame)
    deadline = time.monotonic() + WAIT
    while not spun.items and time.monotonic() < deadline:
        rx.spin_once(0.1)
    assert in_shared_memory(spun.data[0])
    tx.send("raw", frame)
    msg = raw.wait_for(2, WAIT)[1]
    assert msg.codec == PICKLE_SHM_ID and isinstance(msg.data, bytes)  # a copy, kept
    assert (decode_body(msg.data) == frame).all()
    waiter: list[Any] = []
    t = threading.Thread(target=lambda: waiter.append(rx.wait_for_message("w", WAIT)))
    t.start()
    tx.wait_for_listener("w", WAIT)
    tx.send("w", frame)
    t.join(WAIT)
    assert in_shared_memory(waiter[0])
    waiter.clear()
    del a
    spun.items.clear()
    sub.close()
    assert released(tx)


def test_requests_and_replies_through_shared_memory(node_factory: Any) -> None:
    seen: list[bool] = []

    def double(a: Any) -> Any:
        seen.append(isinstance(a, np.ndarray) and in_shared_memory(a))
        return a * 2

    srv = node_factory("srv", shm=True)
    srv.add_service("double", double)
    cli = node_factory("cli", shm=True)
    cli.wait_for_service("double", WAIT)
    # dials; the request and its reply take the socket, and each side asks the other
    assert float(cli.request("double", np.ones(MB // 8), timeout=WAIT)[0]) == 2.0
    assert wait_until(lambda: shm(cli)["links"] >= 1 and shm(srv)["links"] >= 1, WAIT)
    out = cli.request("double", np.ones(MB // 8), timeout=WAIT)
    assert out.shape == (MB // 8,) and float(out[0]) == 2.0
    assert seen == [False, True] and in_shared_memory(out)
    fut = cli.request_future("double", np.ones(MB // 8), timeout=WAIT)
    assert float(fut.result(WAIT)[-1]) == 2.0 and in_shared_memory(fut.result())
    assert shm(cli)["sent"] == 2
    assert wait_until(lambda: shm(srv)["sent"] == 2, WAIT)  # counted after the write
    del out, fut
    assert released(cli) and released(srv)


def test_latched_topics_with_large_arrays(node_factory: Any) -> None:
    cli = node_factory("cli", shm=True)
    cli.send("map", np.full(MB, 5, dtype=np.uint8), latch=True)
    late = node_factory("late", shm=True)
    assert int(late.wait_for_message("map", WAIT)[0]) == 5


def test_the_asyncio_face_gets_shared_arrays(node_factory: Any, coordinator: Any) -> None:
    import asyncio

    from easymesh.aio import build_node

    tx = node_factory("tx", shm=True)

    async def main() -> Any:
        async with await build_node("arx", coordinator=coordinator.address, shm=True) as rx:
            got: asyncio.Queue[Any] = asyncio.Queue()

            async def on_frame(_topic: str, data: Any) -> None:
                await got.put(data)

            await rx.listen("t", on_frame)
            await asyncio.get_running_loop().run_in_executor(None, linked_async, tx)
            assert await asyncio.wait_for(got.get(), WAIT) == WARM
            tx.send("t", np.full(MB, 4, dtype=np.uint8))
            a = await asyncio.wait_for(got.get(), WAIT)
            return int(a[0]), in_shared_memory(a)

    assert asyncio.run(main()) == (4, True)


def linked_async(tx: easymesh.Node) -> None:
    tx.wait_for_listener("t", WAIT)
    tx.send("t", WARM)
    assert wait_until(lambda: shm(tx)["links"] >= 1, WAIT)


# -- processes -----------------------------------------------------------------------------------

SENDER = """
import sys, time, numpy as np, easymesh
tx = easymesh.Node("far-tx", coordinator=sys.argv[1] if len(sys.argv) > 1 else {addr!r}, shm=True)
tx.wait_for_listener("cam", 30)
tx.send("cam", bytes(1 << 20))  # through the socket; asks for shared memory
while tx.stats()["shm"]["links"] < 1:
    time.sleep(0.01)
for i in range(3):
    tx.send("cam", np.full(1 << 20, i + 1, dtype=np.uint8))
tx.flush(30)
print("sent", flush=True)
time.sleep(3600)
"""

RECEIVER = """
import time, threading, easymesh
held = []
ev = threading.Event()
def cb(topic, data):
    held.append(data)
    if len(held) == 4:
        ev.set()
rx = easymesh.Node("far-rx", coordinator={addr!r}, shm=True)
rx.listen("cam", cb)
print("listening", flush=True)
ev.wait(60)
print("holding", len(held), flush=True)
time.sleep(3600)
"""


def test_a_killed_sender_leaves_nothing_behind(
    node_factory: Any, node_process: Any, coordinator: Any
) -> None:
    dev_shm = set(os.listdir("/dev/shm"))
    rx = node_factory("rx", shm=True)
    got = Collector()
    rx.listen("cam", got)
    sender = node_process(SENDER.format(addr=coordinator.address))
    sender.wait_for_line("sent", WAIT)
    frames = got.wait_for(4, WAIT)[1:]
    assert [int(f[0]) for f in frames] == [1, 2, 3] and all(in_shared_memory(f) for f in frames)
    assert memfd_fds() == []  # mapped, fd closed at once
    sender.kill()
    assert wait_until(lambda: not [p for p in rx.stats()["peers"] if "far-tx" in p], WAIT)
    assert int(frames[2][7]) == 3  # what we hold stays readable after the sender died
    assert memfd_fds() == [] and set(os.listdir("/dev/shm")) == dev_shm
    del frames
    got.items.clear()
    gc.collect()
    assert wait_until(lambda: not any("/memfd:easymesh-far-tx" in m for m in _maps()), WAIT)


def _maps() -> list[str]:
    with open("/proc/self/maps") as f:
        return f.readlines()


def test_a_killed_receiver_gives_everything_back(
    node_factory: Any, node_process: Any, coordinator: Any
) -> None:
    dev_shm = set(os.listdir("/dev/shm"))
    receiver = node_process(RECEIVER.format(addr=coordinator.address))
    receiver.wait_for_line("listening", WAIT)
    tx = node_factory("tx", shm=True)
    tx.wait_for_listener("cam", WAIT)
    tx.send("cam", WARM)
    assert wait_until(lambda: shm(tx)["links"] >= 1, WAIT)
    for i in range(3):
        tx.send("cam", np.full(MB, i, dtype=np.uint8))
    receiver.wait_for_line("holding 4", WAIT)
    assert shm(tx)["blocks"] == 3  # the receiver holds all three
    receiver.kill()
    assert released(tx)  # its link closed: what it held is ours again
    assert set(os.listdir("/dev/shm")) == dev_shm
    assert memfd_fds() == [f for f in memfd_fds() if f.startswith("/memfd:easymesh-tx")]


# -- hostile peers -------------------------------------------------------------------------------


def _hostile_setup(node_factory: Any) -> tuple[easymesh.Node, Collector, Any]:
    rx = node_factory("rx", shm=True)
    got = Collector()
    rx.listen("t", got)
    info = next(n for n in rx.nodes() if n.name == "rx")
    return rx, got, unix_address(info.unix)


def _message(arena: int, offset: int, length: int, block: int = 0) -> bytes:
    stream = b"\x80\x05\x97."  # NEXT_BUFFER, STOP: the buffer itself
    return encode_message_head(len(stream), [Entry(arena, 0, block, offset, length)]) + stream


def _asked(kh: KeyHolder) -> None:
    """Ask the node for shared memory, as a sender does, and wait for its offer."""
    kh.send_frame(F.SHM_ASK)
    while True:
        frame = kh.next_frame(WAIT)
        assert frame is not None, "the node closed the link instead of offering"
        if frame.type == F.SHM_OFFER:
            return


@pytest.mark.parametrize(
    "attack",
    ["unknown-arena", "past-the-end", "not-a-memfd", "arena-without-fd", "release", "unasked"],
)
def test_hostile_descriptors_are_refused_like_a_bad_frame(node_factory: Any, attack: str) -> None:
    rx, got, address = _hostile_setup(node_factory)
    with KeyHolder(address, None) as kh:
        if attack != "unasked":
            _asked(kh)
        if attack == "unasked":
            # an fd the node did not ask for reaches a plain read: the kernel closes it, and
            # the ARENA frame that came with it has none
            arena = Arena(MB, "easymesh-hostile")
            frame = b"".join(bytes(b) for b in F.encode_frame(F.SHM_ARENA, b"", encode_arena(1, MB)))
            send_with_fds(kh.sock, [frame], [arena.fd])
            arena.close()
        elif attack == "unknown-arena":
            kh.send_frame(F.TOPIC, b"t", _message(1, 0, MB), PICKLE_SHM_ID)
        elif attack == "past-the-end":
            arena = Arena(MB, "easymesh-hostile")
            body = encode_arena(1, MB)
            frame = b"".join(bytes(b) for b in F.encode_frame(F.SHM_ARENA, b"", body))
            send_with_fds(kh.sock, [frame], [arena.fd])
            arena.close()  # ours; the node got its own descriptor
            kh.send_frame(F.TOPIC, b"t", _message(1, MB - 4096, 8192), PICKLE_SHM_ID)
        elif attack == "not-a-memfd":
            r, w = os.pipe()
            frame = b"".join(
                bytes(b) for b in F.encode_frame(F.SHM_ARENA, b"", encode_arena(1, MB))
            )
            send_with_fds(kh.sock, [frame], [r])
            os.close(r)
            os.close(w)
        elif attack == "arena-without-fd":
            kh.send_frame(F.SHM_ARENA, b"", encode_arena(1, MB))
        else:
            kh.send_frame(F.SHM_RELEASE, b"", (1).to_bytes(4, "little") + bytes(16))
        assert kh.closed_by_server(WAIT)
    # the node itself is fine: a real sender still gets through, and the bad frame never did
    tx = node_factory("tx", shm=True)
    tx.wait_for_listener("t", WAIT)
    linked(tx, "t", [got])
    tx.send("t", np.full(MB, 1, dtype=np.uint8))
    assert int(got.wait_for(1, WAIT)[0][0]) == 1
    assert memfd_fds() == [f for f in memfd_fds() if f.startswith("/memfd:easymesh-tx")]
