"""Unit tests of the caller's answer path and the service host, built with fakes.

Issue 11 asks for unit tests of each part where the part allows; these two get their
collaborators as arguments (a registry, a decoder, links that are anything with
``send``), so they run here without sockets and, but for the blocking ``request``
that needs a second thread to answer it, without threads: a ``threaded=False`` service
queues its requests until the test runs them with ``spin_once``.
"""

from __future__ import annotations

import json
import pickle
import threading
from typing import Any

import msgpack
import pytest

from easymesh.caller import Caller
from easymesh.decoder import Decoder
from easymesh.errors import CodecError, RequestTimeout, WouldDeadlock
from easymesh.loadbalancing import resolve_load_balancer
from easymesh.protocol.codecs import JSON_ID, MSGPACK_ID, PICKLE_ID
from easymesh.protocol.frames import HEADER, PONG, REPLY, REPLY_ERROR, REQUEST, Frame
from easymesh.protocol.messages import Diff, NodeInfo
from easymesh.registry import Registry
from easymesh.requests import Pending
from easymesh.servicehost import ServiceHost
from easymesh.view import TopologyView
from easymesh.workers import ServiceEntry

WAIT = 10.0


class FakeLink:
    """A link that records the frames sent on it: (type, codec, name, request id, body)."""

    def __init__(self) -> None:
        self.frames: list[tuple[int, int, bytes, int, bytes]] = []
        self.sent = threading.Event()

    def send(self, bufs: list[bytes], nbytes: int, droppable: bool) -> bool:
        data = b"".join(bytes(b) for b in bufs)
        ftype, codec, nlen, blen, rid = HEADER.unpack_from(data)
        name = data[HEADER.size : HEADER.size + nlen]
        self.frames.append((ftype, codec, name, rid, data[HEADER.size + nlen :]))
        self.sent.set()
        return True


def _error_kind(frame: tuple[int, int, bytes, int, bytes]) -> str:
    assert frame[0] == REPLY_ERROR
    return str(msgpack.unpackb(frame[4], raw=False)[0])


# -- Caller ------------------------------------------------------------------------------------


def build_caller(codec: str = "pickle", in_io: bool = False) -> tuple[Caller, FakeLink, Decoder]:
    view = TopologyView()
    view.set_local(NodeInfo("me", "me"))
    view.apply(Diff(1, upsert=(NodeInfo("p", "provider", services=frozenset({"svc"})),)))
    registry = Registry(lambda snapshot: None)
    decoder = Decoder(codec, None, "me")
    link = FakeLink()
    host = ServiceHost("me", registry, decoder, lambda *answer: None)
    caller = Caller(
        node_name="me", node_id="me", view=view, registry=registry, host=host,
        decoder=decoder, balancer=resolve_load_balancer("round-robin"),
        link_to=lambda node: link, links={"p": link}, call_later=lambda *a: None,
        in_io_thread=lambda: in_io, request_timeout=WAIT, max_in_flight=100,
    )  # fmt: skip
    return caller, link, decoder


def _pending(caller: Caller, link: Any) -> tuple[Pending, Any]:
    waiter = threading.Lock()
    waiter.acquire()
    p = Pending(waiter, link, "svc", "p", None)
    caller.table.insert(p)
    return p, waiter


def test_caller_answers_count_only_on_the_link_the_request_went_out_on() -> None:
    caller, link, _ = build_caller()
    p, waiter = _pending(caller, link)
    other = FakeLink()
    forged = [
        Frame(REPLY, PICKLE_ID, b"", p.rid, pickle.dumps("forged")),
        Frame(PONG, 0, b"", p.rid, b""),
    ]
    caller.on_answers(other, forged)
    assert caller.unmatched.value == 2
    assert waiter.locked() and p.answer is None
    caller.on_answers(link, [Frame(REPLY, PICKLE_ID, b"", p.rid, pickle.dumps("genuine"))])
    assert not waiter.locked() and p.answer is not None
    assert caller._outcome("svc", *p.answer) == "genuine"  # decoded by the waiter, not here
    caller.on_answers(link, [Frame(REPLY, PICKLE_ID, b"", p.rid, pickle.dumps("late"))])
    assert caller.unmatched.value == 3  # completed once


