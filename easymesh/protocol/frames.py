"""Frames: the byte layout of everything easymesh sends, and an incremental decoder.

This module is sans-IO: it never touches a socket, a thread or a clock. The
transport feeds it bytes and asks it for frames, and asks it for bytes to send.

Wire format
===========

A connection is a byte stream of frames. Every frame is a 16-byte header,
then ``name_len`` bytes of name, then ``body_len`` bytes of body::

    offset size  field        meaning
    0      1     type         frame type (table below)
    1      1     codec        codec id of the body (TOPIC, REQUEST, REPLY); 0 otherwise
    2      2     name_len     little-endian u16: length of the name (UTF-8)
    4      4     body_len     little-endian u32: length of the body
    8      8     request_id   little-endian u64: matches a REPLY to its REQUEST; 0 otherwise
    16     ...   name         topic / service / control-operation name
    16+n   ...   body         payload

Frame types::

    1  HELLO        handshake: magic, version, flags, nonce (see protocol/auth.py)
    2  AUTH         handshake: the client's HMAC proof
    3  ERROR        UTF-8 reason; the sender closes the connection after it
    4  PING         heartbeat (empty)
    5  PONG         heartbeat answer (empty)
    16 CONTROL      name = operation, body = msgpack map (see protocol/messages.py)
    32 TOPIC        name = topic, body = data encoded with `codec`
    33 REQUEST      name = service, body = data encoded with `codec`, request_id set
    34 REPLY        body = result encoded with `codec`, request_id of the request
    35 REPLY_ERROR  body = msgpack [kind, type name, message, traceback]
    43 SHM_ASK      empty: "I would send you shared memory" (once per link, by the end that
                    first has a large message for it; easymesh.shmhub)
    40 SHM_OFFER    empty, the answer: "this end now reads descriptors and maps your memory"
    41 SHM_ARENA    body = easymesh.shm.descriptor ARENA; the arena's fd rides with it
    42 SHM_RELEASE  body = easymesh.shm.descriptor RELEASE (blocks given back)

Limits are checked on the header, before any buffer for the body is allocated:
a body longer than ``max_body``, a name longer than ``max_name`` or a type
outside ``allowed_types`` raises :class:`~easymesh.errors.ProtocolError` and the
connection is closed. Before the handshake completes only HELLO, AUTH and ERROR
frames with a name of at most ``HANDSHAKE_MAX_NAME`` and a body of at most
``HANDSHAKE_MAX_BODY`` bytes are allowed, so nothing from an unauthenticated
peer is decoded beyond those fixed-layout handshake fields; and the decoder
then reads into a buffer of only ``HANDSHAKE_BUFFER_SIZE`` bytes, so a peer
that connects and says nothing costs a socket, not a full read buffer. After
the handshake HELLO and AUTH are no longer allowed (``SESSION_TYPES``).

Large bodies are received without extra copies: the decoder hands out a
buffer (:meth:`FrameDecoder.get_buffer`) that is the body's own storage once a
header announcing a large body has been read, so ``recv_into`` writes the
payload straight into the object given to the codec.

A frame larger than the read buffer but not than ``max_buffer`` (``READ_BUFFER_SIZE``)
makes the read buffer grow to ``max_buffer`` at once: a 100 kB message is then read
with others in one ``recv_into`` and parsed in place, instead of taking two or three
reads of its own (a link's read buffer may reach that size anyway; a stalled partial
frame is closed by the link's owner). Larger bodies get storage of their own, which
grows with what has arrived, never with what was announced: a body's first storage holds ``BODY_STEP`` bytes or ``BODY_GROWTH`` times what
came with the header, whichever is more (never more than the body); when it is
full it is replaced by one ``BODY_GROWTH`` times larger (the bytes so far are
copied once), up to ``BODY_CHUNK``; bodies larger than that are received in
pieces of ``BODY_CHUNK`` and joined. One exception: when the previous large body on
this link was at least as large, the storage is full-size at once (a stream of large
messages: over TCP a header often arrives with only some 10-60 kB of its body, and
growing then cost a copy of a quarter of every 1 MB message, measured). So a peer
that announces 256 MB and then stalls costs at most ``BODY_GROWTH`` times what it
really sent (plus ``BODY_STEP``), or the size of the last body it really delivered
in full, while a streamed large message is received with ``recv_into`` straight into
storage of its own size. (The link's owner closes a link whose
partial frame makes no progress: ``partial`` tells it one is pending.)
"""

