"""meshbag record: listen raw to topics and write every message into an MCAP bag.

The recorder's callbacks run in each topic's listener worker (one thread per
topic, the core's dispatcher) and append to the shared, locked
:class:`~easymesh.bag.bagfile.BagWriter` directly: no extra hand-off; the
writer costs 4-13 µs per 1 kB message (compressible to random payload, idle to
loaded 2-core VM). ``scripts/bench/bag_rate.py`` measures the whole recorder. Each listener gets a
deep queue so a burst or a slow disk is absorbed rather than dropped; drops
that still happen are counted per topic and stored in the bag's metadata.
"""

from __future__ import annotations

import json
import os
import sys
import threading
import time
from dataclasses import dataclass, field
from typing import Any, TextIO

import easymesh
from easymesh.bag.bagfile import BagWriter, TopicCount, check_output, default_bag_path
from easymesh.bag.console import StatusLine, human_bytes
from easymesh.escape import printable
from easymesh.signals import STOP_SIGNALS_HUP, stopping_on

#: Per-topic listener queue of the recorder: deep, so bursts are absorbed, not dropped.
QUEUE_SIZE = 1_000_000
QUEUE_BYTES = 256 * 1024 * 1024
#: On stop, how long the recorder waits for its queues to be written before closing.
DRAIN_TIMEOUT = 30.0


@dataclass
class RecordResult:
    """What a recording produced. ``path`` is None when nothing was recorded (no file)."""

    path: str | None
    messages: int
    bytes: int
    seconds: float
    topics: dict[str, TopicCount] = field(default_factory=dict)
    dropped: dict[str, int] = field(default_factory=dict)


class Recorder:
    """Records ``topics`` seen by ``node`` into ``writer`` from :meth:`start` to :meth:`stop`.

    The node is the recorder's own: :meth:`stop` closes it (so nothing arrives
    after the file is finished), then finishes the file.
    """

    def __init__(
        self,
        node: easymesh.Node,
        topics: list[str],
        writer: BagWriter,
        *,
        queue_size: int = QUEUE_SIZE,
        queue_bytes: int = QUEUE_BYTES,
    ) -> None:
        if not topics:
            raise ValueError("give at least one topic to record")
        self.node = node
        self.topics = list(dict.fromkeys(topics))
        self.writer = writer
        self.queue_size = queue_size
        self.queue_bytes = queue_bytes
        self.started = 0.0
        self._dropped: dict[str, int] = {}
        self._tick = threading.Event()  # never set: a stoppable 50 ms wait

    def start(self) -> None:
        """Listen (raw) to every topic. Raises NodeClosed, ValueError for a bad topic name."""
        self.started = time.monotonic()
        for topic in self.topics:
            self.node.listen(
                topic,
                self._on_message,
                raw=True,
                queue_size=self.queue_size,
                queue_bytes=self.queue_bytes,
            )

    def _on_message(self, topic: str, msg: easymesh.RawMessage) -> None:
        self.writer.write(topic, msg.codec, msg.data)

    def dropped(self) -> dict[str, int]:
        """Messages each topic's listener queue dropped so far (the recorder fell behind)."""
        if self.node.closed:
            return dict(self._dropped)
        topics = self.node.stats()["topics"]
        return {t: s["dropped"] for t, s in topics.items() if s["dropped"]}

    def drain(self, timeout: float = DRAIN_TIMEOUT) -> bool:
        """Wait until the messages queued when this is called are written; False after
        ``timeout``. (The core's close() gives listener queues 2 s, then discards what is
        left; there is no drain hook to wait on, so this checks the counters every 50 ms.)
        """
        topics = self.node.stats()["topics"]
        targets = {t: s["handled"] + s["queued"] for t, s in topics.items()}
        deadline = time.monotonic() + timeout
        while True:
            topics = self.node.stats()["topics"]
            if all(topics[t]["handled"] >= n for t, n in targets.items() if t in topics):
                return True
            if time.monotonic() >= deadline:
                return False
            self._tick.wait(0.05)

    def stop(self) -> RecordResult:
        """Write what is queued (bounded), stop listening, finish the file.

        Messages that still had to be discarded are counted as dropped.
        Raises BagError if the file cannot be finished.
        """
        self.drain()
        self.node.close()
        topics = self.node.stats()["topics"]
        self._dropped = {
            t: n for t, s in topics.items() if (n := s["received"] - s["handled"]) > 0
        }  # received counts the queue's drops too: all that never reached the file
        seconds = time.monotonic() - self.started
        meta = {
            "dropped": json.dumps(self._dropped),
            "recorder": self.node.name,
            "coordinator": self.node.coordinator,
            "easymesh_version": easymesh.__version__,
        }
        path = self.writer.close(meta)
        return RecordResult(
            path,
            self.writer.messages,
            self.writer.bytes,
            seconds,
            dict(self.writer.counts),
            dict(self._dropped),
        )

    def status(self) -> str:
        """One line: elapsed time, messages and bytes per topic, drops."""
        parts = [
            f"recording {os.path.basename(self.writer.path)} {time.monotonic() - self.started:6.1f} s"
        ]
        counts = self.writer.counts
        for topic in self.topics:
            c = counts.get(topic) or TopicCount()
            parts.append(f"{printable(topic)}: {c.messages} msgs {human_bytes(c.bytes)}")
        dropped = sum(self.dropped().values())
        if dropped:
            parts.append(f"DROPPED {dropped}")
        return " | ".join(parts)


