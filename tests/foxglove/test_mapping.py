"""The Foxglove mapping and a topic's channel, without sockets."""

from __future__ import annotations

import base64
import json
import math
import pickle
from dataclasses import dataclass
from typing import Any

import numpy as np
import pytest

from easymesh.foxglove.mapping import (
    MAX_REPR,
    RAW_IMAGE,
    infer_schema,
    map_message,
    merge_schema,
    raw_image,
    to_json,
)
from easymesh.handles import RawMessage

N, INT, S, B = ({"type": t} for t in ("number", "integer", "string", "boolean"))


@dataclass
class Point:
    x: float
    y: int


class Unreprable:
    def __repr__(self) -> str:
        raise RuntimeError("no")


@pytest.mark.parametrize(
    ("value", "body", "props"),
    [
        (5, {"data": 5}, {"data": INT}),
        ("text", {"data": "text"}, {"data": S}),
        ((1, 2.5), {"data": [1, 2.5]}, {"data": {"type": "array", "items": N}}),
        ({"a": True, "n": None}, {"a": True, "n": None}, {"a": B}),  # None: no type
        (
            {"x": math.nan, "y": [math.inf]},
            {"x": None, "y": [None]},
            {"y": {"type": "array", "items": N}},
        ),
        (Point(1.0, 2), {"x": 1.0, "y": 2}, {"x": N, "y": INT}),
        (
            {1: "a", 2.5: "b", False: "c"},
            {"1": "a", "2.5": "b", "false": "c"},
            {"1": S, "2.5": S, "false": S},
        ),
        (np.float32(1.5), {"data": 1.5}, {"data": N}),
        (
            np.arange(3, dtype=np.int64),
            {"data": [0, 1, 2]},
            {"data": {"type": "array", "items": INT}},
        ),
        (
            np.zeros((2, 2), dtype=np.float32),
            {"data": [[0.0, 0.0], [0.0, 0.0]]},
            {"data": {"type": "array", "items": {"type": "array", "items": N}}},
        ),
        ({"l": []}, {"l": []}, {"l": {"type": "array", "items": N}}),
        (
            {"d": {"e": [{"f": 1}, {"g": "h"}]}},
            {"d": {"e": [{"f": 1}, {"g": "h"}]}},
            {
                "d": {
                    "type": "object",
                    "properties": {
                        "e": {
                            "type": "array",
                            "items": {"type": "object", "properties": {"f": INT, "g": S}},
                        }
                    },
                }
            },
        ),
        # what JSON cannot hold: its repr
        (b"\x00ab", {"data": "b'\\x00ab'"}, {"data": S}),
        ({"s": {3}}, {"s": "{3}"}, {"s": S}),
        ({(1, 2): 3}, {"(1, 2)": 3}, {"(1, 2)": INT}),
    ],
)
def test_json_and_schema(value: Any, body: Any, props: dict[str, Any]) -> None:
    mapped = map_message(value)
    assert json.loads(mapped.body) == body
    assert mapped.schema == {"type": "object", "properties": props}
    assert mapped.schema_name == "" and not mapped.is_image


def test_schemas_use_only_what_foxglove_reads() -> None:
    value = {"a": [None, 1, 2.5], "b": None, "c": {"d": [[True]]}, "e": Point(1.0, 2)}

    def walk(s: dict[str, Any]) -> None:
        assert isinstance(s["type"], str)
        assert s["type"] in ("boolean", "string", "number", "integer", "object", "array")
        for sub in s.get("properties", {}).values():
            walk(sub)
        if s["type"] == "array":
            walk(s["items"])

    walk(map_message(value).schema)
    assert map_message(value).schema["properties"]["a"]["items"] == N  # integer + number


def test_never_raises() -> None:
    assert to_json(Unreprable()) == "<Unreprable: repr failed: RuntimeError>"
    long = to_json(b"x" * 5000)
    assert len(long) == MAX_REPR + 3 and long.endswith("...")
    deep: Any = []
    for _ in range(1000):
        deep = [deep]
    json.loads(map_message(deep).body)  # cut off, not a RecursionError
    assert json.loads(map_message(object()).body)["data"].startswith("<object object")


