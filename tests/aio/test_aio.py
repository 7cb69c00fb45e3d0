"""easymesh.aio: the threaded node with an awaitable face, against a real coordinator."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Awaitable
from typing import Any, TypeVar

import pytest

import easymesh
from easymesh.aio import AsyncNode, build_mesh_node, build_node, forever

T = TypeVar("T")
HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))


def run(coro: Awaitable[T]) -> T:
    """Run a test coroutine with a hard bound."""

    async def bounded() -> T:
        return await asyncio.wait_for(coro, 30)

    return asyncio.run(bounded())


def test_example_runs(coordinator: Any) -> None:
    env = dict(os.environ, EASYMESH_COORDINATOR=coordinator.address)
    env.pop("EASYMESH_AUTHKEY", None)
    r = subprocess.run(
        [sys.executable, os.path.join(ROOT, "examples", "async_demo.py"), "--count", "4"],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines() == [
        "monitor got: topic=readings; data={'n': 0, 'celsius': 20.0}",
        "monitor got: topic=readings; data={'n': 1, 'celsius': 20.5}",
        "monitor got: topic=readings; data={'n': 2, 'celsius': 21.0}",
        "monitor got: topic=readings; data={'n': 3, 'celsius': 21.5}",
        "sensor asked: average of the last 3 = 21.0",
        "three requests at once: [21.5, 21.25, 20.75]",
    ]


def test_callbacks_run_on_the_loop_in_order(coordinator: Any, node_factory: Any) -> None:
    sender = node_factory("sender")

    async def main() -> None:
        loop_thread = threading.get_ident()
        got: asyncio.Queue = asyncio.Queue()
        async with await build_node("anode", coordinator=coordinator.address) as node:

            async def coro_cb(topic: str, data: int) -> None:
                await asyncio.sleep(0)
                got.put_nowait((topic, data, threading.get_ident()))

            def plain_cb(topic: str, data: int) -> None:
                got.put_nowait((topic, data, threading.get_ident()))

            await node.listen("a", coro_cb)
            await node.add_listener("b", plain_cb)  # the seed's spelling
            await asyncio.get_running_loop().run_in_executor(
                None, sender.wait_for_listener, "b", 10
            )
            for i in range(50):
                sender.send("a", i)
                sender.send("b", i)
            items = [await got.get() for _ in range(100)]
            assert {t for _, _, t in items} == {loop_thread}
            for topic in ("a", "b"):
                assert [d for t, d, _ in items if t == topic] == list(range(50))

    run(main())


def test_services_and_requests(coordinator: Any, node_factory: Any) -> None:
    node_factory("threaded").add_service("add", lambda d: d[0] + d[1])

    async def main() -> None:
        async with await build_node("anode", coordinator=coordinator.address) as node:

            async def mul(data: tuple[int, int]) -> int:
                await asyncio.sleep(0)
                return data[0] * data[1]

            async def broken(data: Any) -> None:
                raise KeyError("nope")

            await node.add_service("mul", mul)
            await node.add_service("broken", broken)
            assert await node.has_service("mul")
            await node.wait_for_service("add", timeout=10)
            assert await node.request("add", (2, 2), timeout=10) == 4
            assert await node.request("mul", (3, 4), timeout=10) == 12  # served on this loop
            many = await asyncio.gather(
                *(node.request("add", (i, i), timeout=10) for i in range(200))
            )
            assert many == [2 * i for i in range(200)]
            assert await node.service("mul")((5, 5)) == 25
            with pytest.raises(easymesh.ServiceError) as info:
                await node.request("broken", None, timeout=10)
            assert info.value.remote_type == "KeyError"
            with pytest.raises(easymesh.NoProviderError):
                await node.request("missing", None)
            await node.remove_service("mul")
            assert not await node.has_service("mul")

    run(main())


def test_blocking_waits_leave_the_loop_free(coordinator: Any, node_factory: Any) -> None:
    """Each wait below can only end if the loop keeps running while it waits."""
    release = threading.Event()
    node_factory("slow").add_service("slow", lambda d: release.wait(5))
    other = node_factory("other")

    async def main() -> None:
        async with await build_node("anode", coordinator=coordinator.address) as node:
            request = asyncio.create_task(node.request("slow", None, timeout=10))
            waiting = asyncio.create_task(node.wait_for_listener("late", timeout=10))
            await asyncio.sleep(0.05)
            assert not request.done() and not waiting.done()
            release.set()  # the handler was waiting for this loop to run
            other.listen("late", lambda t, d: None)
            assert await request is True
            await waiting
            assert await node.ping("other") > 0

    run(main())


def test_timeouts_and_cancellation(coordinator: Any, node_factory: Any) -> None:
    release = threading.Event()
    node_factory("slow").add_service("slow", lambda d: release.wait(5))

    async def main() -> None:
        async with await build_node("anode", coordinator=coordinator.address) as node:
            with pytest.raises(TimeoutError):
                await node.wait_for_listener("nobody", timeout=0.2)
            with pytest.raises(easymesh.RequestTimeout):
                await node.request("slow", None, timeout=0.1)
            with pytest.raises(TimeoutError):  # cancelling an endless wait frees it
                await asyncio.wait_for(node.wait_for_service("never"), 0.2)
            request = asyncio.create_task(node.request("slow", None, timeout=10))
            await asyncio.sleep(0.05)
            request.cancel()
            with pytest.raises(asyncio.CancelledError):
                await request
            release.set()

    run(main())


def test_close_from_a_callback_ends_forever(coordinator: Any, node_factory: Any) -> None:
    sender = node_factory("sender")

    async def main() -> None:
        node = await build_node("anode", coordinator=coordinator.address)
        seen = []

        async def callback(topic: str, data: Any) -> None:
            seen.append(data)
            await node.close()

        await node.listen("stop", callback)
        await asyncio.get_running_loop().run_in_executor(None, sender.wait_for_listener, "stop", 10)
        sender.send("stop", "now")
        await node.forever()
        assert seen == ["now"] and node.closed and node.node.closed
        await node.close()  # idempotent

    run(main())


def test_stop_listening_from_its_own_callback(coordinator: Any, node_factory: Any) -> None:
    sender = node_factory("sender")

    async def main() -> None:
        async with await build_node("anode", coordinator=coordinator.address) as node:
            got: asyncio.Queue = asyncio.Queue()

            async def once(topic: str, data: Any) -> None:
                await node.stop_listening(topic)
                got.put_nowait(data)

            await node.listen("t", once)
            await asyncio.get_running_loop().run_in_executor(
                None, sender.wait_for_listener, "t", 10
            )
            sender.send("t", 1)
            assert await got.get() == 1
            assert "t" not in node.node.listening_to()

    run(main())


def test_seed_style_code_runs(coordinator: Any) -> None:
    """The seed's async examples, with only the imports changed."""
    host, port = coordinator.address.rsplit(":", 1)

    async def main() -> None:
        received: asyncio.Queue = asyncio.Queue()

        async def handle_message(topic: str, data: Any) -> None:
            await received.put((topic, data))

        receiver = await build_mesh_node(
            name="receiver", coordinator_host=host, coordinator_port=int(port)
        )
        await receiver.listen("some-topic", handle_message)
        sender = await build_mesh_node(
            name="sender", coordinator_host=host, coordinator_port=int(port)
        )
        await sender.wait_for_listener("some-topic", timeout=10)
        assert await sender.topic_has_listeners("some-topic")
        await sender.send("some-topic", "Hello, world!")
        assert await received.get() == ("some-topic", "Hello, world!")
        forever_task = asyncio.create_task(forever())
        await asyncio.sleep(0)
        forever_task.cancel()
        for n in (sender, receiver):
            await n.close()

    run(main())


