from __future__ import annotations

import threading


def test_topic_roundtrip(node_factory):
    got = []
    done = threading.Event()

    def cb(topic, data):
        got.append((topic, data))
        done.set()

    r = node_factory("receiver")
    r.listen("some-topic", cb)
    s = node_factory("sender")
    s.wait_for_listener("some-topic", timeout=10)
    s.send("some-topic", {"hello": "world!"})
    assert done.wait(10)
    assert got == [("some-topic", {"hello": "world!"})]


def test_service(node_factory):
    server = node_factory("server")
    server.add_service("add", lambda d: d[0] + d[1])
    client = node_factory("client")
    client.wait_for_service("add", timeout=10)
    assert client.request("add", (2, 2), timeout=10) == 4
    assert client.request_future("add", (2, 3)).result(timeout=10) == 5
