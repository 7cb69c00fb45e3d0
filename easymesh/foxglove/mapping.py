"""Python values as Foxglove messages: JSON bodies, inferred JSON schemas, raw images.

One mapping serves the live bridge (``meshfoxglove``) and ``meshbag export``, so a
recording opened in Foxglove plots and shows images as the live view does. It is
pure (no sockets, no threads, no foxglove-sdk import) and never raises on data:

* **JSON.** dicts, lists, tuples, str, int, float, bool and None stay themselves;
  dataclasses become dicts; objects with ``tolist()`` (numpy scalars and arrays)
  become their lists; NaN and infinities become ``null`` (strict JSON has no
  spelling for them, and a gap in a plot beats a lost message); dict keys that are
  not strings become their JSON text (``1`` -> ``"1"``) or their repr. Anything
  else (bytes, sets, other objects) becomes its ``repr``, cut at :data:`MAX_REPR`
  characters: shown, never a crash.
* **The root is an object**, because Foxglove addresses fields of a JSON object
  (``/topic.data``) and its JSON schemas want an object at the root: a value that
  is not a dict is sent as ``{"data": value}``.
* **Schemas** (encoding ``jsonschema``) are inferred from the data, in the subset
  Foxglove reads: every field typed ``boolean``, ``string``, ``number``,
  ``integer``, ``object`` or ``array`` (with typed ``items``), never ``null`` and
  never a list of types. A field that is None is left out of the schema (its
  type is unknown); :func:`merge_schema` widens a schema with what a later
  message shows (new fields; ``integer`` and ``number`` make ``number``), so the
  bridge can re-advertise when it learns more.
* **Images.** A numpy ``uint8`` array of shape ``(H, W)`` or ``(H, W, 3)`` is a
  ``foxglove.RawImage`` (``mono8`` / ``rgb8``): ``width``, ``height``,
  ``encoding``, ``step`` (bytes per row) and ``data``, the row-major pixels in
  base64, declared ``contentEncoding: base64`` in the schema, so Foxglove's Image
  panel shows camera frames. numpy is never imported here: an array is
  recognised by its attributes.
"""

from __future__ import annotations

import base64
import dataclasses
import json
import math
from dataclasses import dataclass
from typing import Any

MAX_DEPTH = 100
MAX_REPR = 1000
#: Items of a list looked at to infer the schema of its items (the rest are assumed alike).
SCHEMA_SAMPLE = 16
RAW_IMAGE = "foxglove.RawImage"
_IMAGE_ENCODINGS = {2: "mono8", 3: "rgb8"}

RAW_IMAGE_SCHEMA: dict[str, Any] = {
    "title": RAW_IMAGE,
    "description": "A raw image (mono8 or rgb8), as Foxglove's Image panel reads it",
    "type": "object",
    "properties": {
        "timestamp": {
            "type": "object",
            "properties": {"sec": {"type": "integer"}, "nsec": {"type": "integer"}},
        },
        "frame_id": {"type": "string"},
        "width": {"type": "integer"},
        "height": {"type": "integer"},
        "encoding": {"type": "string"},
        "step": {"type": "integer"},
        "data": {"type": "string", "contentEncoding": "base64"},
    },
}


@dataclass(frozen=True)
class Mapped:
    """One message as Foxglove gets it: ``body`` (JSON bytes), ``schema`` (a JSON
    schema dict) and ``schema_name`` (``foxglove.RawImage`` for images, else "")."""

    body: bytes
    schema: dict[str, Any]
    schema_name: str = ""

    @property
    def is_image(self) -> bool:
        return self.schema_name == RAW_IMAGE


def map_message(value: Any, stamp_ns: int = 0) -> Mapped:
    """``value`` as a Foxglove JSON message with its schema. ``stamp_ns``: the
    image timestamp (ns since the epoch) for raw images. Never raises."""
    image = _image_parts(value, stamp_ns)
    if image is not None:
        fields, pixels = image
        # The pixels go in as base64 bytes, which need no JSON escaping: spliced in
        # rather than run through json.dumps (a 640x480 rgb8 frame is 1.2 MB of it).
        body = b"".join((_dumps(fields)[:-1], b',"data":"', base64.b64encode(pixels), b'"}'))
        return Mapped(body, RAW_IMAGE_SCHEMA, RAW_IMAGE)
    obj = to_json(value)
    if not isinstance(obj, dict):
        obj = {"data": obj}
    return Mapped(_dumps(obj), infer_schema(obj))


def encode_json(value: Any) -> bytes:
    """The JSON body for ``value`` (an object at the root; no schema). Never raises."""
    return map_message(value).body


