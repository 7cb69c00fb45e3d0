"""Descriptors: what crosses the socket instead of the data. Sans-IO, pure bytes.

Three bodies, all little-endian; the frame around them (type, length) is the transport's.

MESSAGE — a pickled object whose large buffers are elsewhere::

    offset size  field
    0      1     version     1
    1      1     flags       0 (reserved)
    2      2     nbuf        u16: number of out-of-band buffers (at most ``max_buffers``)
    4      4     stream_len  u32: length of the pickle stream
    8      32*n  entries, one per out-of-band buffer, in the order the pickle uses them:
                   0  u32 arena   0 = inline (the bytes follow in this body), else an arena id
                                  the peer announced with ARENA on this link
                   4  u32 flags   bit 0 PERSISTENT: reached through a persistent id (bytes,
                                  bytearray, memoryview), not through pickle's NEXT_BUFFER
                   8  u64 block   the block that holds it (shm; 0 inline): one reference to
                                  that block, given back with RELEASE
                   16 u64 offset  shm: offset of the data in the arena;
                                  inline: offset in the inline area
                   24 u64 length  bytes
    8+32n  stream_len   the pickle stream (protocol 5)
    ...    rest         the inline area: buffers that travel in the socket after all

ARENA — sent once per arena per link, with the arena's fd attached (SCM_RIGHTS)::

    0  u32 arena id (not 0)    4  u32 reserved (0)    8  u64 size in bytes

RELEASE — references given back, receiver to sender::

    0  u32 count    then count × (u32 arena, u32 reserved 0, u64 block)

Decoding trusts nothing: every length is checked against the body before it is sliced,
every shm range against the size of an arena the peer really shared on this link, and the
numbers of buffers and releases are bounded, so garbage raises
:class:`~easymesh.errors.ProtocolError` and never yields an out-of-range view.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Sequence
from typing import NamedTuple

from easymesh.errors import ProtocolError

VERSION = 1
INLINE = 0
PERSISTENT = 1
KNOWN_FLAGS = PERSISTENT
#: Default bound on out-of-band buffers in one message.
MAX_BUFFERS = 64
#: Largest number of references one RELEASE may give back.
MAX_RELEASES = 4096

_HEAD = struct.Struct("<BBHI")
_ENTRY = struct.Struct("<IIQQQ")
_ARENA = struct.Struct("<IIQ")
_COUNT = struct.Struct("<I")
_REF = struct.Struct("<IIQ")
HEAD_SIZE = _HEAD.size
ENTRY_SIZE = _ENTRY.size


class Entry(NamedTuple):
    arena: int
    flags: int
    block: int
    offset: int
    length: int


class Message(NamedTuple):
    entries: list[Entry]
    stream: memoryview
    inline: memoryview


def encode_message_head(stream_len: int, entries: Sequence[Entry]) -> bytes:
    """The head of a MESSAGE (version, counts, entries); the stream and inline area follow."""
    if len(entries) > 0xFFFF or stream_len > 0xFFFFFFFF:
        raise ValueError("too many buffers or too long a pickle stream")
    parts = [_HEAD.pack(VERSION, 0, len(entries), stream_len)]
    parts.extend(_ENTRY.pack(*e) for e in entries)
    return b"".join(parts)


_HEAD_ONE = struct.Struct("<BBHIIIQQQ")  # the head of a MESSAGE with one entry


def encode_message_head_one(stream_len: int, entry: Entry) -> bytes:
    """:func:`encode_message_head` for one entry (a camera frame), in one ``pack``."""
    if stream_len > 0xFFFFFFFF:
        raise ValueError("too long a pickle stream")
    return _HEAD_ONE.pack(VERSION, 0, 1, stream_len, *entry)


def decode_message(
    body: bytes | bytearray | memoryview,
    arena_size: Callable[[int], int | None],
    max_buffers: int = MAX_BUFFERS,
) -> Message:
    """Parse and validate a MESSAGE body. ``arena_size(id)`` is the size of an arena this peer
    shared on this link, or None. Raises ProtocolError for anything malformed."""
    view = memoryview(body).cast("B") if not isinstance(body, memoryview) else body
    if len(view) < HEAD_SIZE:
        raise ProtocolError("shm message shorter than its header")
    version, flags, nbuf, stream_len = _HEAD.unpack_from(view, 0)
    if version != VERSION or flags:
        raise ProtocolError(f"unknown shm message version {version} or flags {flags}")
    if nbuf > max_buffers:
        raise ProtocolError(f"shm message with {nbuf} buffers (at most {max_buffers})")
    stream_at = HEAD_SIZE + nbuf * ENTRY_SIZE
    inline_at = stream_at + stream_len
    if inline_at > len(view):
        raise ProtocolError("shm message shorter than its entries and stream")
    inline_len = len(view) - inline_at
    if nbuf == 1:  # one frame, in shared memory: the common case, checked inline
        e = Entry._make(_ENTRY.unpack_from(view, HEAD_SIZE))
        size = arena_size(e.arena) if e.arena != INLINE else None
        if size is None or e.flags & ~KNOWN_FLAGS or not e.block <= e.offset <= size - e.length:
            _check_entry(e, inline_len, arena_size)  # raises, or an inline entry that is fine
        return Message([e], view[stream_at:inline_at], view[inline_at:])
    entries = []
    for i in range(nbuf):
        e = Entry(*_ENTRY.unpack_from(view, HEAD_SIZE + i * ENTRY_SIZE))
        _check_entry(e, inline_len, arena_size)
        entries.append(e)
    return Message(entries, view[stream_at:inline_at], view[inline_at:])


def _check_entry(e: Entry, inline_len: int, arena_size: Callable[[int], int | None]) -> None:
    if e.flags & ~KNOWN_FLAGS:
        raise ProtocolError(f"shm buffer with unknown flags {e.flags:#x}")
    if e.arena == INLINE:
        if e.block or e.offset + e.length > inline_len:
            raise ProtocolError("inline shm buffer outside the message")
        return
    size = arena_size(e.arena)
    if size is None:
        raise ProtocolError(f"shm buffer in arena {e.arena}, which this peer never shared")
    if not (e.block <= e.offset and e.offset + e.length <= size):
        raise ProtocolError(
            f"shm buffer {e.offset}+{e.length} (block {e.block}) outside arena {e.arena} of {size} bytes"
        )


def encode_arena(arena: int, size: int) -> bytes:
    if not 0 < arena <= 0xFFFFFFFF:
        raise ValueError("arena id must be 1..2**32-1")
    return _ARENA.pack(arena, 0, size)


def decode_arena(body: bytes | bytearray | memoryview, max_size: int) -> tuple[int, int]:
    """(arena id, size) of an ARENA body. ProtocolError if malformed or larger than ``max_size``."""
    if len(body) != _ARENA.size:
        raise ProtocolError("bad ARENA body length")
    arena, reserved, size = _ARENA.unpack_from(body, 0)
    if arena == INLINE or reserved or size == 0 or size > max_size:
        raise ProtocolError(f"bad ARENA: id {arena}, size {size} (at most {max_size})")
    return arena, size


def encode_release(refs: Sequence[tuple[int, int]]) -> bytes:
    """A RELEASE body for (arena, block) pairs (split longer lists over several RELEASEs)."""
    if len(refs) > MAX_RELEASES:
        raise ValueError(f"at most {MAX_RELEASES} references per RELEASE")
    return _COUNT.pack(len(refs)) + b"".join(_REF.pack(a, 0, b) for a, b in refs)


def decode_release(body: bytes | bytearray | memoryview) -> list[tuple[int, int]]:
    """The (arena, block) pairs of a RELEASE body. ProtocolError if malformed."""
    if len(body) < _COUNT.size:
        raise ProtocolError("RELEASE shorter than its count")
    (count,) = _COUNT.unpack_from(body, 0)
    if count > MAX_RELEASES or len(body) != _COUNT.size + count * _REF.size:
        raise ProtocolError(f"RELEASE of {count} references in {len(body)} bytes")
    out = []
    for i in range(count):
        arena, reserved, block = _REF.unpack_from(body, _COUNT.size + i * _REF.size)
        if arena == INLINE or reserved:
            raise ProtocolError("bad reference in RELEASE")
        out.append((arena, block))
    return out
