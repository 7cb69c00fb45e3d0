"""Terminal helpers for meshbag: a live status line, sizes.

The status line and the progress bar are drawn only when the stream is a
terminal (a pipe or a log file gets the start and end lines only), at most a
few times a second, with ``\\r`` and erase-to-end-of-line, cut to the width.
"""

from __future__ import annotations

import shutil
import time
from typing import Any, TextIO


def human_bytes(n: float) -> str:
    """``1536`` -> ``'1.5 kB'`` (powers of 1000, like the byte counts people read)."""
    for unit in ("B", "kB", "MB", "GB"):
        if abs(n) < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} GB"


class StatusLine:
    """One line redrawn in place on a terminal. On anything else: nothing, or with
    ``every`` a full line each ``every`` seconds (for logs, and tests)."""

    def __init__(self, stream: TextIO, interval: float = 0.25, every: float | None = None) -> None:
        self.stream = stream
        self.tty = _isatty(stream)
        self.enabled = self.tty or every is not None
        self.interval = interval if self.tty else (every or 0.0)
        self._last = 0.0
        self._drawn = False

    def update(self, text: str, force: bool = False) -> None:
        if not self.enabled:
            return
        now = time.monotonic()
        if not force and now - self._last < self.interval:
            return
        self._last = now
        if not self.tty:
            self.stream.write(text + "\n")
            self.stream.flush()
            return
        width = shutil.get_terminal_size((100, 20)).columns - 1
        self.stream.write("\r\x1b[K" + text[:width])
        self.stream.flush()
        self._drawn = True

    def clear(self) -> None:
        if self.tty and self._drawn:
            self.stream.write("\r\x1b[K")
            self.stream.flush()
            self._drawn = False


def progress_bar(fraction: float, width: int = 30) -> str:
    """``[#########.....................]`` for a fraction in 0..1."""
    fraction = min(1.0, max(0.0, fraction))
    done = int(round(fraction * width))
    return "[" + "#" * done + "." * (width - done) + "]"


def _isatty(stream: Any) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):
        return False
