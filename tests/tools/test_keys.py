"""--authkey-file on the tools and the coordinator, and the coordinator's warning when it
listens beyond loopback without a key. Real processes, real keys."""

from __future__ import annotations

import os
import secrets
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

import easymesh


def key_file(tmp_path: Path, key: str, name: str = "mesh.key", mode: int = 0o600) -> str:
    path = tmp_path / name
    path.write_text(key + "\n")
    path.chmod(mode)
    return str(path)


def test_tools_with_a_key_file_join_a_keyed_mesh(
    tools: Any, coordinator_factory: Any, node_factory: Any, tmp_path: Path
) -> None:
    key = secrets.token_hex(16)
    secure = coordinator_factory(authkey=key)
    node_factory("locked", coordinator=secure.address, authkey=key).add_service("x", lambda d: d)
    good, wrong = key_file(tmp_path, key), key_file(tmp_path, "not-the-key", "wrong.key")
    at = ("--coordinator", secure.address)
    runs = {
        "service": tools.start("meshservice", "list", *at, "--authkey-file", good),
        "node": tools.start("meshnode", "list", *at, "--authkey-file", good),
        "wrong": tools.start("meshtopic", "list", *at, "--authkey-file", wrong),
    }
    res = {k: (*p.communicate(timeout=30), p.returncode) for k, p in runs.items()}
    assert res["service"] == ("SERVICE  PROVIDERS\nx        locked\n", "", 0), res["service"]
    out, err, code = res["node"]
    assert code == 0 and "locked" in out, err
    out, err, code = res["wrong"]
    assert code == 1 and "meshtopic: " in err and "authentication failed" in err, err


def test_tools_refuse_an_unusable_key_file_before_connecting(tools: Any, tmp_path: Path) -> None:
    key = secrets.token_hex(8)
    shared = key_file(tmp_path, key, "shared.key", 0o644)
    dead = ("--coordinator", "127.0.0.1:1")  # never reached: the file is refused first
    r = tools.run("meshnode", "list", *dead, "--authkey-file", shared)
    assert (r.returncode, r.stdout) == (2, "")
    assert f"meshnode: the key file {shared} can be read or changed by other users" in r.stderr
    assert f"chmod 600 {shared}" in r.stderr and key not in r.stderr
    r = tools.run("meshservice", "list", *dead, "--authkey-file", str(tmp_path / "none"))
    assert r.returncode == 2 and "cannot read the key file" in r.stderr
    good = key_file(tmp_path, key)
    r = tools.run("meshtopic", "list", *dead, "--authkey", "k", "--authkey-file", good)
    assert r.returncode == 2 and "give --authkey or --authkey-file, not both" in r.stderr


def test_coordinator_with_a_key_file(coordinator_factory: Any, tmp_path: Path) -> None:
    key = secrets.token_hex(16)
    coord = coordinator_factory("--authkey-file", key_file(tmp_path, key))
    assert key.encode() not in Path(f"/proc/{coord.pid}/cmdline").read_bytes()
    with easymesh.Node("keyed", coordinator=coord.address, authkey=key) as node:
        assert node.id
    with pytest.raises(easymesh.MeshError, match="authentication failed"):
        easymesh.Node("stranger", coordinator=coord.address, authkey="wrong", connect_timeout=5)
    with pytest.raises(easymesh.MeshError):
        easymesh.Node("keyless", coordinator=coord.address, connect_timeout=5)


WARNING = "without an authkey: anyone who can reach this port can join the mesh"


def run_coordinator(*args: str) -> tuple[str, str]:
    """Start ``easymesh ARGS --port 0``, wait for its ready line, stop it with SIGINT;
    return (stdout, stderr) once it has exited (EOF: everything it logged is in)."""
    full_env = dict(os.environ, PYTHONUNBUFFERED="1")
    full_env.pop("EASYMESH_AUTHKEY", None)
    proc = subprocess.Popen(
        [sys.executable, "-m", "easymesh", "--port", "0", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=full_env,
    )
    try:
        assert proc.stdout is not None
        ready = proc.stdout.readline()
        assert "listening on" in ready, ready
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate(timeout=10)
    assert proc.returncode == 0, err
    return ready + out, err


def test_coordinator_warns_beyond_loopback_without_a_key(tmp_path: Path) -> None:
    # Bound to every interface for a moment; nothing connects to it (no traffic leaves).
    out, err = run_coordinator("--host", "0.0.0.0")
    assert "listening on 0.0.0.0:" in out and "without authentication" in out
    assert "the coordinator listens on every interface" in err and WARNING in err
    out, err = run_coordinator("--host", "127.0.0.1")
    assert "listening on 127.0.0.1:" in out and "easymesh coordinator stopped" in out
    assert WARNING not in err  # the run ended (EOF): a warning would be in by now
    out, err = run_coordinator("--host", "0.0.0.0", "--authkey-file", key_file(tmp_path, "k"))
    assert "with authentication" in out and WARNING not in err
