"""Control messages: what nodes and the coordinator tell each other.

Each travels in a CONTROL frame whose name is the operation (``b"register"``)
and whose body is a msgpack map. Control messages are never pickled, so the
coordinator never runs code chosen by a peer. ``decode_control`` checks every
field's type and raises ProtocolError on anything unexpected.

==========  ====================  ============================================
operation   direction             fields
==========  ====================  ============================================
register    node -> coordinator   node (NodeInfo)
update      node -> coordinator   node (NodeInfo): new topics/services
bye         node -> coordinator   (none): leaving; drop me now
welcome     coordinator -> node   version, nodes (list of NodeInfo): full topology
diff        coordinator -> node   version, upsert (list of NodeInfo), remove (ids)
ident       node -> node          id, name: who opened this connection
==========  ====================  ============================================

NodeInfo fields: ``id`` (unique per process run), ``name`` (nodes sharing a
name form a load-balancing group), ``hostname``, ``host_key`` (hostname, boot
and network namespace: equal keys can use Unix sockets), ``tcp``
(``"ip:port"``), ``unix`` (socket path; a leading ``@`` means the Linux
abstract namespace), ``topics`` (what it listens to), ``services``, ``pid``,
``publishes`` (topics it has sent on; optional on the wire, so records from
nodes that predate it still parse, as publishing nothing).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import msgpack

from easymesh.errors import ProtocolError

MAX_CONTROL_BODY = 16 * 1024 * 1024


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


@dataclass(frozen=True)
class Register:
    node: NodeInfo
    op = b"register"

    def to_wire(self) -> dict[str, Any]:
        return {"node": self.node.to_wire()}

    @classmethod
    def from_wire(cls, obj: dict[str, Any]) -> Register:
        return cls(NodeInfo.from_wire(obj.get("node")))


@dataclass(frozen=True)
class Update(Register):
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
    version: int
    nodes: tuple[NodeInfo, ...]
    op = b"welcome"

    def to_wire(self) -> dict[str, Any]:
        return {"version": self.version, "nodes": [n.to_wire() for n in self.nodes]}

    @classmethod
    def from_wire(cls, obj: dict[str, Any]) -> Welcome:
        nodes = obj.get("nodes", [])
        if not isinstance(nodes, list):
            raise ProtocolError("welcome.nodes must be a list")
        return cls(
            _int(obj.get("version", 0), "version"), tuple(NodeInfo.from_wire(n) for n in nodes)
        )


@dataclass(frozen=True)
class Diff:
    version: int
    upsert: tuple[NodeInfo, ...] = ()
    remove: tuple[str, ...] = ()
    op = b"diff"

    def to_wire(self) -> dict[str, Any]:
        return {
            "version": self.version,
            "upsert": [n.to_wire() for n in self.upsert],
            "remove": list(self.remove),
        }

    @classmethod
    def from_wire(cls, obj: dict[str, Any]) -> Diff:
        ups = obj.get("upsert", [])
        if not isinstance(ups, list):
            raise ProtocolError("diff.upsert must be a list")
        return cls(
            _int(obj.get("version", 0), "version"),
            tuple(NodeInfo.from_wire(n) for n in ups),
            tuple(_str_list(obj.get("remove", []), "remove")),
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


def encode_control(msg: Any) -> tuple[bytes, bytes]:
    """``(name, body)`` of the CONTROL frame carrying ``msg``."""
    return msg.op, msgpack.packb(msg.to_wire(), use_bin_type=True)


def decode_control(name: bytes, body: bytes | bytearray) -> Any:
    """The control message in a CONTROL frame; raises ProtocolError on anything malformed."""
    cls = _BY_OP.get(bytes(name))
    if cls is None:
        raise ProtocolError(f"unknown control operation {bytes(name)[:40]!r}")
    if len(body) > MAX_CONTROL_BODY:
        raise ProtocolError("control message too large")
    try:
        obj = msgpack.unpackb(body, raw=False, strict_map_key=True)
    except Exception as exc:  # msgpack raises several types on garbage
        raise ProtocolError(f"malformed control message: {exc}") from None
    if not isinstance(obj, dict):
        raise ProtocolError("control message must be a map")
    return cls.from_wire(obj)