def to_json(value: Any, depth: int = 0) -> Any:
    """``value`` as plain JSON types (see the module docs). Never raises."""
    if value is None or isinstance(value, (str, bool, int)):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if depth >= MAX_DEPTH:
        return "<nested too deeply>"
    if isinstance(value, dict):
        return {_key(k): to_json(v, depth + 1) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_json(v, depth + 1) for v in value]
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        fields = {f.name: getattr(value, f.name, None) for f in dataclasses.fields(value)}
        return to_json(fields, depth + 1)
    tolist = getattr(value, "tolist", None)
    if callable(tolist) and not isinstance(value, (bytes, bytearray, memoryview)):
        try:
            return to_json(tolist(), depth + 1)
        except Exception:  # noqa: BLE001 - a foreign tolist() may raise anything: show the repr
            pass
    return safe_repr(value)


def safe_repr(value: Any) -> str:
    """``repr(value)``, cut at MAX_REPR characters; a description if repr itself fails."""
    try:
        text = repr(value)
    except Exception as exc:  # noqa: BLE001 - repr of foreign objects may raise anything
        return f"<{type(value).__name__}: repr failed: {type(exc).__name__}>"
    return text if len(text) <= MAX_REPR else text[:MAX_REPR] + "..."


def _key(k: Any) -> str:
    if isinstance(k, str):
        return k
    if isinstance(k, (bool, int)) or (isinstance(k, float) and math.isfinite(k)):
        return json.dumps(k)
    return safe_repr(k)


def _dumps(obj: Any) -> bytes:
    return json.dumps(obj, separators=(",", ":"), allow_nan=False).encode("utf-8")


def raw_image(value: Any, stamp_ns: int = 0) -> dict[str, Any] | None:
    """The ``foxglove.RawImage`` JSON object for a uint8 array of shape (H, W) or
    (H, W, 3), else None."""
    image = _image_parts(value, stamp_ns)
    if image is None:
        return None
    fields, pixels = image
    return {**fields, "data": base64.b64encode(pixels).decode("ascii")}


def _image_parts(value: Any, stamp_ns: int) -> tuple[dict[str, Any], bytes] | None:
    """The RawImage fields but ``data``, and the row-major pixels; None if not an image."""
    dtype = getattr(value, "dtype", None)
    shape = getattr(value, "shape", None)
    if getattr(dtype, "name", None) != "uint8" or not isinstance(shape, tuple):
        return None
    if len(shape) not in _IMAGE_ENCODINGS or (len(shape) == 3 and shape[2] != 3):
        return None
    try:
        pixels = value.tobytes()  # row-major (C order) whatever the array's own layout
    except Exception:  # noqa: BLE001 - an array-like that is not numpy's
        return None
    height, width = int(shape[0]), int(shape[1])
    channels = 1 if len(shape) == 2 else 3
    fields = {
        "timestamp": {"sec": stamp_ns // 1_000_000_000, "nsec": stamp_ns % 1_000_000_000},
        "frame_id": "",
        "width": width,
        "height": height,
        "encoding": _IMAGE_ENCODINGS[len(shape)],
        "step": width * channels,
    }
    return fields, pixels


# -- schemas ----------------------------------------------------------------------------------


def infer_schema(obj: dict[str, Any]) -> dict[str, Any]:
    """The JSON schema of a JSON object (as :func:`to_json` makes them)."""
    return _schema_of(obj) or {"type": "object", "properties": {}}


def _schema_of(value: Any) -> dict[str, Any] | None:
    """The schema of a JSON value; None for None (a type JSON schema cannot say here)."""
    if value is None:
        return None
    if isinstance(value, bool):
        return {"type": "boolean"}
    if isinstance(value, int):
        return {"type": "integer"}
    if isinstance(value, float):
        return {"type": "number"}
    if isinstance(value, str):
        return {"type": "string"}
    if isinstance(value, dict):
        props = {}
        for k, v in value.items():
            s = _schema_of(v)
            if s is not None:
                props[k] = s
        return {"type": "object", "properties": props}
    items: dict[str, Any] | None = None
    for v in value[:SCHEMA_SAMPLE]:
        s = _schema_of(v)
        if s is not None:
            items = s if items is None else merge_schema(items, s)
    return {"type": "array", "items": items or {"type": "number"}}


def merge_schema(old: dict[str, Any], new: dict[str, Any]) -> dict[str, Any]:
    """``old`` widened by ``new``: object fields are united, ``integer`` and
    ``number`` give ``number``, array items merge; any other conflict keeps
    ``old`` (a schema has one type per field). Returns ``old`` itself when nothing
    changes, so ``merge_schema(a, b) is a`` says "nothing new"."""
    kind, other = old.get("type"), new.get("type")
    if kind == "integer" and other == "number":
        return new
    if kind != other:
        return old
    if kind == "object" and "properties" in old and "properties" in new:
        props = old["properties"]
        merged = dict(props)
        for k, s in new["properties"].items():
            merged[k] = s if k not in props else merge_schema(props[k], s)
        if all(merged[k] is props.get(k) for k in merged):
            return old
        return {**old, "properties": merged}
    if kind == "array" and "items" in old and "items" in new:
        items = merge_schema(old["items"], new["items"])
        return old if items is old["items"] else {**old, "items": items}
    return old
