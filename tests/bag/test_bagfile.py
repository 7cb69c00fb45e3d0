"""The bag file on its own (no mesh): writer, reader, info, export, names."""

from __future__ import annotations

import base64
import json
import math
import os
import pickle
import time
from dataclasses import dataclass

import msgpack
import pytest
from mcap.reader import make_reader

from easymesh.bag import (
    BagError,
    BagWriter,
    default_bag_path,
    export_json,
    format_info,
    latest_bag,
    read_info,
)
from easymesh.bag.export import encode_json, to_json
from easymesh.cli.bag import main


def test_writer_keeps_bytes_codec_and_time(tmp_path):
    path = str(tmp_path / "x.bag")
    w = BagWriter(path)
    body = pickle.dumps({"a": 1})
    assert w.write("t", 1, body, 1_000)
    assert w.write("t", 2, msgpack.packb([1, 2]), 2_000)  # same topic, another codec
    assert w.write("u", 200, bytearray(b"\x00\x01"), 3_000)  # a user codec id
    assert not os.path.exists(path)  # only the .part exists until close
    assert w.close() == path
    assert w.close() == path  # idempotent
    assert not os.path.exists(path + ".part")
    with open(path, "rb") as f:
        rows = [
            (
                c.topic,
                c.message_encoding,
                c.metadata["easymesh.codec_id"],
                c.schema_id,
                m.data,
                m.log_time,
                m.sequence,
            )
            for _, c, m in make_reader(f).iter_messages()
        ]
    assert rows == [
        ("t", "pickle", "1", 0, body, 1_000, 1),
        ("t", "msgpack", "2", 0, msgpack.packb([1, 2]), 2_000, 1),
        ("u", "codec-200", "200", 0, b"\x00\x01", 3_000, 1),
    ]


def test_empty_writer_leaves_no_file(tmp_path):
    w = BagWriter(str(tmp_path / "x.bag"))
    assert w.close() is None
    assert os.listdir(tmp_path) == []
    assert not w.write("t", 1, b"late")


def test_unknown_compression():
    with pytest.raises(BagError, match="compression"):
        BagWriter("x.bag", compression="gzip")


@pytest.mark.parametrize("compression", ["zstd", "lz4", "none"])
def test_info_from_summary(tmp_path, compression):
    path = str(tmp_path / "x.bag")
    w = BagWriter(path, compression=compression)
    base = 1_700_000_000_000_000_000
    for i in range(10):
        w.write("fast", 1, b"x" * 100, base + i * 100_000_000)
    w.write("slow", 3, b"{}", base + 900_000_000)
    w.close()
    info = read_info(path)
    assert (info.messages, info.duration, info.size) == (11, 0.9, os.path.getsize(path))
    assert info.compression == [compression]
    fast, slow = info.topics
    assert (fast.topic, fast.encodings, fast.messages, fast.bytes) == ("fast", ["pickle"], 10, 1000)
    assert (slow.topic, slow.encodings, slow.messages, slow.bytes) == ("slow", ["json"], 1, 2)
    assert fast.rate == pytest.approx(10 / 0.9)
    text = format_info(info)
    for part in (
        f"path:        {path}",
        "duration:    0.900 s",
        "messages:    11",
        "fast",
        "11.1/s",
        "1.0 kB",
        "start:",
        "end:",
    ):
        assert part in text


def test_info_errors(tmp_path, capsys):
    (tmp_path / "junk.bag").write_bytes(b"not an mcap file at all" * 10)
    with pytest.raises(BagError, match="cannot read"):
        read_info(str(tmp_path / "junk.bag"))
    assert main(["info", str(tmp_path / "junk.bag")]) == 1
    assert main(["info", str(tmp_path / "missing.bag")]) == 1
    assert "no such bag file" in capsys.readouterr().err


def test_default_name_and_latest(tmp_path):
    now = time.mktime((2026, 1, 2, 3, 4, 5, 0, 0, -1))
    first = default_bag_path(str(tmp_path), now)
    assert os.path.basename(first) == "record_2026-01-02-03-04-05.bag"
    open(first, "wb").close()
    second = default_bag_path(str(tmp_path), now)
    assert os.path.basename(second) == "record_2026-01-02-03-04-05_2.bag"
    (tmp_path / "empty").mkdir()
    with pytest.raises(BagError, match="no record_"):
        latest_bag(str(tmp_path / "empty"))
    open(second, "wb").close()
    os.utime(first, ns=(1, 1))
    assert latest_bag(str(tmp_path)) == second
    open(str(tmp_path / "record_2099-01-01-00-00-00.bag.part"), "wb").close()  # never picked
    assert latest_bag(str(tmp_path)) == second


@dataclass
class Point:
    x: float
    y: float


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ({"a": 1, "b": [1.5, None, True]}, {"a": 1, "b": [1.5, None, True]}),
        ((1, 2), {"data": [1, 2]}),
        (3.5, {"data": 3.5}),
        ("text", {"data": "text"}),
        ({"nan": math.nan, "inf": [math.inf]}, {"nan": None, "inf": [None]}),
        ({1: "int key"}, {"1": "int key"}),
        (Point(1.0, 2.0), {"x": 1.0, "y": 2.0}),
    ],
)
def test_json_conversion(value, expected):
    assert json.loads(encode_json(value)) == expected