def record(
    topics: list[str],
    path: str | None = None,
    *,
    name: str | None = None,
    node_options: dict[str, Any] | None = None,
    compression: str = "zstd",
    duration: float | None = None,
    overwrite: bool = False,
    out: TextIO | None = None,
    status: TextIO | None = None,
    status_every: float | None = None,
    stop: threading.Event | None = None,
) -> RecordResult:
    """Record ``topics`` until ``stop`` is set, ``duration`` passes, SIGINT, SIGTERM or SIGHUP.

    ``path`` defaults to ``record_<YYYY-MM-DD-HH-MM-SS>.bag`` in the current
    folder; ``name`` to ``meshbag-record-<pid>`` (unique: recorders sharing a
    name would split the messages between them, see load balancing).
    Start and end lines go to ``out`` (stdout), the live line to ``status``
    (stderr) when it is a terminal, else every ``status_every`` seconds if given.
    Always finishes the file it started.

    Raises BagError (file cannot be written), CoordinatorUnavailable,
    AuthenticationError (from building the node), ValueError (no topics).
    """
    out = out or sys.stdout
    status_line = StatusLine(status or sys.stderr, every=status_every)
    if not topics:
        raise ValueError("give at least one topic to record")
    path = path or default_bag_path()
    check_output(path, overwrite)
    writer = BagWriter(
        path,
        compression=compression,
        overwrite=overwrite,
        library=f"easymesh {easymesh.__version__} meshbag",
    )
    stop = stop or threading.Event()
    node = easymesh.Node(
        name or f"meshbag-record-{os.getpid()}", **{"watch": "all", **(node_options or {})}
    )
    recorder = Recorder(node, topics, writer)
    with stopping_on(lambda _signum: stop.set(), STOP_SIGNALS_HUP):
        try:
            recorder.start()
            print(
                f"meshbag: recording {', '.join(map(printable, recorder.topics))} to {path} "
                f"({f'for {duration:g} s' if duration else 'Ctrl-C to stop'})",
                file=out,
                flush=True,
            )
            _run_until_stopped(recorder, writer, stop, duration, status_line, status_every)
        finally:
            status_line.clear()
            result = recorder.stop()
    _report(result, out)
    return result


def _run_until_stopped(
    recorder: Recorder,
    writer: BagWriter,
    stop: threading.Event,
    duration: float | None,
    status_line: StatusLine,
    status_every: float | None,
) -> None:
    """Keep the live status line current until ``stop``, ``duration`` or a write error."""
    deadline = None if duration is None else time.monotonic() + duration
    tick = min(0.25, status_every or 0.25)
    while writer.error is None:
        left = tick if deadline is None else min(tick, deadline - time.monotonic())
        if left <= 0 or stop.wait(left):
            break
        status_line.update(recorder.status())


def _report(result: RecordResult, out: TextIO) -> None:
    if result.path is None:
        print(
            f"meshbag: nothing recorded in {result.seconds:.1f} s; no file written",
            file=out,
            flush=True,
        )
    else:
        print(
            f"meshbag: wrote {result.path}: {result.messages} messages, {human_bytes(result.bytes)}, "
            f"{len(result.topics)} topics in {result.seconds:.1f} s",
            file=out,
            flush=True,
        )
    for topic, n in sorted(result.dropped.items()):
        print(
            f"meshbag: warning: {n} messages on {topic!r} dropped (the recorder fell behind)",
            file=out,
            flush=True,
        )
