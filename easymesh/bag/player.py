"""meshbag play: send a bag's messages again, with the recorded spacing.

* Exact: each message goes out with ``Node.send_raw`` using the codec id and
  the bytes that were recorded; listeners decode it as if the original sender
  had sent it. Channels whose encoding is not an easymesh codec (a foreign
  MCAP file, e.g. ``protobuf``) are skipped and counted.
* Timing: message *i* is sent at ``t0 + (log_time_i - log_time_first) / rate``
  on the monotonic clock; the wait is ``Event.wait`` so a stop is immediate.
  When the player falls behind it sends at once and does not try to "catch
  up" faster than the schedule. ``immediate`` sends as fast as possible.
  ``start`` skips the first seconds of the bag; the first message played is
  sent at once. ``loop`` starts over immediately after the last message.
* Listeners: before the first message the player waits (bounded, ``wait``
  seconds) until every topic to play has a listener, and says which topics
  still have none. It then plays anyway: a message to a topic nobody listens
  to is dropped, as the original send would have been, and counted.
"""

from __future__ import annotations

import os
import sys
import threading
import time
from dataclasses import dataclass
from typing import Any, TextIO

from mcap.reader import make_reader
from mcap.records import Channel

import easymesh
from easymesh.bag.bagfile import BagError, channel_codec, resolve_bag
from easymesh.bag.console import StatusLine, progress_bar
from easymesh.bag.summary import read_info
from easymesh.signals import STOP_SIGNALS_HUP, stopping_on


@dataclass
class PlayResult:
    """Counts of one ``play`` run (all loops together)."""

    path: str
    sent: int = 0
    no_listener: int = 0
    skipped: int = 0  # channel without an easymesh codec
    loops: int = 0
    seconds: float = 0.0
    dropped_outbound: int = 0
    interrupted: bool = False


class Player:
    """Plays the bag at ``path`` through ``node`` (which the caller owns and closes).

    Raises BagError for a missing or unreadable file, ValueError for bad arguments.
    """

    def __init__(
        self,
        node: easymesh.Node,
        path: str,
        *,
        rate: float = 1.0,
        loop: bool = False,
        start: float = 0.0,
        topics: list[str] | None = None,
        immediate: bool = False,
        wait: float = 5.0,
        stop: threading.Event | None = None,
        status: TextIO | None = None,
    ) -> None:
        if not rate > 0:
            raise ValueError("the rate must be a number above 0")
        if start < 0:
            raise ValueError("--start must be 0 or more seconds")
        self.node = node
        self.info = read_info(path)
        self.path = path
        self.rate = rate
        self.loop = loop
        self.start = start
        self.immediate = immediate
        self.wait = wait
        self.stop = stop or threading.Event()
        self.status = StatusLine(status or sys.stderr, interval=0.1)
        known = [t.topic for t in self.info.topics]
        if topics:
            unknown = [t for t in topics if t not in known]
            if unknown:
                raise BagError(
                    f"{path} has no topic {', '.join(map(repr, unknown))}; it has "
                    f"{', '.join(map(repr, known)) or 'none'}"
                )
        self.topics = list(dict.fromkeys(topics)) if topics else known
        self.result = PlayResult(path)

    def wait_for_listeners(self) -> list[str]:
        """Wait up to ``wait`` seconds for a listener on every topic to play (topics without
        an easymesh codec are not waited for); return those still without one."""
        deadline = time.monotonic() + self.wait
        playable = {t.topic for t in self.info.topics if t.playable}
        missing = [t for t in self.topics if t in playable and not self.node.has_listeners(t)]
        while missing and not self.stop.is_set():
            left = deadline - time.monotonic()
            if left <= 0:
                break
            try:  # short slices, so a stop (Ctrl-C) is seen within 0.2 s
                self.node.wait_for_listener(missing[0], timeout=min(0.2, left))
            except TimeoutError:
                pass
            missing = [t for t in missing if not self.node.has_listeners(t)]
        return missing

    def run(self) -> PlayResult:
        """Play once, or until stopped with ``loop``. Raises BagError if the file is unreadable."""
        began = time.monotonic()
        try:
            while not self.stop.is_set():
                self._play_once()
                if self.stop.is_set():
                    self.result.interrupted = True
                    break
                self.result.loops += 1
                if not self.loop:
                    break
        finally:
            self.status.clear()
            self.result.seconds = time.monotonic() - began
        return self.result

    def _play_once(self) -> None:
        info = self.info
        first_ns = info.start_ns + int(self.start * 1e9)
        span = max(0, info.end_ns - first_ns)
        codecs: dict[int, int | None] = {}
        node, stop, result, rate = self.node, self.stop, self.result, self.rate
        t0 = -1.0
        origin = 0
        try:
            with open(self.path, "rb") as f:
                reader = make_reader(f)
                for _schema, channel, message in reader.iter_messages(
                    self.topics, starting_at=first_ns if self.start else None, log_time_order=True
                ):
                    if t0 < 0:
                        t0, origin = time.monotonic(), message.log_time
                    elif not self.immediate:
                        delay = t0 + (message.log_time - origin) / 1e9 / rate - time.monotonic()
                        if delay > 0 and stop.wait(delay):
                            return
                    if stop.is_set():
                        return
                    codec = codecs.get(channel.id, -1)
                    if codec == -1:
                        codec = codecs[channel.id] = _codec_or_warn(channel)
                    if codec is None:
                        result.skipped += 1
                    elif node.has_listeners(channel.topic):
                        node.send_raw(channel.topic, codec, message.data)
                        result.sent += 1
                    else:
                        result.no_listener += 1
                    if self.status.enabled:
                        done = (message.log_time - first_ns) / span if span else 1.0
                        self.status.update(
                            f"playing {os.path.basename(self.path)} {progress_bar(done)} "
                            f"{(message.log_time - info.start_ns) / 1e9:7.1f} / {info.duration:.1f} s "
                            f"{result.sent} sent"
                            + (f" (loop {result.loops + 1})" if self.loop else "")
                        )
        except (OSError, ValueError, KeyError) as exc:
            raise BagError(f"cannot read {self.path}: {exc}") from exc


