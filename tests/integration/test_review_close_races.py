"""Regressions from the second review of the composed node (each failed before its fix):
calls that race ``close()``, and waits with a huge finite timeout.

A request made while another thread closes the node must fail with NodeClosed at once:
``close()`` fails the requests in its table, so one recorded just after that sweep was
never failed by it. It went out anyway, and its answer (or the link's failure when the
I/O thread stopped) completed the future on the I/O thread, where user code (the
done-callbacks) must never run. The load balancer is user code that runs between the
node's open-check and the recording of the request: the tests close the node there.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from typing import Any

import pytest

import easymesh
from easymesh.protocol.messages import NodeInfo

from .helpers import wait_until


class ClosingBalancer:
    """Picks the first provider; on the first request, closes the node first (in this
    thread, or in another one, waiting until the node has failed its pending requests)."""

    def __init__(self, threaded: bool) -> None:
        self.node: easymesh.Node | None = None
        self.threaded = threaded
        self.closer: threading.Thread | None = None

    def choose_nodes(self, topic: str, nodes: Sequence[NodeInfo]) -> Sequence[NodeInfo]:
        return nodes

    def choose_node(self, service: str, nodes: Sequence[NodeInfo]) -> NodeInfo:
        node, self.node = self.node, None
        if node is not None:
            if not self.threaded:
                node.close()
            else:
                self.closer = threading.Thread(target=node.close, name="test-closer")
                self.closer.start()
                # close() has marked the caller part closed; what it had pending is failed
                assert wait_until(lambda: node._caller._closed is not None, 10)
        return nodes[0]


@pytest.mark.parametrize("threaded", [False, True])
@pytest.mark.parametrize("kind", ["request", "future"])
def test_a_request_racing_close_fails_with_node_closed(
    node_factory: Any, kind: str, threaded: bool
) -> None:
    gate = threading.Event()
    srv = node_factory("srv")
    srv.add_service("echo", lambda d: (gate.wait(10), d)[1])
    srv.add_service("warm", lambda d: d)
    balancer = ClosingBalancer(threaded)
    cli = node_factory("cli", load_balancer=balancer)
    cli.wait_for_service("echo", timeout=10)
    assert cli.request("warm", 0, timeout=30) == 0  # the link to srv is open
    balancer.node = cli
    io_threads: list[str] = []
    try:
        with pytest.raises(easymesh.NodeClosed):
            if kind == "request":
                cli.request("echo", 1, timeout=30)
            else:
                fut = cli.request_future("echo", 1, timeout=30)
                fut.add_done_callback(lambda f: io_threads.append(threading.current_thread().name))
                gate.set()
                fut.result(30)
    finally:
        gate.set()
        if balancer.closer is not None:
            balancer.closer.join(10)
    assert not [name for name in io_threads if name.endswith("-io")]
    assert len(cli._caller.table) == 0


def test_a_huge_finite_timeout_waits_like_a_long_one(node_factory: Any) -> None:
    """timeout=1e12 is finite, so it is not math.inf's 'forever': it used to reach
    Lock.acquire, which raised OverflowError after the request had gone out (its entry
    stayed in the table). It must simply wait (threading.TIMEOUT_MAX is ~292 years)."""
    gate = threading.Event()
    srv = node_factory("srv")
    srv.add_service("slow", lambda d: (gate.wait(30), d * 2)[1])
    cli = node_factory("cli")
    cli.wait_for_service("slow", timeout=1e12)
    fut = cli.request_future("slow", 1, timeout=1e12)
    answer: list[Any] = []
    caller = threading.Thread(target=lambda: answer.append(cli.request("slow", 2, timeout=1e12)))
    caller.start()
    gate.set()
    assert fut.result(1e12) == 2
    caller.join(30)
    assert answer == [4]
    assert len(cli._caller.table) == 0


def test_a_request_with_no_time_left_on_a_closed_node_says_closed(node_factory: Any) -> None:
    cli = node_factory("cli")
    cli.close()
    for timeout in (0, -1):
        with pytest.raises(easymesh.NodeClosed):
            cli.request("anything", 1, timeout=timeout)
        with pytest.raises(easymesh.NodeClosed):
            cli.request_future("anything", 1, timeout=timeout)
