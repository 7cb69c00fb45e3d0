"""Issue 15, the node's side of watches, without sockets: the topology view's interests
and acks, and the publisher holding the first messages of a topic until the coordinator
has said who listens to it (a recording fake link stands for the peer)."""

from __future__ import annotations

import pickle
import threading
from typing import Any

from easymesh.decoder import Decoder
from easymesh.loadbalancing import resolve_load_balancer
from easymesh.protocol.frames import HEADER
from easymesh.protocol.messages import Diff, NodeInfo, Welcome
from easymesh.publisher import HOLD_LIMIT, Publisher
from easymesh.registry import Registry
from easymesh.view import TopologyView


class FakeLink:
    def __init__(self) -> None:
        self.bodies: list[Any] = []

    def send(self, bufs: list[bytes], nbytes: int, droppable: bool) -> bool:
        frame = b"".join(bufs)
        name_len = HEADER.unpack_from(frame)[2]
        self.bodies.append(pickle.loads(frame[HEADER.size + name_len :]))
        return True


def build(watch_all: bool = False) -> tuple[TopologyView, Publisher, FakeLink, list[int]]:
    view = TopologyView(watch_all=watch_all)
    asked: list[int] = []
    view.on_interest = lambda: asked.append(view.watch().seq)
    view.set_local(NodeInfo("me", "me"))
    link = FakeLink()
    publisher = Publisher(
        node_id="me", view=view, registry=Registry(lambda snapshot: None),
        decoder=Decoder("pickle", None, "me"), balancer=resolve_load_balancer("round-robin"),
        link_to=lambda node: link, links={}, max_message_size=1 << 20,
    )  # fmt: skip
    return view, publisher, link, asked


def listener(node_id: str = "l", topic: str = "t") -> NodeInfo:
    return NodeInfo(node_id, f"n-{node_id}", topics=frozenset({topic}))


def test_the_first_send_asks_and_holds_until_the_answer_then_sends_in_order():
    view, pub, link, asked = build()
    view.apply(Welcome(1, (), ack=0))
    pub.send("t", 1)
    pub.send("t", 2)
    assert asked == [1] and view.watch().topics == {"t"}  # asked once
    assert link.bodies == [] and pub.no_listener.value == 0
    view.apply(Diff(2, upsert=(listener(),), ack=1))
    pub.release_held()
    pub.send("t", 3)
    assert link.bodies == [1, 2, 3]
    assert pub.no_listener.value == 0


def test_an_answer_with_no_listener_counts_the_held_messages():
    view, pub, link, _ = build()
    view.apply(Welcome(1, (), ack=0))
    pub.send("t", 1)
    view.apply(Diff(2, ack=1))
    pub.release_held()
    assert pub.no_listener.value == 1
    pub.send("t", 2)  # answered: counted at once, not held
    assert pub.no_listener.value == 2 and link.bodies == []


def test_the_hold_is_bounded_and_drops_the_oldest():
    view, pub, link, _ = build()
    view.apply(Welcome(1, (), ack=0))
    for i in range(HOLD_LIMIT + 3):
        pub.send("t", i)
    assert pub.dropped.value == 3
    view.apply(Diff(2, upsert=(listener(),), ack=1))
    pub.release_held()
    assert link.bodies == list(range(3, HOLD_LIMIT + 3))


def test_sends_racing_the_answer_are_neither_lost_nor_reordered():
    view, pub, link, _ = build()
    view.apply(Welcome(1, (), ack=0))
    n = 2000
    sender = threading.Thread(target=lambda: [pub.send("t", i) for i in range(n)])
    sender.start()
    view.apply(Diff(2, upsert=(listener(),), ack=1))
    pub.release_held()
    sender.join(10)
    sent = link.bodies
    assert sent == sorted(sent) and sent[-1] == n - 1
    assert len(sent) + pub.dropped.value == n and pub.no_listener.value == 0


def test_a_coordinator_without_watches_sends_everything_so_all_is_known():
    view, pub, link, _ = build()
    view.apply(Welcome(1, (listener(),)))  # no ack: an older coordinator
    assert view.knows_topic("anything")
    pub.send("other", 1)
    assert pub.no_listener.value == 1  # not held: the view is the whole mesh


def test_watch_all_never_holds_and_never_asks():
    view, pub, link, asked = build(watch_all=True)
    view.apply(Welcome(1, (), ack=0))
    pub.send("t", 1)
    assert pub.no_listener.value == 1 and asked == []
    assert view.watch().all


def test_interests_grow_the_seq_and_a_welcome_answers_them_all():
    view, _, _, asked = build()
    assert not view.want_topic("a")
    assert not view.want_service("s")
    assert not view.want_topic("a")  # asked already: no new seq
    assert asked == [1, 2]
    w = view.watch()
    assert (w.topics, w.services, w.seq, w.all) == ({"a"}, {"s"}, 2, False)
    view.apply(Welcome(3, (), ack=2))  # e.g. after a reconnect, registered with seq 2
    assert view.knows_topic("a") and view.want_service("s")
