"""meshbag export --json: a copy of a bag that Foxglove can plot and show.

Every message is decoded with its codec and re-encoded as JSON (channel
``message_encoding`` ``json``) by the mapping the live bridge uses
(:mod:`easymesh.foxglove.mapping`), so a recording opened in Foxglove plots and
shows images as ``meshfoxglove`` does:

* each channel has a JSON schema (encoding ``jsonschema``) inferred from its first
  message; a value that is not a dict is wrapped as ``{"data": value}``; NaN and
  infinities become ``null``; numpy arrays and dataclasses become lists and dicts;
  what JSON cannot hold (bytes, sets, other objects) is written as its repr;
* a numpy ``uint8`` array of shape (H, W) or (H, W, 3) becomes a
  ``foxglove.RawImage`` (schema of that name; its timestamp is the log time), so
  Foxglove's Image panel shows it. A topic whose messages switch between images
  and other data gets one channel of each kind.

Times and topics are kept, so the copy lines up with the original. The copy is
itself a bag ``meshbag play`` can play (codec ``json``). A message that cannot be
decoded (unknown codec, a pickled class that is not importable here) is skipped
and counted per topic; the export says so.

The schema of a channel comes from its first message (an MCAP channel's schema is
fixed when the channel is written); fields that first appear later are still in
the JSON, only not in the schema.

Decoding pickle runs code chosen by whoever wrote the bag: export only bags
you trust.
"""

from __future__ import annotations

import json
import os
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from mcap.exceptions import McapError
from mcap.reader import make_reader
from mcap.writer import Writer

import easymesh
from easymesh.bag.bagfile import (
    CODEC_KEY,
    COMPRESSIONS,
    METADATA_NAME,
    PROFILE,
    BagError,
    channel_codec,
)
from easymesh.foxglove.mapping import Mapped, encode_json, map_message, to_json
from easymesh.protocol.codecs import JSON_ID, codec_for_id

__all__ = ["ExportResult", "NotJson", "encode_json", "export_json", "to_json"]


class NotJson(ValueError):
    """A message has no JSON form here (its channel is not an easymesh codec)."""


@dataclass
class ExportResult:
    path: str | None  # None when no message could be exported (no file is left)
    written: int = 0
    bytes: Counter[str] = field(default_factory=Counter)  # topic -> JSON bytes written
    skipped: Counter[str] = field(default_factory=Counter)  # topic -> messages skipped
    reasons: dict[str, str] = field(default_factory=dict)  # topic -> first reason


def export_json(
    src: str,
    dst: str,
    *,
    topics: list[str] | None = None,
    overwrite: bool = False,
    compression: str = "zstd",
) -> ExportResult:
    """Write ``dst``: the messages of bag ``src`` (optionally only ``topics``) as JSON.

    Leaves no file when no message could be exported. Raises BagError when
    ``src`` cannot be read, ``dst`` exists (without ``overwrite``) or cannot be
    written. A partial ``dst`` is removed on error.
    """
    if os.path.abspath(src) == os.path.abspath(dst):
        raise BagError("the export must go to another file than the bag")
    if os.path.exists(dst) and not overwrite:
        raise BagError(f"{dst} exists; choose another file or pass --force")
    result = ExportResult(dst)
    channels: dict[tuple[int, str], int] = {}  # (source channel id, schema name) -> output id
    try:
        with open(src, "rb") as fin, open(dst, "wb") as fout:
            reader = make_reader(fin)
            writer = Writer(fout, compression=COMPRESSIONS[compression])
            writer.start(profile=PROFILE, library=f"easymesh {easymesh.__version__} meshbag export")
            for _schema, channel, message in reader.iter_messages(topics, log_time_order=True):
                try:
                    mapped = _convert(channel, message.data, message.log_time)
                except Exception as exc:  # noqa: BLE001 - a codec may raise anything: skip, count
                    result.skipped[channel.topic] += 1
                    result.reasons.setdefault(channel.topic, _reason(exc))
                    continue
                key = (channel.id, mapped.schema_name)
                out_id = channels.get(key)
                if out_id is None:
                    out_id = channels[key] = _register(writer, channel, mapped)
                body = mapped.body
                writer.add_message(
                    out_id, message.log_time, body, message.publish_time, message.sequence
                )
                result.written += 1
                result.bytes[channel.topic] += len(body)
            writer.add_metadata(METADATA_NAME, {"topic_bytes": json.dumps(result.bytes)})
            writer.finish()
        if not result.written:
            _remove(dst)  # like an empty recording: no file
            result.path = None
    except (OSError, McapError) as exc:
        _remove(dst)
        raise BagError(f"export of {src} to {dst} failed: {exc}") from exc
    except BaseException:
        _remove(dst)
        raise
    return result


def _register(writer: Writer, channel: Any, mapped: Mapped) -> int:
    """An output channel for ``channel``'s messages of ``mapped``'s kind, with its schema."""
    schema_id = writer.register_schema(
        mapped.schema_name or channel.topic,
        "jsonschema",
        json.dumps(mapped.schema, separators=(",", ":")).encode("utf-8"),
    )
    return writer.register_channel(
        channel.topic,
        "json",
        schema_id,
        {CODEC_KEY: str(JSON_ID), "easymesh.source_encoding": channel.message_encoding},
    )


def _convert(channel: Any, data: bytes, log_time: int) -> Mapped:
    cid = channel_codec(channel)
    if cid is None:
        raise NotJson(f"encoding {channel.message_encoding!r} is not an easymesh codec")
    value = json.loads(data) if cid == JSON_ID else codec_for_id(cid).decode(data)
    return map_message(value, log_time)


def _reason(exc: BaseException) -> str:
    if isinstance(exc, NotJson):
        return str(exc)
    return f"cannot be decoded ({type(exc).__name__}: {exc})"


def _remove(path: str) -> None:
    try:
        os.remove(path)
    except OSError:
        pass
