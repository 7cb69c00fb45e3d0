"""meshbag record as a real process on a live mesh: info, the mcap reader, signals, no empty files."""

from __future__ import annotations

import os
import pickle
import re
import signal
import threading

import msgpack
import pytest
from mcap.reader import make_reader

import easymesh
from easymesh.bag import read_info
from easymesh.cli.bag import main


def _wait_listening(node, *topics: str) -> None:
    for topic in topics:
        node.wait_for_listener(topic, timeout=15)


def test_record_then_info_and_reader(meshbag, node_factory, tmp_path, capsys):
    rec = meshbag("record", "a", "b", "-o", "out.bag", "--status-every", "0.05")
    rec.wait_for("recording a, b to out.bag")
    pickler = node_factory("pickler")
    packer = node_factory("packer", codec="msgpack")
    _wait_listening(pickler, "a", "b")
    _wait_listening(packer, "b")
    sent_a = [{"i": i, "x": i / 2} for i in range(50)]
    for value in sent_a:
        pickler.send("a", value)
    for i in range(20):
        packer.send("b", [i, "hi"])
    pickler.send("not-recorded", 1)
    rec.wait_for("a: 50 msgs", stream="stderr")
    rec.wait_for("b: 20 msgs", stream="stderr")
    rec.send_signal(signal.SIGINT)
    assert rec.wait() == 0, rec.stderr()
    assert "wrote out.bag: 70 messages" in rec.output
    path = str(tmp_path / "out.bag")
    assert os.listdir(tmp_path) == ["out.bag"]

    with open(path, "rb") as f:
        reader = make_reader(f)
        got = [(c.topic, c.message_encoding, m.data) for _, c, m in reader.iter_messages()]
        summary = reader.get_summary()
    assert summary is not None and summary.statistics.message_count == 70
    assert [pickle.loads(d) for t, e, d in got if t == "a"] == sent_a  # order kept
    assert {e for t, e, _ in got if t == "a"} == {"pickle"}
    assert [msgpack.unpackb(d) for t, e, d in got if t == "b"] == [[i, "hi"] for i in range(20)]
    assert {e for t, e, _ in got if t == "b"} == {"msgpack"}

    assert main(["info", path]) == 0
    text = capsys.readouterr().out
    assert f"path:        {path}" in text and "messages:    70" in text
    assert re.search(r"^\s+a\s+pickle\s+50\s+\S+ \w?B\s+\S+/s$", text, re.M), text
    assert re.search(r"^\s+b\s+msgpack\s+20\s+", text, re.M), text
    assert read_info(path).topics[0].bytes == sum(len(pickle.dumps(v, protocol=5)) for v in sent_a)


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_signal_mid_record_leaves_a_valid_file(meshbag, node_factory, tmp_path, sig):
    rec = meshbag("record", "flow", "-o", "flow.bag", "--status-every", "0.05")
    rec.wait_for("recording flow")
    node = node_factory("flow-sender")
    node.wait_for_listener("flow", timeout=15)
    stop = threading.Event()
    sent = [0]

    def send() -> None:
        while not stop.is_set():
            for _ in range(50):
                node.send("flow", sent[0])
                sent[0] += 1
            stop.wait(0.005)

    sender = threading.Thread(target=send, name="test-flow-sender")
    sender.start()
    try:
        rec.wait_for("flow: 1", stream="stderr")  # some messages are in; the flow goes on
        rec.wait_for("flow: 2", stream="stderr")
        rec.send_signal(sig)
        assert rec.wait() == 0, rec.stderr()
    finally:
        stop.set()
        sender.join(10)
    count = int(re.search(r"wrote flow.bag: (\d+) messages", rec.output).group(1))
    assert count > 0 and sent[0] > count
    assert os.listdir(tmp_path) == ["flow.bag"]
    with open(tmp_path / "flow.bag", "rb") as f:
        reader = make_reader(f, validate_crcs=True)
        values = [pickle.loads(m.data) for _, _, m in reader.iter_messages()]
        assert reader.get_summary().statistics.message_count == count
    assert values == list(range(count))  # nothing lost or reordered up to the stop


def test_empty_recording_leaves_no_file(meshbag, node_factory, tmp_path):
    rec = meshbag("record", "quiet", "--status-every", "0.05")
    rec.wait_for("recording quiet to record_")
    node_factory("watcher").wait_for_listener("quiet", timeout=15)
    rec.wait_for("quiet: 0 msgs", stream="stderr")
    rec.send_signal(signal.SIGINT)
    assert rec.wait() == 0, rec.stderr()
    assert "nothing recorded" in rec.output and "no file written" in rec.output
    assert os.listdir(tmp_path) == []


def test_default_name_duration_and_info_of_latest(
    meshbag, node_factory, tmp_path, capsys, monkeypatch
):
    rec = meshbag("record", "t", "--duration", "30", "--status-every", "0.05")
    line = rec.wait_for("recording t to ")
    name = line.split(" to ")[1].split()[0]
    assert re.fullmatch(r"record_\d{4}-\d\d-\d\d-\d\d-\d\d-\d\d\.bag", name), name
    node = node_factory("t-sender")
    node.wait_for_listener("t", timeout=15)
    node.send("t", "hello")
    rec.wait_for("t: 1 msgs", stream="stderr")
    rec.send_signal(signal.SIGINT)
    assert rec.wait() == 0
    assert os.listdir(tmp_path) == [name]
    monkeypatch.chdir(tmp_path)
    assert main(["info"]) == 0
    assert f"path:        {name}" in capsys.readouterr().out
    # an existing file is never overwritten without --force
    assert main(["record", "t", "-o", name]) == 1
    assert "exists" in capsys.readouterr().err


def test_duration_stops_the_recording(meshbag, tmp_path):
    rec = meshbag("record", "t", "--duration", "0.3")
    assert rec.wait() == 0, rec.stderr()
    assert "nothing recorded" in rec.output


def test_authkey_from_the_environment(meshbag, coordinator_factory, tmp_path):
    secured = coordinator_factory(authkey="s3cret")
    rec = meshbag(
        "record",
        "t",
        "-o",
        "auth.bag",
        "--status-every",
        "0.05",
        env={"EASYMESH_AUTHKEY": "s3cret"},
        coordinator_address=secured.address,
    )
    rec.wait_for("recording t")

    with easymesh.Node("auth-sender", coordinator=secured.address, authkey="s3cret") as node:
        node.wait_for_listener("t", timeout=15)
        node.send("t", {"ok": True})
        rec.wait_for("t: 1 msgs", stream="stderr")
    rec.send_signal(signal.SIGTERM)
    assert rec.wait() == 0, rec.stderr()
    assert read_info(str(tmp_path / "auth.bag")).messages == 1
