"""The easymesh exception tree.

Every error easymesh raises on purpose is a :class:`MeshError`. Where a builtin
exception describes the same situation, the easymesh error inherits from it too,
so ``except TimeoutError`` and ``except LookupError`` work as a user expects.

This module imports nothing from the rest of the package.
"""

from __future__ import annotations


class MeshError(Exception):
    """Base class of every error raised by easymesh."""


class ProtocolError(MeshError, ValueError):
    """A peer sent bytes that do not follow the easymesh wire protocol."""


class FrameTooLarge(ProtocolError):
    """A frame header announced more bytes than the configured maximum."""


class AuthenticationError(MeshError, PermissionError):
    """The mutual HMAC handshake failed: wrong, missing or unexpected authkey."""


class UnsafeSocketDir(MeshError, PermissionError):
    """The folder for Unix sockets is a symbolic link, not a folder, writable by the group
    or others, or owned by another user: someone else could replace or intercept the
    sockets in it. Nothing was bound."""


class CodecError(MeshError, ValueError):
    """Data could not be encoded or decoded by the chosen codec."""


class UnknownCodec(CodecError, LookupError):
    """A message names a codec id this process does not know."""


class ConnectionLost(MeshError, ConnectionError):
    """The connection to a peer or to the coordinator closed."""


class CoordinatorUnavailable(MeshError, ConnectionError):
    """The coordinator could not be reached within ``connect_timeout``."""

    def __init__(self, address: str, detail: str = "") -> None:
        self.address = address
        msg = (
            f"cannot reach the easymesh coordinator at {address}"
            + (f" ({detail})" if detail else "")
            + ". Check that it runs (start it with `easymesh`), that the address is right "
            "(Node(coordinator=...) or EASYMESH_COORDINATOR), and that no firewall blocks it."
        )
        super().__init__(msg)


class RegistrationRefused(MeshError, PermissionError):
    """The coordinator refused this node's registration (a limit, an invalid record, or
    its id is live elsewhere); the message has the coordinator's reason."""


class NodeClosed(MeshError, RuntimeError):
    """The node was closed; it cannot send, listen or request any more."""


class WouldDeadlock(MeshError, RuntimeError):
    """A blocking call was made from a thread that the call itself would have to wait
    for (the node's I/O thread, the thread that completes request futures, or the
    thread that spins a ``threaded=False`` service it calls): it could never finish,
    so it fails at once instead of hanging until its timeout."""


class TooManyRequests(MeshError, RuntimeError):
    """The node already has ``max_in_flight`` requests waiting for an answer."""


class SubscriptionClosed(MeshError, EOFError):
    """The subscription (or its node) was closed; no more messages will come."""


class RequestTimeout(MeshError, TimeoutError):
    """A request, or a wait for a listener or provider, ran out of time."""


class NoProviderError(MeshError, LookupError):
    """No node in the mesh provides the requested service."""


class ServiceError(MeshError):
    """The remote service handler failed.

    ``remote_type`` is the name of the exception type the handler raised,
    ``remote_message`` its message and ``remote_traceback`` the formatted remote
    traceback (a string, possibly empty).
    """

    def __init__(
        self, remote_type: str, remote_message: str, remote_traceback: str = "", service: str = ""
    ) -> None:
        self.remote_type = remote_type
        self.remote_message = remote_message
        self.remote_traceback = remote_traceback
        self.service = service
        where = f"service {service!r} failed: " if service else ""
        super().__init__(f"{where}{remote_type}: {remote_message}")

    def __reduce__(self):  # picklable, e.g. to cross a process pool
        return (
            type(self),
            (self.remote_type, self.remote_message, self.remote_traceback, self.service),
        )