@pytest.mark.parametrize(
    ("shape", "encoding", "step"), [((3, 4), "mono8", 4), ((2, 5, 3), "rgb8", 15)]
)
def test_images(shape: tuple[int, ...], encoding: str, step: int) -> None:
    pixels = np.arange(math.prod(shape), dtype=np.uint8).reshape(shape)
    view = pixels[:, ::-1]  # not contiguous: still row-major on the wire
    mapped = map_message(view, 1_700_000_000_123_456_789)
    assert mapped.is_image and mapped.schema_name == RAW_IMAGE
    assert mapped.schema["properties"]["data"] == {"type": "string", "contentEncoding": "base64"}
    msg = json.loads(mapped.body)
    assert (msg["width"], msg["height"], msg["encoding"], msg["step"]) == (
        shape[1],
        shape[0],
        encoding,
        step,
    )
    assert base64.b64decode(msg["data"]) == view.tobytes()
    assert msg["timestamp"] == {"sec": 1_700_000_000, "nsec": 123_456_789}
    assert msg == raw_image(view, 1_700_000_000_123_456_789)  # the spliced body is that JSON


@pytest.mark.parametrize(
    "value",
    [np.zeros((2, 2), np.uint16), np.zeros((2, 2, 4), np.uint8), np.zeros(4, np.uint8)],
)
def test_other_arrays_are_not_images(value: Any) -> None:
    assert not map_message(value).is_image


def test_merge_schema() -> None:
    a = infer_schema({"x": 1, "l": [1]})
    assert merge_schema(a, infer_schema({"x": 2})) is a  # nothing new
    b = merge_schema(a, infer_schema({"x": 2.5, "y": "s", "l": [0.5]}))
    assert b["properties"] == {"x": N, "l": {"type": "array", "items": N}, "y": S}
    assert merge_schema(b, infer_schema({"x": "text"})) is b  # a conflict keeps the old type


def test_topic_channel_rate_limit_schema_and_pending() -> None:
    foxglove = pytest.importorskip("foxglove")
    from easymesh.foxglove.channels import MAX_READVERTISE, RateLimit, TopicChannel

    now = [0.0]
    limit = RateLimit(8.0, clock=lambda: now[0])  # bursts of 2
    assert [limit.allow() for _ in range(3)] == [True, True, False]
    now[0] += 0.125
    assert limit.allow() and not limit.allow()
    assert all(RateLimit(0).allow() for _ in range(100))

    asked: list[Any] = []
    channel = TopicChannel("t", foxglove.Context(), 0, asked.append)
    first = channel.channel_id

    def send(value: Any) -> None:
        channel.forward("t", RawMessage(1, pickle.dumps(value)))

    send({"x": 1})  # the first message gives the schema: a new channel is asked for
    send({"x": 2})  # asked once; this one goes out on the old channel
    assert asked == [channel] and channel.forwarded == 1 and channel.channel_id == first
    channel.readvertise()  # (the bridge's housekeeping thread)
    assert channel.readvertised == 1 and channel.channel_id != first
    channel.flush_pending()  # the kept {"x": 1} is older than what went out: dropped
    assert channel.forwarded == 1
    send({"x": 3, "y": "new"})  # a new field: asked again, kept until flushed once
    assert asked == [channel, channel] and channel.forwarded == 1
    channel.readvertise()
    channel.flush_pending()
    channel.flush_pending()
    assert channel.forwarded == 2 and channel.readvertised == 2
    channel.forward("t", RawMessage(1, b"not a pickle"))
    assert channel.undecodable == 1 and "UnpicklingError" in channel.last_error
    for k in range(MAX_READVERTISE + 5):
        send({f"f{k}": k})
        channel.readvertise()
    assert channel.readvertised == MAX_READVERTISE  # then the schema stays put
    channel.close()
    channel.close()
