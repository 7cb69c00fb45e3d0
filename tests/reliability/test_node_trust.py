"""A key holder attacks real nodes (issue 12, the node's side).

The attacker knows the mesh key, completes the real handshake on a link it opens to a
node, and then speaks raw frames (tests/reliability/keyholder.py). It tries to:

* take over another node's traffic by claiming that node's id on its link (Ident);
* complete someone else's pending request with a reply of its choice;
* make a node whose codec is msgpack unpickle its data: topic messages and requests sent
  to it, and, as a provider it dialled, the reply to its request;
* as a provider, never read the requests sent to it, so that they pile up in the node.

Each negative check ends with a positive marker on the same link: the attacker sends a
PING and reads until the PONG, so every frame the node would have sent it before is
already in the stream.
"""

from __future__ import annotations

import os
import pickle
import socket
import threading
from typing import Any

import easymesh
from easymesh.protocol.codecs import MSGPACK_ID, PICKLE_ID
from easymesh.protocol.frames import (
    CONTROL,
    PING,
    PONG,
    REPLY,
    REPLY_ERROR,
    REQUEST,
    SHM_OFFER,
    TOPIC,
)
from easymesh.protocol.messages import Ident, encode_control

from ..integration.helpers import Collector, wait_until
from .keyholder import AcceptedKeyHolder, KeyHolder, record

KEY = "trust-test-key"


def _endpoint(node: easymesh.Node) -> str:
    """The address of ``node``'s Unix socket, as an attacker on this host dials it."""
    unix = next(n for n in node.nodes() if n.id == node.id).unix
    return "\0" + unix[1:] if unix.startswith("@") else unix


def _frames_until_pong(attacker: KeyHolder, rid: int = 777) -> list[Any]:
    """Send a PING and collect every frame that arrives before its PONG (but the node's
    SHM_OFFER, which every shm node sends on a Unix link once it is open)."""
    attacker.send_frame(PING, rid=rid)
    seen = []
    while True:
        frame = attacker.next_frame(20)
        assert frame is not None, "the node closed the attacker's link"
        if frame.type == PONG and frame.request_id == rid:
            return seen
        if frame.type != SHM_OFFER:
            seen.append(frame)


def _nodes(coordinator_factory: Any) -> tuple[Any, Any]:
    coord = coordinator_factory(authkey=KEY)
    made: list[easymesh.Node] = []

    def make(name: str, **kwargs: Any) -> easymesh.Node:
        n = easymesh.Node(name, coordinator=coord.address, authkey=KEY, **kwargs)
        made.append(n)
        return n

    return make, made


def test_a_claimed_id_never_receives_the_victims_traffic(coordinator_factory: Any) -> None:
    make, made = _nodes(coordinator_factory)
    try:
        victim = make("victim")
        got = Collector()
        victim.listen("orders", got)
        victim.add_service("whoami", lambda _: "victim")
        sender = make("sender")
        sender.wait_for_listener("orders", timeout=10)
        sender.wait_for_service("whoami", timeout=10)
        with KeyHolder(_endpoint(sender), KEY) as attacker:
            name, body = encode_control(Ident(victim.id, victim.name))
            attacker.send_frame(CONTROL, name, body)
            assert _frames_until_pong(attacker, 1) == []  # the claim was read
            for i in range(50):
                sender.send("orders", i)
            sender.send("orders", "end")
            assert sender.request("whoami", None, timeout=10) == "victim"
            assert got.wait_for(51)[-1] == "end"
            stolen = _frames_until_pong(attacker, 2)
        assert [f for f in stolen if f.type in (TOPIC, REQUEST)] == []
    finally:
        for n in made:
            n.close()


def test_a_forged_reply_never_completes_anothers_request(coordinator_factory: Any) -> None:
    make, made = _nodes(coordinator_factory)
    release = threading.Event()
    try:
        provider = make("provider")
        provider.add_service("slow", lambda _: release.wait(20) and "genuine")
        requester = make("requester")
        requester.wait_for_service("slow", timeout=10)
        future = requester.request_future("slow", None, timeout=30)
        with KeyHolder(_endpoint(requester), KEY) as attacker:
            forged = pickle.dumps("forged")
            for rid in range(1, 300):  # request ids are small counters: guess them all
                attacker.send_frame(REPLY, body=forged, codec=1, rid=rid)
                attacker.send_frame(REPLY_ERROR, body=b"\x94\xa5error\xa1X\xa1Y\xa0", rid=rid)
                attacker.send_frame(PONG, rid=rid)
            _frames_until_pong(attacker)  # every forged answer was read before this
        assert not future.done()
        assert requester.stats()["unmatched_answers"] >= 3 * 299
        release.set()
        assert future.result(20) == "genuine"
    finally:
        release.set()
        for n in made:
            n.close()


class _Marker:
    """Unpickling this creates a file: proof that pickle ran."""

    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self) -> Any:
        return (open, (self.path, "w"))


