"""The tools' pure parts: statistics, formatting, argument values (no sockets)."""

from __future__ import annotations

import math
import pickle

import pytest

from easymesh.node import RawMessage
from easymesh.protocol.codecs import PICKLE_ID
from easymesh.tools.display import Undecodable, decode, format_data, format_size
from easymesh.tools.session import UsageError, literal, number
from easymesh.tools.stats import Window
from easymesh.tools.table import format_table, join_or


def test_window_statistics() -> None:
    w = Window(4)
    assert w.snapshot() is None
    w.add(10.0, 100)
    assert w.snapshot() is None
    for t, size in ((10.1, 200), (10.3, 300), (10.4, 400), (10.6, 500)):
        w.add(t, size)
    s = w.snapshot()
    assert s is not None
    # the window keeps the last 4 arrivals: 10.1, 10.3, 10.4, 10.6 -> intervals .2 .1 .2
    assert (s.total, s.window) == (5, 4)
    assert s.rate == pytest.approx(3 / 0.5)
    assert (s.min_interval, s.max_interval) == (pytest.approx(0.1), pytest.approx(0.2))
    mean = 0.5 / 3
    std = math.sqrt(((0.2 - mean) ** 2 * 2 + (0.1 - mean) ** 2) / 3)
    assert s.std_interval == pytest.approx(std)
    assert s.bytes_per_s == pytest.approx((300 + 400 + 500) / 0.5)
    assert (s.mean_size, s.min_size, s.max_size) == (350, 200, 500)


def test_window_new_messages_and_bounds() -> None:
    w = Window(2)
    assert w.take_new() == 0
    w.add(1.0)
    w.add(1.0)  # same instant: no span, infinite rate rather than a ZeroDivisionError
    assert w.take_new() == 2 and w.take_new() == 0
    snap = w.snapshot()
    assert snap is not None and snap.rate == math.inf
    with pytest.raises(ValueError):
        Window(1)


@pytest.mark.parametrize(
    "data, pretty",
    [
        ("plain text", "plain text"),
        ("two\nlines", "'two\\nlines'"),
        ({"a": [1, 2.5]}, "{'a': [1, 2.5]}"),
        (b"abc", "b'abc'"),
        (b"x" * 100, f"{b'x' * 64!r}... (100 bytes)"),
        (None, "None"),
    ],
)
def test_format_data(data: object, pretty: str) -> None:
    assert format_data(data) == pretty
    assert format_data(data, raw=True) == repr(data)


def test_format_data_folds_multiline_reprs() -> None:
    class Matrix:
        def __repr__(self) -> str:
            return "Matrix([[1, 2],\n        [3, 4]])"

    assert format_data(Matrix()) == "Matrix([[1, 2], [3, 4]])"


def test_decode() -> None:
    assert decode(RawMessage(PICKLE_ID, pickle.dumps({"x": 1}))) == {"x": 1}
    bad = decode(RawMessage(PICKLE_ID, b"not a pickle"))
    assert isinstance(bad, Undecodable)
    assert str(bad).startswith("<cannot decode 12 bytes (pickle): UnpicklingError")


def test_format_size() -> None:
    assert [format_size(n) for n in (0, 999, 1000, 1_500_000, 2e9)] == [
        "0 B",
        "999 B",
        "1.00 KB",
        "1.50 MB",
        "2.00 GB",
    ]


def test_table() -> None:
    assert format_table(("A", "LONG HEADER"), [("xyz", 1), ("q", "")]) == (
        "A    LONG HEADER\nxyz  1\nq"
    )
    assert join_or([]) == "-" and join_or(["a", "b"]) == "a, b"


def test_literal_never_runs_code() -> None:
    assert literal("{'a': (1, 2.5, None, b'x')}") == {"a": (1, 2.5, None, b"x")}
    for text in ("__import__('os').system('true')", "hello", "[1, 2", "1 +"):
        with pytest.raises(UsageError, match="to send a string, quote it"):
            literal(text)


def test_number() -> None:
    assert number("3", int, "COUNT", 1) == 3 and number(None, int, "COUNT") is None
    assert number("0.5", float, "RATE") == 0.5
    with pytest.raises(UsageError, match="COUNT must be an integer"):
        number("1.5", int, "COUNT")
    with pytest.raises(UsageError, match="at least 1"):
        number("0", int, "COUNT", 1)
