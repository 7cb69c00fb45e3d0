"""Answers that arrive in the same read as the peer's ERROR frame still complete their
requests.

The router gathers the answers of one read and hands them on after the loop over its
frames; an ERROR frame closes the link inside that loop, which fails every request still
waiting on it. Answers read *before* the ERROR must be delivered first (the guarantee: what
came before the ERROR is delivered), not be failed with the ERROR's reason and then dropped
as unmatched.

Deterministic: the caller's I/O thread is held (a call queued on it waits for an event)
while the provider replies and then, answering a bad frame we send it, sends its ERROR and
closes; both frames wait in the caller's socket and are read together once it is released.
"""

from __future__ import annotations

import threading
from typing import Any

import easymesh
from easymesh.protocol.frames import frame_bytes
from tests.integration.helpers import wait_until

WAIT = 20.0
BAD_TYPE = 99  # no such frame type: the provider rejects the link with an ERROR frame


def _link_from(node: easymesh.Node, name: str) -> dict[str, Any] | None:
    for key, link in node.stats()["peers"].items():
        if key.startswith(name + ":") and link["state"] == "open":
            return link  # type: ignore[no-any-return]
    return None


def test_a_reply_read_with_an_error_frame_completes_its_request(coordinator: Any) -> None:
    with (
        easymesh.Node("provider", coordinator=coordinator.address, connect_timeout=15) as srv,
        easymesh.Node("caller", coordinator=coordinator.address, connect_timeout=15) as cli,
    ):
        srv.add_service("echo", lambda x: x)
        cli.wait_for_service("echo", timeout=WAIT)
        assert cli.request("echo", 1, timeout=WAIT) == 1  # the link is open
        link = cli._router.links[srv.id]
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
            bad = frame_bytes(BAD_TYPE, b"", b"x")
            assert link.send([bad], len(bad), False)
            assert wait_until(lambda: _link_from(srv, "caller") is None, timeout=WAIT)
        finally:
            release.set()  # the caller reads the REPLY and the ERROR in one read
        assert future.result(timeout=WAIT) == 2
