"""How the tools print data, and how they decode what a raw listener receives.

Pretty (the default) keeps one message on one line: a string prints as its text
(quoted and escaped only if it holds a line break), long bytes are summarised,
anything else prints as its ``repr`` with line breaks folded into spaces (numpy
arrays, for instance). ``raw`` prints exactly ``repr(data)``.

The tools listen with ``raw=True`` and decode here, so a message the tool cannot
decode (a pickled class that is not importable in the tool's process, an unknown
codec) is still shown, as a one-line description, instead of being dropped.
"""

from __future__ import annotations

import re
from typing import Any

from easymesh.node import RawMessage
from easymesh.protocol.codecs import codec_for_id, codec_name

BYTES_SHOWN = 64
_FOLD = re.compile(r"\s*\n\s*")


class Undecodable:
    """Stands for a message the tool could not decode; its ``str`` says why."""

    def __init__(self, msg: RawMessage, exc: BaseException) -> None:
        self.codec = msg.codec
        self.size = len(msg.data)
        self.reason = f"{type(exc).__name__}: {exc}"

    def __str__(self) -> str:
        return f"<cannot decode {self.size} bytes ({codec_name(self.codec)}): {self.reason}>"

    __repr__ = __str__


def decode(msg: RawMessage) -> Any:
    """The data in ``msg``, or an :class:`Undecodable` if it cannot be decoded. Never raises."""
    try:
        return codec_for_id(msg.codec).decode(msg.data)
    except Exception as exc:  # any codec may raise anything on bytes it did not make
        return Undecodable(msg, exc)


def format_data(data: Any, raw: bool = False) -> str:
    """``data`` as text: pretty and on one line, or ``repr(data)`` when ``raw``."""
    if raw:
        return repr(data)
    if isinstance(data, str):
        return repr(data) if ("\n" in data or "\r" in data) else data
    if isinstance(data, (bytes, bytearray, memoryview)):
        b = bytes(data[: BYTES_SHOWN + 1])
        if len(data) <= BYTES_SHOWN:
            return repr(b)
        return f"{bytes(b[:BYTES_SHOWN])!r}... ({len(data)} bytes)"
    return _FOLD.sub(" ", repr(data))


def format_size(n: float) -> str:
    """A byte count in B, KB, MB or GB (powers of 1000, like rostopic bw)."""
    for unit in ("B", "KB", "MB"):
        if abs(n) < 1000:
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.2f} {unit}"
        n /= 1000
    return f"{n:.2f} GB"
