"""meshbag info: what a bag holds, from the MCAP summary section only.

Reads the footer, the summary (statistics, channels, chunk indexes) and the
``meshbag`` metadata record the recorder writes (bytes per topic): a few
seeks, however big the file. A file without a summary (a recording killed with
SIGKILL, left as ``.part``) is reported as such instead of being scanned.
Bytes per topic of a bag written by another tool are unknown (shown ``?``).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from datetime import datetime

from mcap.exceptions import McapError
from mcap.reader import make_reader

from easymesh.bag.bagfile import METADATA_NAME, BagError, channel_codec
from easymesh.bag.console import human_bytes


@dataclass
class TopicInfo:
    topic: str
    encodings: list[str]
    messages: int
    bytes: int | None
    rate: float | None  # messages per second over the bag's duration
    playable: bool = False  # some channel of it has an easymesh codec


@dataclass
class BagInfo:
    """The summary of one bag. Times are ns since the Unix epoch."""

    path: str
    size: int
    start_ns: int
    end_ns: int
    messages: int
    chunks: int
    compression: list[str]
    library: str
    profile: str
    topics: list[TopicInfo] = field(default_factory=list)
    dropped: dict[str, int] = field(default_factory=dict)

    @property
    def duration(self) -> float:
        return max(0, self.end_ns - self.start_ns) / 1e9


def read_info(path: str) -> BagInfo:
    """Read a bag's summary. Raises BagError if it is missing, not MCAP, or has no summary."""
    try:
        size = os.path.getsize(path)
        with open(path, "rb") as f:
            reader = make_reader(f)
            header = reader.get_header()
            summary = reader.get_summary()
            if summary is None or summary.statistics is None:
                raise BagError(f"{path} has no summary section (was the recording killed?)")
            meta: dict[str, str] = {}
            if any(m.name == METADATA_NAME for m in summary.metadata_indexes):
                for record in reader.iter_metadata():
                    if record.name == METADATA_NAME:
                        meta = record.metadata
    except (OSError, McapError, ValueError, KeyError, IndexError, StopIteration) as exc:
        raise BagError(f"cannot read {path} as an MCAP file: {exc}") from exc
    stats = summary.statistics
    topic_bytes: dict[str, int] = _json_dict(meta.get("topic_bytes"))
    by_topic: dict[str, TopicInfo] = {}
    for cid, channel in sorted(summary.channels.items()):
        t = by_topic.get(channel.topic)
        if t is None:
            t = by_topic[channel.topic] = TopicInfo(
                channel.topic, [], 0, topic_bytes.get(channel.topic), None
            )
        if channel.message_encoding not in t.encodings:
            t.encodings.append(channel.message_encoding)
        t.playable = t.playable or channel_codec(channel) is not None
        t.messages += stats.channel_message_counts.get(cid, 0)
    info = BagInfo(
        path=path,
        size=size,
        start_ns=stats.message_start_time,
        end_ns=stats.message_end_time,
        messages=stats.message_count,
        chunks=stats.chunk_count,
        compression=sorted({c.compression or "none" for c in summary.chunk_indexes}),
        library=header.library,
        profile=header.profile,
        topics=sorted(by_topic.values(), key=lambda t: t.topic),
        dropped=_json_dict(meta.get("dropped")),
    )
    for t in info.topics:
        t.rate = t.messages / info.duration if info.duration > 0 else None
    return info


def _json_dict(text: str | None) -> dict[str, int]:
    if not text:
        return {}
    try:
        value = json.loads(text)
    except ValueError:
        return {}
    return {str(k): int(v) for k, v in value.items()} if isinstance(value, dict) else {}


def _when(ns: int) -> str:
    stamp = datetime.fromtimestamp(ns / 1e9).astimezone()
    ms = ns // 1_000_000
    return f"{stamp.isoformat(sep=' ', timespec='milliseconds')} ({ms // 1000}.{ms % 1000:03d})"


def format_info(info: BagInfo) -> str:
    """The text ``meshbag info`` prints."""
    lines = [
        f"path:        {info.path}",
        f"size:        {human_bytes(info.size)} ({info.size} bytes)",
        f"duration:    {info.duration:.3f} s",
        f"start:       {_when(info.start_ns) if info.messages else '-'}",
        f"end:         {_when(info.end_ns) if info.messages else '-'}",
        f"messages:    {info.messages}",
        f"chunks:      {info.chunks} ({', '.join(info.compression) or 'none'})",
        f"written by:  {info.library or '?'}"
        + (f" (profile {info.profile})" if info.profile else ""),
        f"topics:      {len(info.topics)}",
    ]
    if info.topics:
        rows = [("TOPIC", "ENCODING", "MESSAGES", "BYTES", "RATE")]
        for t in info.topics:
            rows.append(
                (
                    t.topic,
                    ",".join(t.encodings),
                    str(t.messages),
                    "?" if t.bytes is None else human_bytes(t.bytes),
                    "-" if t.rate is None else f"{t.rate:.1f}/s",
                )
            )
        widths = [max(len(r[i]) for r in rows) for i in range(5)]
        for r in rows:
            left = "  ".join(r[i].ljust(widths[i]) for i in range(2))
            right = "  ".join(r[i].rjust(widths[i]) for i in range(2, 5))
            lines.append(f"  {left}  {right}")
    for topic, n in sorted(info.dropped.items()):
        lines.append(f"warning: the recorder dropped {n} messages on {topic!r}")
    return "\n".join(lines)
