"""Who needs which records: the coordinator's audience of each topology change (sans-IO).

Issue 15: when every change went to every node, a storm of N joins cost every node N
diffs and the coordinator N^2 sends, and handshakes starved behind them. Now each node
says what it needs (a :class:`~easymesh.protocol.messages.Watch`: the topics it sends
to or waits for, the services it calls or waits for, or ``all``), and a record goes only
to the nodes whose watch sees it. A node that sends nothing and calls nothing costs the
mesh its own registration and nothing more; a change costs one send per node that needs
it.

:class:`Audience` keeps, for every watcher (a registered node), its watch and the ids
it has been told about (``known``), plus the indexes that make a change cost what it
changes: topic -> listening ids, service -> providing ids (to answer a new interest),
topic/service -> watchers (to find who needs a changed record), and id -> watchers that
know it (to tell them it left or stopped being of interest).

:meth:`Audience.deltas` turns a set of changed ids (collected during one coalescing
window) and the watchers whose watch changed into per-watcher upserts, removes and
acks. Watchers are node ids; a node never needs its own record from the coordinator.
"""

from __future__ import annotations

from collections.abc import Iterable

from easymesh.protocol.messages import NodeInfo, Watch

__all__ = ["Audience", "Delta"]

#: One watcher's share of a change: ids to upsert, ids to remove, the seq to ack (or None).
Delta = tuple[list[str], list[str], "int | None"]