def test_a_msgpack_node_never_unpickles(coordinator_factory: Any, tmp_path: Any) -> None:
    make, made = _nodes(coordinator_factory)
    marker = str(tmp_path / "pickle-ran")
    handled: list[Any] = []
    try:
        node = make("strict", codec="msgpack")
        got = Collector()
        node.listen("in", got)
        node.add_service("svc", handled.append)
        payload = pickle.dumps(_Marker(marker))
        with KeyHolder(_endpoint(node), KEY) as attacker:
            attacker.send_frame(TOPIC, b"in", payload, codec=1)
            attacker.send_frame(REQUEST, b"svc", payload, codec=1, rid=5)
            attacker.send_frame(TOPIC, b"in", b"\xa5after", codec=2)  # msgpack 'after'
            answers = _frames_until_pong(attacker)
        assert got.wait_for(1) == ["after"]
        assert [(f.type, f.request_id) for f in answers] == [(REPLY_ERROR, 5)]
        assert b"not accept" in bytes(answers[0].body) or b"refused" in bytes(answers[0].body)
        assert handled == []
        assert not os.path.exists(marker)
        assert wait_until(lambda: node.stats()["refused_codec"] == 2, timeout=5)
    finally:
        for n in made:
            n.close()


def test_a_msgpack_node_never_unpickles_a_reply(coordinator_factory: Any, tmp_path: Any) -> None:
    """The attacker registers as the provider of a service (a record of its own, its own
    TCP endpoint) and answers the node's request with a pickle. The reply is dropped
    unread, counted, and fails the request with CodecError; a second request on the same
    link, answered in msgpack, shows the link still works (the positive marker)."""
    # The attacker's registration answers no PING: a heartbeat timeout (4 x 5 s) it outlives.
    coord = coordinator_factory(authkey=KEY, heartbeat_interval=5.0)
    made: list[easymesh.Node] = []
    marker = str(tmp_path / "pickle-ran")
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    try:
        with KeyHolder(("127.0.0.1", coord.port), KEY) as registration:
            registration.register(record(name="provider", tcp=f"127.0.0.1:{port}",
                                         services=frozenset({"svc"})))
            assert registration.answer()[0] == "welcome"
            node = easymesh.Node("strict", coordinator=coord.address, authkey=KEY, codec="msgpack")
            made.append(node)
            node.wait_for_service("svc", timeout=10)
            outcome: list[Any] = []

            def call() -> None:
                for data in ("first", "second"):
                    try:
                        outcome.append(node.request("svc", data, timeout=20))
                    except Exception as exc:  # noqa: BLE001 - recorded for the test
                        outcome.append(exc)

            caller = threading.Thread(target=call)
            caller.start()
            with AcceptedKeyHolder(listener, KEY) as attacker:
                replies = [(pickle.dumps(_Marker(marker)), PICKLE_ID), (b"\xa5after", MSGPACK_ID)]
                for body, codec in replies:
                    request = attacker.next_frame(20)
                    while request is not None and request.type != REQUEST:
                        request = attacker.next_frame(20)  # the node's Ident first
                    assert request is not None
                    attacker.send_frame(REPLY, body=body, codec=codec, rid=request.request_id)
                caller.join(30)
        assert isinstance(outcome[0], easymesh.CodecError), outcome
        assert outcome[1] == "after"
        assert not os.path.exists(marker)
        assert node.stats()["refused_codec"] == 1
    finally:
        listener.close()
        for n in made:
            n.close()


def test_requests_to_a_provider_that_stops_reading_fail_with_the_reason(
    coordinator_factory: Any,
) -> None:
    """The attacker registers as a provider and never reads what the node sends it. The
    requests queued towards it (must-deliver frames) pass ``max_pending_bytes`` (1 MiB
    here): the node disconnects it, and every request that went out on that link fails
    with ConnectionLost saying why, instead of the queue growing."""
    coord = coordinator_factory(authkey=KEY, heartbeat_interval=5.0)  # see above
    made: list[easymesh.Node] = []
    listener = socket.create_server(("127.0.0.1", 0))
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)  # inherited
    port = listener.getsockname()[1]
    try:
        with KeyHolder(("127.0.0.1", coord.port), KEY) as registration:
            registration.register(
                record(name="sink", tcp=f"127.0.0.1:{port}", services=frozenset({"sink"}))
            )
            assert registration.answer()[0] == "welcome"
            node = easymesh.Node(
                "caller", coordinator=coord.address, authkey=KEY, max_pending_bytes=1 << 20
            )
            made.append(node)
            node.wait_for_service("sink", timeout=10)
            first = node.request_future("sink", b"", timeout=60)  # dials the attacker
            with AcceptedKeyHolder(listener, KEY):
                futures = [first]
                refused: Exception | None = None
                while refused is None and len(futures) < 400:  # 40 MB at most
                    try:
                        futures.append(node.request_future("sink", b"x" * 100_000, timeout=60))
                    except easymesh.ConnectionLost as exc:  # the one that found it closed
                        refused = exc
                errors = [f.exception(30) for f in futures]
        assert refused is not None, "400 requests (40 MB) queued towards a peer that never reads"
        assert "stopped reading" in str(refused), refused  # the one that tripped it says why
        assert len(futures) > 1
        for exc in errors:
            assert isinstance(exc, easymesh.ConnectionLost), exc
            assert "stopped reading" in str(exc) and "disconnected" in str(exc), exc
        assert len(node._caller.table) == 0
    finally:
        listener.close()
        for n in made:
            n.close()