from __future__ import annotations

import struct
from typing import NamedTuple

from easymesh.errors import FrameTooLarge, ProtocolError

HEADER = struct.Struct("<BBHIQ")
HEADER_SIZE = HEADER.size  # 16

HELLO = 1
AUTH = 2
ERROR = 3
PING = 4
PONG = 5
CONTROL = 16
TOPIC = 32
REQUEST = 33
REPLY = 34
REPLY_ERROR = 35
SHM_OFFER = 40
SHM_ARENA = 41
SHM_RELEASE = 42
SHM_ASK = 43

TYPE_NAMES = {
    HELLO: "HELLO",
    AUTH: "AUTH",
    ERROR: "ERROR",
    PING: "PING",
    PONG: "PONG",
    CONTROL: "CONTROL",
    TOPIC: "TOPIC",
    REQUEST: "REQUEST",
    REPLY: "REPLY",
    REPLY_ERROR: "REPLY_ERROR",
    SHM_OFFER: "SHM_OFFER",
    SHM_ARENA: "SHM_ARENA",
    SHM_RELEASE: "SHM_RELEASE",
    SHM_ASK: "SHM_ASK",
}
ALL_TYPES = frozenset(TYPE_NAMES)
HANDSHAKE_TYPES = frozenset({HELLO, AUTH, ERROR})
SESSION_TYPES = ALL_TYPES - {HELLO, AUTH}
HANDSHAKE_MAX_BODY = 256
HANDSHAKE_MAX_NAME = 64
#: Read buffer while the handshake runs: holds the largest handshake frame, no more.
HANDSHAKE_BUFFER_SIZE = 1024
MAX_NAME = 0xFFFF
MAX_BODY_LIMIT = 0xFFFFFFFF

#: Largest size of the decoder's reusable read buffer; frames up to this size are parsed in place.
READ_BUFFER_SIZE = 256 * 1024
#: An open link's read buffer starts this small (an idle link costs little memory) and
#: grows, up to READ_BUFFER_SIZE, whenever reads fill it.
SESSION_BUFFER_SIZE = 16 * 1024
#: Longest name (topic, service) accepted after the handshake; the API allows 1,024 bytes.
SESSION_MAX_NAME = 4096
#: Largest piece of body storage allocated at once for a large frame.
BODY_CHUNK = 16 * 1024 * 1024
#: Smallest first storage for a large body, and the factor by which it grows.
BODY_STEP = 64 * 1024
BODY_GROWTH = 16
#: Most buffers encode_frame_parts() returns for one frame.
MAX_PIECES = 16
#: Bodies at least this large are sent as a separate buffer (scatter/gather), not joined.
JOIN_LIMIT = 16 * 1024


class Frame(NamedTuple):
    type: int
    codec: int
    name: bytes
    request_id: int
    body: bytes | bytearray


_pack = HEADER.pack
_unpack_from = HEADER.unpack_from
_new_frame = tuple.__new__


