"""What the coordinator believes about a node record: bounds and endpoint rules (sans-IO).

A node record (:class:`~easymesh.protocol.messages.NodeInfo`) is input from a peer that
knows the mesh key, not a fact. Before the coordinator stores it and tells every other
node about it, :func:`record_problem` checks it; the coordinator refuses a record with a
problem (an ERROR frame carrying the reason, then it closes the link). The rules:

* **Sizes.** Ids, names, host names, endpoints, topic and service names have a length
  bound; a node has at most ``max_topics`` topics and ``max_services`` services, and its
  encoded record at most ``max_record_bytes``. The whole topology holds at most
  ``max_nodes`` records and ``max_topology_bytes`` of encoded records
  (:func:`topology_problem`). The bounds are far above what a real node uses (the API
  caps a topic name at 1,024 bytes) and keep the topology small enough that a joining
  node always receives it, in as many Welcome parts as it takes.
* **Endpoints.** Peers connect to what a record advertises, so a record may only point at
  its own node: TCP ``ip:port`` with a literal IP (never a host name: no DNS lookup on
  anyone's I/O thread, no name that resolves elsewhere later) and a port in 1..65535;
  Unix only in easymesh's own naming scheme *for this node id*: ``@easymesh-<id>`` in the
  abstract namespace, or an absolute, normalized path whose file name is
  ``<pid>-<id>.sock`` (see :mod:`easymesh.transport.listener`). Nobody can make peers
  dial another node's socket or an arbitrary file under their own id. A TCP endpoint
  cannot be checked alone (any IP:port may be a node's); the coordinator refuses one
  that another live record already advertises (compared with :func:`tcp_key`).
* **Ids** are 1..64 characters of ``[A-Za-z0-9._-]``: they appear in socket names and
  log lines.

Pure functions over plain values: no sockets, no clock; the coordinator holds one
:class:`Limits` and asks.
"""

from __future__ import annotations

import functools
import ipaddress
import os
import re
from dataclasses import dataclass

from easymesh.protocol.messages import NodeInfo

_ID = re.compile(r"[A-Za-z0-9._-]{1,64}")
_SOCK_FILE = re.compile(r"(\d{1,10})-([A-Za-z0-9._-]{1,64})\.sock")

#: Longest topic or service name, in UTF-8 bytes (the public API allows the same).
MAX_TOPIC_NAME = 1024
MAX_NODE_NAME = 1024
MAX_HOSTNAME = 255
MAX_HOST_KEY = 512
MAX_ENDPOINT = 512


@dataclass(frozen=True)
class Limits:
    """Bounds on what one node may register and on the whole topology."""

    max_topics: int = 4096
    max_services: int = 4096
    max_record_bytes: int = 1024 * 1024
    max_nodes: int = 4096
    max_topology_bytes: int = 32 * 1024 * 1024


def record_problem(node: NodeInfo, limits: Limits, record_bytes: int) -> str | None:
    """Why the coordinator refuses ``node`` (``record_bytes``: its encoded size), or None."""
    if not _ID.fullmatch(node.id):
        return "a node id must be 1 to 64 characters of A-Z a-z 0-9 . _ -"
    for what, text, bound in (
        ("node name", node.name, MAX_NODE_NAME),
        ("host name", node.hostname, MAX_HOSTNAME),
        ("host key", node.host_key, MAX_HOST_KEY),
        ("tcp endpoint", node.tcp, MAX_ENDPOINT),
        ("unix endpoint", node.unix, MAX_ENDPOINT),
    ):
        if len(text.encode("utf-8", "surrogatepass")) > bound:
            return f"the {what} is longer than {bound} bytes"
    for what, topics in (("topics", node.topics), ("published topics", node.publishes)):
        if len(topics) > limits.max_topics:
            return f"{len(topics)} {what} is more than the limit of {limits.max_topics} per node"
    if len(node.services) > limits.max_services:
        return (
            f"{len(node.services)} services is more than the limit of "
            f"{limits.max_services} per node"
        )
    for what, names in (
        ("topic", node.topics),
        ("published topic", node.publishes),
        ("service", node.services),
    ):
        for name in names:
            if not name or len(name.encode("utf-8", "surrogatepass")) > MAX_TOPIC_NAME:
                return f"a {what} name must be 1 to {MAX_TOPIC_NAME} bytes"
    if record_bytes > limits.max_record_bytes:
        return (
            f"the node record is {record_bytes} bytes, more than the limit of "
            f"{limits.max_record_bytes}"
        )
    return tcp_problem(node.tcp) or unix_problem(node.unix, node.id, node.pid)


def topology_problem(nodes: int, total_bytes: int, limits: Limits) -> str | None:
    """Why a topology of ``nodes`` records and ``total_bytes`` (after the change) is too
    large, or None."""
    if nodes > limits.max_nodes:
        return f"the mesh is full: at most {limits.max_nodes} nodes"
    if total_bytes > limits.max_topology_bytes:
        return (
            f"the mesh is full: its topology would be {total_bytes} bytes, more than the "
            f"limit of {limits.max_topology_bytes}"
        )
    return None


# tcp_problem and tcp_key are pure functions of a string, asked several times per
# registration (check, owner lookup, index): ipaddress parsing was about a fifth of the
# coordinator's Python time per join in a 1,000-node storm. Cached (bounded: a key per
# live endpoint, at most max_nodes of them normally).
@functools.lru_cache(maxsize=8192)
def tcp_problem(endpoint: str) -> str | None:
    """None for ``""`` or ``ip:port`` / ``[ipv6]:port`` with a literal, non-multicast IP."""
    if not endpoint:
        return None
    if endpoint.startswith("["):
        host, sep, port = endpoint[1:].partition("]:")
    else:
        host, sep, port = endpoint.rpartition(":")
    if not sep or not port.isascii() or not port.isdigit() or not 0 < int(port) < 65536:
        return "a tcp endpoint must be IP:PORT with a port in 1..65535"
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        return "a tcp endpoint must name a literal IP address, not a host name"
    if ip.is_multicast or (ip.version == 6 and not endpoint.startswith("[")):
        return "a tcp endpoint must be a unicast IP ([v6]:PORT in brackets)"
    return None


@functools.lru_cache(maxsize=8192)
def tcp_key(endpoint: str) -> tuple[str, int] | None:
    """The socket a valid TCP endpoint reaches, spelled one way (an IPv4-mapped IPv6
    address as the IPv4 address it connects to), so that two records naming the same
    socket compare equal; None for ``""`` or an endpoint :func:`tcp_problem` refuses."""
    if not endpoint or tcp_problem(endpoint) is not None:
        return None
    host, _, port = endpoint.rpartition(":")
    ip = ipaddress.ip_address(host.strip("[]"))
    if ip.version == 6 and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return str(ip), int(port)


def unix_problem(endpoint: str, node_id: str, pid: int) -> str | None:
    """None for ``""``, ``@easymesh-<node_id>`` or ``/dir/<pid>-<node_id>.sock``."""
    if not endpoint:
        return None
    if endpoint.startswith("@"):
        if endpoint == f"@easymesh-{node_id}":
            return None
        return "an abstract unix endpoint must be @easymesh-<the node's own id>"
    name = os.path.basename(endpoint)
    m = _SOCK_FILE.fullmatch(name)
    if (
        "\0" in endpoint
        or not os.path.isabs(endpoint)
        or os.path.normpath(endpoint) != endpoint
        or m is None
        or m.group(2) != node_id
        or int(m.group(1)) != pid
    ):
        return "a unix endpoint must be an absolute path to <pid>-<the node's own id>.sock"
    return None
