"""meshtopic, meshservice and meshnode as real subprocesses against a live mesh."""

from __future__ import annotations

import queue
import re
import signal
import threading
import time
from typing import Any

import pytest

WAIT = 15.0


@pytest.mark.parametrize("tool", ["meshtopic", "meshservice", "meshnode"])
def test_help(tools: Any, tool: str) -> None:
    r = tools.run(tool, "--help")
    assert r.returncode == 0
    assert r.stdout.startswith(f"{tool} — ")
    for option in ("--coordinator", "--authkey", "--name", "list"):
        assert option in r.stdout


def test_topic_list(tools: Any, node_factory: Any) -> None:
    node_factory("receiver").listen("some-topic", lambda t, d: None)
    for _ in range(2):
        node_factory("worker").listen("jobs", lambda t, d: None)
    boss = node_factory("boss")
    boss.wait_for_listener("jobs", WAIT)
    boss.send("jobs", 1)
    boss.send("unheard", 1)  # sent, nobody listens: still a topic
    probe = node_factory("probe", watch="all")  # it reads the whole topology, as the tools do
    probe.wait_for_listener("some-topic", WAIT)
    _wait_until(lambda: {"jobs", "unheard"} <= {t for n in probe.nodes() for t in n.publishes})
    plain, verbose = tools.start("meshtopic", "list"), tools.start("meshtopic", "list", "-v")
    out, err = plain.communicate(timeout=30)
    assert plain.returncode == 0, err
    assert out.splitlines() == [
        "TOPIC       PUBLISHERS  LISTENERS",
        "jobs        boss        worker (2 nodes)",
        "some-topic  -           receiver",
        "unheard     boss        -",
    ]
    out, err = verbose.communicate(timeout=30)
    assert verbose.returncode == 0, err
    lines = out.splitlines()
    assert lines[0].split() == ["TOPIC", "ROLE", "NODE", "ID", "HOST", "PID"]
    workers = [n for n in probe.nodes() if n.name == "worker"]
    for w in workers:
        assert any(line.split()[:4] == ["jobs", "listener", "worker", w.id] for line in lines)
    assert any(line.split()[:4] == ["jobs", "publisher", "boss", boss.id] for line in lines)
    assert len(lines) == 6 and "meshtopic" not in out  # the tool's own node is left out


def test_topic_list_empty(tools: Any) -> None:
    r = tools.run("meshtopic", "list")
    assert r.returncode == 0 and r.stdout == ""
    assert "no node sends on or listens to any topic" in r.stderr


def test_echo(tools: Any, node_factory: Any) -> None:
    sender = node_factory("sender")
    many = tools.start("meshtopic", "echo", "a", "b", "-n", "4")
    one = tools.start("meshtopic", "echo", "a", "-n", "2", "--raw")
    for topic in ("a", "b"):
        sender.wait_for_listener(topic, WAIT)
    wait_for_group_count(sender, "a", 2)
    sender.send("a", {"x": 1})
    sender.send("b", "two\nlines")
    sender.send("a", "text")
    sender.send_raw("b", 77, b"??")  # a codec the tool does not know
    out, err = many.communicate(timeout=30)
    assert many.returncode == 0, err
    lines = out.splitlines()
    assert sorted(lines) == sorted(
        [
            "a: {'x': 1}",
            "b: 'two\\nlines'",
            "a: text",
            "b: <cannot decode 2 bytes (codec-77): UnknownCodec: unknown codec id 77>",
        ]
    )
    assert lines.index("a: {'x': 1}") < lines.index("a: text")  # order kept per topic
    out, err = one.communicate(timeout=30)
    assert one.returncode == 0, err
    assert out.splitlines() == ["{'x': 1}", "'text'"]


def test_hz_and_bw(tools: Any, node_factory: Any) -> None:
    sender = node_factory("sender", codec="raw")
    hz = tools.start("meshtopic", "hz", "rate", "--duration", "2", "--window", "50")
    bw = tools.start("meshtopic", "bw", "rate", "--duration", "2")
    wait_for_group_count(sender, "rate", 2)
    pace = threading.Event()
    for _ in range(20):
        sender.send("rate", b"x" * 1000)
        pace.wait(0.01)  # pacing the sender, not synchronisation
    out, err = hz.communicate(timeout=30)
    assert hz.returncode == 0, err
    assert out.startswith("subscribed to 'rate'\n")
    rates = [float(x) for x in re.findall(r"average rate: ([0-9.]+) Hz", out)]
    assert rates and all(r > 0 for r in rates)
    assert re.search(r"\tmin: [0-9.]+ s  max: [0-9.]+ s  std dev: [0-9.]+ s  window: 20\n", out), (
        out
    )
    out, err = bw.communicate(timeout=30)
    assert bw.returncode == 0, err
    assert re.search(
        r"average: [0-9.]+ (K|M)B/s\n\tmean: 1.00 KB  min: 1.00 KB  max: 1.00 KB  window: 20", out
    ), out


