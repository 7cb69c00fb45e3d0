"""Small public objects: topic and service handles, and RawMessage.

``node.topic(name)`` and ``node.service(name)`` return handles for code that sends
to one name often; a ``raw=True`` listener receives :class:`RawMessage` objects.
"""

from __future__ import annotations

from concurrent.futures import Future
from typing import Any, NamedTuple, Protocol


class _Owner(Protocol):
    """The part of a Node that handles use (a Protocol, so this module does not
    import the node: handles sit below it)."""

    name: str

    def send(self, topic: str, data: Any, *, latch: bool = False) -> None: ...

    def has_listeners(self, topic: str) -> bool: ...

    def wait_for_listener(self, topic: str, timeout: float | None = None) -> None: ...

    def request(self, service: str, data: Any, timeout: float | None = None) -> Any: ...

    def request_future(self, service: str, data: Any, timeout: float | None = None) -> Future: ...

    def has_service(self, name: str) -> bool: ...

    def wait_for_service(self, name: str, timeout: float | None = None) -> None: ...


class RawMessage(NamedTuple):
    """What a ``raw=True`` listener receives: the codec id and the encoded bytes."""

    codec: int
    data: bytes | bytearray


class Topic:
    """A handle on one topic of one node: ``send``, ``has_listeners``, ``wait_for_listener``."""

    def __init__(self, node: _Owner, name: str, latch: bool = False) -> None:
        self.node = node
        self.name = name
        self.latch = latch

    def send(self, data: Any) -> None:
        self.node.send(self.name, data, latch=self.latch)

    def has_listeners(self) -> bool:
        return self.node.has_listeners(self.name)

    def wait_for_listener(self, timeout: float | None = None) -> None:
        self.node.wait_for_listener(self.name, timeout)

    def __repr__(self) -> str:
        return f"<easymesh.Topic {self.name!r} of {self.node.name!r}>"


class Service:
    """A handle on one service: ``request``, ``request_future``, ``wait_for_provider``."""

    def __init__(self, node: _Owner, name: str) -> None:
        self.node = node
        self.name = name

    def request(self, data: Any, timeout: float | None = None) -> Any:
        return self.node.request(self.name, data, timeout)

    def request_future(self, data: Any, timeout: float | None = None) -> Future:
        return self.node.request_future(self.name, data, timeout)

    def __call__(self, data: Any, timeout: float | None = None) -> Any:
        return self.request(data, timeout)

    def has_provider(self) -> bool:
        return self.node.has_service(self.name)

    def wait_for_provider(self, timeout: float | None = None) -> None:
        self.node.wait_for_service(self.name, timeout)

    def __repr__(self) -> str:
        return f"<easymesh.Service {self.name!r} of {self.node.name!r}>"
