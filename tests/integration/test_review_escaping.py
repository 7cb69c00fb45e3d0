"""Regressions from the second review (each failed before its fix): text a provider sends
back in an error reply reaches the caller's exception message escaped; a subscription
logs peer text escaped; ``send_raw`` refuses a codec id out of range with ValueError.

guarantees.md: every peer-supplied text in a log line or exception message goes through
``easymesh.escape.printable()``. ServiceError and NoProviderError carried the remote
type and message raw, so a provider could put a newline and a line of its choosing into
whatever log the caller writes ``str(exc)`` to. (``remote_traceback`` stays as sent: it
is many lines by nature and not part of the message.)
"""

from __future__ import annotations

import threading
from typing import Any

import pytest

import easymesh
from easymesh.protocol.frames import REPLY_ERROR, REQUEST

FORGED = "harmless\nCRITICAL root: FORGED by the provider"


class Boom(Exception):
    pass


def test_a_remote_error_message_is_escaped_in_the_exception(node_factory: Any) -> None:
    def handler(data: Any) -> Any:
        raise Boom(FORGED)

    srv = node_factory("srv")
    srv.add_service("boom", handler)
    cli = node_factory("cli")
    cli.wait_for_service("boom", timeout=10)
    with pytest.raises(easymesh.ServiceError) as info:
        cli.request("boom", 1, timeout=30)
    text = str(info.value)
    assert "\n" not in text and "harmless\\x0aCRITICAL root: FORGED" in text
    assert info.value.remote_type == "Boom"
    assert "Boom" in info.value.remote_traceback and "\n" in info.value.remote_traceback


def test_a_forged_no_service_reply_is_escaped(node_factory: Any) -> None:
    """A provider answers with a 'no-service' error of its own wording."""
    import msgpack

    srv = node_factory("srv")
    srv.add_service("svc", lambda d: d)
    cli = node_factory("cli")
    cli.wait_for_service("svc", timeout=10)
    # Replace the provider's answer: its host writes a REPLY_ERROR of our choosing.
    host = srv._host
    real = host.on_requests
    sent = threading.Event()

    def forge(link: Any, frames: Any) -> None:
        if link is None:
            real(link, frames)
            return
        for frame in frames:
            assert frame[0] == REQUEST
            body = msgpack.packb(["no-service", "NoProviderError", FORGED, ""])
            from easymesh.protocol.frames import encode_frame

            sent.set()  # before the reply leaves: the caller may raise at once
            link.send(encode_frame(REPLY_ERROR, b"", body, 0, frame[3]), 16 + len(body), False)

    srv._p.router._on_requests = forge
    with pytest.raises(easymesh.NoProviderError) as info:
        cli.request("svc", 1, timeout=30)
    assert sent.is_set()
    assert "\n" not in str(info.value) and "harmless\\x0aCRITICAL" in str(info.value)


class Strict:
    """A custom codec whose errors quote the bytes they could not read (as many do)."""

    codec_id = 201
    name = "strict"

    def encode(self, obj: Any) -> bytes:
        return bytes(obj)

    def decode(self, data: bytes) -> Any:
        raise ValueError(f"not strict data: {bytes(data).decode('utf-8', 'replace')}")


def test_a_subscription_logs_an_undecodable_message_escaped(
    node_factory: Any, caplog: pytest.LogCaptureFixture
) -> None:
    r = node_factory("r", codec=Strict())
    sub = r.subscribe("t", queue_size=10)
    s = node_factory("s")
    s.wait_for_listener("t", timeout=10)
    s.send_raw("t", Strict.codec_id, FORGED.encode())
    s.send_raw("t", 0, b"marker")  # raw codec: decodes; arrives after the bad one
    with caplog.at_level("ERROR", logger="easymesh"):
        assert sub.get(timeout=30) == b"marker"
    lines = [rec.getMessage() for rec in caplog.records if "skipping a message" in rec.getMessage()]
    assert len(lines) == 1 and "\n" not in lines[0] and "harmless\\x0aCRITICAL" in lines[0]


def test_send_raw_with_a_codec_id_out_of_range_raises_value_error(node_factory: Any) -> None:
    r = node_factory("r")
    r.listen("t", lambda topic, data: None)
    s = node_factory("s")
    s.wait_for_listener("t", timeout=10)
    for bad in (256, -1):
        with pytest.raises(ValueError, match="codec"):
            s.send_raw("t", bad, b"x")
    for wrong in ("json", True, 1.0):
        with pytest.raises(TypeError, match="codec"):
            s.send_raw("t", wrong, b"x")  # type: ignore[arg-type]
