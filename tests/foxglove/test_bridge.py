"""meshfoxglove as a real process between a real mesh and a Foxglove protocol client."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import pytest

from tests.foxglove.client import image_pixels

WAIT = 20.0


class Pulse:
    """Call ``send()`` every ``interval`` seconds in a thread until stopped (the viewer
    subscribes at some moment; a periodic sender is what a robot has anyway)."""

    def __init__(self, send: Callable[[], None], interval: float = 0.05) -> None:
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(send, interval), name="test-pulse")
        self._thread.start()

    def _run(self, send: Callable[[], None], interval: float) -> None:
        while not self._stop.wait(interval):
            send()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(10)


@pytest.fixture
def pulses() -> Iterator[Callable[..., Pulse]]:
    started: list[Pulse] = []

    def start(send: Callable[[], None], interval: float = 0.05) -> Pulse:
        p = Pulse(send, interval)
        started.append(p)
        return p

    yield start
    for p in started:
        p.stop()


def wait_until(found: Callable[[], Any], what: str, timeout: float = WAIT) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        result = found()
        if result:
            return result
        assert time.monotonic() < deadline, f"no {what} within {timeout} s"
        time.sleep(0.02)


def listens(node: Any, topic: str, name_prefix: str) -> bool:
    return any(n.name.startswith(name_prefix) and topic in n.topics for n in node.nodes())


def test_topics_become_channels_with_schemas_and_images(
    node_factory: Any, bridge_factory: Any, client_factory: Any, pulses: Any
) -> None:
    robot = node_factory("robot")
    small = node_factory("small", codec="msgpack")
    web = node_factory("web", codec="json")
    gray = np.arange(12, dtype=np.uint8).reshape(3, 4)
    rgb = np.zeros((2, 5, 3), dtype=np.uint8)
    rgb[1, 4] = (10, 20, 30)
    count = iter(range(10**9))

    def send_all() -> None:
        i = next(count)
        robot.send("pose", {"x": i * 0.5, "ok": True, "tag": "p", "raw": b"\x00", "v": [1, 2]})
        robot.send("cam/gray", gray)
        robot.send("cam/rgb", rgb)
        small.send("stats", {"n": i})
        web.send("events", [i, "e"])

    pulses(send_all)
    client = client_factory(bridge_factory().url)
    assert "json" in client.server_info["supportedEncodings"]
    topics = ["pose", "cam/gray", "cam/rgb", "stats", "events"]
    for topic in topics:  # advertised although nobody listens: publishers are known
        channel = client.wait_for(lambda t=topic: client.channel_of(t), f"channel {topic}")
        assert channel["encoding"] == "json"
    # Only what is watched costs anything: the bridge listens once a viewer subscribes.
    assert not any(listens(robot, t, "meshfoxglove-") for t in topics)
    for topic in topics:
        client.subscribe(topic)
    # The first messages may come on the channel advertised without a schema; the
    # channel is then advertised again with the schema they showed.
    client.wait_for(
        lambda: all(
            client.messages.get(t) and (client.channel_of(t) or {}).get("schema") for t in topics
        ),
        "a message and a schema on each",
    )
    wait_until(lambda: all(listens(robot, t, "meshfoxglove-") for t in topics), "bridge listening")

    pose = client.messages["pose"][-1]
    assert pose["ok"] is True and pose["tag"] == "p" and pose["v"] == [1, 2]
    assert pose["raw"] == repr(b"\x00")  # what JSON cannot hold is shown as its repr
    assert isinstance(pose["x"], float)
    assert set(client.messages["stats"][-1]) == {"n"}  # msgpack
    assert client.messages["events"][-1]["data"][1] == "e"  # json; a list is wrapped
    schema = client.channel_of("pose")
    assert schema["schemaEncoding"] == "jsonschema"
    props = _schema(schema)["properties"]
    assert props["x"] == {"type": "number"} and props["ok"] == {"type": "boolean"}
    assert props["v"] == {"type": "array", "items": {"type": "integer"}}
    assert _schema(client.channel_of("events"))["properties"]["data"]["type"] == "array"

    for topic, array, encoding in (("cam/gray", gray, "mono8"), ("cam/rgb", rgb, "rgb8")):
        channel = client.channel_of(topic)
        assert channel["schemaName"] == "foxglove.RawImage"
        data_schema = _schema(channel)["properties"]["data"]
        assert data_schema == {"type": "string", "contentEncoding": "base64"}
        image = client.messages[topic][-1]
        assert (image["width"], image["height"], image["encoding"]) == (
            array.shape[1],
            array.shape[0],
            encoding,
        )
        assert image["step"] == array.shape[1] * (1 if encoding == "mono8" else 3)
        assert image_pixels(image) == array.tobytes()

    assert client.duplicates == []  # re-advertising unadvertises the old channel first
    client.unsubscribe("pose")
    wait_until(lambda: not listens(robot, "pose", "meshfoxglove-"), "the bridge to stop listening")
    assert listens(robot, "stats", "meshfoxglove-")  # still watched


def _schema(channel: dict[str, Any]) -> dict[str, Any]:
    import json

    schema = json.loads(channel["schema"])
    assert schema["type"] == "object"
    return schema


def test_services_are_callable(node_factory: Any, bridge_factory: Any, client_factory: Any) -> None:
    calc = node_factory("calc")
    calc.add_service("add", lambda data: data[0] + data[1])
    calc.add_service("pair", lambda data: (data, None))
    client = client_factory(bridge_factory().url)
    assert client.call("add", [2, 3]) == ("ok", 5)  # the result itself, no wrapper
    assert client.call("pair", {"k": 1}) == ("ok", [{"k": 1}, None])
    status, text = client.call("add", [2])
    assert status == "fail" and "IndexError" in text and "list index out of range" in text


def test_connection_graph(node_factory: Any, bridge_factory: Any, client_factory: Any) -> None:
    cam = node_factory("camera")
    cam.send("image", 1)
    node_factory("viewer").listen("image", lambda t, d: None)
    node_factory("calc").add_service("add", lambda d: d)
    client = client_factory(bridge_factory().url)
    client.subscribe_graph()
    want = {"pub": {"image": ["camera"]}, "sub": {"image": ["viewer"]}, "svc": {"add": ["calc"]}}
    client.wait_for(
        lambda: all(client.graph[k].get(n) == v for k in want for n, v in want[k].items()),
        f"graph {want} (have {client.graph})",
    )
    # The bridge's own listening (it follows the viewer) stays out of the graph: after
    # it listens, a later change shows up while "image" keeps its one listener.
    client.subscribe("image")
    wait_until(lambda: listens(cam, "image", "meshfoxglove-"), "the bridge listening")
    node_factory("logger").listen("log", lambda t, d: None)
    client.wait_for(lambda: client.graph["sub"].get("log") == ["logger"], "the logger")
    assert client.graph["sub"]["image"] == ["viewer"]


def test_topics_and_services_follow_the_mesh(
    node_factory: Any, bridge_factory: Any, client_factory: Any
) -> None:
    client = client_factory(bridge_factory().url)
    temp = node_factory("temp")
    temp.send("temp/out", 1)
    temp.add_service("temp/svc", lambda d: d)
    client.wait_for(lambda: client.channel_of("temp/out"), "the new topic")
    client.wait_for(lambda: "temp/svc" in client.services, "the new service")
    temp.close()
    client.wait_for(lambda: client.channel_of("temp/out") is None, "the topic to go")
    client.wait_for(lambda: "temp/svc" not in client.services, "the service to go")


def test_publishing_is_refused_without_allow_publish(
    node_factory: Any, bridge_factory: Any, client_factory: Any
) -> None:
    got: list[Any] = []
    robot = node_factory("robot")
    robot.listen("cmd", lambda t, d: got.append(d))
    client = client_factory(bridge_factory().url)
    assert "clientPublish" not in client.server_info["capabilities"]
    channel = client.advertise("cmd")
    client.publish(channel, {"speed": 1})
    # The server answers both with an error status, in order: after the second one
    # the message was handled (refused), so a delivery would already be on its way.
    client.wait_for(lambda: len([s for s in client.statuses if s["level"] == 2]) >= 2, "refusal")
    assert "clientPublish" in client.statuses[0]["message"]
    marker = node_factory("marker")
    marker.wait_for_listener("cmd", WAIT)
    marker.send("cmd", "marker")
    wait_until(lambda: got, "the marker")
    assert got == ["marker"]


def test_publishing_with_allow_publish_reaches_the_mesh(
    node_factory: Any, bridge_factory: Any, client_factory: Any
) -> None:
    got: list[Any] = []
    robot = node_factory("robot")
    robot.listen("cmd", lambda t, d: got.append(d))
    client = client_factory(bridge_factory("--allow-publish").url)
    assert "clientPublish" in client.server_info["capabilities"]
    channel = client.advertise("cmd")
    client.publish(channel, {"linear": {"x": 0.5}})
    wait_until(lambda: got, "the published message")
    assert got == [{"linear": {"x": 0.5}}]
    observer = node_factory("observer", watch="all")  # a plain node knows only whom it needs
    wait_until(
        lambda: any(n.name.startswith("meshfoxglove-") and "cmd" in n.publishes for n in observer.nodes()),
        "the bridge's record listing cmd",
    )


@pytest.mark.parametrize("max_rate", [20, 0])
def test_a_flood_does_not_slow_other_listeners(
    node_factory: Any, bridge_factory: Any, client_factory: Any, pulses: Any, max_rate: int
) -> None:
    n = 3000
    pad = "x" * 1000
    seen: list[int] = []
    done = threading.Event()

    def on_flood(topic: str, msg: dict[str, Any]) -> None:
        if msg["i"] < 0:
            return  # before the flood
        seen.append(msg["i"])
        if len(seen) == n:
            done.set()

    node_factory("other", queue_size=n).listen("flood", on_flood)
    sender = node_factory("sender")
    sender.send("flood", {"i": -1, "pad": pad})  # a publisher: the topic is advertised
    client = client_factory(bridge_factory(f"--max-rate={max_rate}").url)
    client.subscribe("flood")
    warmup = pulses(lambda: sender.send("flood", {"i": -1, "pad": pad}))
    client.wait_for(lambda: client.messages.get("flood"), "the viewer getting messages")
    warmup.stop()
    for i in range(n):  # as fast as it goes, while the viewer reads nothing
        sender.send("flood", {"i": i, "pad": pad})
    assert done.wait(WAIT), f"the other listener got {len(seen)} of {n}"
    assert sorted(seen) == list(range(n))
    if max_rate:  # the bridge dropped what is over --max-rate, counted it and said so
        status = client.wait_for(
            lambda: [s for s in client.statuses if "over --max-rate" in s["message"]],
            "drop status",
        )
        dropped = int(status[-1]["message"].split("dropped ")[1].split()[0])
        assert dropped > 0
        client.wait_for(lambda: not client.pump(1.0), "the end of the viewer's backlog")
        assert len(client.messages["flood"]) < n


def test_bridge_in_process_and_close_twice(node_factory: Any, client_factory: Any) -> None:
    from easymesh.foxglove.bridge import Bridge

    node = node_factory("host", watch="all")  # a bridge shows the whole mesh
    node.send("t", 1)
    with Bridge(node, port=0) as bridge:
        assert bridge.start() is bridge  # once only
        client = client_factory(bridge.url)
        client.wait_for(lambda: client.channel_of("t"), "channel t")
        assert bridge.counters()["dropped_rate"] == 0
        bridge.close()
    bridge.close()
    assert client.wait_for(lambda: _closed(client), "the server to close the connection")


def _closed(client: Any) -> bool:
    try:
        client.pump(0.2)
    except Exception:  # noqa: BLE001 - websockets' ConnectionClosed
        return True
    return False
