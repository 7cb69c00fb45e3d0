"""Services: results, futures, errors, timeouts, no provider, nesting."""

from __future__ import annotations

import pickle
import threading
import time

import pytest

import easymesh

from .helpers import Collector, wait_until


@pytest.fixture
def server(node_factory):
    n = node_factory("server")
    n.add_service("add", lambda d: d[0] + d[1])
    return n


@pytest.fixture
def client(node_factory, server):
    n = node_factory("client")
    n.wait_for_service("add", timeout=10)
    return n


@pytest.mark.parametrize("transport", ["auto", "tcp"])
def test_request_and_future(node_factory, server, transport):
    client = node_factory("client", transport=transport)
    client.wait_for_service("add", timeout=10)
    assert client.request("add", (2, 2), timeout=10) == 4
    future = client.request_future("add", (2, 3))
    assert future.result(timeout=10) == 5
    assert client.service("add")((4, 4)) == 8
    assert client.service("add").request_future((1, 1)).result(10) == 2


def test_thousand_in_flight(client):
    futures = [client.request_future("add", (i, 1), timeout=30) for i in range(1000)]
    assert [f.result(timeout=30) for f in futures] == [i + 1 for i in range(1000)]


def test_many_threads_share_one_connection(client):
    errors = []

    def work(k):
        try:
            for i in range(100):
                assert client.request("add", (k, i), timeout=10) == k + i
        except Exception as exc:  # noqa: BLE001 - collected for the assert
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(k,)) for k in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert not errors


def test_remote_exception_becomes_service_error(node_factory):
    def fail(data):
        raise KeyError("missing thing")

    srv = node_factory("srv")
    srv.add_service("fail", fail)
    cli = node_factory("cli")
    cli.wait_for_service("fail", timeout=10)
    with pytest.raises(easymesh.ServiceError) as info:
        cli.request("fail", 1, timeout=10)
    err = info.value
    assert err.remote_type == "KeyError"
    assert "missing thing" in str(err)
    assert "Traceback" in err.remote_traceback and "fail" in err.remote_traceback
    assert isinstance(err, easymesh.MeshError)
    assert pickle.loads(pickle.dumps(err)).remote_type == "KeyError"
    # the same connection keeps working
    srv.add_service("ok", lambda d: "fine")
    cli.wait_for_service("ok", timeout=10)
    assert cli.request("ok", None, timeout=10) == "fine"


def test_unencodable_result_is_reported_and_link_survives(node_factory):
    srv = node_factory("srv")
    srv.add_service("lambda", lambda d: (lambda: None))  # a lambda cannot be pickled
    srv.add_service("echo", lambda d: d)
    cli = node_factory("cli")
    cli.wait_for_service("lambda", timeout=10)
    cli.wait_for_service("echo", timeout=10)
    with pytest.raises(easymesh.ServiceError, match="could not be encoded"):
        cli.request("lambda", 1, timeout=10)
    assert cli.request("echo", "again", timeout=10) == "again"


def test_no_provider(node_factory):
    n = node_factory("lonely")
    assert not n.has_service("nope")
    with pytest.raises(easymesh.NoProviderError):
        n.request("nope", 1, timeout=1)
    with pytest.raises(LookupError):
        n.request_future("nope", 1)


def test_timeout(node_factory):
    release = threading.Event()
    srv = node_factory("srv")
    srv.add_service("stuck", lambda d: release.wait(20))
    srv.add_service("fine", lambda d: d)
    cli = node_factory("cli")
    cli.wait_for_service("stuck", timeout=10)
    t0 = time.monotonic()
    with pytest.raises(TimeoutError):
        cli.request("stuck", 1, timeout=0.3)
    assert time.monotonic() - t0 < 5
    fut = cli.request_future("stuck", 1, timeout=0.3)
    with pytest.raises(easymesh.RequestTimeout):
        fut.result(timeout=10)
    # a stuck handler blocks no other service
    cli.wait_for_service("fine", timeout=10)
    assert cli.request("fine", 7, timeout=5) == 7
    release.set()


def test_wait_for_service_times_out(node_factory):
    n = node_factory("n")
    with pytest.raises(TimeoutError):
        n.wait_for_service("never", timeout=0.2)
    with pytest.raises(TimeoutError):
        n.service("never").wait_for_provider(timeout=0.1)


def test_request_from_inside_callback_and_handler(node_factory, server):
    n = node_factory("middle")
    n.wait_for_service("add", timeout=10)
    n.add_service("add3", lambda d: n.request("add", (n.request("add", (d[0], d[1]), timeout=10), d[2]), timeout=10))
    results = Collector()
    n.listen("numbers", lambda t, d: results(t, n.request("add3", d, timeout=10)))
    sender = node_factory("sender")
    sender.wait_for_listener("numbers", timeout=10)
    sender.send("numbers", (1, 2, 3))
    assert results.wait_for(1) == [6]


def test_service_on_own_node(node_factory):
    n = node_factory("solo")
    n.add_service("twice", lambda d: d * 2)
    assert n.has_service("twice")
    assert n.request("twice", 21, timeout=5) == 42
    assert n.request_future("twice", "ab").result(5) == "abab"


def test_remove_service(node_factory, server, client):
    server.remove_service("add")
    assert wait_until(lambda: not client.has_service("add"))
    with pytest.raises(easymesh.NoProviderError):
        client.request("add", (1, 1), timeout=2)


def test_provider_leaving_fails_pending_request(node_factory):
    started = threading.Event()
    srv = node_factory("srv")
    srv.add_service("slow", lambda d: (started.set(), time.sleep(3))[1])
    cli = node_factory("cli")
    cli.wait_for_service("slow", timeout=10)
    fut = cli.request_future("slow", 1, timeout=30)
    assert started.wait(10)
    srv.close(linger=0)
    with pytest.raises(easymesh.MeshError):
        fut.result(timeout=10)


def test_ping(node_factory):
    a = node_factory("a", watch="all")  # ping finds nodes among those a node knows
    b = node_factory("b")
    assert wait_until(lambda: any(n.name == "b" for n in a.nodes()))
    assert 0 < a.ping("b") < 5
    assert a.ping(b.id) > 0
    with pytest.raises(easymesh.NoProviderError):
        a.ping("nobody")