def encode_frame(
    ftype: int, name: bytes = b"", body: bytes | bytearray | memoryview = b"", codec: int = 0,
    request_id: int = 0,
) -> list[bytes | bytearray | memoryview]:
    """The buffers to write for one frame: ``[head]`` or ``[head, body]``.

    Small bodies are joined with the header (one buffer); large ones stay a
    separate buffer so that ``sendmsg`` writes them without a copy.
    Raises ProtocolError if the name or body is too long for the header fields.
    """
    nlen = len(name)
    blen = len(body) if not isinstance(body, memoryview) else body.nbytes
    if nlen > MAX_NAME:
        raise ProtocolError(f"name of {nlen} bytes is longer than {MAX_NAME}")
    if blen > MAX_BODY_LIMIT:
        raise FrameTooLarge(f"body of {blen} bytes is longer than {MAX_BODY_LIMIT}")
    head = _pack(ftype, codec, nlen, blen, request_id)
    if blen < JOIN_LIMIT:
        return [head + name + body] if (name or body) else [head]
    return [head + name, body]


def encode_frame_parts(
    ftype: int, name: bytes, pieces: list[bytes]
) -> tuple[list[bytes | bytearray | memoryview], int]:
    """One frame whose body is ``pieces`` one after the other; ``(buffers, total bytes)``.

    Up to ``MAX_PIECES`` pieces stay separate buffers (shared with other frames, not
    copied); more are joined into one, because a frame's buffers go to one ``sendmsg``
    and the kernel takes at most IOV_MAX (1,024) of them per call."""
    blen = sum(len(p) for p in pieces)
    if len(name) > MAX_NAME or blen > MAX_BODY_LIMIT:
        raise ProtocolError("name or body too long for a frame")
    head = _pack(ftype, 0, len(name), blen, 0) + name
    body = pieces if len(pieces) <= MAX_PIECES else [b"".join(pieces)]
    return [head, *body], len(head) + blen


def frame_bytes(
    ftype: int, name: bytes = b"", body: bytes | bytearray = b"", codec: int = 0, request_id: int = 0
) -> bytes:
    """One frame as a single bytes object (for tests and small control frames)."""
    return b"".join(encode_frame(ftype, name, body, codec, request_id))