def test_hz_reports_no_messages_and_stops_on_sigint(tools: Any) -> None:
    hz = tools.start("meshtopic", "hz", "silent")
    assert hz.stdout is not None
    assert hz.stdout.readline() == "subscribed to 'silent'\n"
    assert hz.stdout.readline() == "no new messages\n"
    hz.send_signal(signal.SIGINT)
    assert hz.wait(15) == 130


def test_send(tools: Any, node_factory: Any) -> None:
    got: queue.Queue = queue.Queue()
    node_factory("receiver").listen("cmd", lambda t, d: got.put(d))
    r = tools.run("meshtopic", "send", "cmd", "{'speed': 1.5, 'on': True}", "-r", "50", "-n", "3")
    assert r.returncode == 0, r.stderr
    assert r.stdout == "sent 3 messages to 'cmd'\n"
    assert [got.get(timeout=WAIT) for _ in range(3)] == [{"speed": 1.5, "on": True}] * 3
    r = tools.run("meshtopic", "send", "cmd", "'hello'")
    assert r.returncode == 0 and r.stdout == "sent 1 message to 'cmd'\n"
    assert got.get(timeout=WAIT) == "hello"


def test_send_errors(tools: Any) -> None:
    nobody = tools.start("meshtopic", "send", "void", "1", "--wait", "0.2")
    r = tools.run("meshtopic", "send", "cmd", "__import__('os')")
    assert r.returncode == 2 and "is not a Python literal" in r.stderr
    r = tools.run("meshtopic", "send", "cmd", "1", "-r", "fast")
    assert r.returncode == 2 and "RATE must be a number" in r.stderr
    out, err = nobody.communicate(timeout=30)
    assert nobody.returncode == 1 and "nobody listens to 'void'" in err


def test_service_list_and_call(tools: Any, node_factory: Any) -> None:
    for _ in range(2):
        node_factory("adder").add_service("add", lambda d: d[0] + d[1])
    node = node_factory("misc")
    node.add_service("fail", lambda d: 1 / 0)
    node.add_service("echo", lambda d: d)
    node.wait_for_service("add", WAIT)
    procs = {
        "list": tools.start("meshservice", "list"),
        "add": tools.start("meshservice", "call", "add", "(2, 2)"),
        "echo": tools.start("meshservice", "call", "echo", "'text'", "--raw"),
        "fail": tools.start("meshservice", "call", "fail", "None"),
        "none": tools.start("meshservice", "call", "nobody", "1"),
    }
    res = {k: (*p.communicate(timeout=30), p.returncode) for k, p in procs.items()}
    assert res["list"] == (
        "SERVICE  PROVIDERS\nadd      adder (2 nodes)\necho     misc\nfail     misc\n",
        "",
        0,
    )
    assert res["add"] == ("4\n", "", 0)
    assert res["echo"] == ("'text'\n", "", 0)
    out, err, rc = res["fail"]
    assert rc == 1 and out == ""
    assert "service 'fail' failed: ZeroDivisionError: division by zero" in err
    assert "remote traceback:" in err and "1 / 0" in err
    out, err, rc = res["none"]
    assert rc == 1 and "no node provides service 'nobody'" in err


def test_service_call_timeout(tools: Any, node_factory: Any) -> None:
    release = threading.Event()
    node_factory("slow").add_service("slow", lambda d: release.wait(10))
    try:
        r = tools.run("meshservice", "call", "slow", "1", "--timeout", "0.3")
    finally:
        release.set()
    assert r.returncode == 1 and "did not answer within 0.3 s" in r.stderr


