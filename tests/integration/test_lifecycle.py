"""Construction, close(), context managers, threads."""

from __future__ import annotations

import os
import signal
import socket
import threading
import time

import pytest

import easymesh

from .helpers import Collector, wait_until


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_coordinator_unavailable_after_connect_timeout():
    addr = f"127.0.0.1:{free_port()}"
    t0 = time.monotonic()
    with pytest.raises(easymesh.CoordinatorUnavailable) as info:
        easymesh.Node("n", coordinator=addr, connect_timeout=0.5)
    assert 0.4 < time.monotonic() - t0 < 5
    assert addr in str(info.value) and "easymesh" in str(info.value)
    assert isinstance(info.value, ConnectionError)


def test_node_waits_for_a_late_coordinator(coordinator_factory):
    port = free_port()
    result = {}

    def build():
        try:
            result["node"] = easymesh.Node("early", coordinator=f"127.0.0.1:{port}", connect_timeout=20)
        except Exception as exc:  # noqa: BLE001
            result["error"] = exc

    t = threading.Thread(target=build)
    t.start()
    time.sleep(0.5)  # the node is retrying now
    coordinator_factory(port=port)
    t.join(20)
    assert "node" in result, result
    result["node"].close()


def test_build_node_spellings(coordinator):
    with easymesh.build_node(name="a", coordinator=coordinator.address) as a:
        assert isinstance(a, easymesh.Node)
    with easymesh.build_mesh_node(name="b", coordinator=coordinator.address) as b:
        assert b.name == "b"


def test_close_is_idempotent_and_fails_pending(node_factory):
    release = threading.Event()
    srv = node_factory("srv")
    srv.add_service("hang", lambda d: release.wait(10))
    cli = node_factory("cli")
    cli.wait_for_service("hang", timeout=10)
    fut = cli.request_future("hang", 1, timeout=60)
    t0 = time.monotonic()
    cli.close()
    cli.close()
    assert time.monotonic() - t0 < 5
    with pytest.raises(easymesh.NodeClosed):
        fut.result(timeout=1)
    with pytest.raises(easymesh.NodeClosed):
        cli.send("x", 1)
    with pytest.raises(easymesh.NodeClosed):
        cli.request("hang", 1)
    release.set()


def test_close_from_a_callback(node_factory):
    closed = threading.Event()
    r = node_factory("r")

    def cb(topic, data):
        r.close()
        closed.set()

    r.listen("t", cb)
    s = node_factory("s")
    s.wait_for_listener("t", timeout=10)
    s.send("t", 1)
    assert closed.wait(10)
    assert wait_until(lambda: not any(t.name.startswith("easymesh-r-") for t in threading.enumerate()))


def test_close_from_a_service_handler(node_factory):
    srv = node_factory("srv")
    srv.add_service("quit", lambda d: srv.close() or "bye")
    cli = node_factory("cli")
    cli.wait_for_service("quit", timeout=10)
    try:
        cli.request("quit", None, timeout=5)
    except easymesh.MeshError:
        pass  # the reply may or may not get out before the link closes
    assert wait_until(lambda: srv.closed)


def test_no_threads_left_after_close(coordinator):
    before = {t.name for t in threading.enumerate()}
    with easymesh.Node("t1", coordinator=coordinator.address) as n:
        n.listen("a", lambda t, d: None)
        n.add_service("b", lambda d: d)
        names = {t.name for t in threading.enumerate()} - before
        assert "easymesh-io" in names  # the process's shared I/O thread
        assert "easymesh-t1-a-1" in names
    assert wait_until(lambda: not ({t.name for t in threading.enumerate()} - before))


def test_send_then_close_delivers(node_factory, coordinator):
    """close() lingers so that a script that sends and exits still delivers."""
    c = Collector()
    r = node_factory("r")
    r.listen("t", c)
    with easymesh.Node("quick", coordinator=coordinator.address) as s:
        s.wait_for_listener("t", timeout=10)
        for i in range(100):
            s.send("t", i)
    assert c.wait_for(100) == list(range(100))


def test_forever_returns_on_close(node_factory):
    n = node_factory("f")
    threading.Timer(0.2, n.close).start()
    t0 = time.monotonic()
    n.forever()
    assert time.monotonic() - t0 < 5


def test_forever_in_a_process_stops_on_sigterm(coordinator, node_process):
    p = node_process(
        "import easymesh, signal, threading\n"
        f"n = easymesh.Node('daemon', coordinator='{coordinator.address}')\n"
        "def announce():\n"
        "    while signal.getsignal(signal.SIGTERM) is signal.SIG_DFL:\n"
        "        threading.Event().wait(0.01)\n"
        "    print('up', flush=True)\n"
        "threading.Thread(target=announce).start()\n"
        "n.forever()\n"
        "print('closed', n.closed, flush=True)\n"
    )
    assert "up" in p.wait_for_line("up")
    os.kill(p.pid, signal.SIGTERM)
    assert "closed True" in p.wait_for_line("closed")
    assert p.proc.wait(10) == 0


def test_bad_arguments(coordinator):
    with pytest.raises(ValueError):
        easymesh.Node("", coordinator=coordinator.address)
    with pytest.raises(ValueError):
        easymesh.Node("x", coordinator=coordinator.address, codec="yaml")
    with easymesh.Node("ok", coordinator=coordinator.address) as n:
        with pytest.raises(TypeError):
            n.listen("t", "not callable")
        with pytest.raises(ValueError):
            n.listen("", print)
        with pytest.raises(easymesh.CodecError):
            n.listen("t", print)
            n.send("t", lambda: 1)
