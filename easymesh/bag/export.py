"""meshbag export --json: a copy of a bag that Foxglove can plot.

Every message is decoded with its codec and re-encoded as schema-less JSON
(channel ``message_encoding`` ``json``, schema id 0, which Foxglove and the
``mcap`` CLI read). Times and topics are kept, so the copy lines up with the
original. The copy is itself a bag ``meshbag play`` can play (codec ``json``).

What becomes JSON:

* dicts (keys str, int, float or bool; keys become strings), lists, tuples,
  str, int, float, bool, None; objects with ``tolist()`` (numpy arrays and
  scalars) and dataclasses become their lists and dicts;
* NaN and infinities become ``null`` (strict JSON has no spelling for them,
  and a plot with a gap is better than a lost message);
* a top-level value that is not a dict is wrapped as ``{"data": value}``,
  because Foxglove addresses fields of a JSON *object* (``/topic.data``).

A message that cannot be decoded (unknown codec, a pickled class that is not
importable here) or holds something JSON cannot express (bytes, sets, other
objects) is skipped and counted per topic; the export says so.

Decoding pickle runs code chosen by whoever wrote the bag: export only bags
you trust.
"""

from __future__ import annotations

import dataclasses
import json
import math
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
from easymesh.protocol.codecs import JSON_ID, codec_for_id

_MAX_DEPTH = 200


class NotJson(ValueError):
    """A value has no JSON form."""


@dataclass
class ExportResult:
    path: str | None  # None when no message could be exported (no file is left)
    written: int = 0
    bytes: Counter[str] = field(default_factory=Counter)  # topic -> JSON bytes written
    skipped: Counter[str] = field(default_factory=Counter)  # topic -> messages skipped
    reasons: dict[str, str] = field(default_factory=dict)  # topic -> first reason


def to_json(value: Any, depth: int = 0) -> Any:
    """``value`` as plain JSON types (see the module docs). Raises NotJson."""
    if depth > _MAX_DEPTH:
        raise NotJson("nested too deeply")
    if value is None or isinstance(value, (str, bool, int)):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        out = {}
        for k, v in value.items():
            if not isinstance(k, (str, int, float, bool)):
                raise NotJson(f"a dict key of type {type(k).__name__}")
            out[k if isinstance(k, str) else json.dumps(k)] = to_json(v, depth + 1)
        return out
    if isinstance(value, (list, tuple)):
        return [to_json(v, depth + 1) for v in value]
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return to_json(dataclasses.asdict(value), depth + 1)
    tolist = getattr(value, "tolist", None)
    if callable(tolist) and not isinstance(value, (bytes, bytearray, memoryview)):
        return to_json(tolist(), depth + 1)
    raise NotJson(f"a value of type {type(value).__name__}")


def encode_json(value: Any) -> bytes:
    """The JSON body written for a decoded message. Raises NotJson."""
    obj = to_json(value)
    if not isinstance(obj, dict):
        obj = {"data": obj}
    return json.dumps(obj, separators=(",", ":"), allow_nan=False).encode("utf-8")


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
    channels: dict[int, int] = {}  # source channel id -> output channel id
    try:
        with open(src, "rb") as fin, open(dst, "wb") as fout:
            reader = make_reader(fin)
            writer = Writer(fout, compression=COMPRESSIONS[compression])
            writer.start(profile=PROFILE, library=f"easymesh {easymesh.__version__} meshbag export")
            for _schema, channel, message in reader.iter_messages(topics, log_time_order=True):
                try:
                    body = _convert(channel, message.data)
                except Exception as exc:  # noqa: BLE001 - a codec may raise anything: skip, count
                    result.skipped[channel.topic] += 1
                    result.reasons.setdefault(channel.topic, _reason(exc))
                    continue
                out_id = channels.get(channel.id)
                if out_id is None:
                    out_id = channels[channel.id] = writer.register_channel(
                        channel.topic,
                        "json",
                        0,
                        {
                            CODEC_KEY: str(JSON_ID),
                            "easymesh.source_encoding": channel.message_encoding,
                        },
                    )
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


def _convert(channel: Any, data: bytes) -> bytes:
    cid = channel_codec(channel)
    if cid is None:
        raise NotJson(f"encoding {channel.message_encoding!r} is not an easymesh codec")
    if cid == JSON_ID:
        return encode_json(json.loads(data))
    return encode_json(codec_for_id(cid).decode(data))


def _reason(exc: BaseException) -> str:
    if isinstance(exc, NotJson):
        return f"holds {exc}" if exc.args and str(exc).startswith("a ") else str(exc)
    return f"cannot be decoded ({type(exc).__name__}: {exc})"


def _remove(path: str) -> None:
    try:
        os.remove(path)
    except OSError:
        pass