def test_caller_a_reply_in_a_refused_codec_fails_its_request_unread() -> None:
    caller, link, decoder = build_caller("msgpack")
    p, waiter = _pending(caller, link)
    caller.on_answers(link, [Frame(REPLY, PICKLE_ID, b"", p.rid, b"\x80 never unpickled")])
    assert not waiter.locked()
    assert isinstance(p.error, CodecError) and p.answer is None
    assert decoder.refused.value == 1 and decoder.errors.value == 0


def test_caller_no_time_or_the_io_thread_sends_nothing() -> None:
    caller, link, _ = build_caller()
    for timeout in (0, -1.0, float("nan")):
        with pytest.raises(RequestTimeout):
            caller.request("svc", 1, timeout)
        assert caller.request_future("svc", 1, timeout).exception(0) is not None
    caller, link, _ = build_caller(in_io=True)
    with pytest.raises(WouldDeadlock):
        caller.request("svc", 1, WAIT)
    assert link.frames == [] and len(caller.table) == 0


def test_caller_a_blocking_request_goes_out_once_and_its_waiter_decodes() -> None:
    caller, link, _ = build_caller()
    out: list[Any] = []
    t = threading.Thread(target=lambda: out.append(caller.request("svc", [1, 2], WAIT)))
    t.start()
    assert link.sent.wait(WAIT)
    ((ftype, codec, name, rid, body),) = link.frames
    assert (ftype, codec, name) == (REQUEST, PICKLE_ID, b"svc")
    assert pickle.loads(body) == [1, 2]
    caller.on_answers(link, [Frame(REPLY, PICKLE_ID, b"", rid, pickle.dumps("done"))])
    t.join(WAIT)
    assert out == ["done"] and len(caller.table) == 0


# -- ServiceHost -------------------------------------------------------------------------------


def build_host(codec: str = "pickle", queue_size: int = 10) -> tuple[ServiceHost, list[Any]]:
    registry = Registry(lambda snapshot: None)
    decoder = Decoder(codec, None, "me")
    host = ServiceHost("me", registry, decoder, lambda *answer: None)
    handled: list[Any] = []

    def handler(data: Any) -> Any:
        handled.append(data)
        return {"got": data}

    svc = ServiceEntry(
        "easymesh-me-svc", "svc", handler, workers=0, queue_size=queue_size,
        serve=host.serve, discard=host.discard, on_put=registry.wake_spinner,
    )  # fmt: skip
    registry.add_service(svc)
    return host, handled


def _request(codec: int, body: bytes, rid: int, service: bytes = b"svc") -> Frame:
    return Frame(REQUEST, codec, service, rid, body)


def test_host_refuses_a_codec_it_does_not_accept_unread() -> None:
    host, handled = build_host("msgpack")
    link = FakeLink()
    host.on_requests(link, [_request(PICKLE_ID, b"\x80 never unpickled", 7)])
    ((ftype, _, _, rid, _),) = link.frames
    assert (ftype, rid) == (REPLY_ERROR, 7) and _error_kind(link.frames[0]) == "refused"
    assert host.decoder.refused.value == 1
    assert host.registry.spin_once(0, lambda: False) == 0 and handled == []


def test_host_answers_unknown_services_and_a_full_queue_at_once() -> None:
    host, handled = build_host(queue_size=1)
    link = FakeLink()
    body = pickle.dumps(1)
    host.on_requests(
        link,
        [_request(PICKLE_ID, body, 1, b"nope"), _request(PICKLE_ID, body, 2),
         _request(PICKLE_ID, body, 3)],
    )  # fmt: skip
    assert [(f[3], _error_kind(f)) for f in link.frames] == [(1, "no-service"), (3, "overloaded")]
    assert host.registry.spin_once(0, lambda: False) == 1 and handled == [1]
    assert link.frames[-1][0] == REPLY and link.frames[-1][3] == 2


def test_host_replies_in_the_codec_of_the_request() -> None:
    host, handled = build_host("pickle")
    link = FakeLink()
    host.on_requests(
        link,
        [_request(JSON_ID, json.dumps([1]).encode(), 1), _request(MSGPACK_ID, msgpack.packb(2), 2)],
    )
    assert host.registry.spin_once(0, lambda: False) == 2 and handled == [[1], 2]
    replies = [(f[0], f[1], f[3]) for f in link.frames]
    assert replies == [(REPLY, JSON_ID, 1), (REPLY, MSGPACK_ID, 2)]
    assert json.loads(link.frames[0][4]) == {"got": [1]}
    assert msgpack.unpackb(link.frames[1][4]) == {"got": 2}