def _codec_or_warn(channel: Channel) -> int | None:
    codec = channel_codec(channel)
    if codec is None:
        print(
            f"meshbag: skipping topic {channel.topic!r}: encoding {channel.message_encoding!r} "
            "is not an easymesh codec",
            file=sys.stderr,
            flush=True,
        )
    return codec


def play(
    path: str | None = None,
    *,
    name: str | None = None,
    node_options: dict[str, Any] | None = None,
    out: TextIO | None = None,
    status: TextIO | None = None,
    stop: threading.Event | None = None,
    **options: Any,
) -> PlayResult:
    """Play a bag (default: the newest ``record_*.bag`` here) and report on ``out``.

    ``options`` are :class:`Player`'s (rate, loop, start, topics, immediate, wait).
    SIGINT/SIGTERM/SIGHUP stop the playback cleanly. Raises BagError,
    CoordinatorUnavailable, AuthenticationError, ValueError.
    """
    out = out or sys.stdout
    path = resolve_bag(path)
    stop = stop or threading.Event()
    read_info(path)  # fail on a bad file before joining the mesh
    node = easymesh.Node(name or "meshbag-play", **{"watch": "all", **(node_options or {})})
    with stopping_on(lambda _signum: stop.set(), STOP_SIGNALS_HUP), node:
        player = Player(node, path, stop=stop, status=status, **options)
        print(
            f"meshbag: playing {path} ({player.info.messages} messages, {player.info.duration:.1f} s"
            f"{f', rate {player.rate:g}' if player.rate != 1 else ''}"
            f"{', looping' if player.loop else ''}); waiting up to {player.wait:g} s for listeners",
            file=out,
            flush=True,
        )
        missing = player.wait_for_listeners()
        if missing:
            print(
                f"meshbag: no listener for {', '.join(map(repr, missing))}; playing anyway "
                "(those messages go nowhere)",
                file=out,
                flush=True,
            )
        result = player.run()
        stats = node.stats()
    result.dropped_outbound = stats["dropped_outbound"]
    word = "stopped" if result.interrupted else "done"
    print(
        f"meshbag: {word}: sent {result.sent} messages in {result.seconds:.1f} s"
        + (f", {result.no_listener} had no listener" if result.no_listener else "")
        + (f", {result.skipped} skipped (not an easymesh codec)" if result.skipped else "")
        + (
            f", {result.dropped_outbound} dropped on the way out" if result.dropped_outbound else ""
        ),
        file=out,
        flush=True,
    )
    return result
