"""Codecs: how topic data, requests and replies become bytes.

Every TOPIC, REQUEST and REPLY frame carries the id of the codec that encoded
its body, so nodes that use different codecs still talk wherever both sides
know the codec. The ids below are pinned forever: never reuse or renumber one.

====  ========  ============================================================
id    name      body
====  ========  ============================================================
0     raw       the bytes themselves (data must be bytes-like)
1     pickle    ``pickle.dumps(data, protocol=5)``
2     msgpack   ``msgpack.packb(data, use_bin_type=True)``
3     json      UTF-8 JSON (``json.dumps``)
4     pickle-shm  an ``easymesh.shm`` MESSAGE: pickle 5 with its large buffers in shared
                  memory (same-host Unix links that offered it) or inline; see decoder.py
5-127           reserved for easymesh
128-254         free for user codecs (set ``codec_id`` on the codec object)
255   custom    a user codec that gave no ``codec_id``
====  ========  ============================================================

A user codec is any object with ``encode(obj) -> bytes`` and ``decode(bytes) -> obj``
(``decode`` receives a bytes-like object: bytes or bytearray), and optionally
``codec_id`` (128..254) and ``name``. Pass it as ``Node(codec=...)``; register extra
codecs a node should be able to *decode* with :func:`register_codec`.

pickle decodes into arbitrary objects, which means running code chosen by
whoever produced the bytes. easymesh only decodes bodies from peers that
passed the authentication handshake; on an untrusted network always set an
authkey, or use msgpack/json.
"""

from __future__ import annotations

import json
import pickle
from typing import Any, Protocol, runtime_checkable

import msgpack

from easymesh.errors import CodecError, UnknownCodec

_dumps = pickle.dumps

RAW_ID = 0
PICKLE_ID = 1
MSGPACK_ID = 2
JSON_ID = 3
PICKLE_SHM_ID = 4
CUSTOM_ID = 255


@runtime_checkable
class Codec(Protocol):
    def encode(self, obj: Any) -> bytes: ...

    def decode(self, data: bytes) -> Any: ...


class RawCodec:
    """Bytes in, bytes out. ``decode`` returns ``bytes``."""

    codec_id = RAW_ID
    name = "raw"

    def encode(self, obj: Any) -> bytes:
        if not isinstance(obj, (bytes, bytearray, memoryview)):
            raise CodecError(f"the raw codec sends bytes, not {type(obj).__name__}")
        return obj  # type: ignore[return-value]

    def decode(self, data: bytes) -> bytes:
        return bytes(data)


class PickleCodec:
    """pickle, protocol 5. Decoding runs code chosen by the sender: see module docs."""

    codec_id = PICKLE_ID
    name = "pickle"
    # decode is the C function itself (no Python frame per message); encode is a method
    # because a functools.partial with protocol=5 measured slower than this call.
    decode = staticmethod(pickle.loads)

    def encode(self, obj: Any) -> bytes:
        return _dumps(obj, 5)


class MsgpackCodec:
    """msgpack with bin/str distinction; tuples arrive as lists."""

    codec_id = MSGPACK_ID
    name = "msgpack"

    def encode(self, obj: Any) -> bytes:
        return msgpack.packb(obj, use_bin_type=True)

    def decode(self, data: bytes) -> Any:
        return msgpack.unpackb(data, raw=False, strict_map_key=False)


class JsonCodec:
    """JSON (UTF-8). Bytes are not representable; tuples arrive as lists."""

    codec_id = JSON_ID
    name = "json"

    def encode(self, obj: Any) -> bytes:
        return json.dumps(obj, separators=(",", ":")).encode("utf-8")

    def decode(self, data: bytes) -> Any:
        return json.loads(bytes(data))


_BUILTIN: dict[str, Any] = {
    "raw": RawCodec(),
    "pickle": PickleCodec(),
    "msgpack": MsgpackCodec(),
    "json": JsonCodec(),
}
_BY_ID: dict[int, Any] = {c.codec_id: c for c in _BUILTIN.values()}


def codec_id_of(codec: Any) -> int:
    """The id a codec object writes into frames."""
    cid = getattr(codec, "codec_id", CUSTOM_ID)
    if not isinstance(cid, int) or not 0 <= cid <= 255:
        raise ValueError(f"codec_id must be an int in 0..255, not {cid!r}")
    return cid


def resolve_codec(codec: str | Any) -> Any:
    """A codec object from a name (``'pickle'``, ``'msgpack'``, ``'json'``, ``'raw'``) or an object.

    Raises ValueError for an unknown name and TypeError for an object without
    ``encode``/``decode``.
    """
    if isinstance(codec, str):
        try:
            return _BUILTIN[codec]
        except KeyError:
            raise ValueError(
                f"unknown codec {codec!r}; choose one of {sorted(_BUILTIN)} or pass an object "
                "with encode() and decode()"
            ) from None
    if not (callable(getattr(codec, "encode", None)) and callable(getattr(codec, "decode", None))):
        raise TypeError("a codec must have encode(obj) -> bytes and decode(bytes) -> obj")
    cid = codec_id_of(codec)
    if cid < 128 and _BY_ID.get(cid) is not codec and type(_BY_ID.get(cid)) is not type(codec):
        raise ValueError(f"codec ids below 128 are reserved for easymesh (got {cid})")
    return codec


def register_codec(codec: Any) -> None:
    """Make every node of this process able to decode ``codec``'s id.

    Raises ValueError when the id is reserved or taken by a different codec.
    """
    codec = resolve_codec(codec)
    cid = codec_id_of(codec)
    old = _BY_ID.get(cid)
    if old is not None and old is not codec:
        raise ValueError(f"codec id {cid} is already registered to {old!r}")
    _BY_ID[cid] = codec


def codec_for_id(cid: int, own: Any = None) -> Any:
    """The codec that decodes id ``cid``: the node's own codec first, then the registry.

    Raises UnknownCodec.
    """
    if own is not None and getattr(own, "codec_id", CUSTOM_ID) == cid:
        return own
    try:
        return _BY_ID[cid]
    except KeyError:
        raise UnknownCodec(f"unknown codec id {cid}") from None


def codec_name(cid: int) -> str:
    if cid == PICKLE_SHM_ID:
        return "pickle-shm"
    codec = _BY_ID.get(cid)
    return getattr(codec, "name", f"codec-{cid}") if codec is not None else f"codec-{cid}"
