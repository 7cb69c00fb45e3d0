"""Behaviour across real processes: demo programs, and nodes in separate processes."""

from __future__ import annotations

import subprocess
import sys

from .helpers import Collector


def test_demo_receiver_and_sender(coordinator, node_process):
    env = {"EASYMESH_COORDINATOR": coordinator.address}
    recv = node_process("from easymesh.demo.receiver import main; main(['--count', '1'])", env=env)
    assert "listening" in recv.wait_for_line("listening")
    out = subprocess.run(
        [sys.executable, "-m", "easymesh.demo.sender", "--coordinator", coordinator.address],
        capture_output=True, text=True, timeout=30,
    )
    assert out.returncode == 0, out.stderr
    line = recv.wait_for_line("receiver got")
    assert line.strip() == "receiver got: topic=some-topic; data={'hello': 'world!'}"
    assert recv.proc.wait(10) == 0


def test_service_in_another_process(coordinator, node_process, node_factory):
    node_process(
        "import easymesh\n"
        f"n = easymesh.Node('server', coordinator='{coordinator.address}')\n"
        "n.add_service('add', lambda d: d[0] + d[1])\n"
        "print('ready', flush=True)\n"
        "n.forever()\n"
    ).wait_for_line("ready")
    client = node_factory("client")
    client.wait_for_service("add", timeout=10)
    assert client.request("add", (2, 2), timeout=10) == 4
    futures = [client.request_future("add", (i, i)) for i in range(1000)]
    assert [f.result(20) for f in futures] == [2 * i for i in range(1000)]


def test_order_across_processes(coordinator, node_process, node_factory):
    c = Collector()
    r = node_factory("r")
    r.listen("seq", c)
    node_process(
        "import easymesh\n"
        f"with easymesh.Node('s', coordinator='{coordinator.address}') as n:\n"
        "    n.wait_for_listener('seq', timeout=10)\n"
        "    for i in range(5000):\n"
        "        n.send('seq', i)\n"
    )
    assert c.wait_for(5000, timeout=30) == list(range(5000))


def test_coordinator_cli_help():
    out = subprocess.run([sys.executable, "-m", "easymesh", "--help"], capture_output=True, text=True, timeout=30)
    assert out.returncode == 0 and "--authkey" in out.stdout and "--port" in out.stdout
