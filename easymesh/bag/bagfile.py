"""How easymesh topics live in an MCAP file: channels, encodings, names, the writer.

* One MCAP channel per (topic, codec) pair, schema-less (schema id 0). A topic
  normally has one codec; a topic fed by nodes with different codecs gets one
  channel per codec, all with the same topic name.
* The channel's ``message_encoding`` is the codec's name (``raw``, ``pickle``,
  ``msgpack``, ``json``; ``codec-<id>`` for a user codec without a name) and
  its metadata holds ``easymesh.codec_id`` so a user codec id survives too.
* A message is the encoded body exactly as it crossed the wire; ``log_time``
  and ``publish_time`` are the recorder's wall clock (ns since the Unix epoch)
  when the recorder handled it; ``sequence`` counts per channel from 1.
* On close the writer adds a ``meshbag`` metadata record (bytes per topic,
  messages the recorder dropped, the recording node) so ``meshbag info`` can
  show bytes per topic from the summary without scanning the data.
"""

from __future__ import annotations

import json
import os
import threading
import time
from dataclasses import dataclass
from typing import Any

from mcap.records import Channel
from mcap.writer import CompressionType, Writer

from easymesh.errors import MeshError
from easymesh.protocol.codecs import codec_name

PROFILE = "easymesh"
CODEC_KEY = "easymesh.codec_id"
METADATA_NAME = "meshbag"
DEFAULT_PATTERN = "record_%Y-%m-%d-%H-%M-%S.bag"
PART_SUFFIX = ".part"
COMPRESSIONS = {
    "zstd": CompressionType.ZSTD,
    "lz4": CompressionType.LZ4,
    "none": CompressionType.NONE,
}
_CODEC_BY_NAME = {"raw": 0, "pickle": 1, "msgpack": 2, "json": 3}


class BagError(MeshError):
    """A bag cannot be written or read (missing, not MCAP, no summary, ...)."""


def message_encoding(codec_id: int) -> str:
    """The MCAP message encoding written for an easymesh codec id."""
    return codec_name(codec_id)


def channel_codec(channel: Channel) -> int | None:
    """The easymesh codec id of a channel's messages, or None if it has none (a foreign file)."""
    value = channel.metadata.get(CODEC_KEY)
    if value is not None:
        try:
            cid = int(value)
        except ValueError:
            return None
        return cid if 0 <= cid <= 255 else None
    return _CODEC_BY_NAME.get(channel.message_encoding)


def default_bag_path(folder: str = ".", now: float | None = None) -> str:
    """``record_<YYYY-MM-DD-HH-MM-SS>.bag`` in ``folder`` (local time); ``_2``, ``_3``... if taken."""
    base = time.strftime(DEFAULT_PATTERN, time.localtime(now))
    path = _join(folder, base)
    n = 2
    while os.path.exists(path) or os.path.exists(path + PART_SUFFIX):
        path = _join(folder, f"{base[:-4]}_{n}.bag")
        n += 1
    return path


def latest_bag(folder: str = ".") -> str:
    """The most recently modified ``record_*.bag`` in ``folder``. Raises BagError if none."""
    try:
        names = [n for n in os.listdir(folder) if n.startswith("record_") and n.endswith(".bag")]
    except OSError as exc:
        raise BagError(f"cannot list {folder!r}: {exc}") from exc
    paths = [p for p in (_join(folder, n) for n in names) if os.path.isfile(p)]
    if not paths:
        where = os.path.abspath(folder)
        raise BagError(f"no record_*.bag file in {where}; give the bag file to use")
    return max(paths, key=lambda p: (os.stat(p).st_mtime_ns, p))


def _join(folder: str, name: str) -> str:
    return name if folder == "." else os.path.join(folder, name)


def resolve_bag(path: str | None) -> str:
    """``path`` if given (must be a file), else the latest bag here. Raises BagError."""
    if path is None:
        return latest_bag()
    if not os.path.isfile(path):
        raise BagError(f"no such bag file: {path}")
    return path


def check_output(path: str, overwrite: bool) -> None:
    """Fail early, before any node is built, if ``path`` cannot be written.

    Raises BagError when the folder is missing or not writable, or the file exists
    and ``overwrite`` is false.
    """
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder):
        raise BagError(f"folder {folder} does not exist")
    if not os.access(folder, os.W_OK):
        raise BagError(f"cannot write in {folder}")
    if os.path.exists(path) and not overwrite:
        raise BagError(f"{path} exists; choose another file or pass --force")


