"""Fixtures of the integration tests that drive transport parts directly."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from easymesh.transport.loop import IOLoop


@pytest.fixture
def loop(request: pytest.FixtureRequest) -> Iterator[IOLoop]:
    """A running I/O loop of its own (named after the test), stopped afterwards."""
    lp = IOLoop(f"test-{request.node.name}"[:60])
    lp.start()
    yield lp
    lp.stop()
