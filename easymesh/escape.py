"""Text that came from a peer, made safe to log.

Names, ids, host names and error texts sent by another process are input: a newline
in one would let its sender write a line of its own into our log, an escape sequence
would repaint the operator's terminal. :func:`printable` turns such text into one
line of printable characters (everything else becomes a ``\\xNN`` / ``\\uNNNN``
escape) and bounds its length. Use it for every peer-supplied value that reaches a
log line or an exception message.
"""

from __future__ import annotations

from typing import Any

__all__ = ["printable"]


def _escape(ch: str) -> str:
    code = ord(ch)
    if code < 0x100:
        return f"\\x{code:02x}"
    if code < 0x10000:
        return f"\\u{code:04x}"
    return f"\\U{code:08x}"


def printable(value: Any, limit: int = 200) -> str:
    """``value`` as one line of printable text of at most about ``limit`` characters.

    ``bytes`` are decoded as UTF-8 (bad bytes replaced), anything else goes through
    ``str()`` (an object whose ``__str__`` raises becomes ``<TypeName>``).
    Non-printable characters (newlines, tabs, ESC, line separators...) and
    backslashes are escaped, so the result can be read back unambiguously; text
    longer than ``limit`` is cut and ends with ``...``.
    """
    if isinstance(value, (bytes, bytearray, memoryview)):
        text = bytes(value[: limit * 4]).decode("utf-8", "replace")
    elif isinstance(value, str):
        text = value
    else:
        try:
            text = str(value)
        except Exception:
            text = f"<{type(value).__name__}>"
    cut = len(text) > limit
    if cut:
        text = text[:limit]
    if not text.isprintable() or "\\" in text:
        text = "".join(
            ch if ch.isprintable() and ch != "\\" else ("\\\\" if ch == "\\" else _escape(ch))
            for ch in text
        )
    return text + "..." if cut else text
