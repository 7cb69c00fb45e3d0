"""Rate and size statistics over a sliding window of messages, as ``rostopic hz``/``bw``.

A :class:`Window` keeps the arrival time and size of the last ``N`` messages.
From ``N`` arrivals come ``N - 1`` intervals; the rate is their count divided by
their total (``(N - 1) / (t_last - t_first)``), and min/max/std are over the
intervals (std is the population standard deviation, as rostopic prints it).
Bandwidth is the bytes that arrived after the first message of the window divided
by the same span, so it equals rate times mean size when sizes are equal.

Sizes are payload bytes as the sender's codec encoded them; the 16-byte frame
header and the topic name are not counted.
"""

from __future__ import annotations

import math
import threading
from collections import deque
from dataclasses import dataclass


@dataclass(frozen=True)
class Snapshot:
    """Statistics of one window. Times in seconds, sizes in bytes."""

    total: int  # messages seen since the start
    window: int  # messages in the window
    rate: float  # messages per second
    min_interval: float
    max_interval: float
    std_interval: float
    bytes_per_s: float
    mean_size: float
    min_size: int
    max_size: int


class Window:
    """Arrival times and sizes of the last ``size`` messages. Thread-safe.

    Raises ValueError if ``size`` < 2 (a rate needs two arrivals).
    """

    def __init__(self, size: int = 100) -> None:
        if size < 2:
            raise ValueError("the window must hold at least 2 messages")
        self._items: deque[tuple[float, int]] = deque(maxlen=size)
        self._lock = threading.Lock()
        self.total = 0
        self._reported = 0

    def add(self, t: float, size: int = 0) -> None:
        """Record a message that arrived at time ``t`` (monotonic seconds)."""
        with self._lock:
            self._items.append((t, size))
            self.total += 1

    def take_new(self) -> int:
        """Messages added since the last call (for "no new messages" reports)."""
        with self._lock:
            new, self._reported = self.total - self._reported, self.total
            return new

    def snapshot(self) -> Snapshot | None:
        """The statistics now, or None while fewer than two messages arrived."""
        with self._lock:
            items = list(self._items)
            total = self.total
        if len(items) < 2:
            return None
        times = [t for t, _ in items]
        sizes = [s for _, s in items]
        intervals = [b - a for a, b in zip(times, times[1:], strict=False)]
        span = times[-1] - times[0]
        mean = span / len(intervals)
        std = math.sqrt(sum((x - mean) ** 2 for x in intervals) / len(intervals))
        return Snapshot(
            total=total,
            window=len(items),
            rate=len(intervals) / span if span > 0 else math.inf,
            min_interval=min(intervals),
            max_interval=max(intervals),
            std_interval=std,
            bytes_per_s=sum(sizes[1:]) / span if span > 0 else math.inf,
            mean_size=sum(sizes) / len(sizes),
            min_size=min(sizes),
            max_size=max(sizes),
        )
