"""Registrations the coordinator must still accept now that it checks every record."""

from __future__ import annotations

from typing import Any

import pytest

from .helpers import Collector


def test_a_relative_socket_dir_is_advertised_as_an_absolute_path(
    node_factory: Any, tmp_path: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The coordinator accepts only absolute, normalized socket paths; a node given a
    relative socket_dir must advertise the absolute one (and be reachable on it)."""
    monkeypatch.chdir(tmp_path)
    rx = node_factory("rx", socket_dir="socks/./here")
    got = Collector()
    rx.listen("t", got)
    (me,) = [n for n in rx.nodes() if n.id == rx.id]
    assert me.unix == str(tmp_path / "socks" / "here" / f"{me.pid}-{rx.id}.sock")
    tx = node_factory("tx", socket_dir=str(tmp_path / "socks" / "here"))
    tx.wait_for_listener("t", timeout=10)
    tx.send("t", 1)
    assert got.wait_for(1) == [1]
