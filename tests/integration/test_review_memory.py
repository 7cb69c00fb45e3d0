"""Regression from the second review (failed before its fix): requests waiting for a
service are bounded in bytes, not only in number.

guarantees.md ("Memory stays bounded whatever peers do") bounds every listener's queue
in bytes; a service's queue counted requests only (1,000 by default) and each counted
as 0 bytes, so callers could park up to 1,000 x max_message_size (256 GB) in a node
whose handler was slow. Past ``queue_bytes`` (64 MiB by default) requests are refused
at once as overloaded, like past ``queue_size``; one request alone is always taken.
"""

from __future__ import annotations

import threading
from typing import Any

import easymesh

from .helpers import wait_until


def test_requests_waiting_for_a_service_are_bounded_in_bytes(node_factory: Any) -> None:
    gate = threading.Event()
    srv = node_factory("srv")
    srv.add_service("slow", lambda d: (gate.wait(60), len(d))[1], workers=1)
    cli = node_factory("cli", max_pending_bytes=1 << 30)
    cli.wait_for_service("slow", timeout=10)
    body = b"x" * (2 << 20)
    futures = [cli.request_future("slow", body, timeout=120) for _ in range(40)]  # 80 MB
    try:
        # Past 64 MiB waiting, the service refuses at once (the handler is still blocked).
        assert wait_until(lambda: any(f.done() for f in futures), timeout=60)
        assert srv.stats()["services"]["slow"]["dropped"] > 0
    finally:
        gate.set()
    refused = [f for f in futures if isinstance(f.exception(120), easymesh.ServiceError)]
    served = [f for f in futures if f.exception(120) is None]
    assert refused and all("too many requests" in str(f.exception()) for f in refused)
    assert len(served) >= 30 and all(f.result() == len(body) for f in served)


def test_one_request_larger_than_the_bound_is_still_served(node_factory: Any) -> None:
    srv = node_factory("srv")
    srv.add_service("len", len, queue_bytes=1 << 20)
    cli = node_factory("cli")
    cli.wait_for_service("len", timeout=10)
    assert cli.request("len", b"y" * (3 << 20), timeout=60) == 3 << 20