@pytest.mark.parametrize(
    ("value", "expected"),
    [(b"bytes", "b'bytes'"), ({"k": {1, 2}}, {"k": "{1, 2}"}), ({(1, 2): 3}, {"(1, 2)": 3})],
)
def test_what_json_cannot_hold_is_its_repr(value, expected):
    assert to_json(value) == expected


def test_export(tmp_path, make_bag, capsys):
    src = make_bag(
        [
            (0.0, "pose", 1, pickle.dumps({"x": 1.0, "y": math.nan})),
            (0.1, "pose", 2, msgpack.packb({"x": 2.0, "y": 3.0})),
            (0.2, "count", 1, pickle.dumps(7)),
            (0.3, "blob", 0, b"\x00raw"),
            (0.4, "blob", 1, pickle.dumps({"b": b"bytes"})),
            (0.5, "count", 3, b"[1,2]"),
            (0.6, "count", 1, b"not a pickle"),
        ]
    )
    out = str(tmp_path / "out.mcap")
    assert main(["export", src, "--json", out]) == 0
    text = capsys.readouterr().out
    assert "wrote" in text and "6 messages" in text
    assert "blob" not in text and "skipped 1 messages on 'count'" in text
    with open(out, "rb") as f:
        rows = [
            (c.topic, c.message_encoding, s.encoding, json.loads(s.data), json.loads(m.data))
            for s, c, m in make_reader(f).iter_messages()
        ]
    number, integer = {"type": "number"}, {"type": "integer"}
    pose = {"type": "object", "properties": {"x": number}}  # y was NaN (null): no type
    count = {"type": "object", "properties": {"data": integer}}
    blob = {"type": "object", "properties": {"data": {"type": "string"}}}
    assert len(rows) == 6
    assert rows[0] == ("pose", "json", "jsonschema", pose, {"x": 1.0, "y": None})
    # each source channel (topic and codec) has its own, from its own first message
    pose_xy = {"type": "object", "properties": {"x": number, "y": number}}
    assert rows[1] == ("pose", "json", "jsonschema", pose_xy, {"x": 2.0, "y": 3.0})
    assert rows[2] == ("count", "json", "jsonschema", count, {"data": 7})
    assert rows[3] == ("blob", "json", "jsonschema", blob, {"data": "b'\\x00raw'"})
    blob_b = {"type": "object", "properties": {"b": {"type": "string"}}}
    assert rows[4] == ("blob", "json", "jsonschema", blob_b, {"b": "b'bytes'"})
    count_list = {"type": "object", "properties": {"data": {"type": "array", "items": integer}}}
    assert rows[5] == ("count", "json", "jsonschema", count_list, {"data": [1, 2]})
    assert main(["export", src, "--json", out]) == 1  # exists: needs --force
    assert "exists" in capsys.readouterr().err
    result = export_json(src, out, topics=["pose"], overwrite=True)
    assert result.written == 2 and not result.skipped
    assert {t.topic: t.bytes for t in read_info(out).topics} == {"pose": result.bytes["pose"]}


def test_export_shows_images(tmp_path, make_bag):
    np = pytest.importorskip("numpy")
    gray = np.arange(12, dtype=np.uint8).reshape(3, 4)
    rgb = np.zeros((2, 5, 3), dtype=np.uint8)
    rgb[1, 4] = (1, 2, 3)
    src = make_bag([(0.0, "cam", 1, pickle.dumps(gray)), (0.1, "cam", 1, pickle.dumps(rgb))])
    out = str(tmp_path / "out.mcap")
    assert export_json(src, out).written == 2
    with open(out, "rb") as f:
        got = [(s.name, json.loads(s.data), m.log_time, json.loads(m.data))
               for s, _, m in make_reader(f).iter_messages()]
    for (name, schema, log_time, img), arr, enc in zip(got, (gray, rgb), ("mono8", "rgb8"), strict=True):
        assert name == "foxglove.RawImage"
        assert schema["properties"]["data"] == {"type": "string", "contentEncoding": "base64"}
        assert (img["width"], img["height"], img["encoding"]) == (arr.shape[1], arr.shape[0], enc)
        assert img["step"] == arr.shape[1] * (3 if enc == "rgb8" else 1)
        assert base64.b64decode(img["data"]) == arr.tobytes()
        assert img["timestamp"] == {"sec": log_time // 10**9, "nsec": log_time % 10**9}


@pytest.mark.parametrize("command", [[], ["record"], ["play"], ["info"], ["export"]])
def test_help(command, capsys):
    with pytest.raises(SystemExit) as exc:
        main(command + ["--help"])
    assert exc.value.code in (None, 0)
    out = capsys.readouterr().out
    assert "Usage:" in out and "meshbag" in out


def test_export_of_nothing_leaves_no_file(tmp_path, make_bag, capsys):
    src = make_bag([(0.0, "blob", 1, b"not a pickle")])  # nothing decodes
    assert main(["export", src, "--json", str(tmp_path / "out.mcap")]) == 0
    assert "no file written" in capsys.readouterr().out
    assert not (tmp_path / "out.mcap").exists()
