"""meshbag play on a live mesh: exact bytes, recorded timing, options, listeners, loop."""

from __future__ import annotations

import io
import pickle
import signal
import threading
import time
from typing import Any

import msgpack
import pytest
from mcap.writer import Writer

from easymesh.bag import BagError, play
from easymesh.cli.bag import main

A = [{"i": i, "pos": [i * 0.1, 2.0]} for i in range(11)]  # every 50 ms: 0.5 s
B = [[0, "x"], [1, "y"], [2, "z"]]  # msgpack at 0.1, 0.3, 0.5 s


@pytest.fixture
def bag(make_bag: Any) -> str:
    msgs = [(i * 0.05, "a", 1, pickle.dumps(v, protocol=5)) for i, v in enumerate(A)]
    msgs += [(0.1 + i * 0.2, "b", 2, msgpack.packb(v)) for i, v in enumerate(B)]
    return make_bag(msgs, "record_2026-01-01-00-00-00.bag")


class Collector:
    """A node's raw listener: (arrival time, topic, codec, bytes), and an Event at ``expect``."""

    def __init__(self, node: Any, topics: list[str], expect: int) -> None:
        self.got: list[tuple[float, str, int, bytes]] = []
        self.expect = expect
        self.done = threading.Event()
        self._lock = threading.Lock()
        for topic in topics:
            node.listen(topic, self.on_message, raw=True)

    def on_message(self, topic: str, msg: Any) -> None:
        with self._lock:
            self.got.append((time.monotonic(), topic, msg.codec, bytes(msg.data)))
            if len(self.got) >= self.expect:
                self.done.set()

    def topic(self, name: str) -> list[tuple[float, str, int, bytes]]:
        return [g for g in self.got if g[1] == name]

    def span(self, name: str) -> float:
        times = [g[0] for g in self.topic(name)]
        return times[-1] - times[0]


def test_play_sends_exact_bytes_with_recorded_timing(meshbag, node_factory, bag):
    receiver = node_factory("receiver")
    got = Collector(receiver, ["a"], expect=len(A))
    decoded: list[Any] = []
    b_done = threading.Event()

    def on_b(topic: str, data: Any) -> None:
        decoded.append(data)
        if len(decoded) == len(B):
            b_done.set()

    node_factory("decoder", codec="msgpack").listen("b", on_b)
    proc = meshbag("play", bag)
    assert got.done.wait(20) and b_done.wait(10), proc.output + proc.stderr()
    assert proc.wait() == 0
    assert "sent 14 messages" in proc.output
    assert [(t, c, pickle.loads(d)) for _, t, c, d in got.got] == [("a", 1, v) for v in A]
    assert [d for *_, d in got.got] == [pickle.dumps(v, protocol=5) for v in A]
    assert decoded == B
    assert 0.35 <= got.span("a") <= 1.0, got.span("a")  # recorded: 0.5 s


@pytest.mark.parametrize(
    ("options", "topics", "count", "span"),
    [
        ({"rate": 2.0}, ["a"], 11, (0.15, 0.6)),
        ({"immediate": True}, ["a"], 11, (0.0, 0.3)),
        ({"start": 0.25}, ["a"], 6, (0.15, 0.6)),
        ({"topics": ["b"]}, ["a", "b"], 3, (0.25, 0.9)),
    ],
)
def test_play_options(node_factory, coordinator, bag, options, topics, count, span):
    got = Collector(node_factory("receiver"), topics, expect=count)
    out = io.StringIO()
    options.setdefault("topics", topics)
    result = play(bag, node_options={"coordinator": coordinator.address}, out=out, **options)
    assert got.done.wait(10), out.getvalue()
    assert result.sent == count and result.no_listener == 0
    name = got.got[0][1]
    assert len(got.got) == count and all(g[1] == name for g in got.got)
    assert span[0] <= got.span(name) <= span[1], got.span(name)
    if "start" in options:
        assert [pickle.loads(g[3])["i"] for g in got.got] == list(range(5, 11))


def test_play_waits_for_a_listener_and_defaults_to_the_latest_bag(meshbag, node_factory, bag):
    proc = meshbag("play", "--wait", "20", "--topics", "a")
    proc.wait_for("waiting up to 20 s for listeners")
    assert "record_2026-01-01-00-00-00.bag" in proc.output
    got = Collector(node_factory("late"), ["a"], expect=len(A))
    assert got.done.wait(20), proc.output + proc.stderr()
    assert proc.wait() == 0
    assert "no listener" not in proc.output


def test_play_without_listeners_says_so(coordinator, bag):
    out = io.StringIO()
    result = play(
        bag, node_options={"coordinator": coordinator.address}, out=out, wait=0.2, immediate=True
    )
    assert (result.sent, result.no_listener) == (0, 14)
    assert "no listener for 'a', 'b'" in out.getvalue()
    assert "14 had no listener" in out.getvalue()


def test_loop_until_ctrl_c(meshbag, node_factory, bag):
    got = Collector(node_factory("receiver"), ["a"], expect=3 * len(A) + 1)
    proc = meshbag("play", bag, "--loop", "-r", "10", "--topics", "a")
    assert got.done.wait(20), proc.output + proc.stderr()
    proc.send_signal(signal.SIGINT)
    assert proc.wait() == 0
    assert "stopped: sent" in proc.output
    values = [pickle.loads(g[3])["i"] for g in got.got]
    assert values[: 3 * len(A)] == list(range(11)) * 3


def test_foreign_encoding_is_skipped(tmp_path, coordinator, node_factory):
    path = str(tmp_path / "foreign.mcap")
    with open(path, "wb") as f:
        w = Writer(f)
        w.start()
        proto = w.register_channel("p", "protobuf", 0)
        js = w.register_channel("j", "json", 0)  # no easymesh metadata: known by its name
        w.add_message(proto, 1, b"\x08\x01", 1)
        w.add_message(js, 2, b'{"k": 1}', 2)
        w.finish()
    got: list[Any] = []
    done = threading.Event()
    node_factory("json-reader", codec="json").listen("j", lambda t, d: (got.append(d), done.set()))
    result = play(
        path, node_options={"coordinator": coordinator.address}, out=io.StringIO(), wait=10
    )
    assert done.wait(10)
    assert (result.sent, result.skipped) == (1, 1)
    assert got == [{"k": 1}]


def test_play_errors(tmp_path, coordinator, bag, capsys, monkeypatch):
    with pytest.raises(BagError, match="no topic 'nope'"):
        play(
            bag,
            node_options={"coordinator": coordinator.address},
            topics=["nope"],
            out=io.StringIO(),
        )
    assert main(["play", bag, "-r", "0", "--coordinator", coordinator.address]) == 1
    assert "rate" in capsys.readouterr().err
    (tmp_path / "empty").mkdir()
    monkeypatch.chdir(tmp_path / "empty")
    assert main(["play"]) == 1
    assert "no record_*.bag" in capsys.readouterr().err
