"""meshlaunch and the mesh key: the key reaches the coordinator and every node through the
environment, never through a command line (which every local user can read)."""

from __future__ import annotations

import os
import re
import secrets
import signal
from pathlib import Path

import easymesh
from tests.launch.conftest import PYTHON, wait_gone


def cmdlines_containing(needle: bytes) -> dict[int, bytes]:
    """Every process on the machine whose /proc/PID/cmdline contains ``needle``."""
    found = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                cmdline = f.read()
        except OSError:  # gone meanwhile, or not ours to read
            continue
        if needle in cmdline:
            found[int(entry)] = cmdline
    return found


def environ_of(pid: int) -> dict[bytes, bytes]:
    with open(f"/proc/{pid}/environ", "rb") as f:
        pairs = [item.partition(b"=") for item in f.read().split(b"\0") if item]
    return {k: v for k, _, v in pairs}


def test_no_key_in_any_command_line_while_the_mesh_runs(write_launch, meshlaunch, tmp_path):
    key = secrets.token_hex(16)
    keyfile = tmp_path / "mesh.key"
    keyfile.write_text(key + "\n")
    keyfile.chmod(0o600)
    path = write_launch(f"""\
coordinator: {{host: 127.0.0.1, client_host: 127.0.0.1, port: 0}}
nodes:
  plain:
    command: ["{PYTHON}", -m, easymesh.demo.receiver, --topic, plain-topic]
  shelled:
    shell: true
    command: "{PYTHON} -m easymesh.demo.receiver --topic shelled-topic"
""")
    run = meshlaunch(str(path), "--authkey-file", str(keyfile))
    try:
        ready = run.wait_for("listening on 127.0.0.1:", timeout=30)
        assert "with authentication" in ready
        port = int(re.search(r"listening on 127\.0\.0\.1:(\d+)", ready).group(1))
        # Both nodes joined the keyed mesh (so they hold the key) and are running now.
        with easymesh.Node("probe", coordinator=f"127.0.0.1:{port}", authkey=key) as probe:
            probe.wait_for_listener("plain-topic", timeout=30)
            probe.wait_for_listener("shelled-topic", timeout=30)
            leaks = cmdlines_containing(key.encode())
        started = run.started()
        assert set(started) == {"coordinator", "plain", "shelled"}
        assert leaks == {}, leaks
        for label in ("coordinator", "plain"):  # how the key got there
            assert environ_of(started[label][0])[b"EASYMESH_AUTHKEY"] == key.encode()
        assert key not in run.output
    finally:
        run.signal(signal.SIGINT)
    assert run.wait(timeout=60) == 0, run.output + run.stderr
    assert wait_gone(run.all_pids()) == []


def test_a_key_in_the_file_and_a_key_file_is_refused(write_launch, meshlaunch, tmp_path):
    keyfile = tmp_path / "mesh.key"
    keyfile.write_text("k\n")
    keyfile.chmod(0o600)
    path = write_launch("coordinator: {authkey: other}\nnodes: {}\n")
    run = meshlaunch(str(path), "--authkey-file", str(keyfile))
    assert run.wait(timeout=30) == 2
    assert "coordinator.authkey is set and --authkey-file given; keep one" in run.stderr
    keyfile.chmod(0o644)
    run = meshlaunch(str(Path(path)), "--check", "--authkey-file", str(keyfile))
    assert run.wait(timeout=30) == 2 and "meshlaunch: the key file" in run.stderr
