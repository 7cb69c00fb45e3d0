"""Subscription: take messages in your own thread, at your own rate.

For control loops that own their state and are not thread-safe: a
subscription buffers the newest ``queue_size`` messages of a topic and never
calls user code. The loop asks for what it needs each cycle:

* :meth:`Subscription.latest` — the newest data so far (never blocks, does not consume);
* :meth:`Subscription.get` — the next unread message, oldest first (blocks up to a timeout);
* :meth:`Subscription.drain` — every unread message, oldest first (never blocks);
* iteration — messages as they arrive, until the subscription is closed.

Design: the node's I/O thread hands raw frames to :meth:`put_many` (one lock,
no decoding); decoding happens in the thread that takes the message, so a
flood costs the I/O thread only a queue append and costs the control loop
only the messages it actually reads. Past ``queue_size`` the oldest unread
message is dropped and counted in :attr:`dropped` (the newest data is what a
control loop wants). ``latest()`` remembers the newest frame independently of
the queue, so reading with ``get``/``drain`` does not change what ``latest``
returns. All methods are thread-safe.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from typing import Any

from easymesh.errors import CodecError, RequestTimeout, SubscriptionClosed
from easymesh.escape import printable

_NOTHING = object()
log = logging.getLogger("easymesh.subscription")


class Subscription:
    """A bounded buffer of one topic's messages. Create with ``Node.subscribe(topic)``."""

    def __init__(
        self,
        topic: str,
        queue_size: int,
        decode: Callable[[int, Any], Any],
        on_close: Callable[[Subscription], None],
    ) -> None:
        if queue_size < 1:
            raise ValueError("queue_size must be at least 1")
        self.topic = topic
        self.queue_size = queue_size
        self._decode = decode
        self._on_close = on_close
        self._q: deque[Any] = deque()
        self._cond = threading.Condition(threading.Lock())
        self._latest_frame: Any = None
        self._latest_value: Any = _NOTHING
        self._closed = False
        #: Messages discarded because ``queue_size`` unread ones were waiting.
        self.dropped = 0
        #: Messages received in all.
        self.received = 0

    # -- fed by the node's I/O thread ------------------------------------------------------

    def put_many(self, items: Any) -> None:
        q = self._q
        with self._cond:
            if self._closed:
                return
            for frame, _nbytes in items:
                self.received += 1
                if len(q) >= self.queue_size:
                    q.popleft()
                    self.dropped += 1
                q.append(frame)
                self._latest_frame = frame
                self._latest_value = _NOTHING
            self._cond.notify_all()

    # -- for the user's thread -------------------------------------------------------------

    def latest(self) -> Any:
        """The newest data received so far, or None if nothing arrived yet.
        Never blocks; does not consume. Raises CodecError if that message cannot be
        decoded (an unknown codec: a configuration error worth hearing about)."""
        with self._cond:
            frame, value = self._latest_frame, self._latest_value
        if frame is None:
            return None
        if value is _NOTHING:
            value = self._decode(frame.codec, frame.body)
            with self._cond:
                if self._latest_frame is frame:
                    self._latest_value = value
        return value

    def get(self, timeout: float | None = None) -> Any:
        """The next unread message (oldest first), waiting up to ``timeout`` seconds
        (None: forever). A message that cannot be decoded is skipped (counted in the
        node's ``decode_errors`` and logged). Raises RequestTimeout (a TimeoutError) when
        it runs out, SubscriptionClosed once the subscription (or its node) is closed."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            with self._cond:
                while not self._q:
                    if self._closed:
                        raise SubscriptionClosed(f"subscription to {self.topic!r} is closed")
                    left = None if deadline is None else deadline - time.monotonic()
                    if left is not None and left <= 0:
                        raise RequestTimeout(f"no message on {self.topic!r} within {timeout:g} s")
                    self._cond.wait(None if left is None else min(left, threading.TIMEOUT_MAX))
                frame = self._q.popleft()
            value = self._try_decode(frame)
            if value is not _NOTHING:
                return value

    def drain(self) -> list[Any]:
        """Every unread message, oldest first (maybe none). Never blocks. Messages that
        cannot be decoded are skipped (counted and logged)."""
        with self._cond:
            frames = list(self._q)
            self._q.clear()
        out = []
        for f in frames:
            value = self._try_decode(f)
            if value is not _NOTHING:
                out.append(value)
        return out

    def _try_decode(self, frame: Any) -> Any:
        try:
            return self._decode(frame.codec, frame.body)
        except CodecError as exc:  # the node counted it already
            log.error(
                "easymesh: subscription to %r: skipping a message: %s", self.topic, printable(exc)
            )
            return _NOTHING

    def __iter__(self) -> Iterator[Any]:
        """Messages as they arrive; ends when the subscription is closed."""
        while True:
            try:
                yield self.get()
            except SubscriptionClosed:
                return

    @property
    def pending(self) -> int:
        """How many unread messages wait."""
        return len(self._q)

    @property
    def closed(self) -> bool:
        return self._closed

    def close(self) -> None:
        """Stop the subscription (idempotent): unread messages are discarded, a blocked
        ``get`` raises SubscriptionClosed and iteration ends."""
        with self._cond:
            if self._closed:
                return
            self._closed = True
            self._q.clear()
            # latest() keeps the newest message until the next one; a closed subscription
            # keeps nothing (a message in shared memory goes back to its sender)
            self._latest_frame, self._latest_value = None, _NOTHING
            self._cond.notify_all()
        self._on_close(self)

    def stop(self, timeout: float = 0.0) -> bool:
        """(node close) Same as close(); the signature of a node sink."""
        self.close()
        return True

    def __enter__(self) -> Subscription:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "closed" if self._closed else f"{len(self._q)} unread"
        return f"<easymesh.Subscription {self.topic!r} {state}, dropped={self.dropped}>"
