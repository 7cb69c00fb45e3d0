"""The mesh topology and its diff/merge rules (sans-IO).

The coordinator owns the authoritative :class:`Topology`. Every change it makes
(a node registers, updates its topics/services, leaves or is dropped) yields a
:class:`~easymesh.protocol.messages.Diff` that it broadcasts; a newly connected
node gets a full :class:`~easymesh.protocol.messages.Welcome`. Nodes apply both
to their own copy, so every node knows who listens to what and where.

Rules:

* a node is identified by its ``id``; ``upsert`` replaces the whole record;
* versions grow by one per change; a node ignores nothing, because diffs travel
  on one ordered connection, and a Welcome replaces everything it had;
* a node's own record is authoritative locally (:meth:`set_local`): what the
  coordinator says about the local node never overwrites it;
* queries (:meth:`listeners`, :meth:`publishers`, :meth:`providers`) are cached
  per version.

Threads: on a node, one thread at a time changes the topology (the caller
holds a lock) while any thread may query it. Changes build a new ``nodes``
dict and then replace the cache (copy-on-write), and queries read the cache
before ``nodes``, so a query never sees a dict change under it and never
stores a stale answer in a fresh cache.
"""

from __future__ import annotations

from collections.abc import Iterable

from easymesh.protocol.messages import Diff, NodeInfo, Welcome


class Topology:
    """Who is in the mesh, and what each node listens to and provides."""

    def __init__(self) -> None:
        self.version = 0
        self.nodes: dict[str, NodeInfo] = {}
        self._listeners: dict[str, tuple[NodeInfo, ...]] = {}
        self._providers: dict[str, tuple[NodeInfo, ...]] = {}
        self._publishers: dict[str, tuple[NodeInfo, ...]] = {}
        self.local: NodeInfo | None = None

    # -- changes (coordinator side) ---------------------------------------------------------

    def upsert(self, node: NodeInfo) -> Diff | None:
        """Add or replace ``node``; the diff to broadcast, or None if nothing changed."""
        if self.nodes.get(node.id) == node:
            return None
        self.nodes[node.id] = node
        return self._changed(Diff(self.version + 1, upsert=(node,)))

    def remove(self, node_id: str) -> Diff | None:
        """Remove a node; the diff to broadcast, or None if it was not there."""
        if self.nodes.pop(node_id, None) is None:
            return None
        return self._changed(Diff(self.version + 1, remove=(node_id,)))

    def welcome(self) -> Welcome:
        return Welcome(self.version, tuple(self.nodes.values()))

    # -- changes (node side) ----------------------------------------------------------------

    def apply(self, msg: Welcome | Diff) -> None:
        """Apply a Welcome (replace all) or a Diff from the coordinator."""
        if isinstance(msg, Welcome):
            nodes = {n.id: n for n in msg.nodes}
        else:
            nodes = dict(self.nodes)
            for node_id in msg.remove:
                nodes.pop(node_id, None)
            for node in msg.upsert:
                nodes[node.id] = node
        if self.local is not None:
            nodes[self.local.id] = self.local
        self.nodes = nodes
        self.version = msg.version
        self._clear_cache()

    def set_local(self, node: NodeInfo) -> None:
        """Record the local node's own record (authoritative for itself)."""
        self.local = node
        if self.nodes.get(node.id) != node:
            nodes = dict(self.nodes)
            nodes[node.id] = node
            self.nodes = nodes
            self._clear_cache()

    # -- queries ----------------------------------------------------------------------------

    def listeners(self, topic: str) -> tuple[NodeInfo, ...]:
        """Nodes that listen to ``topic``, in a stable order (name, id)."""
        cache = self._listeners
        try:
            return cache[topic]
        except KeyError:
            found = _sorted(n for n in self.nodes.values() if topic in n.topics)
            cache[topic] = found
            return found

    def publishers(self, topic: str) -> tuple[NodeInfo, ...]:
        """Nodes that have sent on ``topic``, in a stable order (name, id)."""
        cache = self._publishers
        try:
            return cache[topic]
        except KeyError:
            found = _sorted(n for n in self.nodes.values() if topic in n.publishes)
            cache[topic] = found
            return found

    def providers(self, service: str) -> tuple[NodeInfo, ...]:
        """Nodes that provide ``service``, in a stable order (name, id)."""
        cache = self._providers
        try:
            return cache[service]
        except KeyError:
            found = _sorted(n for n in self.nodes.values() if service in n.services)
            cache[service] = found
            return found

    def topics(self) -> dict[str, list[NodeInfo]]:
        out: dict[str, list[NodeInfo]] = {}
        for n in self.nodes.values():
            for t in n.topics:
                out.setdefault(t, []).append(n)
        return out

    def services(self) -> dict[str, list[NodeInfo]]:
        out: dict[str, list[NodeInfo]] = {}
        for n in self.nodes.values():
            for s in n.services:
                out.setdefault(s, []).append(n)
        return out

    def __len__(self) -> int:
        return len(self.nodes)

    def __contains__(self, node_id: object) -> bool:
        return node_id in self.nodes

    # -- internals --------------------------------------------------------------------------

    def _changed(self, diff: Diff) -> Diff:
        self.version = diff.version
        self._clear_cache()
        return diff

    def _clear_cache(self) -> None:
        self._listeners = {}
        self._providers = {}
        self._publishers = {}


def _sorted(nodes: Iterable[NodeInfo]) -> tuple[NodeInfo, ...]:
    return tuple(sorted(nodes, key=lambda n: (n.name, n.id)))


def merge_diffs(diffs: list[Diff]) -> Diff | None:
    """Fold consecutive diffs into one (last write wins per node id)."""
    if not diffs:
        return None
    state: dict[str, NodeInfo | None] = {}
    for d in diffs:
        for nid in d.remove:
            state[nid] = None
        for n in d.upsert:
            state[n.id] = n
    ups = tuple(n for n in state.values() if n is not None)
    rem = tuple(nid for nid, n in state.items() if n is None)
    return Diff(diffs[-1].version, upsert=ups, remove=rem)