class Audience:
    """The coordinator's record of who watches what and who knows which record."""

    def __init__(self) -> None:
        self.records: dict[str, NodeInfo] = {}
        self.watches: dict[str, Watch] = {}
        self.known: dict[str, set[str]] = {}  # watcher -> ids it was told about
        self._known_by: dict[str, set[str]] = {}  # id -> watchers that know it
        self._all: set[str] = set()  # watchers of the whole mesh
        self._topic_watchers: dict[str, set[str]] = {}
        self._service_watchers: dict[str, set[str]] = {}
        self._listening: dict[str, set[str]] = {}  # topic -> ids that listen to it
        self._providing: dict[str, set[str]] = {}  # service -> ids that provide it
        self._dirty: set[str] = set()  # watchers whose watch changed since the last deltas

    def by_process(self, ids: list[str]) -> list[str]:
        """``ids`` ordered so that the nodes of one process come one after the other.

        The coordinator writes a diff to each watcher in this order: the first write to a
        process wakes its I/O thread (shared by its nodes), and the writes to its other
        nodes land while it is awake and are read in the same turn. In the order of joins
        (processes interleaved) every write woke a process again: a change for 1,000
        nodes in 10 processes took the coordinator 410 ms to write, at 0.05 s of CPU."""
        if len(ids) < 2:
            return ids
        records = self.records

        def process(node_id: str) -> tuple[str, int]:
            rec = records.get(node_id)
            return ("", 0) if rec is None else (rec.host_key, rec.pid or 0)

        return sorted(ids, key=process)

    # -- records ---------------------------------------------------------------------------

    def put(self, node: NodeInfo) -> None:
        """A record was added or replaced."""
        old = self.records.get(node.id)
        if old is not None:
            _unindex(self._listening, old.topics, node.id)
            _unindex(self._providing, old.services, node.id)
        self.records[node.id] = node
        _index(self._listening, node.topics, node.id)
        _index(self._providing, node.services, node.id)

    def drop(self, node_id: str) -> None:
        """A node left: its record and its watch go."""
        old = self.records.pop(node_id, None)
        if old is not None:
            _unindex(self._listening, old.topics, node_id)
            _unindex(self._providing, old.services, node_id)
        self._unwatch(node_id)
        for rid in self.known.pop(node_id, ()):
            _discard(self._known_by, rid, node_id)
        # _known_by[node_id] stays until deltas() has told those watchers it left.
        self._dirty.discard(node_id)

    # -- watches ---------------------------------------------------------------------------

    def watch(self, watcher: str, watch: Watch, *, answered: bool = False) -> None:
        """Set what ``watcher`` needs. Unless ``answered`` (a Welcome carries the answer),
        the next :meth:`deltas` tells it the difference and acks the watch."""
        old = self.watches.get(watcher)
        if old == watch:
            return
        self._unwatch(watcher)
        self.watches[watcher] = watch
        if watch.all:
            self._all.add(watcher)
        _index(self._topic_watchers, watch.topics, watcher)
        _index(self._service_watchers, watch.services, watcher)
        if not answered:
            self._dirty.add(watcher)

    def _unwatch(self, watcher: str) -> None:
        old = self.watches.pop(watcher, None)
        if old is None:
            return
        self._all.discard(watcher)
        _unindex(self._topic_watchers, old.topics, watcher)
        _unindex(self._service_watchers, old.services, watcher)

    def visible(self, watcher: str) -> set[str]:
        """The ids ``watcher`` needs now (never itself)."""
        watch = self.watches.get(watcher)
        if watch is None:
            return set()
        if watch.all:
            ids = set(self.records)
        else:
            ids = set()
            for topic in watch.topics:
                ids.update(self._listening.get(topic, ()))
            for service in watch.services:
                ids.update(self._providing.get(service, ()))
        ids.discard(watcher)
        return ids

    def welcome(self, watcher: str) -> list[str]:
        """The ids to put in ``watcher``'s Welcome; from now on it knows exactly these."""
        ids = self.visible(watcher)
        self._set_known(watcher, ids)
        self._dirty.discard(watcher)
        return sorted(ids)

    # -- changes ---------------------------------------------------------------------------

    def deltas(self, changed: Iterable[str]) -> dict[str, Delta]:
        """What each watcher must be told after the records of ``changed`` ids changed (or
        went) and the watches marked since the last call changed: watcher -> (ids to
        upsert, ids to remove, seq to ack or None). ``known`` follows."""
        changed = set(changed)
        out: dict[str, Delta] = {}
        dirty, self._dirty = self._dirty, set()
        for wid in dirty:
            if wid in self.watches:
                out[wid] = self._rewatch(wid, changed)
        for rid in changed:
            for wid in self._audience_of(rid):
                if wid == rid or wid in dirty:
                    continue
                self._tell(wid, rid, out)
        return out

    def _rewatch(self, wid: str, changed: set[str]) -> Delta:
        """A watcher's watch changed: the difference between what it knows and needs."""
        want = self.visible(wid)
        known = self.known.get(wid, set())
        ups = sorted(want - known) + sorted(want & known & changed)
        rem = sorted(known - want)
        self._set_known(wid, want)
        return ups, rem, self.watches[wid].seq

    def _audience_of(self, rid: str) -> set[str]:
        """Every watcher that may need to hear about a change of ``rid``."""
        who = set(self._all)
        who.update(self._known_by.get(rid, ()))
        node = self.records.get(rid)
        if node is not None:
            for topic in node.topics:
                who.update(self._topic_watchers.get(topic, ()))
            for service in node.services:
                who.update(self._service_watchers.get(service, ()))
        return who

    def _tell(self, wid: str, rid: str, out: dict[str, Delta]) -> None:
        node = self.records.get(rid)
        known = self.known.setdefault(wid, set())
        if node is not None and self.watches[wid].sees(node):
            out.setdefault(wid, ([], [], None))[0].append(rid)
            known.add(rid)
            self._known_by.setdefault(rid, set()).add(wid)
        elif rid in known:
            out.setdefault(wid, ([], [], None))[1].append(rid)
            known.discard(rid)
            _discard(self._known_by, rid, wid)

    def _set_known(self, wid: str, ids: set[str]) -> None:
        old = self.known.get(wid, set())
        for rid in old - ids:
            _discard(self._known_by, rid, wid)
        for rid in ids - old:
            self._known_by.setdefault(rid, set()).add(wid)
        self.known[wid] = ids


def _index(index: dict[str, set[str]], keys: Iterable[str], value: str) -> None:
    for key in keys:
        index.setdefault(key, set()).add(value)


def _unindex(index: dict[str, set[str]], keys: Iterable[str], value: str) -> None:
    for key in keys:
        _discard(index, key, value)


def _discard(index: dict[str, set[str]], key: str, value: str) -> None:
    values = index.get(key)
    if values is not None:
        values.discard(value)
        if not values:
            del index[key]
