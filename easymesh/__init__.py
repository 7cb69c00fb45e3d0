"""easymesh: simple, fast message passing between Python processes, inspired by ROS.

Nodes send *topics* (fire-and-forget, to every listening node) and call
*services* (request/response). A small coordinator keeps the topology; data
flows directly between nodes (Unix sockets on one host, TCP across hosts).

    import easymesh
    node = easymesh.Node('x')
    node.listen('topic', callback)        # callback(topic, data) in a worker thread
    node.send('topic', {'any': 'picklable data'})
    result = node.request('add', (2, 2), timeout=10)
"""

from __future__ import annotations

from easymesh.coordinator import Coordinator
from easymesh.errors import (
    AuthenticationError,
    CodecError,
    ConnectionLost,
    CoordinatorUnavailable,
    MeshError,
    NodeClosed,
    NoProviderError,
    ProtocolError,
    RegistrationRefused,
    RequestTimeout,
    ServiceError,
    SubscriptionClosed,
    TooManyRequests,
    WouldDeadlock,
)
from easymesh.handles import RawMessage, Service, Topic
from easymesh.loadbalancing import (
    BroadcastLoadBalancer,
    LoadBalancer,
    RandomLoadBalancer,
    RoundRobinLoadBalancer,
)
from easymesh.node import Node, build_mesh_node, build_node
from easymesh.protocol.codecs import register_codec
from easymesh.protocol.messages import NodeInfo
from easymesh.subscription import Subscription

__version__ = "0.1.0"

__all__ = [
    "AuthenticationError",
    "BroadcastLoadBalancer",
    "CodecError",
    "ConnectionLost",
    "Coordinator",
    "CoordinatorUnavailable",
    "LoadBalancer",
    "MeshError",
    "NoProviderError",
    "Node",
    "NodeClosed",
    "NodeInfo",
    "ProtocolError",
    "RandomLoadBalancer",
    "RawMessage",
    "RegistrationRefused",
    "RequestTimeout",
    "RoundRobinLoadBalancer",
    "Service",
    "ServiceError",
    "Subscription",
    "SubscriptionClosed",
    "Topic",
    "TooManyRequests",
    "WouldDeadlock",
    "__version__",
    "build_mesh_node",
    "build_node",
    "register_codec",
]
