"""A codec of one's own for tests: numbers only, raising CodecError itself (chained to the
real reason) for anything else."""

from __future__ import annotations

from typing import Any

from easymesh.errors import CodecError


class StrictCodec:
    """Encodes ``repr(obj)``; decodes an int, or raises CodecError from the ValueError."""

    def __init__(self, codec_id: int = 200) -> None:
        self.codec_id = codec_id

    def encode(self, obj: Any) -> bytes:
        return repr(obj).encode()

    def decode(self, body: bytes) -> Any:
        try:
            return int(body)
        except ValueError as exc:
            raise CodecError(f"not a number: {bytes(body)!r}") from exc
