"""easymesh for asyncio code: the same threaded node, with an awaitable face.

    import asyncio
    from easymesh.aio import build_node

    async def main():
        async with await build_node('listener') as node:
            async def callback(topic, data):
                print(topic, data)
            await node.listen('some-topic', callback)
            print(await node.request('add', (2, 2), timeout=10))
            await node.forever()

    asyncio.run(main())

:class:`AsyncNode` wraps an ordinary :class:`easymesh.Node`; the threaded core stays
the one engine (its I/O thread, worker threads, queues and guarantees). What changes:

- Callbacks and service handlers (coroutine functions or plain functions) run **on
  the caller's event loop**, so async code never sees another thread. The listener's
  worker thread schedules each call with ``loop.call_soon_threadsafe`` and waits for it
  to finish before taking the next message: messages stay in order, one at a time per
  listener (``workers=N`` allows N at once), and a slow coroutine fills that listener's
  bounded queue (oldest dropped, counted) instead of piling tasks up on the loop.
  A callback that *blocks* (instead of awaiting) blocks the whole loop: don't.
- Requests are futures bridged with ``asyncio.wrap_future``; cancelling the awaiting
  task cancels the request's future.
- Everything that can block (connecting, waiting for a listener or provider,
  replacing a callback, ping, close) runs in the loop's default executor. Waits are
  cut into slices of :data:`WAIT_SLICE` seconds so that a cancelled wait frees its
  executor thread soon.

Porting code written for the seed's asyncio API (``easymesh.build_mesh_node``):
``from easymesh.aio import build_mesh_node, forever``; ``send``, ``listen`` (alias
``add_listener``), ``request``, ``add_service``, ``wait_for_listener`` and ``forever``
are awaited as before; ``coordinator_host``/``coordinator_port`` are still accepted.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import functools
import inspect
import signal
import threading
import time
from collections.abc import Callable
from typing import Any

from easymesh import config
from easymesh.errors import NodeClosed, RequestTimeout
from easymesh.node import Node
from easymesh.protocol.messages import NodeInfo

__all__ = ["AsyncNode", "AsyncService", "AsyncTopic", "build_mesh_node", "build_node", "forever"]

WAIT_SLICE = 0.5
"""Longest single blocking wait handed to an executor thread, in seconds."""


async def build_node(
    name: str,
    *,
    coordinator_host: str | None = None,
    coordinator_port: int | None = None,
    **kwargs: Any,
) -> AsyncNode:
    """Connect a node (in an executor: the loop keeps running) and wrap it.

    Takes the arguments of :class:`easymesh.Node`; ``coordinator_host`` and
    ``coordinator_port`` (the seed's spelling) are combined into ``coordinator``.
    Raises what Node() raises: CoordinatorUnavailable, AuthenticationError,
    ValueError/TypeError. If the caller is cancelled while connecting, a node that
    connects anyway is closed.
    """
    if coordinator_host is not None or coordinator_port is not None:
        kwargs["coordinator"] = config.format_address(
            coordinator_host or config.DEFAULT_HOST, coordinator_port or config.DEFAULT_PORT
        )
    loop = asyncio.get_running_loop()
    connecting = loop.run_in_executor(None, functools.partial(Node, name, **kwargs))
    try:
        node = await asyncio.shield(connecting)
    except asyncio.CancelledError:
        connecting.add_done_callback(_close_late_node)
        raise
    return AsyncNode(node, loop)


build_mesh_node = build_node
"""The seed's name for :func:`build_node`."""


def _close_late_node(fut: asyncio.Future) -> None:
    if not fut.cancelled() and fut.exception() is None:
        fut.get_loop().run_in_executor(None, fut.result().close)


async def forever() -> None:
    """Wait until cancelled (Ctrl-C under ``asyncio.run`` cancels the main task)."""
    await asyncio.Event().wait()


class AsyncNode:
    """An :class:`easymesh.Node` for asyncio code. See the module docstring.

    ``AsyncNode(node)`` wraps a connected node and binds it to the running event
    loop (or ``loop``); :func:`build_node` connects and wraps in one step. The
    threaded node stays usable as ``.node``. Closing the AsyncNode closes the node.
    An async context manager. Raises RuntimeError if created outside a running loop
    without ``loop``.
    """

    def __init__(self, node: Node, loop: asyncio.AbstractEventLoop | None = None) -> None:
        self.node = node
        self.loop = loop or asyncio.get_running_loop()
        self._lock = threading.Lock()
        self._closing = False
        self._closing_signal: concurrent.futures.Future = concurrent.futures.Future()
        self._close_requested = asyncio.Event()
        self._tasks: set[asyncio.Task] = set()  # callbacks running on the loop (loop thread only)
        self._asked: set[str] = set()  # services whose providers the node has asked for
        # per listener/service: set when it is replaced or removed, so that its worker
        # stops waiting for a callback that may itself be awaiting the removal
        self._detach: dict[tuple[str, str], concurrent.futures.Future] = {}

    # -- lifecycle ---------------------------------------------------------------------------

    @property
    def name(self) -> str:
        return self.node.name

    @property
    def id(self) -> str:
        return self.node.id

    @property
    def closed(self) -> bool:
        return self._closing or self.node.closed

    def __repr__(self) -> str:
        return f"<easymesh.aio.AsyncNode {self.node.name!r} id={self.node.id}>"

    async def __aenter__(self) -> AsyncNode:
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.close()

    async def close(self) -> None:
        """Leave the mesh: cancel the callbacks running on the loop (except the one
        calling close, if any), then close the node in an executor. Idempotent; safe
        from a callback."""
        with self._lock:
            self._closing = True
        if not self._closing_signal.done():
            self._closing_signal.set_result(None)
        self._close_requested.set()
        me = asyncio.current_task()
        for task in list(self._tasks):
            if task is not me:
                task.cancel()
        await self.loop.run_in_executor(None, self.node.close)

    async def forever(self) -> None:
        """Wait until :meth:`close` (from a callback, another task) or SIGTERM, then
        close. If the waiting task is cancelled (Ctrl-C under ``asyncio.run``), the
        node is closed and the cancellation goes on."""
        restore = self._handle_sigterm()
        waiter = asyncio.ensure_future(self._close_requested.wait())
        try:
            while not waiter.done() and not self.node.closed:
                await asyncio.wait({waiter}, timeout=1.0)
        finally:
            waiter.cancel()
            restore()
            await self.close()

    def _handle_sigterm(self) -> Callable[[], object]:
        try:
            self.loop.add_signal_handler(signal.SIGTERM, self._close_requested.set)
        except (ValueError, RuntimeError, NotImplementedError):  # not the main thread, Windows
            return lambda: None
        return functools.partial(self.loop.remove_signal_handler, signal.SIGTERM)

    # -- topics ------------------------------------------------------------------------------

    async def send(self, topic: str, data: Any = None, **kwargs: Any) -> None:
        """``node.send(topic, data, **kwargs)``: never blocks. Raises NodeClosed, CodecError."""
        self.node.send(topic, data, **kwargs)

    async def listen(self, topic: str, callback: Callable[[str, Any], Any], **kwargs: Any) -> None:
        """Call ``callback(topic, data)`` on this loop for each message on ``topic``; it
        may be a coroutine function. ``kwargs`` go to ``Node.listen`` (``queue_size``,
        ``workers``, ``raw``). An exception in the callback is logged with the topic.
        Raises NodeClosed, ValueError/TypeError."""
        if not callable(callback):
            raise TypeError("callback must be callable as callback(topic, data)")
        bridged = self._bridge(callback, ("topic", topic))
        await self._run(self.node.listen, topic, bridged, **kwargs)

    add_listener = listen

    async def stop_listening(self, topic: str) -> None:
        """Stop the callback for ``topic`` (no-op if none)."""
        self._detach_old(("topic", topic))
        await self._run(self.node.stop_listening, topic)

    remove_listener = stop_listening

    async def has_listeners(self, topic: str) -> bool:
        """Whether any node in the mesh listens to ``topic`` (the first question about a
        topic waits for the coordinator's answer, in an executor thread)."""
        return bool(await self._run(self.node.has_listeners, topic))

    topic_has_listeners = has_listeners

    async def wait_for_listener(self, topic: str, timeout: float | None = None) -> None:
        """Wait until some node listens to ``topic``. Raises RequestTimeout (a
        TimeoutError) after ``timeout`` seconds (None: no limit), NodeClosed."""
        await self._wait(
            self.node.wait_for_listener, topic, timeout, f"no listener for topic {topic!r}"
        )

    def topic(self, name: str, **kwargs: Any) -> AsyncTopic:
        """A handle for sending to one topic often (``kwargs`` go to ``Node.topic``)."""
        return AsyncTopic(self, self.node.topic(name, **kwargs))

    # -- services ----------------------------------------------------------------------------

    async def add_service(self, name: str, handler: Callable[[Any], Any], **kwargs: Any) -> None:
        """Serve ``name`` with ``handler(data) -> result`` run on this loop; it may be a
        coroutine function. What it raises reaches the caller as a ServiceError.
        ``kwargs`` go to ``Node.add_service``. Raises NodeClosed, ValueError/TypeError."""
        if not callable(handler):
            raise TypeError("handler must be callable as handler(data)")
        await self._run(
            self.node.add_service, name, self._bridge(handler, ("service", name)), **kwargs
        )

    async def remove_service(self, name: str) -> None:
        """Stop serving ``name`` (no-op if not served)."""
        self._detach_old(("service", name))
        await self._run(self.node.remove_service, name)

    async def has_service(self, name: str) -> bool:
        """Whether any node in the mesh provides ``name`` (see :meth:`has_listeners`)."""
        return bool(await self._run(self.node.has_service, name))

    async def wait_for_service(self, name: str, timeout: float | None = None) -> None:
        """Wait until some node provides ``name``. Raises RequestTimeout (a
        TimeoutError) after ``timeout`` seconds (None: no limit), NodeClosed."""
        await self._wait(
            self.node.wait_for_service, name, timeout, f"no provider for service {name!r}"
        )

    async def request(self, service: str, data: Any = None, timeout: float | None = None) -> Any:
        """Call ``service`` with ``data`` and return its result; the loop keeps running.

        ``timeout`` as in ``Node.request`` (None: the node's ``request_timeout``).
        Raises NoProviderError, RequestTimeout (a TimeoutError), ServiceError,
        ConnectionLost, NodeClosed, CodecError.
        """
        if service not in self._asked:
            # The first call may wait for the coordinator to name the providers: not here.
            await self._run(self.node.has_service, service)
            self._asked.add(service)
        future = self.node.request_future(service, data, timeout)
        return await asyncio.wrap_future(future, loop=self.loop)

    def service(self, name: str) -> AsyncService:
        """A handle for calling one service often."""
        return AsyncService(self, self.node.service(name))

    # -- introspection -----------------------------------------------------------------------

    async def ping(self, node: str, timeout: float = 5.0) -> float:
        """Round-trip seconds to ``node`` (id or name). Raises NoProviderError,
        RequestTimeout, ConnectionLost, NodeClosed."""
        return await self._run(self.node.ping, node, timeout)

    def nodes(self) -> list[NodeInfo]:
        """The mesh as this node knows it (never blocks)."""
        return self.node.nodes()

    def stats(self) -> dict[str, Any]:
        """The node's counters (never blocks)."""
        return self.node.stats()

    # -- bridging ----------------------------------------------------------------------------

    async def _run(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        return await self.loop.run_in_executor(None, functools.partial(fn, *args, **kwargs))

    async def _wait(
        self, wait: Callable[[str, float], None], what: str, timeout: float | None, message: str
    ) -> None:
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            left = None if deadline is None else deadline - time.monotonic()
            step = WAIT_SLICE if left is None else max(0.0, min(WAIT_SLICE, left))
            try:
                await self._run(wait, what, step)
                return
            except RequestTimeout:
                if left is not None and left <= WAIT_SLICE:
                    raise RequestTimeout(f"{message} after {timeout:g} s") from None

    def _detach_old(self, key: tuple[str, str]) -> None:
        old = self._detach.pop(key, None)
        if old is not None and not old.done():
            old.set_result(None)

    def _bridge(self, fn: Callable[..., Any], key: tuple[str, str]) -> Callable[..., Any]:
        """A function for a worker thread that runs ``fn`` on the loop and waits for it.
        Replaces (and detaches) the previous bridge registered under ``key``."""
        self._detach_old(key)
        detach: concurrent.futures.Future = concurrent.futures.Future()
        self._detach[key] = detach
        service = key[0] == "service"

        async def invoke(*args: Any) -> Any:
            result = fn(*args)
            if inspect.isawaitable(result):
                result = await result
            return result

        def on_worker(*args: Any) -> Any:
            try:
                return self._call_on_loop(lambda: invoke(*args), detach)
            except NodeClosed:
                if service:
                    raise
                return None  # closing: the message is dropped

        return on_worker

    def _call_on_loop(self, make: Callable[[], Any], detach: concurrent.futures.Future) -> Any:
        """(worker thread) Run the coroutine ``make()`` as a task on the loop and return
        its result. Raises what it raised; NodeClosed when the node closes, ``detach``
        is set or the loop is closed before it finishes (the task is left running)."""
        done: concurrent.futures.Future = concurrent.futures.Future()

        def start() -> None:
            task = self.loop.create_task(make())
            self._tasks.add(task)
            task.add_done_callback(functools.partial(self._finished, done))

        with self._lock:
            if self._closing:
                raise NodeClosed(f"node {self.node.name!r} is closed")
            try:
                self.loop.call_soon_threadsafe(start)
            except RuntimeError:
                raise NodeClosed("the event loop of this node is closed") from None
        waiting = [done, self._closing_signal, detach]
        while True:
            concurrent.futures.wait(waiting, WAIT_SLICE, concurrent.futures.FIRST_COMPLETED)
            if done.done():
                if done.cancelled():
                    raise NodeClosed("the callback was cancelled")
                return done.result()
            if self._closing_signal.done() or detach.done() or self.loop.is_closed():
                raise NodeClosed(f"node {self.node.name!r} closed, or the callback was removed")

    def _finished(self, done: concurrent.futures.Future, task: asyncio.Task) -> None:
        self._tasks.discard(task)
        if task.cancelled():
            done.cancel()
        elif task.exception() is not None:
            done.set_exception(task.exception())  # type: ignore[arg-type]
        else:
            done.set_result(task.result())


class AsyncTopic:
    """An awaitable handle on one topic (see ``Node.topic``)."""

    def __init__(self, anode: AsyncNode, topic: Any) -> None:
        self._anode = anode
        self.handle = topic
        self.name: str = topic.name

    async def send(self, data: Any = None) -> None:
        self.handle.send(data)

    async def has_listeners(self) -> bool:
        return await self._anode.has_listeners(self.name)

    async def wait_for_listener(self, timeout: float | None = None) -> None:
        await self._anode.wait_for_listener(self.name, timeout)

    def __repr__(self) -> str:
        return f"<easymesh.aio.AsyncTopic {self.name!r}>"


class AsyncService:
    """An awaitable handle on one service (see ``Node.service``); calling it requests."""

    def __init__(self, anode: AsyncNode, service: Any) -> None:
        self._anode = anode
        self.handle = service
        self.name: str = service.name

    async def request(self, data: Any = None, timeout: float | None = None) -> Any:
        return await self._anode.request(self.name, data, timeout)

    __call__ = request

    async def has_provider(self) -> bool:
        return await self._anode.has_service(self.name)

    async def wait_for_provider(self, timeout: float | None = None) -> None:
        await self._anode.wait_for_service(self.name, timeout)

    def __repr__(self) -> str:
        return f"<easymesh.aio.AsyncService {self.name!r}>"
