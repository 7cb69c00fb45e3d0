"""Fixtures for the reliability tests: processes that are always stopped."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from .procs import Proc, agent_argv


@pytest.fixture
def spawn() -> Iterator[Any]:
    """``spawn(argv, prefix=..., env=...)`` starts a :class:`Proc`; all are stopped after the test."""
    procs: list[Proc] = []

    def start(argv: list[str], **kwargs: Any) -> Proc:
        p = Proc(argv, **kwargs)
        procs.append(p)
        return p

    yield start
    for p in reversed(procs):
        p.stop()


@pytest.fixture
def agent(spawn: Any) -> Any:
    """``agent(name, coordinator, listen=..., service=..., ...)``: a node process, READY."""

    def start(name: str, coordinator: str, *, prefix: list[str] | None = None, ready_timeout: float = 30.0,
              **kwargs: Any) -> Proc:
        p = spawn(agent_argv(name, coordinator, **kwargs), prefix=prefix)
        p.info = p.expect("READY", ready_timeout)
        return p

    return start
