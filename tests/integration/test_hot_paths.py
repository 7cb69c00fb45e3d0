"""Node.send / request / request_future are bound per node straight to the parts that do the
work (Node._bind_hot_paths); what the user can still see of the methods must behave as before."""

from __future__ import annotations

from typing import Any
from unittest import mock

import pytest

import easymesh
from easymesh.errors import NodeClosed
from tests.strict_codec import StrictCodec

from .helpers import Collector, wait_until


def test_a_patch_of_the_class_made_before_the_node_is_used(node_factory: Any) -> None:
    """``mock.patch.object(Node, 'send')`` (a test double of one's own) is what a node made
    under the patch calls: a patched class method is not the plain one to bind over."""
    got = Collector()
    node_factory("rx").listen("t", got)
    real_send = easymesh.Node.send
    seen: list[tuple[str, Any]] = []

    def spy(self: easymesh.Node, topic: str, data: Any, *, latch: bool = False) -> None:
        seen.append((topic, data))
        real_send(self, topic, data, latch=latch)

    with mock.patch.object(easymesh.Node, "send", spy):
        tx = node_factory("tx")
        assert wait_until(lambda: tx.has_listeners("t"))
        tx.send("t", 1)
    assert got.wait_for(1) == [1]
    assert seen == [("t", 1)]
    with mock.patch.object(easymesh.Node, "request", lambda self, *a, **k: "patched"):
        assert node_factory("caller").request("nobody", 1) == "patched"


def test_a_mixin_override_is_called_and_a_kept_bound_send_fails_after_close(
    node_factory: Any, coordinator: Any
) -> None:
    calls: list[str] = []

    class Counting:
        def send(self, topic: str, data: Any, *, latch: bool = False) -> None:
            calls.append(topic)
            super().send(topic, data, latch=latch)  # type: ignore[misc]

    class MyNode(Counting, easymesh.Node):
        pass

    got = Collector()
    node_factory("rx").listen("t", got)
    tx = MyNode("tx", coordinator=coordinator.address)
    try:
        assert wait_until(lambda: tx.has_listeners("t"))
        kept = tx.send
        kept("t", 1)
        assert got.wait_for(1) == [1] and calls == ["t"]
    finally:
        tx.close()
    plain = node_factory("plain")
    kept_send, kept_request = plain.send, plain.request
    plain.close()
    with pytest.raises(NodeClosed):
        kept_send("t", 2)
    with pytest.raises(NodeClosed):
        kept_request("svc", 2, timeout=5)
    with pytest.raises(NodeClosed):
        plain.send_raw("t", 1, b"x")


class _Payload:
    pass


def test_a_refused_send_after_close_keeps_nothing_alive(node_factory: Any) -> None:
    """Every call refused after close() raised the *same* NodeClosed instance: each raise
    chained its frames onto that exception's traceback, so it grew without bound and kept
    every refused message (a frame's local) alive. Each refusal now raises its own."""
    import gc
    import weakref

    node = node_factory("closing")
    node.close()
    refs = []
    for call in (
        lambda data: node.send("t", data),
        lambda data: node.send_raw("t", 1, data),
        lambda data: node.listen("t", lambda topic, d, data=data: None),
    ):
        for _ in range(3):
            data = _Payload()
            refs.append(weakref.ref(data))
            with pytest.raises(NodeClosed, match="closed") as info:
                call(data)
            tb_len, tb = 0, info.value.__traceback__
            while tb is not None:
                tb_len, tb = tb_len + 1, tb.tb_next
            assert tb_len < 10
            del data, info
    gc.collect()
    assert [r() for r in refs] == [None] * len(refs)


def test_a_send_set_on_the_node_before_its_init_is_kept(coordinator: Any) -> None:
    """A subclass that sets its own ``self.send`` before ``Node.__init__`` keeps it: the fast
    path binds only over the plain method, never over the instance's own attribute."""
    sent: list[Any] = []

    class Recording(easymesh.Node):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            self.send = lambda topic, data, *, latch=False: sent.append(data)  # type: ignore
            super().__init__(*args, **kwargs)

    node = Recording("recording", coordinator=coordinator.address)
    try:
        node.send("t", 1)
    finally:
        node.close()
    assert sent == [1]


def test_an_undecodable_reply_fails_request_and_request_future_alike(node_factory: Any) -> None:
    """request() decodes its own codec inline, request_future() through Decoder.decode: both
    name the codec's real reason (ValueError here), as before the inline path."""
    provider = node_factory("p", codec=StrictCodec(201))
    provider.add_service("s", lambda data: "not a number")
    caller = node_factory("c", codec=StrictCodec(201))
    with pytest.raises(easymesh.ServiceError) as sync:
        caller.request("s", 1, timeout=10)
    with pytest.raises(easymesh.ServiceError) as fut:
        caller.request_future("s", 1, timeout=10).result(10)
    assert str(sync.value) == str(fut.value)
    assert "ValueError: the reply could not be decoded: not a number" in str(fut.value)
    assert caller._decoder.errors.value == 2
