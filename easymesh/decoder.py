"""Which codecs this node decodes, and decoding them.

A peer chooses the codec id of every frame it sends. A node whose own codec is
msgpack, json or raw must never unpickle what a peer sends it (pickle runs code
chosen by the sender), so acceptance is a property of the receiving node:

* default, own codec ``pickle``: every codec (it trusts pickle anyway);
* default, any other own codec: every codec except pickle;
* ``Node(accept_codecs=[...])`` (names, ids or codec objects): exactly those, plus the
  node's own codec.

Frames in a refused codec are dropped on arrival by the I/O thread (topics,
requests and replies alike: :meth:`Decoder.allowed` is a 256-entry table indexed
by the codec id, one lookup per frame), counted in ``stats()['refused_codec']``
and logged once per link; they are never decoded. Unknown ids that are not
refused pass (they cannot be decoded, but a ``raw=True`` listener such as
``meshbag record`` may keep them).

``pickle-shm`` (codec id 4, pickle with large buffers in shared memory; see
:mod:`easymesh.shm.body`) is pickle: it is accepted exactly when pickle is.

Decoding itself happens on the thread that takes the message (a listener's
worker, a subscriber, the caller of ``request``), never on the I/O thread.
"""

from __future__ import annotations

import logging
import weakref
from collections.abc import Iterable
from typing import Any

from easymesh.counters import Counter
from easymesh.errors import CodecError
from easymesh.escape import printable
from easymesh.protocol.codecs import (
    PICKLE_ID,
    PICKLE_SHM_ID,
    codec_for_id,
    codec_id_of,
    codec_name,
    resolve_codec,
)

log = logging.getLogger("easymesh.node")

__all__ = ["Decoder"]


def _accepted_ids(own_id: int, accept: Iterable[Any] | None) -> list[bool]:
    if accept is None:
        allowed = [True] * 256
        if own_id != PICKLE_ID:
            allowed[PICKLE_ID] = False
    else:
        allowed = [False] * 256
        for item in accept:
            if isinstance(item, int) and not isinstance(item, bool):
                if not 0 <= item <= 255:
                    raise ValueError(f"codec id {item} is not in 0..255")
                allowed[item] = True
            else:
                allowed[codec_id_of(resolve_codec(item))] = True
    allowed[own_id] = True
    allowed[PICKLE_SHM_ID] = allowed[PICKLE_ID]
    return allowed


class Decoder:
    """The node's codec, the codecs it accepts from peers, and their counters."""

    def __init__(
        self, codec: Any, accept: Iterable[Any] | None = None, node_name: str = ""
    ) -> None:
        self.codec = resolve_codec(codec)
        self.codec_id = codec_id_of(self.codec)
        self.encode = self.codec.encode
        self._own_decode = self.codec.decode
        #: ``allowed[codec_id]``: whether frames in that codec are taken at all.
        self.allowed: tuple[bool, ...] = tuple(_accepted_ids(self.codec_id, accept))
        self.node_name = node_name
        self.errors = Counter()
        self.refused = Counter()
        self._warned: weakref.WeakSet[Any] = weakref.WeakSet()

    def accepted(self) -> list[str]:
        """Names of the accepted codecs (for messages and docs)."""
        return [codec_name(i) for i in range(256) if self.allowed[i] and i < 128]

    def decode(self, codec_id: int, body: Any) -> Any:
        """Decode one body (the caller's thread). Raises CodecError (counted)."""
        try:
            if codec_id == self.codec_id:
                return self._own_decode(body)
            if not self.allowed[codec_id]:
                raise CodecError(f"codec {codec_name(codec_id)} is not accepted by this node")
            if codec_id == PICKLE_SHM_ID:
                from easymesh.shm.body import decode_body  # Linux only; imported when used

                return decode_body(body)
            return codec_for_id(codec_id).decode(body)
        except Exception as exc:
            error = self.failed(codec_id, exc)
            if error is exc:  # a CodecError already (a refused codec, a codec's own): as it is
                raise
            raise error from exc

    def failed(self, codec_id: int, exc: Exception) -> CodecError:
        """Count a body that could not be decoded; the CodecError to raise for ``exc``
        (for a caller that decoded with ``codec.decode`` itself, on its hot path)."""
        self.errors.incr()
        if isinstance(exc, CodecError):
            return exc
        error = CodecError(f"cannot decode a message (codec {codec_id}): {exc}")
        error.__cause__ = exc
        return error

    def refuse(self, link: Any, codec_id: int, what: str) -> None:
        """(I/O thread) A frame in a refused codec arrived on ``link``: count it, and
        log it the first time for that link."""
        self.refused.incr()
        if link is not None and link not in self._warned:
            self._warned.add(link)
            log.warning(
                "node %s: dropped %s in codec %s from %s: this node accepts only %s"
                " (Node(accept_codecs=...)); further ones from that link are only counted",
                printable(self.node_name),
                what,
                codec_name(codec_id),
                printable(getattr(link, "label", "") or getattr(link, "peer_address", "?")),
                ", ".join(self.accepted()),
            )
