"""Which balancers the senders may skip for a single listener or provider."""

from __future__ import annotations

from typing import Any

from easymesh.loadbalancing import (
    BroadcastLoadBalancer,
    RandomLoadBalancer,
    RoundRobinLoadBalancer,
    resolve_load_balancer,
    single_is_chosen,
)


def test_the_built_in_balancers_are_skipped() -> None:
    for value in ("round-robin", "random", None):
        assert single_is_chosen(resolve_load_balancer(value)), value
    for cls in (RoundRobinLoadBalancer, RandomLoadBalancer, BroadcastLoadBalancer):
        assert single_is_chosen(cls())


def test_a_method_set_on_a_built_in_balancer_object_is_asked() -> None:
    """A built-in balancer whose method was replaced on the object itself (a test double, a
    filter of one's own) chooses otherwise: it is asked, as it was before the shortcut."""
    none_of_them: Any = lambda topic, nodes: []  # noqa: E731
    balancer = RoundRobinLoadBalancer()
    balancer.choose_nodes = none_of_them  # type: ignore[method-assign]
    assert not single_is_chosen(balancer)
    balancer = BroadcastLoadBalancer()
    balancer.choose_node = lambda service, nodes: nodes[-1]  # type: ignore[method-assign]
    assert not single_is_chosen(balancer)


def test_an_object_of_ones_own_is_asked() -> None:
    class Mine:
        def choose_nodes(self, topic: str, nodes: Any) -> Any:
            return nodes

        def choose_node(self, service: str, nodes: Any) -> Any:
            return nodes[0]

    assert not single_is_chosen(Mine())
