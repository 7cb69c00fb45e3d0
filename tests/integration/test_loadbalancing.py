"""Groups of same-named nodes share messages; distinct names each get everything."""

from __future__ import annotations

import easymesh

from .helpers import Collector, wait_until


def test_round_robin_within_a_group_and_every_group_gets_all(node_factory):
    workers = [Collector() for _ in range(3)]
    for c in workers:
        node_factory("worker").listen("jobs", c)
    logger = Collector()
    node_factory("logger").listen("jobs", logger)
    s = node_factory("boss")
    assert wait_until(lambda: s.has_listeners("jobs") and len(s._view.listeners("jobs")) == 4)
    for i in range(30):
        s.send("jobs", i)
    assert logger.wait_for(30) == list(range(30))
    assert wait_until(lambda: sum(len(c.items) for c in workers) == 30)
    assert sorted(len(c.items) for c in workers) == [10, 10, 10]
    assert sorted(x for c in workers for x in c.data) == list(range(30))


def test_no_load_balancer_sends_to_every_node(node_factory):
    workers = [Collector() for _ in range(3)]
    for c in workers:
        node_factory("worker").listen("all", c)
    s = node_factory("boss", load_balancer=None)
    assert wait_until(lambda: s.has_listeners("all") and len(s._view.listeners("all")) == 3)
    for i in range(5):
        s.send("all", i)
    for c in workers:
        assert c.wait_for(5) == list(range(5))


def test_custom_balancer_and_services_round_robin(node_factory):
    class First:
        def choose_nodes(self, topic, nodes):
            return nodes[:1]

        def choose_node(self, service, nodes):
            return nodes[-1]

    for i in range(3):
        node_factory("srv").add_service("who", lambda d, i=i: i)
    rr = node_factory("client")
    assert wait_until(lambda: rr.has_service("who") and len(rr._view.providers("who")) == 3)
    assert sorted(rr.request("who", None, timeout=5) for _ in range(6)) == [0, 0, 1, 1, 2, 2]
    custom = node_factory("client2", load_balancer=First())
    assert wait_until(lambda: custom.has_service("who") and len(custom._view.providers("who")) == 3)
    assert len({custom.request("who", None, timeout=5) for _ in range(4)}) == 1


def test_bad_balancer_rejected(coordinator):
    import pytest

    with pytest.raises(ValueError):
        easymesh.Node("x", coordinator=coordinator.address, load_balancer="fastest")
