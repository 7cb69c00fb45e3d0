"""meshtopic: list topics, echo them, measure their rate and bandwidth, send to them.

Every function takes a connected node and returns an exit status. The long-running
ones (echo, hz, bw, send with a rate) end when their count or duration is reached,
when ``stop`` is set, or on KeyboardInterrupt (which they let propagate).

The topology records who listens to a topic and who has sent on it (a node's
first ``send`` on a topic registers it as a publisher), so ``list`` shows both,
like ``rostopic info``; a topic appears once anybody sends on it or listens to it.
"""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any, TextIO

from easymesh.errors import RequestTimeout
from easymesh.node import Node, RawMessage
from easymesh.tools.display import decode, format_data, format_size
from easymesh.tools.session import others
from easymesh.tools.stats import Snapshot, Window
from easymesh.tools.table import print_membership

REPORT_EVERY = 1.0


def list_topics(node: Node, verbose: bool = False, out: TextIO | None = None) -> int:
    """Print each topic with its publishing and its listening groups (``-v``: one row
    per node and role with its id, host and pid). Prints a note on stderr when no node
    sends on or listens to any topic."""
    roles = [
        ("PUBLISHERS", "publisher", lambda n: n.publishes),
        ("LISTENERS", "listener", lambda n: n.topics),
    ]
    if not print_membership(others(node), "TOPIC", roles, verbose, out or sys.stdout):
        print("meshtopic: no node sends on or listens to any topic", file=sys.stderr)
    return 0


def echo(
    node: Node,
    topics: Sequence[str],
    count: int | None = None,
    raw: bool = False,
    out: TextIO | None = None,
    stop: threading.Event | None = None,
) -> int:
    """Print each message on ``topics``, one per line, until ``count`` messages were
    printed (None: until ``stop`` or Ctrl-C).

    With one topic a line is the data alone; with several it is ``topic: data``.
    Data is printed pretty (see display.py) or, with ``raw``, as its ``repr``.
    """
    out = out or sys.stdout
    stop = stop or threading.Event()
    lock = threading.Lock()
    printed = [0]
    prefix = len(set(topics)) > 1

    def callback(topic: str, msg: RawMessage) -> None:
        text = format_data(decode(msg), raw)
        with lock:
            if stop.is_set():
                return
            print(f"{topic}: {text}" if prefix else text, file=out, flush=True)
            printed[0] += 1
            if count is not None and printed[0] >= count:
                stop.set()

    for topic in dict.fromkeys(topics):
        node.listen(topic, callback, raw=True)
    stop.wait()
    for topic in dict.fromkeys(topics):
        node.stop_listening(topic)
    return 0


def hz(
    node: Node,
    topic: str,
    window: int = 100,
    duration: float | None = None,
    out: TextIO | None = None,
    stop: threading.Event | None = None,
    every: float = REPORT_EVERY,
) -> int:
    """Every ``every`` seconds print the rate on ``topic`` and the min/max/std dev of
    the intervals between its last ``window`` messages, like ``rostopic hz``.
    Runs for ``duration`` seconds (None: until ``stop`` or Ctrl-C).
    Raises ValueError if ``window`` < 2."""
    out = out or sys.stdout

    def report(s: Snapshot) -> str:
        return (
            f"average rate: {s.rate:.3f} Hz\n"
            f"\tmin: {s.min_interval:.4f} s  max: {s.max_interval:.4f} s  "
            f"std dev: {s.std_interval:.5f} s  window: {s.window}"
        )

    return _measure(node, topic, Window(window), duration, out, stop, every, report)


def bw(
    node: Node,
    topic: str,
    window: int = 100,
    duration: float | None = None,
    out: TextIO | None = None,
    stop: threading.Event | None = None,
    every: float = REPORT_EVERY,
) -> int:
    """Every ``every`` seconds print the bytes per second on ``topic`` and the mean,
    min and max message size over its last ``window`` messages, like ``rostopic bw``.
    Sizes are encoded payload bytes. Raises ValueError if ``window`` < 2."""
    out = out or sys.stdout

    def report(s: Snapshot) -> str:
        return (
            f"average: {format_size(s.bytes_per_s)}/s\n"
            f"\tmean: {format_size(s.mean_size)}  min: {format_size(s.min_size)}  "
            f"max: {format_size(s.max_size)}  window: {s.window}"
        )

    return _measure(node, topic, Window(window), duration, out, stop, every, report)


def _measure(
    node: Node,
    topic: str,
    win: Window,
    duration: float | None,
    out: TextIO,
    stop: threading.Event | None,
    every: float,
    report: Callable[[Snapshot], str],
) -> int:
    stop = stop or threading.Event()
    clock = time.monotonic

    def callback(topic: str, msg: RawMessage) -> None:
        win.add(clock(), len(msg.data))

    print(f"subscribed to {topic!r}", file=out, flush=True)
    node.listen(topic, callback, raw=True)
    try:
        start = clock()
        end = None if duration is None else start + duration
        n = 0
        while True:
            n += 1
            due = start + n * every if end is None else min(start + n * every, end)
            if stop.wait(max(0.0, due - clock())):
                break
            snap = win.snapshot()
            if win.take_new() == 0 or snap is None:
                print("no new messages", file=out, flush=True)
            else:
                print(report(snap), file=out, flush=True)
            if end is not None and due >= end:
                break
    finally:
        node.stop_listening(topic)
    return 0


def send(
    node: Node,
    topic: str,
    data: Any,
    rate: float | None = None,
    count: int | None = None,
    wait: float = 5.0,
    out: TextIO | None = None,
    err: TextIO | None = None,
    stop: threading.Event | None = None,
) -> int:
    """Send ``data`` to ``topic`` ``count`` times (default: once; with ``rate``:
    until ``stop`` or Ctrl-C), ``rate`` messages per second.

    First waits up to ``wait`` seconds for a listener. If none appears: without a
    rate, prints why and returns 1; with a rate, warns and sends anyway (messages
    to a topic nobody listens to are dropped). Prints ``sent N message(s) to 'topic'``
    at the end. Raises NodeClosed, CodecError (data cannot be encoded).
    """
    out = out or sys.stdout
    err = err or sys.stderr
    stop = stop or threading.Event()
    if count is None and rate is None:
        count = 1
    try:
        node.wait_for_listener(topic, timeout=wait)
    except RequestTimeout:
        if rate is None:
            print(
                f"meshtopic: nobody listens to {topic!r} (waited {wait:g} s)", file=err, flush=True
            )
            return 1
        print(f"meshtopic: nobody listens to {topic!r} yet; sending anyway", file=err, flush=True)
    sent = 0
    start = time.monotonic()
    try:
        while count is None or sent < count:
            if rate is not None and sent:
                if stop.wait(max(0.0, start + sent / rate - time.monotonic())):
                    break
            elif stop.is_set():
                break
            node.send(topic, data)
            sent += 1
    finally:
        print(f"sent {sent} message{'' if sent == 1 else 's'} to {topic!r}", file=out, flush=True)
    return 0
