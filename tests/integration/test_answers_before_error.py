"""Answers that arrive in the same read as a frame that closes the link still complete their
requests.

The router gathers the answers of one read and hands them on after the loop over its
frames; a frame that closes the link inside that loop (the peer's ERROR, or a bad
shared-memory or control frame from it) fails every request still waiting on the link.
Answers read *before* that frame must be delivered first (what came before is delivered),
not be failed with the link's end and then dropped as unmatched.

Deterministic: the caller's I/O thread is held (a call queued on it waits for an event)
while the provider replies and then sends the frame that ends the link; both wait in the
caller's socket and are read together once it is released.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import pytest

import easymesh
from easymesh.protocol.frames import CONTROL, SHM_ARENA, frame_bytes
from tests.integration.helpers import wait_until

WAIT = 20.0
BAD_TYPE = 99  # no such frame type: the provider rejects the link with an ERROR frame


def _link_from(node: easymesh.Node, name: str) -> dict[str, Any] | None:
    for key, link in node.stats()["peers"].items():
        if key.startswith(name + ":") and link["state"] == "open":
            return link  # type: ignore[no-any-return]
    return None


def _their_error(srv: easymesh.Node, cli: easymesh.Node) -> None:
    """We send a frame of no known type: the provider answers with ERROR and closes."""
    bad = frame_bytes(BAD_TYPE, b"", b"x")
    assert cli._router.links[srv.id].send([bad], len(bad), False)
    assert wait_until(lambda: _link_from(srv, "caller") is None, timeout=WAIT)


def _from_provider(frame: bytes) -> Callable[[easymesh.Node, easymesh.Node], None]:
    def send(srv: easymesh.Node, cli: easymesh.Node) -> None:
        (conn,) = [c for c in list(srv._router._conns) if c.peer_id == cli.id]
        assert conn.send([frame], len(frame), False)

    return send


@pytest.mark.parametrize(
    "ender",
    [
        _their_error,
        _from_provider(frame_bytes(SHM_ARENA, b"", b"not an arena")),
        _from_provider(frame_bytes(CONTROL, b"\xff", b"\xc1")),
    ],
    ids=["their-error", "bad-shm-frame", "bad-control-frame"],
)
def test_a_reply_read_with_a_frame_that_ends_the_link_completes_its_request(
    coordinator: Any,
    ender: Callable[[easymesh.Node, easymesh.Node], None],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The caller's I/O thread is held while the provider replies: each node needs its own
    # (the nodes of a process share one by default).
    monkeypatch.setenv("EASYMESH_IO_LOOP", "own")
    with (
        easymesh.Node("provider", coordinator=coordinator.address, connect_timeout=15) as srv,
        easymesh.Node("caller", coordinator=coordinator.address, connect_timeout=15) as cli,
    ):
        srv.add_service("echo", lambda x: x)
        cli.wait_for_service("echo", timeout=WAIT)
        assert cli.request("echo", 1, timeout=WAIT) == 1  # the link is open
        entered, release = threading.Event(), threading.Event()

        def hold() -> None:
            entered.set()
            release.wait(WAIT)

        cli._loop.call_soon(hold)
        try:
            assert entered.wait(WAIT)
            before = _link_from(srv, "caller")
            assert before is not None
            future = cli.request_future("echo", 2, timeout=WAIT)  # written from this thread
            assert wait_until(
                lambda: (_link_from(srv, "caller") or before)["frames_out"] > before["frames_out"],
                timeout=WAIT,
            ), "the provider did not reply"
            ender(srv, cli)
        finally:
            release.set()  # the caller reads the REPLY and what ends the link in one read
        assert future.result(timeout=WAIT) == 2
        assert wait_until(lambda: _link_from(cli, "provider") is None, timeout=WAIT)