@dataclass
class TopicCount:
    messages: int = 0
    bytes: int = 0


class BagWriter:
    """A thread-safe MCAP writer for raw easymesh messages.

    The file is created on the first message (so an empty recording leaves no
    file), written as ``<path>.part`` and renamed to ``path`` by :meth:`close`
    once the summary and indexes are written: a file with the final name is
    always complete. ``write`` may be called from many threads at once.

    Raises BagError (from ``__init__``) for an unknown compression name.
    """

    def __init__(
        self,
        path: str,
        *,
        compression: str = "zstd",
        chunk_size: int = 1 << 20,
        library: str = "meshbag",
        overwrite: bool = False,
    ) -> None:
        if compression not in COMPRESSIONS:
            raise BagError(f"unknown compression {compression!r}; choose {', '.join(COMPRESSIONS)}")
        self.path = path
        self.compression = compression
        self.chunk_size = chunk_size
        self.library = library
        self.overwrite = overwrite
        self.counts: dict[str, TopicCount] = {}
        self.messages = 0
        self.bytes = 0
        self.error: BaseException | None = None
        self._lock = threading.Lock()
        self._file: Any = None
        self._writer: Writer | None = None
        self._channels: dict[tuple[str, int], int] = {}
        self._sequence: dict[int, int] = {}
        self._closed = False
        self._result: str | None = None

    @property
    def part_path(self) -> str:
        return self.path + PART_SUFFIX

    def _open(self) -> Writer:
        self._file = open(self.part_path, "wb")  # noqa: SIM115 - closed in close()
        writer = Writer(
            self._file, chunk_size=self.chunk_size, compression=COMPRESSIONS[self.compression]
        )
        writer.start(profile=PROFILE, library=self.library)
        self._writer = writer
        return writer

    def write(
        self,
        topic: str,
        codec_id: int,
        data: bytes | bytearray | memoryview,
        log_time: int | None = None,
    ) -> bool:
        """Append one message; returns False (and drops it) once closed or after a write error.

        A write error is kept in :attr:`error` instead of raised, so the caller's
        thread goes on; check ``error`` (the recorder stops on it).
        """
        stamp = time.time_ns() if log_time is None else log_time
        size = data.nbytes if isinstance(data, memoryview) else len(data)
        with self._lock:
            if self._closed or self.error is not None:
                return False
            try:
                writer = self._writer or self._open()
                key = (topic, codec_id)
                channel = self._channels.get(key)
                if channel is None:
                    channel = self._channels[key] = writer.register_channel(
                        topic, message_encoding(codec_id), 0, {CODEC_KEY: str(codec_id)}
                    )
                seq = self._sequence.get(channel, 0) + 1
                self._sequence[channel] = seq
                writer.add_message(channel, stamp, data, stamp, seq)  # type: ignore[arg-type]
            except OSError as exc:
                self.error = exc
                return False
            count = self.counts.get(topic)
            if count is None:
                count = self.counts[topic] = TopicCount()
            count.messages += 1
            count.bytes += size
            self.messages += 1
            self.bytes += size
            return True

    def close(self, metadata: dict[str, str] | None = None) -> str | None:
        """Finish the file (summary, indexes) and give it its final name.

        Returns the path written, or None when no message was written (no file is
        left). Idempotent. Raises BagError if finishing or renaming fails (the
        ``.part`` file is then left for inspection).
        """
        with self._lock:
            if self._closed:
                return self._result
            self._closed = True
            writer, self._writer = self._writer, None
            if writer is None:
                return None
            try:
                if self.error is None:
                    record = {
                        "topic_bytes": json.dumps({t: c.bytes for t, c in self.counts.items()})
                    }
                    record.update(metadata or {})
                    writer.add_metadata(METADATA_NAME, record)
                    writer.finish()
                self._file.close()
                if self.error is not None:
                    raise BagError(f"writing {self.part_path} failed: {self.error}")
                if os.path.exists(self.path) and not self.overwrite:
                    raise BagError(
                        f"{self.path} appeared while recording; the bag is in {self.part_path}"
                    )
                os.replace(self.part_path, self.path)
            except OSError as exc:
                self.error = exc
                raise BagError(f"cannot finish {self.path}: {exc}") from exc
            self._result = self.path
            return self.path
