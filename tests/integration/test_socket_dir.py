"""The socket folder (socket_dir / EASYMESH_SOCKET_DIR) must be ours alone: created 0700
when missing, refused (UnsafeSocketDir, before anything is bound) when others could
swap our sockets."""

from __future__ import annotations

import os
import pwd
import stat
from pathlib import Path

import pytest

import easymesh
from easymesh.errors import MeshError, UnsafeSocketDir
from easymesh.transport.listener import private_socket_dir, unix_server_socket


def mode_of(path: Path) -> int:
    return stat.S_IMODE(os.lstat(path).st_mode)


def test_a_missing_folder_is_created_0700_whatever_the_umask(tmp_path: Path) -> None:
    folder = tmp_path / "a" / "b" / "socks"
    old = os.umask(0o277)  # mkdir alone would give 0500: not even usable
    try:
        private_socket_dir(str(folder))
    finally:
        os.umask(old)
    assert folder.is_dir() and mode_of(folder) == 0o700
    private_socket_dir(str(folder))  # an existing private folder is fine, and left alone
    assert mode_of(folder) == 0o700


@pytest.mark.parametrize("mode", [0o777, 0o770, 0o730, 0o703, 0o1777])
def test_a_folder_others_can_write_is_refused(tmp_path: Path, mode: int) -> None:
    folder = tmp_path / "shared"
    folder.mkdir()
    folder.chmod(mode)
    with pytest.raises(
        UnsafeSocketDir, match=f"writable by the group or others \\(mode {mode:04o}\\)"
    ):
        private_socket_dir(str(folder))
    assert mode_of(folder) == mode  # refused, not "repaired" behind the user's back


@pytest.mark.parametrize("mode", [0o700, 0o750, 0o755])
def test_a_folder_only_we_can_write_is_accepted(tmp_path: Path, mode: int) -> None:
    folder = tmp_path / "mine"
    folder.mkdir()
    folder.chmod(mode)
    private_socket_dir(str(folder))


@pytest.mark.skipif(os.geteuid() != 0, reason="chown to another user needs root")
def test_a_folder_of_another_user_is_refused(tmp_path: Path) -> None:
    nobody = pwd.getpwnam("nobody").pw_uid
    folder = tmp_path / "theirs"
    folder.mkdir(mode=0o700)
    os.chown(folder, nobody, -1)
    with pytest.raises(UnsafeSocketDir, match=f"belongs to user {nobody}, not to us"):
        private_socket_dir(str(folder))


def test_a_symlink_is_refused_even_to_a_good_folder(tmp_path: Path) -> None:
    real = tmp_path / "real"
    real.mkdir(mode=0o700)
    link = tmp_path / "link"
    link.symlink_to(real)
    with pytest.raises(UnsafeSocketDir, match="is a symbolic link"):
        private_socket_dir(str(link))
    dangling = tmp_path / "dangling"
    dangling.symlink_to(tmp_path / "nowhere")  # mkdir must not create its target either
    with pytest.raises(UnsafeSocketDir, match="is a symbolic link"):
        private_socket_dir(str(dangling))
    assert not (tmp_path / "nowhere").exists()


def test_a_file_is_refused(tmp_path: Path) -> None:
    f = tmp_path / "file"
    f.write_text("")
    with pytest.raises(UnsafeSocketDir, match="is not a folder"):
        private_socket_dir(str(f))


def test_unix_server_socket_binds_nothing_in_a_refused_folder(tmp_path: Path) -> None:
    folder = tmp_path / "shared"
    folder.mkdir()
    folder.chmod(0o777)
    with pytest.raises(UnsafeSocketDir):
        unix_server_socket("n1", str(folder))
    assert os.listdir(folder) == []
    folder.chmod(0o700)  # the same folder once private: the socket is made there
    sock, endpoint, path = unix_server_socket("n1", str(folder))
    try:
        assert path is not None and os.path.dirname(path) == str(folder)
        assert stat.S_ISSOCK(os.lstat(path).st_mode)
    finally:
        sock.close()
        os.unlink(path)


def test_node_refuses_a_shared_socket_dir(coordinator, tmp_path: Path) -> None:
    folder = tmp_path / "shared"
    folder.mkdir()
    folder.chmod(0o770)
    with pytest.raises(UnsafeSocketDir) as info:
        easymesh.Node("n", coordinator=coordinator.address, socket_dir=str(folder))
    assert isinstance(info.value, MeshError) and isinstance(info.value, PermissionError)
    assert "chmod 700" in str(info.value)
    assert os.listdir(folder) == []
    missing = tmp_path / "new-socks"
    with easymesh.Node("n", coordinator=coordinator.address, socket_dir=str(missing)) as node:
        assert mode_of(missing) == 0o700
        assert os.listdir(missing) == [f"{os.getpid()}-{node.id}.sock"]
