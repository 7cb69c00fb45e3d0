"""Key files, the loopback check and the coordinator's warning: no sockets, no processes."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import pytest

from easymesh import config
from easymesh.cli.options import authkey
from easymesh.coordinator import unprotected_warning


def key_file(tmp_path: Path, data: bytes, mode: int = 0o600, name: str = "key") -> str:
    path = tmp_path / name
    path.write_bytes(data)
    path.chmod(mode)
    return str(path)


@pytest.mark.parametrize(
    ("data", "key"),
    [
        (b"s3cret\n", b"s3cret"),  # echo s3cret > FILE
        (b"s3cret", b"s3cret"),
        (b"s3cret\r\n", b"s3cret"),
        (b"s3cret\n\n", b"s3cret\n"),  # one line end only: the rest is the key's
        (b" spaced key \n", b" spaced key "),
        (b"\x00\xff\xfe binary\n", b"\x00\xff\xfe binary"),
    ],
)
def test_read_authkey_file_strips_one_line_end(tmp_path: Path, data: bytes, key: bytes) -> None:
    assert config.read_authkey_file(key_file(tmp_path, data)) == key


@pytest.mark.parametrize("mode", [0o644, 0o604, 0o602, 0o620, 0o666, 0o601])
def test_a_key_file_others_can_read_or_anyone_else_change_is_refused(
    tmp_path: Path, mode: int
) -> None:
    path = key_file(tmp_path, b"k\n", mode)
    with pytest.raises(ValueError, match=f"mode {mode:04o}.*chmod 600 {path}"):
        config.read_authkey_file(path)


def test_a_group_readable_key_file_is_used_with_a_warning(tmp_path: Path, caplog) -> None:
    with caplog.at_level(logging.WARNING, logger="easymesh.config"):
        assert config.read_authkey_file(key_file(tmp_path, b"k\n", 0o640)) == b"k"
    assert "can be read by its group (mode 0640)" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="easymesh.config"):
        assert config.read_authkey_file(key_file(tmp_path, b"k\n", 0o400, "k2")) == b"k"
    assert caplog.text == ""


@pytest.mark.skipif(os.geteuid() != 0, reason="chown to another user needs root")
def test_a_key_file_of_another_user_is_refused(tmp_path: Path) -> None:
    path = key_file(tmp_path, b"k\n")
    os.chown(path, 65534, -1)
    with pytest.raises(ValueError, match="belongs to user 65534"):
        config.read_authkey_file(path)


def test_unusable_key_files(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="cannot read the key file .*: No such file"):
        config.read_authkey_file(str(tmp_path / "missing"))
    with pytest.raises(ValueError, match="is empty"):
        config.read_authkey_file(key_file(tmp_path, b"\n"))
    with pytest.raises(ValueError, match="not a regular file"):
        config.read_authkey_file(str(tmp_path))
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo, 0o600)  # no writer: opening it must not hang
    with pytest.raises(ValueError, match="not a regular file"):
        config.read_authkey_file(str(fifo))
    big = key_file(tmp_path, b"x" * (config.MAX_KEY_FILE + 1), name="big")
    with pytest.raises(ValueError, match="larger than"):
        config.read_authkey_file(big)


def test_the_key_in_the_environment_is_taken_as_bytes(monkeypatch) -> None:
    monkeypatch.setitem(os.environb, b"EASYMESH_AUTHKEY", b"\xff\xfe raw")
    assert config.authkey_bytes() == b"\xff\xfe raw"
    monkeypatch.setenv("EASYMESH_AUTHKEY", "")
    assert config.authkey_bytes() is None


def test_cli_authkey_from_file_option_or_none(tmp_path: Path, capsys) -> None:
    path = key_file(tmp_path, b"from-file\n")
    unset = "$EASYMESH_AUTHKEY or none"
    assert authkey({"--authkey": unset, "--authkey-file": path}, "t") == b"from-file"
    assert authkey({"--authkey": "opt", "--authkey-file": None}, "t") == "opt"
    assert authkey({"--authkey": unset, "--authkey-file": None}, "t") is None  # library: env
    with pytest.raises(SystemExit) as exc:
        authkey({"--authkey": "opt", "--authkey-file": path}, "tool")
    assert exc.value.code == 2
    assert "tool: give --authkey or --authkey-file, not both" in capsys.readouterr().err
    os.chmod(path, 0o644)
    with pytest.raises(SystemExit) as exc:
        authkey({"--authkey": unset, "--authkey-file": path}, "tool")
    assert exc.value.code == 2 and "chmod 600" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("host", "loopback"),
    [
        ("127.0.0.1", True),
        ("127.1.2.3", True),
        ("::1", True),
        ("[::1]", True),
        ("::ffff:127.0.0.1", True),
        ("localhost", True),
        ("0.0.0.0", False),
        ("::", False),
        ("", False),
        ("192.168.1.10", False),
        ("fe80::1%eth0", False),
        ("example.com", False),
    ],
)
def test_is_loopback(host: str, loopback: bool) -> None:
    assert config.is_loopback(host) is loopback


def test_unprotected_warning_only_beyond_loopback_and_without_key() -> None:
    message = unprotected_warning("0.0.0.0", None, 6374)
    assert message is not None and "every interface (port 6374) without an authkey" in message
    assert "--authkey-file" in message
    assert "10.1.2.3 (port 1)" in (unprotected_warning("10.1.2.3", None, 1) or "")
    assert unprotected_warning("::", None, 1) is not None
    assert unprotected_warning("0.0.0.0", b"key", 1) is None
    assert unprotected_warning("127.0.0.1", None, 1) is None
    assert unprotected_warning("::1", None, 1) is None
