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


def test_a_balancer_of_ones_own_is_asked_even_for_a_single_node(node_factory):
    """The built-in balancers are skipped for a single listener or provider (it is always the
    one chosen); a balancer of the user's own, or a subclass that overrides a method, is
    asked every time: here one that drops every message and answers from nobody else."""
    from easymesh.loadbalancing import RoundRobinLoadBalancer, single_is_chosen

    class Nobody(RoundRobinLoadBalancer):
        asked: list[str] = []

        def choose_nodes(self, topic, nodes):
            self.asked.append(topic)
            return [] if topic == "dropped" else nodes

        def choose_node(self, service, nodes):
            self.asked.append(service)
            return nodes[0]

    assert single_is_chosen(RoundRobinLoadBalancer()) and not single_is_chosen(Nobody())
    got = Collector()
    rx = node_factory("rx")
    rx.listen("dropped", got)
    rx.listen("marker", got)
    rx.add_service("one", lambda d: d)
    tx = node_factory("tx", load_balancer=Nobody())
    assert wait_until(lambda: tx.has_listeners("dropped") and tx.has_listeners("marker"))
    tx.send("dropped", 1)
    tx.send("marker", 2)  # same link, after the dropped one
    assert got.wait_for(1) == [2]
    assert tx.request("one", 3, timeout=5) == 3
    assert Nobody.asked == ["dropped", "marker", "one"]
