"""meshfoxglove's command line: help, bad options, the key file, the topic filter."""

from __future__ import annotations

import subprocess
import sys
from typing import Any

from tests.foxglove.conftest import BridgeProcess


def run(*args: str, timeout: float = 30.0) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "easymesh.cli.foxglove", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def test_help_says_why_loopback() -> None:
    r = run("--help")
    assert r.returncode == 0 and r.stdout.startswith("meshfoxglove — ")
    for option in (
        "--host",
        "--port",
        "--coordinator",
        "--authkey-file",
        "--topics",
        "--max-rate",
        "--allow-publish",
    ):
        assert option in r.stdout
    assert "[default: 127.0.0.1]" in r.stdout and "anyone who reaches the port" in r.stdout
    assert "[default: 8765]" in r.stdout and "[default: 100]" in r.stdout


def test_bad_options() -> None:
    for args in (["--port=x"], ["--max-rate=-1"], ["--authkey-file=/nonexistent/key"]):
        r = run(*args)
        assert r.returncode == 2, (args, r.stderr)
        assert r.stderr.startswith("meshfoxglove: ")


def test_key_file_topic_filter_and_busy_port(
    coordinator_factory: Any, node_factory: Any, client_factory: Any, tmp_path: Any
) -> None:
    secure = coordinator_factory(authkey="s3cret")
    key = tmp_path / "key"
    key.write_text("s3cret\n")
    node = node_factory("robot", coordinator=secure.address, authkey="s3cret")
    for topic in ("arm/joint", "arm/gripper", "base/odom"):
        node.send(topic, 1)
    bridge = BridgeProcess(
        secure.address,
        f"--coordinator={secure.address}",
        f"--authkey-file={key}",
        "--topics=arm/*,nothing",
    )
    try:
        client = client_factory(bridge.url)
        client.wait_for(lambda: client.channel_of("arm/gripper"), "channel arm/gripper")
        client.wait_for(lambda: client.channel_of("arm/joint"), "channel arm/joint")
        node.send("arm/marker", 1)  # registered after base/odom: seen after it
        client.wait_for(lambda: client.channel_of("arm/marker"), "channel arm/marker")
        assert client.channel_of("base/odom") is None
        port = bridge.url.rsplit(":", 1)[1]
        busy = run(f"--coordinator={secure.address}", f"--authkey-file={key}", f"--port={port}")
        assert busy.returncode == 1 and "cannot serve" in busy.stderr
    finally:
        assert bridge.stop() == 0
    wrong = tmp_path / "wrong"
    wrong.write_text("nope")
    r = run(f"--coordinator={secure.address}", f"--authkey-file={wrong}", "--port=0")
    assert r.returncode == 1 and "authentication" in r.stderr.lower()
