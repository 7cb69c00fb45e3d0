"""See a live mesh in Foxglove: the ``meshfoxglove`` bridge and the JSON/image mapping.

``mapping`` turns Python values into Foxglove JSON messages with inferred JSON
schemas and raw images; it needs nothing beyond the standard library, so the core
(``meshbag export``) uses it too. ``bridge`` is the live bridge; it needs the
``foxglove-sdk`` package (``pip install easymesh[foxglove]``) and is imported
only when used, so ``import easymesh.foxglove`` works without it.
"""

from __future__ import annotations

from easymesh.foxglove.mapping import (
    RAW_IMAGE,
    RAW_IMAGE_SCHEMA,
    Mapped,
    encode_json,
    infer_schema,
    map_message,
    merge_schema,
    raw_image,
    to_json,
)

__all__ = [
    "RAW_IMAGE",
    "RAW_IMAGE_SCHEMA",
    "Mapped",
    "encode_json",
    "infer_schema",
    "map_message",
    "merge_schema",
    "raw_image",
    "to_json",
]
