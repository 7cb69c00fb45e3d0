"""Issue 3, item 6: bad replies. A service in another process whose result cannot be
encoded, or that raises an exception that cannot be pickled (or not even turned into
a string), gives the caller a ServiceError saying so, promptly, and the next call on
the same connection works."""

from __future__ import annotations

import time

import pytest

import easymesh

SERVICES = ("echo:echo", "unencodable:unencodable", "unpicklable_exc:unpicklable_exc",
            "bad_str_exc:bad_str_exc", "system_exit:system_exit", "foreign_class:foreign_class",
            "big:big")



@pytest.fixture
def server_and_client(coordinator, agent):
    srv = agent("bad-server", coordinator.address, service=SERVICES)
    with easymesh.Node("caller", coordinator=coordinator.address, max_message_size=1 << 20) as cli:
        cli.wait_for_service("big", timeout=15)
        assert cli.request("echo", 0, timeout=15) == 0  # opens the connection
        yield srv, cli


def _link(cli: easymesh.Node, srv_name: str) -> dict:
    (link,) = [v for k, v in cli.stats()["peers"].items() if k.startswith(srv_name + ":")]
    return link


@pytest.mark.parametrize("service, says", [
    ("unencodable", "could not be encoded"),
    ("unpicklable_exc", "cannot pickle me"),
    ("foreign_class", "could not be decoded"),
    ("bad_str_exc", "BadStr"),
    ("system_exit", "SystemExit"),
])
def test_bad_reply_is_a_service_error_and_the_connection_keeps_working(server_and_client, service, says):
    srv, cli = server_and_client
    before = _link(cli, "bad-server")
    for round_ in range(5):  # more rounds than workers: a worker that died would show
        t0 = time.monotonic()
        with pytest.raises(easymesh.ServiceError) as info:
            cli.request(service, None, timeout=6)
        assert time.monotonic() - t0 < 5, f"{service}: the caller waited for its timeout"
        assert says in str(info.value)
        assert cli.request("echo", round_, timeout=10) == round_
    after = _link(cli, "bad-server")
    # the same connection carried all of it: its counters went on, nothing was reopened
    assert after["frames_out"] == before["frames_out"] + 10 and after["state"] == "open"


def test_more_bad_calls_than_workers_leave_the_service_alive(server_and_client):
    """Each service has four workers; a handler failure must never cost one."""
    srv, cli = server_and_client
    futures = [cli.request_future("unencodable", None, timeout=15) for _ in range(20)]
    for f in futures:
        with pytest.raises(easymesh.ServiceError):
            f.result(20)
    assert [cli.request("echo", i, timeout=10) for i in range(5)] == list(range(5))


def test_reply_larger_than_the_callers_limit(server_and_client):
    """A reply above the caller's max_message_size cannot be read: the caller drops the
    link (logged on both sides) and the call fails at once with a MeshError rather
    than hanging; the next call opens a new link and works."""
    srv, cli = server_and_client
    t0 = time.monotonic()
    with pytest.raises(easymesh.MeshError, match="exceeds the limit"):
        cli.request("big", 2 << 20, timeout=15)
    assert time.monotonic() - t0 < 10
    assert cli.request("echo", "again", timeout=15) == "again"
    assert srv.wait_for_log("exceeds the limit", 10)


def test_callback_raising_system_exit_keeps_its_worker(node_factory):
    """A callback that calls sys.exit() ends only that call: the listener's worker thread
    goes on with the next message (a thread that silently died would stop the topic)."""
    got = []

    def callback(topic, data):
        if data == "exit":
            raise SystemExit(1)
        got.append(data)

    r = node_factory("r")
    r.listen("t", callback)
    s = node_factory("s")
    s.wait_for_listener("t", timeout=10)
    for data in ("exit", 1, "exit", 2):
        s.send("t", data)
    deadline = time.monotonic() + 5
    while len(got) < 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert got == [1, 2]
