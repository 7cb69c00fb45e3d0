"""A small Foxglove WebSocket protocol client for the tests (over ``websockets``).

Written from the protocol's message definitions (foxglove/ws-protocol): JSON text
frames with an ``op``; binary frames with a one-byte opcode and little-endian
fields. Server binary ops: 1 message data (u32 subscription id, u64 timestamp,
payload), 3 service call response (u32 service id, u32 call id, u32 encoding
length, encoding, payload). Client binary ops: 1 message data (u32 channel id,
payload), 2 service call request (same layout as the response). The subprotocol
is offered under both names the SDK generations use.

Like the Foxglove app, it subscribes by topic: a topic it wants is subscribed
again whenever its channel is re-advertised; and it notes a channel advertised for
a topic that still has one (the app refuses the second as a duplicate topic).
"""

from __future__ import annotations

import base64
import json
import struct
import time
from collections.abc import Callable
from typing import Any

from websockets.sync.client import connect

SUBPROTOCOLS = ["foxglove.sdk.v1", "foxglove.websocket.v1"]


class FoxgloveClient:
    """Connect to ``url``; every wait has a timeout and raises AssertionError on it."""

    def __init__(self, url: str, timeout: float = 20.0) -> None:
        # entered as a context manager (what websockets asks for); close() leaves it
        self.ws = connect(
            url, subprotocols=SUBPROTOCOLS, open_timeout=timeout, max_size=None
        ).__enter__()
        self.timeout = timeout
        self.server_info: dict[str, Any] = {}
        self.channels: dict[int, dict[str, Any]] = {}  # channel id -> advertised channel
        self.services: dict[str, dict[str, Any]] = {}  # name -> advertised service
        self.statuses: list[dict[str, Any]] = []
        self.graph: dict[str, dict[str, list[str]]] = {"pub": {}, "sub": {}, "svc": {}}
        self.messages: dict[str, list[Any]] = {}  # topic -> decoded JSON messages
        self.replies: dict[int, tuple[str, Any]] = {}  # call id -> ("ok", json) / ("fail", text)
        self.wanted: set[str] = set()
        self.duplicates: list[str] = []  # topics advertised while advertised already
        self._subs: dict[int, int] = {}  # subscription id -> channel id
        self._next_id = 1
        self.wait_for(lambda: bool(self.server_info), "serverInfo")

    def close(self) -> None:
        self.ws.close()

    # -- receiving -----------------------------------------------------------------------------

    def pump(self, timeout: float) -> bool:
        """Handle one message if one arrives within ``timeout``; True if one did."""
        try:
            raw = self.ws.recv(timeout=timeout)
        except TimeoutError:
            return False
        if isinstance(raw, str):
            self._on_json(json.loads(raw))
        else:
            self._on_binary(raw)
        return True

    def wait_for(self, found: Callable[[], Any], what: str, timeout: float | None = None) -> Any:
        deadline = time.monotonic() + (timeout or self.timeout)
        while True:
            result = found()
            if result:
                return result
            left = deadline - time.monotonic()
            assert left > 0, f"no {what} within {timeout or self.timeout} s"
            self.pump(min(left, 0.5))

    def _on_json(self, msg: dict[str, Any]) -> None:
        op = msg["op"]
        if op == "serverInfo":
            self.server_info = msg
        elif op == "advertise":
            for ch in msg["channels"]:
                if any(c["topic"] == ch["topic"] for c in self.channels.values()):
                    self.duplicates.append(ch["topic"])  # the app refuses such a channel
                self.channels[ch["id"]] = ch
                if ch["topic"] in self.wanted:
                    self._subscribe_channel(ch["id"])
        elif op == "unadvertise":
            for cid in msg["channelIds"]:
                self.channels.pop(cid, None)
                self._subs = {s: c for s, c in self._subs.items() if c != cid}
        elif op == "advertiseServices":
            for svc in msg["services"]:
                self.services[svc["name"]] = svc
        elif op == "unadvertiseServices":
            gone = set(msg["serviceIds"])
            self.services = {n: s for n, s in self.services.items() if s["id"] not in gone}
        elif op == "status":
            self.statuses.append(msg)
        elif op == "serviceCallFailure":
            self.replies[msg["callId"]] = ("fail", msg["message"])
        elif op == "connectionGraphUpdate":
            self._on_graph(msg)

    def _on_graph(self, msg: dict[str, Any]) -> None:
        for t in msg.get("removedTopics", []):
            self.graph["pub"].pop(t, None)
            self.graph["sub"].pop(t, None)
        for s in msg.get("removedServices", []):
            self.graph["svc"].pop(s, None)
        for t in msg.get("publishedTopics", []):
            self.graph["pub"][t["name"]] = sorted(t["publisherIds"])
        for t in msg.get("subscribedTopics", []):
            self.graph["sub"][t["name"]] = sorted(t["subscriberIds"])
        for s in msg.get("advertisedServices", []):
            self.graph["svc"][s["name"]] = sorted(s["providerIds"])

    def _on_binary(self, data: bytes) -> None:
        op = data[0]
        if op == 1:
            sub_id, _stamp = struct.unpack_from("<IQ", data, 1)
            channel = self.channels.get(self._subs.get(sub_id, -1))
            if channel is not None:
                self.messages.setdefault(channel["topic"], []).append(json.loads(data[13:]))
        elif op == 3:
            _service, call, elen = struct.unpack_from("<III", data, 1)
            encoding = data[13 : 13 + elen].decode()
            assert encoding == "json", encoding
            self.replies[call] = ("ok", json.loads(data[13 + elen :]))

    # -- sending -------------------------------------------------------------------------------

    def _new_id(self) -> int:
        self._next_id += 1
        return self._next_id

    def channel_of(self, topic: str) -> dict[str, Any] | None:
        """The advertised channel of ``topic`` (the newest, if several)."""
        found = [c for c in self.channels.values() if c["topic"] == topic]
        return max(found, key=lambda c: c["id"]) if found else None

    def subscribe(self, topic: str) -> None:
        """Subscribe to ``topic`` now and whenever it is advertised again."""
        self.wanted.add(topic)
        channel = self.wait_for(lambda: self.channel_of(topic), f"channel {topic!r}")
        self._subscribe_channel(channel["id"])

    def _subscribe_channel(self, channel_id: int) -> None:
        sub = self._new_id()
        self._subs[sub] = channel_id
        subs = [{"id": sub, "channelId": channel_id}]
        self.ws.send(json.dumps({"op": "subscribe", "subscriptions": subs}))

    def unsubscribe(self, topic: str) -> None:
        self.wanted.discard(topic)
        ids = [s for s, c in self._subs.items() if self.channels.get(c, {}).get("topic") == topic]
        for s in ids:
            del self._subs[s]
        self.ws.send(json.dumps({"op": "unsubscribe", "subscriptionIds": ids}))

    def call(self, service: str, request: Any) -> tuple[str, Any]:
        """Call ``service`` with a JSON request; ``("ok", result)`` or ``("fail", text)``."""
        svc = self.wait_for(lambda: self.services.get(service), f"service {service!r}")
        call = self._new_id()
        enc = b"json"
        payload = json.dumps(request).encode()
        self.ws.send(struct.pack("<BIII", 2, svc["id"], call, len(enc)) + enc + payload)
        return self.wait_for(lambda: self.replies.get(call), f"reply to call {call}")

    def subscribe_graph(self) -> None:
        self.ws.send(json.dumps({"op": "subscribeConnectionGraph"}))

    def advertise(self, topic: str, encoding: str = "json") -> int:
        """Advertise a client channel on ``topic``; its id."""
        cid = self._new_id()
        channel = {"id": cid, "topic": topic, "encoding": encoding, "schemaName": ""}
        self.ws.send(json.dumps({"op": "advertise", "channels": [channel]}))
        return cid

    def publish(self, channel_id: int, message: Any) -> None:
        self.ws.send(struct.pack("<BI", 1, channel_id) + json.dumps(message).encode())


def image_pixels(message: dict[str, Any]) -> bytes:
    return base64.b64decode(message["data"])