class FrameDecoder:
    """Incremental frame decoder: feed bytes, take complete frames.

    Two ways to give it bytes:

    * ``feed(data)`` copies ``data`` in (convenient, used by tests);
    * ``buf = get_buffer(); n = sock.recv_into(buf); buffer_updated(n)`` lets the
      caller read straight into the decoder's storage (no extra copy).

    ``frames()`` returns every complete frame received so far, oldest first.
    It raises ProtocolError (or FrameTooLarge) on a header that breaks the
    rules; the decoder is then unusable and the connection must be closed.
    """

    __slots__ = (
        "max_body", "max_name", "allowed_types", "_buf", "_mv", "_start", "_end",
        "_big_head", "_big_name", "_big_chunks", "_big_cur", "_big_filled", "_big_left", "_big_cap", "_big_last",
        "_failed", "_pending", "max_buffer",
    )

    def __init__(
        self,
        max_body: int = 256 * 1024 * 1024,
        allowed_types: frozenset[int] = ALL_TYPES,
        buffer_size: int = READ_BUFFER_SIZE,
        max_name: int = MAX_NAME,
        max_buffer: int = READ_BUFFER_SIZE,
    ) -> None:
        if buffer_size < HEADER_SIZE + max_name + 1:
            raise ValueError("buffer_size too small to hold a header and the longest name")
        self.max_buffer = max(max_buffer, buffer_size)
        self.max_body = min(max_body, MAX_BODY_LIMIT)
        self.max_name = min(max_name, MAX_NAME)
        self.allowed_types = allowed_types
        self._buf = bytearray(buffer_size)
        self._mv = memoryview(self._buf)
        self._start = 0
        self._end = 0
        self._big_head: tuple[int, int, int] | None = None  # (type, codec, request_id)
        self._big_name = b""
        self._big_chunks: list[bytearray] = []
        self._big_cur: bytearray | None = None
        self._big_filled = 0
        self._big_left = 0
        self._big_cap = 0  # the size the current piece of body storage grows to
        self._big_last = 0  # the size of the last large body received in full
        self._failed: ProtocolError | None = None
        self._pending: list[Frame] = []

    def set_limits(
        self, max_body: int, allowed_types: frozenset[int], max_name: int = SESSION_MAX_NAME,
        buffer_size: int = SESSION_BUFFER_SIZE, max_buffer: int = READ_BUFFER_SIZE,
    ) -> None:
        """Change the limits (after a handshake); grows the read buffer to ``buffer_size``
        if it is smaller, and lets it grow up to ``max_buffer`` on a busy link.
        Applies to headers not yet parsed."""
        if buffer_size < HEADER_SIZE + max_name + 1:
            raise ValueError("buffer_size too small to hold a header and the longest name")
        self.max_body = min(max_body, MAX_BODY_LIMIT)
        self.max_name = min(max_name, MAX_NAME)
        self.allowed_types = allowed_types
        self.max_buffer = max(max_buffer, buffer_size)
        if buffer_size > len(self._buf) and self._big_head is None:
            self._resize(buffer_size)

    def _resize(self, size: int) -> None:
        n = self._end - self._start
        buf = bytearray(size)
        buf[0:n] = self._buf[self._start : self._end]
        self._buf, self._mv = buf, memoryview(buf)
        self._start, self._end = 0, n

    # -- input -------------------------------------------------------------------------------

    def get_buffer(self) -> memoryview:
        """Writable storage for the next bytes (never empty)."""
        if self._big_cur is not None:
            return memoryview(self._big_cur)[self._big_filled :]
        if self._end == len(self._buf):
            if len(self._buf) < self.max_buffer:
                # Reads fill the buffer: a busy link. Read more per call from now on.
                self._resize(min(self.max_buffer, 4 * len(self._buf)))
            else:
                self._compact()
            if self._end == len(self._buf):
                # Full of complete frames: parse them out to make room.
                self._pending.extend(self._parse())
                if self._big_cur is not None:
                    return memoryview(self._big_cur)[self._big_filled :]
        return self._mv[self._end :]

    def buffer_updated(self, nbytes: int) -> None:
        """Record that ``nbytes`` were written into the last :meth:`get_buffer` storage."""
        cur = self._big_cur
        if cur is not None:
            self._big_filled += nbytes
            self._big_left -= nbytes
            if self._big_filled == len(cur):
                if len(cur) < self._big_cap:
                    # Full, and the body goes on: a larger storage, the bytes so far copied.
                    grown = bytearray(min(self._big_cap, len(cur) * BODY_GROWTH))
                    grown[: len(cur)] = cur
                    self._big_cur = grown
                    return
                self._big_chunks.append(cur)
                self._big_cur = None
                if self._big_left > 0:
                    self._new_chunk(BODY_CHUNK)
        else:
            self._end += nbytes

    def feed(self, data: bytes | bytearray | memoryview) -> None:
        """Copy ``data`` into the decoder (it may hold any number of partial frames)."""
        view = memoryview(data).cast("B")
        while view.nbytes:
            buf = self.get_buffer()
            n = min(buf.nbytes, view.nbytes)
            buf[:n] = view[:n]
            self.buffer_updated(n)
            view = view[n:]

    # -- output ------------------------------------------------------------------------------

    def next_frame(self) -> Frame | None:
        """The oldest complete frame, or None (parses at most one frame)."""
        if self._pending:
            return self._pending.pop(0)
        out = self._parse(1)
        return out[0] if out else None

    def frames(self) -> list[Frame]:
        """All complete frames received so far (possibly none)."""
        out = self._parse()
        if self._pending:
            out = self._pending + out
            self._pending = []
        return out

    @property
    def buffered(self) -> int:
        """Bytes received but not yet returned as frames."""
        big = self._big_filled + sum(len(c) for c in self._big_chunks) if self._big_head else 0
        return self._end - self._start + big

    # -- internals ---------------------------------------------------------------------------

    def _fail(self, exc: ProtocolError) -> ProtocolError:
        self._failed = exc
        return exc

    def _new_chunk(self, arrived: int) -> None:
        """Storage for the next piece of a large body, sized by the ``arrived`` bytes."""
        self._big_cap = cap = min(self._big_left, BODY_CHUNK)
        self._big_cur = bytearray(min(cap, max(BODY_STEP, BODY_GROWTH * arrived, self._big_last)))
        self._big_filled = 0

    @property
    def partial(self) -> bool:
        """Whether part of a frame has arrived (its rest has not)."""
        return self._end != self._start or self._big_head is not None

    def _finish_big(self) -> Frame:
        chunks = self._big_chunks
        body: bytes | bytearray = chunks[0] if len(chunks) == 1 else b"".join(chunks)
        self._big_last = len(body)
        ftype, codec, rid = self._big_head  # type: ignore[misc]
        frame = _new_frame(Frame, (ftype, codec, self._big_name, rid, body))
        self._big_head = None
        self._big_name = b""
        self._big_chunks = []
        return frame

    def _outgrown(self, total: int, ftype: int, codec: int, nlen: int, blen: int, rid: int) -> None:
        """The frame at ``_start`` is larger than the read buffer. Up to ``max_buffer``
        the buffer grows to hold it (what waits is moved once), and reads go on into it,
        several such frames per read; a larger one, whose header and name are in, gets
        dedicated body storage that reads fill directly."""
        if total <= self.max_buffer:
            self._resize(self.max_buffer)
            return
        buf, end = self._buf, self._end
        p = self._start + HEADER_SIZE
        self._big_head = (ftype, codec, rid)
        self._big_name = bytes(buf[p : p + nlen])
        self._big_chunks = []
        self._big_left = blen
        have = end - p - nlen
        self._new_chunk(have)
        if have:
            cur = self._big_cur
            cur[0:have] = buf[p + nlen : end]  # type: ignore[index]
            self.buffer_updated(have)
        self._start = self._end = 0

    def _compact(self) -> None:
        start, end = self._start, self._end
        if start:
            n = end - start
            self._buf[0:n] = self._buf[start:end]
            self._start, self._end = 0, n

    def _parse(self, limit: int = -1) -> list[Frame]:
        if self._failed is not None:
            raise self._failed
        out: list[Frame] = []
        if self._big_head is not None:
            if self._big_left or self._big_cur is not None:
                return out
            out.append(self._finish_big())
        buf = self._buf
        start, end = self._start, self._end
        allowed = self.allowed_types
        max_body = self.max_body
        max_name = self.max_name
        append = out.append
        while end - start >= HEADER_SIZE and len(out) != limit:
            ftype, codec, nlen, blen, rid = _unpack_from(buf, start)
            if ftype not in allowed:
                self._start = start
                raise self._fail(
                    ProtocolError(f"unexpected frame type {ftype} ({TYPE_NAMES.get(ftype, 'unknown')})")
                )
            if blen > max_body:
                self._start = start
                raise self._fail(
                    FrameTooLarge(f"frame body of {blen} bytes exceeds the limit of {max_body}")
                )
            if nlen > max_name:
                self._start = start
                raise self._fail(ProtocolError(f"frame name of {nlen} bytes exceeds the limit of {max_name}"))
            total = HEADER_SIZE + nlen + blen
            if end - start < total:
                if total > len(buf) and (total <= self.max_buffer or end - start >= HEADER_SIZE + nlen):
                    self._start = start
                    self._outgrown(total, ftype, codec, nlen, blen, rid)
                    return out
                break
            p = start + HEADER_SIZE
            q = p + nlen
            start += total
            append(_new_frame(Frame, (ftype, codec, bytes(buf[p:q]) if nlen else b"", rid, bytes(buf[q:start]))))
        if start == end:
            self._start = self._end = 0
        else:
            self._start = start
            if len(buf) - end < HEADER_SIZE + max_name or start > len(buf) // 2:
                self._compact()
        return out