def test_node_list_and_ping(tools: Any, node_factory: Any) -> None:
    alpha = node_factory("alpha")
    alpha.listen("t1", lambda t, d: None)
    alpha.add_service("s1", lambda d: d)
    alpha.send("out1", 1)
    alpha.send("out2", 1)
    beta = node_factory("beta")
    beta.wait_for_service("s1", WAIT)
    _wait_until(lambda: len({n.id: n for n in beta.nodes()}[alpha.id].publishes) == 2)
    procs = [
        tools.start("meshnode", "list"),
        tools.start("meshnode", "list", "-v"),
        tools.start("meshnode", "ping", "alpha", "-n", "2", "--interval", "0.05"),
        tools.start("meshnode", "ping", beta.id),
        tools.start("meshnode", "ping", "nobody"),
    ]
    (plain, _, rc1), (verbose, _, rc2), (ping, _, rc3), (ping_id, _, rc4), (_, err5, rc5) = [
        (*p.communicate(timeout=30), p.returncode) for p in procs
    ]
    assert rc1 == rc2 == rc3 == rc4 == 0 and rc5 == 1
    # the tools run at once and see each other's nodes: leave those out
    lines = [line for line in plain.splitlines() if not line.startswith("meshnode-")]
    assert lines[0].split() == ["NAME", "ID", "HOST", "PID", "PUBLISHES", "LISTENS", "SERVICES"]
    assert lines[1].split()[:2] == ["alpha", alpha.id]
    assert lines[1].split()[-3:] == ["2", "1", "1"]
    assert lines[2].split()[:2] == ["beta", beta.id] and len(lines) == 3
    info = {n.id: n for n in alpha.nodes()}[alpha.id]
    assert f"alpha\n  id:        {alpha.id}\n" in verbose
    assert (
        f"  tcp:       {info.tcp}\n  unix:      {info.unix}\n  publishes: out1, out2\n"
        "  listens:   t1\n  services:  s1\n" in verbose
    )
    assert len(re.findall(rf"reply from alpha \({alpha.id}, .*\): time=[0-9.]+ ms", ping)) == 2
    assert "2 replies: min/avg/max = " in ping
    assert re.fullmatch(rf"reply from beta \({beta.id}, .*\): time=[0-9.]+ ms\n", ping_id)
    assert "no node named or with id 'nobody'" in err5


def test_authkey_option_and_env(tools: Any, coordinator_factory: Any, node_factory: Any) -> None:
    secure = coordinator_factory(authkey="s3cret")
    node_factory("locked", coordinator=secure.address, authkey="s3cret").add_service(
        "x", lambda d: d
    )
    env = {"EASYMESH_COORDINATOR": "127.0.0.1:1"}  # the option must win over the variable
    by_option = tools.start(
        "meshservice", "list", "--coordinator", secure.address, "--authkey", "s3cret", env=env
    )
    by_env = tools.start(
        "meshservice",
        "list",
        env={"EASYMESH_COORDINATOR": secure.address, "EASYMESH_AUTHKEY": "s3cret"},
    )
    wrong = tools.start("meshnode", "list", "--coordinator", secure.address, "--authkey", "nope")
    for p in (by_option, by_env):
        out, err = p.communicate(timeout=30)
        assert (p.returncode, out) == (0, "SERVICE  PROVIDERS\nx        locked\n"), err
    out, err = wrong.communicate(timeout=30)
    assert wrong.returncode == 1 and "meshnode: " in err and "authentication failed" in err


def wait_for_group_count(node: Any, topic: str, n: int) -> None:
    """Wait until ``n`` nodes listen to ``topic`` (the tools each run one node)."""
    import time

    deadline = time.monotonic() + WAIT
    node.has_listeners(topic)  # a plain node learns of the listeners of what it asks about
    while len([i for i in node.nodes() if topic in i.topics]) < n:
        assert time.monotonic() < deadline, f"fewer than {n} listeners on {topic!r}"
        threading.Event().wait(0.02)


def test_echo_shows_a_latched_value_at_once(tools: Any, node_factory: Any) -> None:
    node_factory("config").send("map", {"w": 3}, latch=True)  # before anybody listens
    r = tools.run("meshtopic", "echo", "map", "-n", "1")
    assert (r.returncode, r.stdout) == (0, "{'w': 3}\n"), r.stderr


def _wait_until(found: Any, timeout: float = WAIT) -> None:
    """Wait for a condition on the topology (it reaches every node asynchronously)."""
    deadline = time.monotonic() + timeout
    while not found():
        assert time.monotonic() < deadline, "condition never became true"
        time.sleep(0.02)
