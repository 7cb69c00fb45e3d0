"""Issue 15: a node is told only what it needs, and nothing is lost for it.

Real coordinator process, real nodes. A plain node learns of the listeners of the
topics it sends to or waits for and of the providers of the services it calls; a
``watch='all'`` node learns of everyone. The first messages on a topic, sent before the
coordinator has named its listeners, are held and delivered; a request to a service the
node never asked about waits for the coordinator's answer instead of failing.
"""

from __future__ import annotations

import pytest

import easymesh

from .helpers import Collector, wait_until


def ids(node: easymesh.Node) -> set[str]:
    return {n.id for n in node.nodes()}


def test_a_plain_node_learns_only_what_it_needs(node_factory):
    tool = node_factory("tool", watch="all")
    unrelated = node_factory("unrelated")
    listener = node_factory("listener")
    listener.listen("t", Collector())
    sender = node_factory("sender")
    # The tool sees every node, the sender and the listener appear there last.
    assert wait_until(lambda: {unrelated.id, listener.id, sender.id} <= ids(tool))
    sender.wait_for_listener("t", timeout=10)
    # Positive marker first: the sender knows the listener (asked for), and the
    # coordinator had told it about everyone it would ever tell it about before that.
    assert listener.id in ids(sender)
    assert unrelated.id not in ids(sender)
    assert tool.id not in ids(sender)
    assert ids(unrelated) == {unrelated.id}


def test_the_first_sends_on_a_topic_are_held_until_the_listeners_are_known(node_factory):
    got = Collector()
    node_factory("listener").listen("first", got)
    sender = node_factory("sender")
    for i in range(5):  # at once: the coordinator has not answered yet
        sender.send("first", i)
    assert got.wait_for(5) == [0, 1, 2, 3, 4]
    assert sender.stats()["no_listener"] == 0


def test_a_first_send_with_no_listener_is_counted_once_answered(node_factory):
    sender = node_factory("sender")
    sender.send("nobody", 1)
    assert wait_until(lambda: sender.stats()["no_listener"] == 1)
    assert not sender.has_listeners("nobody")


def test_has_listeners_and_request_wait_for_the_coordinators_answer(node_factory):
    node_factory("listener").listen("there", Collector())
    node_factory("provider").add_service("double", lambda x: 2 * x)
    probe = node_factory("probe", watch="all")
    assert wait_until(lambda: probe.has_listeners("there") and probe.has_service("double"))
    asker = node_factory("asker")
    assert asker.has_listeners("there")  # first question: answered, not "not told yet"
    caller = node_factory("caller")
    assert caller.request("double", 21, timeout=10) == 42
    assert node_factory("caller2").has_service("double")
    with pytest.raises(easymesh.NoProviderError):
        node_factory("other").request("nobody-provides", 1, timeout=10)


def test_a_new_listener_reaches_a_node_that_asked(node_factory):
    sender = node_factory("sender")
    assert not sender.has_listeners("late")
    got = Collector()
    node_factory("late-listener").listen("late", got)
    sender.wait_for_listener("late", timeout=10)
    sender.send("late", "hello")
    assert got.wait_for(1) == ["hello"]


def test_a_listener_that_leaves_is_forgotten_by_those_who_knew(node_factory):
    sender = node_factory("sender")
    listener = node_factory("listener")
    listener.listen("t", Collector())
    sender.wait_for_listener("t", timeout=10)
    listener.close()
    assert wait_until(lambda: not sender.has_listeners("t"))
    assert listener.id not in ids(sender)


def test_watch_must_be_needed_or_all(coordinator):
    with pytest.raises(ValueError):
        easymesh.Node("x", coordinator=coordinator.address, watch="some")


def test_nodes_of_a_process_share_one_decoded_change_and_keep_their_own_views(node_factory):
    """Issue 15: the nodes of a process that get the same diff bytes share the decoded
    diff (coordclient.decode_diff); each view still keeps its own records, and the memo
    stays right after one of the nodes closed."""
    a, b = node_factory("a"), node_factory("b")
    for n in (a, b):
        assert not n.has_listeners("t")  # asked for "t" and answered: the next diff is bare
    listener = node_factory("listener")
    listener.listen("t", Collector())
    a.wait_for_listener("t", timeout=20)
    b.wait_for_listener("t", timeout=20)
    # one decode for both: the same immutable record object in both views
    assert a._view.nodes[listener.id] is b._view.nodes[listener.id]
    assert a._view.nodes[a.id].name == "a" and b._view.nodes[b.id].name == "b"
    assert b.id not in ids(a) and a.id not in ids(b)
    a.close()
    second = node_factory("second")
    second.listen("t", Collector())
    assert wait_until(lambda: second.id in {n.id for n in b._view.listeners("t")}, timeout=20)
    assert {n.id for n in b._view.listeners("t")} == {listener.id, second.id}
