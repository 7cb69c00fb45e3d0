"""The mesh topology and its diff/merge rules (sans-IO).

The coordinator owns the authoritative :class:`Topology`. A node gets the part of it
that its watch sees (:mod:`easymesh.protocol.interest`): a
:class:`~easymesh.protocol.messages.Welcome` when it connects, then a
:class:`~easymesh.protocol.messages.Diff` for every change it needs to know of. Nodes
apply both to their own copy, so every node knows where the listeners and providers it
needs are.

Rules:

* a node is identified by its ``id``; ``upsert`` replaces the whole record;
* versions grow by one per change; a node ignores nothing, because diffs travel
  on one ordered connection, and a Welcome replaces everything it had;
* a node's own record is authoritative locally (:meth:`set_local`): what the
  coordinator says about the local node never overwrites it;
* queries (:meth:`listeners`, :meth:`publishers`, :meth:`providers`) are cached
  per version;
* a Welcome may come in parts (``part`` 0 .. ``parts`` - 1, one version, back to back
  on the coordinator link): :meth:`apply` collects them and replaces the topology
  only with the last one, so a node never works from half a mesh. Part 0 starts a
  new collection (a reconnect mid-Welcome leaves nothing stale behind); a part out
  of order, of another version, or a Diff arriving between parts is a ProtocolError;
* on the coordinator, the topology keeps each record's encoding
  (:meth:`record`) and the total size (:attr:`total_bytes`), so limits are checked
  without re-encoding and a Welcome shares the encoded records instead of copying them.

Threads: on a node, one thread at a time changes the topology (the caller
holds a lock) while any thread may query it. Changes build a new ``nodes``
dict and then replace the cache (copy-on-write), and queries read the cache
before ``nodes``, so a query never sees a dict change under it and never
stores a stale answer in a fresh cache.
"""

from __future__ import annotations

from collections.abc import Iterable

from easymesh.errors import ProtocolError
from easymesh.protocol.messages import (
    WELCOME_PART_BYTES,
    Diff,
    NodeInfo,
    Welcome,
    record_bytes,
    welcome_part_bodies,
)


class Topology:
    """Who is in the mesh, and what each node listens to and provides."""

    def __init__(self) -> None:
        self.version = 0
        self.nodes: dict[str, NodeInfo] = {}
        self._listeners: dict[str, tuple[NodeInfo, ...]] = {}
        self._providers: dict[str, tuple[NodeInfo, ...]] = {}
        self._publishers: dict[str, tuple[NodeInfo, ...]] = {}
        self.local: NodeInfo | None = None
        self._encoded: dict[str, bytes] = {}  # coordinator: id -> record_bytes(node)
        self.total_bytes = 0  # coordinator: sum of the encoded records
        self._parts: list[Welcome] = []  # node: Welcome parts received so far

    # -- changes (coordinator side) ---------------------------------------------------------

    def upsert(self, node: NodeInfo, encoded: bytes | None = None) -> Diff | None:
        """Add or replace ``node`` (``encoded``: its record_bytes, if already known);
        the diff to broadcast, or None if nothing changed."""
        if self.nodes.get(node.id) == node:
            return None
        rec = encoded if encoded is not None else record_bytes(node)
        self.total_bytes += len(rec) - len(self._encoded.get(node.id, b""))
        self._encoded[node.id] = rec
        self.nodes[node.id] = node
        return self._changed(Diff(self.version + 1, upsert=(node,)))

    def remove(self, node_id: str) -> Diff | None:
        """Remove a node; the diff to broadcast, or None if it was not there."""
        if self.nodes.pop(node_id, None) is None:
            return None
        self.total_bytes -= len(self._encoded.pop(node_id, b""))
        return self._changed(Diff(self.version + 1, remove=(node_id,)))

    def record(self, node_id: str) -> bytes:
        """The encoded record of a node in the topology (coordinator side)."""
        rec = self._encoded.get(node_id)
        if rec is None:
            rec = self._encoded[node_id] = record_bytes(self.nodes[node_id])
        return rec

    def welcome(self) -> Welcome:
        """The whole topology as one Welcome (small meshes and tests)."""
        return Welcome(self.version, tuple(self.nodes.values()))

    def welcome_bodies(self, budget: int = WELCOME_PART_BYTES) -> list[list[bytes]]:
        """The bodies of the Welcome parts for the whole topology (see
        :func:`~easymesh.protocol.messages.welcome_part_bodies`)."""
        return welcome_part_bodies(self.version, [self.record(i) for i in self.nodes], budget)

    # -- changes (node side) ----------------------------------------------------------------

    def apply(self, msg: Welcome | Diff) -> bool:
        """Apply a Welcome (replace all) or a Diff from the coordinator. Returns False
        when ``msg`` is a Welcome part that is not the last (nothing applied yet).
        Raises ProtocolError for parts out of order or a Diff between parts."""
        if isinstance(msg, Welcome):
            welcome = self._collect(msg)
            if welcome is None:
                return False
            nodes = {n.id: n for part in welcome for n in part.nodes}
        else:
            if self._parts:
                self._parts = []
                raise ProtocolError("a diff arrived in the middle of a welcome")
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
        return True

    def _collect(self, part: Welcome) -> list[Welcome] | None:
        """Add one Welcome part; all parts once the last one is in, else None."""
        if part.part == 0:
            self._parts = []
        elif (
            not self._parts
            or part.part != len(self._parts)
            or part.parts != self._parts[0].parts
            or part.version != self._parts[0].version
        ):
            self._parts = []
            raise ProtocolError(f"welcome part {part.part} of {part.parts} out of order")
        if part.part + 1 < part.parts:
            self._parts.append(part)
            return None
        parts, self._parts = self._parts + [part], []
        return parts

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


def split_diff(diff: Diff, sizes: dict[str, int], budget: int = WELCOME_PART_BYTES) -> list[Diff]:
    """``diff`` as one or more diffs (same version) of at most about ``budget`` bytes of
    records each (``sizes``: encoded size by node id). Applied in order they have the
    effect of ``diff``: its upserts and removes name different ids."""
    out: list[Diff] = []
    group: list[NodeInfo] = []
    size = 0
    for node in diff.upsert:
        n = sizes.get(node.id, 0)
        if group and size + n > budget:
            out.append(Diff(diff.version, upsert=tuple(group)))
            group, size = [], 0
        group.append(node)
        size += n
    out.append(Diff(diff.version, upsert=tuple(group), remove=diff.remove))
    return out


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