def test_wrapping_an_existing_node_and_errors(coordinator: Any, node_factory: Any) -> None:
    threaded = node_factory("both")
    with pytest.raises(RuntimeError):
        AsyncNode(threaded)  # no running loop

    async def main() -> None:
        node = AsyncNode(threaded)
        assert node.name == "both" and node.id == threaded.id
        assert [n.id for n in node.nodes()] == [threaded.id]
        with pytest.raises(TypeError):
            await node.listen("t", "not callable")  # type: ignore[arg-type]
        with pytest.raises(easymesh.CoordinatorUnavailable):
            await build_node("x", coordinator="127.0.0.1:1", connect_timeout=0.3)
        await node.close()
        assert threaded.closed
        with pytest.raises(easymesh.NodeClosed):
            await node.send("t", 1)

    run(main())


def test_forever_ends_on_sigterm(coordinator: Any, node_process: Any) -> None:
    code = f"""
import asyncio
from easymesh.aio import build_node

async def main():
    node = await build_node("forever", coordinator={coordinator.address!r})
    waiting = asyncio.ensure_future(node.forever())
    await asyncio.sleep(0)  # forever() has started and handles SIGTERM now
    print("ready", flush=True)
    await waiting
    print("closed", node.node.closed, flush=True)

asyncio.run(main())
"""
    proc = node_process(code)
    proc.wait_for_line("ready")
    proc.kill(signal.SIGTERM)
    assert proc.wait_for_line("closed") == "closed True\n"
    assert proc.proc.wait(15) == 0
