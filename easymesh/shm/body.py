"""The body of a ``pickle-shm`` frame (codec id 4) between the link and the user's thread.

A frame's body is resolved on the I/O thread, where the link's mappings are known: the
MESSAGE is validated against the arenas the peer shared on *that* link (a hostile descriptor
is a protocol error there, the link closes like for any bad frame), and each shm entry becomes
a read-only, release-tracked view (:meth:`easymesh.shm.release.Remote.view`). The result,
:class:`ShmBody`, replaces the frame's body and travels through the listener's queue; it holds
the views, so whatever happens to the frame (decoded, dropped by a full queue, refused), the
blocks go back when the last object made from it is gone. Creating a view costs a ctypes
object and a weakref, a few microseconds, on the I/O thread; unpickling runs where codecs run
today (a worker, a subscriber, the caller), because pickle runs the peer's code.

A body whose entries are all inline (the sender's pool was full, or a ``meshbag`` recording)
is plain bytes and decodes anywhere: :func:`decode_body` takes both. :func:`inline_copy`
turns a resolved body back into such bytes (copying the shared data): what a recorder keeps.
"""

from __future__ import annotations

from typing import Any

from easymesh.errors import ProtocolError
from easymesh.shm.descriptor import INLINE, Entry, Message, decode_message, encode_message_head
from easymesh.shm.encoding import decode
from easymesh.shm.release import Remote

__all__ = ["ShmBody", "decode_body", "inline_copy", "resolve"]


class ShmBody:
    """A validated MESSAGE with the views of its shm entries (in entry order)."""

    __slots__ = ("message", "views", "nbytes", "_raw")

    def __init__(self, raw: Any, message: Message, views: list[memoryview]) -> None:
        self._raw = raw  # the message's stream and inline area are views of it
        self.message = message
        self.views = views
        self.nbytes = len(raw) + sum(v.nbytes for v in views)

    def __len__(self) -> int:
        """The descriptor's bytes plus the shared data's: what queue bounds count. A queued
        message holds its blocks of the sender's pool, so a listener's ``queue_bytes`` bounds
        them as it bounds a message that came through the socket (dropping the oldest gives
        blocks back to the sender)."""
        return self.nbytes


def resolve(raw: Any, remote: Remote | None) -> ShmBody | Any:
    """(I/O thread) Validate a pickle-shm body from a link whose shared arenas are ``remote``
    (None: the link shares nothing). ProtocolError if it is malformed or points outside what
    the peer shared. A body with no shm entry stays as it is."""
    message = decode_message(raw, remote.arena_size if remote is not None else _none)
    shared = [e for e in message.entries if e.arena != INLINE]
    if not shared:
        return raw
    assert remote is not None  # decode_message refused shm entries without arenas
    return ShmBody(raw, message, [remote.view(e) for e in shared])


def _none(_arena: int) -> None:
    return None


def decode_body(body: Any) -> Any:
    """The object of a pickle-shm body (resolved, or bytes with inline entries only).
    Raises ProtocolError (the codec layer turns it into CodecError)."""
    if isinstance(body, ShmBody):
        views = iter(body.views)
        return decode(body.message, lambda _e: next(views))
    message = decode_message(body, _none)
    return decode(message, _unreachable)


def _unreachable(entry: Entry) -> memoryview:
    raise ProtocolError(f"shm entry in arena {entry.arena} outside a link")


def inline_copy(body: Any) -> bytes:
    """``body`` as a self-contained pickle-shm body: every shared buffer copied inline."""
    if not isinstance(body, ShmBody):
        return bytes(body)
    m = body.message
    inline_len = m.inline.nbytes
    entries: list[Entry] = []
    extra: list[memoryview] = []
    views = iter(body.views)
    for e in m.entries:
        if e.arena == INLINE:
            entries.append(e)
            continue
        view = next(views)
        entries.append(Entry(INLINE, e.flags, 0, inline_len, e.length))
        extra.append(view)
        inline_len += e.length
    head = encode_message_head(m.stream.nbytes, entries)
    return b"".join([head, m.stream, m.inline, *extra])
