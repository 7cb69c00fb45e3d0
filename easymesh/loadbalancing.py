"""Choosing receivers among same-named nodes.

Nodes that share a name form a *group* (start three copies of ``worker`` and
they share the work). For each message on a topic, the balancer picks which
listening nodes get it; for each request, which provider answers.

The protocol a user balancer implements (pass the object as
``Node(load_balancer=...)``)::

    class MyBalancer:
        def choose_nodes(self, topic: str, nodes: Sequence[NodeInfo]) -> Sequence[NodeInfo]:
            '''Which of ``nodes`` (every node listening to ``topic``, sorted by
            name then id, never empty) receive this message.'''

        def choose_node(self, service: str, nodes: Sequence[NodeInfo]) -> NodeInfo:
            '''Which of ``nodes`` (every provider of ``service``, never empty)
            answers this request.'''

Both are called from the thread that sends, possibly several at once, and
must be quick: they run once per message. ``NodeInfo`` has ``id``, ``name``,
``hostname`` and ``pid`` among its fields.

With the built-in ones, a single listener or provider is always the one chosen, so the
sender does not call them for it (:func:`single_is_chosen`; one Python call less per message
in the common case). A balancer of your own is always asked, a subclass that overrides a
method too, and a built-in one whose method was replaced on the object before the node was
made (one replaced later is not seen: pass your own balancer instead).

Built in: ``'round-robin'`` (default: one member of each group, taking turns),
``'random'`` (one member of each group, at random) and ``None`` (every
listening node gets every message; requests still go round-robin).
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from typing import Any, Protocol

from easymesh.protocol.messages import NodeInfo


class LoadBalancer(Protocol):
    def choose_nodes(self, topic: str, nodes: Sequence[NodeInfo]) -> Sequence[NodeInfo]: ...

    def choose_node(self, service: str, nodes: Sequence[NodeInfo]) -> NodeInfo: ...


class _Grouping:
    """Caches the grouping of a node tuple by name (tuples are stable per topology version)."""

    def __init__(self) -> None:
        self._cache: dict[str, tuple[Sequence[NodeInfo], list[tuple[NodeInfo, ...]]]] = {}

    def groups(self, key: str, nodes: Sequence[NodeInfo]) -> list[tuple[NodeInfo, ...]]:
        hit = self._cache.get(key)
        if hit is not None and hit[0] is nodes:
            return hit[1]
        by_name: dict[str, list[NodeInfo]] = {}
        for n in nodes:
            by_name.setdefault(n.name, []).append(n)
        groups = [tuple(v) for v in by_name.values()]
        self._cache[key] = (nodes, groups)
        return groups


class RoundRobinLoadBalancer:
    """One member of each same-named group per message, taking turns."""

    def __init__(self) -> None:
        self._grouping = _Grouping()
        self._turn: dict[tuple[str, str], int] = {}

    def _next(self, key: tuple[str, str], size: int) -> int:
        n = self._turn.get(key, 0)
        self._turn[key] = n + 1
        return n % size

    def choose_nodes(self, topic: str, nodes: Sequence[NodeInfo]) -> Sequence[NodeInfo]:
        if len(nodes) == 1:
            return nodes
        out = []
        for group in self._grouping.groups(topic, nodes):
            out.append(
                group[0]
                if len(group) == 1
                else group[self._next((topic, group[0].name), len(group))]
            )
        return out

    def choose_node(self, service: str, nodes: Sequence[NodeInfo]) -> NodeInfo:
        if len(nodes) == 1:
            return nodes[0]
        return nodes[self._next((service, ""), len(nodes))]


class RandomLoadBalancer(RoundRobinLoadBalancer):
    """One member of each same-named group per message, chosen at random."""

    def _next(self, key: tuple[str, str], size: int) -> int:
        return random.randrange(size)


class BroadcastLoadBalancer(RoundRobinLoadBalancer):
    """Every listening node gets every message (``load_balancer=None``)."""

    def choose_nodes(self, topic: str, nodes: Sequence[NodeInfo]) -> Sequence[NodeInfo]:
        return nodes


def single_is_chosen(balancer: Any) -> bool:
    """Whether ``balancer`` always chooses the node of a one-node list (the built-in methods,
    not replaced on the object itself: senders skip the call then)."""
    cls = type(balancer)
    own = getattr(balancer, "__dict__", {})
    return (
        "choose_nodes" not in own
        and "choose_node" not in own
        and getattr(cls, "choose_nodes", None) in _BUILTIN_CHOOSE_NODES
        and getattr(cls, "choose_node", None) is RoundRobinLoadBalancer.choose_node
    )


_BUILTIN_CHOOSE_NODES = (
    RoundRobinLoadBalancer.choose_nodes,
    BroadcastLoadBalancer.choose_nodes,
)


def resolve_load_balancer(value: Any) -> Any:
    """A balancer object from ``'round-robin'``, ``'random'``, None, or an object.

    Raises ValueError for an unknown name, TypeError for an object lacking the methods.
    """
    if value is None:
        return BroadcastLoadBalancer()
    if isinstance(value, str):
        if value in ("round-robin", "round_robin", "roundrobin"):
            return RoundRobinLoadBalancer()
        if value == "random":
            return RandomLoadBalancer()
        raise ValueError(f"unknown load balancer {value!r}; use 'round-robin', 'random' or None")
    if not (
        callable(getattr(value, "choose_nodes", None))
        and callable(getattr(value, "choose_node", None))
    ):
        raise TypeError(
            "a load balancer needs choose_nodes(topic, nodes) and choose_node(service, nodes)"
        )
    return value
