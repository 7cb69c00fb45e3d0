"""Prefixed, optionally coloured output: every line a node prints, under its label.

One lock makes each line one write, so lines from different nodes never mix mid-line. Colour
is per node name (copies share it); meshlaunch's own notes are bold. ``color=None`` means
"when the stream is a terminal and ``NO_COLOR`` is not set".
"""

from __future__ import annotations

import os
import sys
import threading
from collections.abc import Iterable
from typing import TextIO

PALETTE = (
    "\033[32m",
    "\033[33m",
    "\033[34m",
    "\033[35m",
    "\033[36m",
    "\033[92m",
    "\033[93m",
    "\033[94m",
    "\033[95m",
    "\033[96m",
)
COORDINATOR_COLOR = "\033[2m"  # dim: it is the plumbing
NOTE_COLOR = "\033[1m"  # bold: meshlaunch itself
RESET = "\033[0m"


def want_color(stream: TextIO, setting: str = "auto") -> bool:
    """``always`` -> True, ``never`` -> False, ``auto`` -> a terminal without ``NO_COLOR``.

    Raises ValueError for any other setting.
    """
    if setting == "always":
        return True
    if setting == "never":
        return False
    if setting != "auto":
        raise ValueError(f"colour setting must be auto, always or never, not {setting!r}")
    isatty = getattr(stream, "isatty", None)
    return bool(isatty and isatty()) and not os.environ.get("NO_COLOR")


class Printer:
    """Writes ``[label] text`` lines to ``stream`` (default: ``sys.stdout`` at write time)."""

    def __init__(
        self, stream: TextIO | None = None, *, color: bool | None = None, labels: Iterable[str] = ()
    ) -> None:
        self._stream = stream
        self._color = want_color(stream or sys.stdout) if color is None else color
        self._width = max((len(label) for label in labels), default=0)
        self._colors: dict[str, str] = {}
        self._lock = threading.Lock()

    def color_for(self, name: str) -> str:
        """The colour code of node ``name`` (assigned in first-use order)."""
        if name == "coordinator":
            return COORDINATOR_COLOR
        with self._lock:
            if name not in self._colors:
                self._colors[name] = PALETTE[len(self._colors) % len(PALETTE)]
            return self._colors[name]

    def line(self, label: str, text: str, color: str = "") -> None:
        """Write one line of ``label``'s output."""
        prefix = f"[{label:>{self._width}}]"
        if self._color and color:
            prefix = f"{color}{prefix}{RESET}"
        self._write(f"{prefix} {text}\n")

    def note(self, text: str) -> None:
        """Write one of meshlaunch's own messages."""
        prefix = f"[{'meshlaunch':>{self._width}}]"
        if self._color:
            self._write(f"{NOTE_COLOR}{prefix} {text}{RESET}\n")
        else:
            self._write(f"{prefix} {text}\n")

    def _write(self, text: str) -> None:
        stream = self._stream or sys.stdout
        with self._lock:
            try:
                stream.write(text)
                stream.flush()
            except (OSError, ValueError):
                pass  # a closed or broken stdout must not stop the supervision
