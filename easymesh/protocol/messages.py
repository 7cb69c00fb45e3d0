"""Control messages: what nodes and the coordinator tell each other.

Each travels in a CONTROL frame whose name is the operation (``b"register"``)
and whose body is a msgpack map. Control messages are never pickled, so the
coordinator never runs code chosen by a peer. ``decode_control`` checks every
field's type and raises ProtocolError on anything unexpected.

==========  ====================  ============================================
operation   direction             fields
==========  ====================  ============================================
register    node -> coordinator   node (NodeInfo), secret (str, optional),
                                  watch (Watch, optional: absent = the whole mesh)
update      node -> coordinator   node (NodeInfo): new topics/services; watch
bye         node -> coordinator   (none): leaving; drop me now
welcome     coordinator -> node   version, part, parts, nodes (list of NodeInfo),
                                  ack (optional): one part of what the node watches
diff        coordinator -> node   version, upsert (list of NodeInfo), remove (ids),
                                  ack (optional)
ident       node -> node          id, name: who opened this connection
==========  ====================  ============================================

NodeInfo fields: ``id`` (unique per process run), ``name`` (nodes sharing a
name form a load-balancing group), ``hostname``, ``host_key`` (hostname, boot
and network namespace: equal keys can use Unix sockets), ``tcp``
(``"ip:port"``), ``unix`` (socket path; a leading ``@`` means the Linux
abstract namespace), ``topics`` (what it listens to), ``services``, ``pid``,
``publishes`` (topics it has sent on; optional on the wire, so records from
nodes that predate it still parse, as publishing nothing).

``register.secret`` is a random token the node draws once per Node object and sends
in every Register. The coordinator keeps only its hash, and a Register for an id that
is live on another connection is accepted only with the same secret: the genuine node
reconnecting after a half-open link gets its id back, nobody else can take it.

``watch`` says which records a node needs (issue 15: a join storm must not cost every
node every other node's arrival): ``all`` (tools, the bridge), or the records of nodes
that listen to one of ``topics`` (what it sends to or waits for) or provide one of
``services`` (what it calls or waits for). ``seq`` grows with every new interest; the
coordinator answers each watch it takes with ``ack`` = its ``seq`` in the Welcome or in a
Diff (possibly empty) carrying the newly matching records, so the node knows when "no
listener" is the coordinator's answer and not just "not told yet". A coordinator that
predates watches sends no ``ack`` (and the whole mesh); a node that sends no ``watch``
gets the whole mesh. ``remove`` also names records that stopped being of interest.

A topology larger than one control frame travels as a Welcome in ``parts`` parts
(``part`` = 0, 1, ...), sent back to back; the node replaces its topology only when
the last part has arrived (see :meth:`easymesh.protocol.topology.Topology.apply`).
A diff too large for one frame is split into several diffs with the same version.

Every control body is decoded with explicit msgpack limits (string, array and map
lengths; no bin or ext values), so a key holder cannot make a node or the
coordinator allocate more than the body it sent, and every field's type and length
is checked afterwards.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import msgpack

from easymesh.errors import ProtocolError
from easymesh.escape import printable

MAX_CONTROL_BODY = 16 * 1024 * 1024
#: Largest Welcome part or diff the coordinator sends (well under MAX_CONTROL_BODY).
WELCOME_PART_BYTES = 4 * 1024 * 1024
#: Most parts one Welcome may announce.
MAX_WELCOME_PARTS = 4096
#: Longest register secret (characters).
MAX_SECRET = 128
_UNPACK_LIMITS = {
    "max_str_len": 64 * 1024,
    "max_bin_len": 0,
    "max_ext_len": 0,
    "max_array_len": 1024 * 1024,
    "max_map_len": 64,
}


@dataclass(frozen=True)
class NodeInfo:
    id: str
    name: str
    hostname: str = ""
    host_key: str = ""
    tcp: str = ""
    unix: str = ""
    topics: frozenset[str] = field(default_factory=frozenset)
    services: frozenset[str] = field(default_factory=frozenset)
    pid: int = 0
    publishes: frozenset[str] = field(default_factory=frozenset)

    def to_wire(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "name": self.name,
            "hostname": self.hostname,
            "host_key": self.host_key,
            "tcp": self.tcp,
            "unix": self.unix,
            "topics": sorted(self.topics),
            "services": sorted(self.services),
            "pid": self.pid,
            "publishes": sorted(self.publishes),
        }

    @classmethod
    def from_wire(cls, obj: Any) -> NodeInfo:
        if not isinstance(obj, dict):
            raise ProtocolError("node info must be a map")
        try:
            info = cls(
                id=_str(obj["id"], "id"),
                name=_str(obj["name"], "name"),
                hostname=_str(obj.get("hostname", ""), "hostname"),
                host_key=_str(obj.get("host_key", ""), "host_key"),
                tcp=_str(obj.get("tcp", ""), "tcp"),
                unix=_str(obj.get("unix", ""), "unix"),
                topics=frozenset(_str_list(obj.get("topics", []), "topics")),
                services=frozenset(_str_list(obj.get("services", []), "services")),
                pid=_int(obj.get("pid", 0), "pid"),
                publishes=frozenset(_str_list(obj.get("publishes", []), "publishes")),
            )
        except KeyError as exc:
            raise ProtocolError(f"node info lacks {exc.args[0]!r}") from None
        if not info.id or not info.name:
            raise ProtocolError("node id and name must not be empty")
        return info


def _str(v: Any, what: str) -> str:
    if not isinstance(v, str) or len(v) > 4096:
        raise ProtocolError(f"{what} must be a string")
    return v


def _int(v: Any, what: str) -> int:
    if not isinstance(v, int) or isinstance(v, bool):
        raise ProtocolError(f"{what} must be an integer")
    return v


def _str_list(v: Any, what: str) -> list[str]:
    if not isinstance(v, (list, tuple)):
        raise ProtocolError(f"{what} must be a list")
    return [_str(x, what) for x in v]


def record_bytes(node: NodeInfo) -> bytes:
    """``node`` encoded as it travels inside a Welcome or Diff (its size counts against
    the coordinator's limits)."""
    return msgpack.packb(node.to_wire(), use_bin_type=True)


@dataclass(frozen=True)
class Watch:
    """Which records a node wants (see the module docstring)."""

    all: bool = True
    topics: frozenset[str] = field(default_factory=frozenset)
    services: frozenset[str] = field(default_factory=frozenset)
    seq: int = 0

    def sees(self, node: NodeInfo) -> bool:
        """Whether a node with this watch needs ``node``'s record."""
        return (
            self.all
            or not self.topics.isdisjoint(node.topics)
            or not self.services.isdisjoint(node.services)
        )

    def to_wire(self) -> dict[str, Any]:
        return {
            "all": self.all,
            "topics": sorted(self.topics),
            "services": sorted(self.services),
            "seq": self.seq,
        }

    @classmethod
    def from_wire(cls, obj: Any) -> Watch:
        if not isinstance(obj, dict):
            raise ProtocolError("watch must be a map")
        everything = obj.get("all", False)
        if not isinstance(everything, bool):
            raise ProtocolError("watch.all must be a boolean")
        return cls(
            everything,
            frozenset(_str_list(obj.get("topics", []), "watch.topics")),
            frozenset(_str_list(obj.get("services", []), "watch.services")),
            _int(obj.get("seq", 0), "watch.seq"),
        )


#: What a node that sends no watch gets: the whole mesh.
WATCH_ALL = Watch()


@dataclass(frozen=True)
class Register:
    node: NodeInfo
    secret: str = ""
    watch: Watch | None = None  # None: the whole mesh (nodes that predate watches)
    op = b"register"

    def to_wire(self) -> dict[str, Any]:
        out: dict[str, Any] = {"node": self.node.to_wire()}
        if self.secret:
            out["secret"] = self.secret
        if self.watch is not None:
            out["watch"] = self.watch.to_wire()
        return out

    @classmethod
    def from_wire(cls, obj: dict[str, Any]) -> Register:
        secret = _str(obj.get("secret", ""), "secret")
        if len(secret) > MAX_SECRET:
            raise ProtocolError(f"secret longer than {MAX_SECRET} characters")
        watch = obj.get("watch")
        return cls(
            NodeInfo.from_wire(obj.get("node")),
            secret,
            None if watch is None else Watch.from_wire(watch),
        )


@dataclass(frozen=True)
class Update(Register):
    """A registered node's new record; a secret, if sent, is ignored."""

    op = b"update"


@dataclass(frozen=True)
class Bye:
    op = b"bye"

    def to_wire(self) -> dict[str, Any]:
        return {}

    @classmethod
    def from_wire(cls, obj: dict[str, Any]) -> Bye:
        return cls()


@dataclass(frozen=True)
class Welcome:
    """The topology, or part ``part`` of ``parts`` of it (all parts carry one version)."""

    version: int
    nodes: tuple[NodeInfo, ...]
    part: int = 0
    parts: int = 1
    ack: int | None = None  # the watch seq this answers (None: a coordinator without watches)
    op = b"welcome"

    def to_wire(self) -> dict[str, Any]:
        out = {
            "version": self.version,
            "part": self.part,
            "parts": self.parts,
            "nodes": [n.to_wire() for n in self.nodes],
        }
        if self.ack is not None:
            out["ack"] = self.ack
        return out

    @classmethod
    def from_wire(cls, obj: dict[str, Any]) -> Welcome:
        nodes = obj.get("nodes", [])
        if not isinstance(nodes, list):
            raise ProtocolError("welcome.nodes must be a list")
        part = _int(obj.get("part", 0), "part")
        parts = _int(obj.get("parts", 1), "parts")
        if not 0 <= part < parts <= MAX_WELCOME_PARTS:
            raise ProtocolError(f"welcome part {part} of {parts} is out of range")
        return cls(
            _int(obj.get("version", 0), "version"),
            tuple(NodeInfo.from_wire(n) for n in nodes),
            part,
            parts,
            _ack(obj),
        )


def _ack(obj: dict[str, Any]) -> int | None:
    ack = obj.get("ack")
    return None if ack is None else _int(ack, "ack")


def welcome_part_bodies(
    version: int, records: list[bytes], budget: int = WELCOME_PART_BYTES, ack: int | None = None
) -> list[list[bytes]]:
    """The bodies of the Welcome parts carrying ``records`` (each from :func:`record_bytes`),
    as lists of pieces to write one after the other: a msgpack prefix, then the records
    themselves (shared, not copied). Each body is at most ``budget`` bytes plus one
    record; at least one part is returned (an empty topology is one empty part)."""
    groups = _groups(records, budget)
    if len(groups) > MAX_WELCOME_PARTS:
        raise ProtocolError(f"the topology needs more than {MAX_WELCOME_PARTS} welcome parts")
    bodies = []
    for i, group in enumerate(groups):
        packer = msgpack.Packer(use_bin_type=True)
        fields: list[tuple[str, int]] = [("version", version), ("part", i), ("parts", len(groups))]
        if ack is not None:
            fields.append(("ack", ack))
        prefix = packer.pack_map_header(len(fields) + 1)
        for key, value in fields:
            prefix += packer.pack(key) + packer.pack(value)
        prefix += packer.pack("nodes") + packer.pack_array_header(len(group))
        bodies.append([prefix, *group])
    return bodies


def _groups(records: list[bytes], budget: int) -> list[list[bytes]]:
    """``records`` in consecutive groups of about ``budget`` bytes (at least one group)."""
    groups: list[list[bytes]] = [[]]
    size = 0
    for rec in records:
        if groups[-1] and size + len(rec) > budget:
            groups.append([])
            size = 0
        groups[-1].append(rec)
        size += len(rec)
    return groups


def diff_bodies(
    version: int,
    records: list[bytes],
    remove: list[str],
    ack: int | None,
    budget: int = WELCOME_PART_BYTES,
) -> list[list[bytes]]:
    """The bodies of the diffs (one, or several of one version when ``records`` pass
    ``budget`` bytes) that upsert ``records`` (each from :func:`record_bytes`, shared, not
    copied) and remove ``remove``; the last one carries ``remove`` and ``ack``."""
    groups = _groups(records, budget)
    bodies = []
    for i, group in enumerate(groups):
        last = i == len(groups) - 1
        packer = msgpack.Packer(use_bin_type=True)
        fields = 3 + (last and ack is not None)
        prefix = packer.pack_map_header(fields) + packer.pack("version") + packer.pack(version)
        prefix += packer.pack("remove") + packer.pack(remove if last else [])
        if last and ack is not None:
            prefix += packer.pack("ack") + packer.pack(ack)
        prefix += packer.pack("upsert") + packer.pack_array_header(len(group))
        bodies.append([prefix, *group])
    return bodies


@dataclass(frozen=True)
class Diff:
    version: int
    upsert: tuple[NodeInfo, ...] = ()
    remove: tuple[str, ...] = ()
    ack: int | None = None  # the watch seq this answers, if it answers one
    op = b"diff"

    def to_wire(self) -> dict[str, Any]:
        out = {
            "version": self.version,
            "upsert": [n.to_wire() for n in self.upsert],
            "remove": list(self.remove),
        }
        if self.ack is not None:
            out["ack"] = self.ack
        return out

    @classmethod
    def from_wire(cls, obj: dict[str, Any]) -> Diff:
        ups = obj.get("upsert", [])
        if not isinstance(ups, list):
            raise ProtocolError("diff.upsert must be a list")
        return cls(
            _int(obj.get("version", 0), "version"),
            tuple(NodeInfo.from_wire(n) for n in ups),
            tuple(_str_list(obj.get("remove", []), "remove")),
            _ack(obj),
        )


@dataclass(frozen=True)
class Ident:
    id: str
    name: str
    op = b"ident"

    def to_wire(self) -> dict[str, Any]:
        return {"id": self.id, "name": self.name}

    @classmethod
    def from_wire(cls, obj: dict[str, Any]) -> Ident:
        return cls(_str(obj.get("id"), "id"), _str(obj.get("name"), "name"))


ControlMessage = Register | Update | Bye | Welcome | Diff | Ident
_BY_OP: dict[bytes, Any] = {c.op: c for c in (Register, Update, Bye, Welcome, Diff, Ident)}


def _container_budget(limit: int) -> Any:
    """A msgpack list/object hook that lets ``limit`` containers through, then raises."""
    seen = [0]

    def hook(value: Any) -> Any:
        seen[0] += 1
        if seen[0] > limit:
            raise ValueError(f"more than {limit} arrays and maps in one control message")
        return value

    return hook


def encode_control(msg: Any) -> tuple[bytes, bytes]:
    """``(name, body)`` of the CONTROL frame carrying ``msg``."""
    return msg.op, msgpack.packb(msg.to_wire(), use_bin_type=True)


def decode_control(
    name: bytes,
    body: bytes | bytearray,
    *,
    max_containers: int | None = None,
    max_array_len: int | None = None,
) -> Any:
    """The control message in a CONTROL frame; raises ProtocolError on anything malformed.

    Length limits alone do not bound a decode: one byte of msgpack (an empty array or
    map) becomes a Python object of about 60 bytes, so 16 MB of them cost about a GB and
    seconds of CPU on the I/O thread that decodes them. Whoever receives messages of a
    known, small shape passes a budget: at most ``max_containers`` arrays and maps in
    all, and ``max_array_len`` entries per array (the coordinator for what nodes send
    it, a node for what peers send it); decoding stops as soon as it is exceeded.
    """
    cls = _BY_OP.get(bytes(name))
    if cls is None:
        raise ProtocolError(f"unknown control operation {bytes(name)[:40]!r}")
    if len(body) > MAX_CONTROL_BODY:
        raise ProtocolError("control message too large")
    limits: dict[str, Any] = dict(_UNPACK_LIMITS)
    if max_array_len is not None:
        limits["max_array_len"] = min(max_array_len, limits["max_array_len"])
    if max_containers is not None:
        limits["list_hook"] = limits["object_hook"] = _container_budget(max_containers)
    try:
        obj = msgpack.unpackb(body, raw=False, strict_map_key=True, **limits)
    except Exception as exc:  # msgpack raises several types on garbage
        raise ProtocolError(f"malformed control message: {printable(exc)}") from None
    if not isinstance(obj, dict):
        raise ProtocolError("control message must be a map")
    return cls.from_wire(obj)
