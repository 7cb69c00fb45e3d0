"""One retry policy for every reconnect: exponential backoff with jitter.

Used when ``Node()`` keeps trying to reach the coordinator, when a node lost the
coordinator and reconnects, and when a peer could not be reached (sends to it are
refused cheaply until the next try). Jitter (a random factor in
``[1 - jitter, 1 + jitter]``) keeps a fleet of nodes that lost the same coordinator
from all coming back in the same millisecond. Pure: no clock, no sleeping; the
owner asks for the next delay and schedules the retry itself.
"""

from __future__ import annotations

import random
from collections.abc import Callable

__all__ = ["Backoff"]


class Backoff:
    """Delays ``initial, initial*factor, ...`` up to ``maximum``, each jittered."""

    __slots__ = ("initial", "maximum", "factor", "jitter", "_rand", "_next", "attempts")

    def __init__(
        self,
        initial: float,
        maximum: float,
        *,
        factor: float = 2.0,
        jitter: float = 0.2,
        rand: Callable[[], float] = random.random,
    ) -> None:
        if not 0 < initial <= maximum or factor < 1 or not 0 <= jitter < 1:
            raise ValueError("need 0 < initial <= maximum, factor >= 1, 0 <= jitter < 1")
        self.initial = initial
        self.maximum = maximum
        self.factor = factor
        self.jitter = jitter
        self._rand = rand
        self._next = initial
        #: Delays handed out since the last reset (0: the last try succeeded).
        self.attempts = 0

    def next(self) -> float:
        """The delay before the next try (seconds), and advance."""
        delay = self._next
        self._next = min(self._next * self.factor, self.maximum)
        self.attempts += 1
        return delay * (1.0 - self.jitter + 2.0 * self.jitter * self._rand())

    def reset(self) -> None:
        """The last try succeeded: start again from ``initial``."""
        self._next = self.initial
        self.attempts = 0
