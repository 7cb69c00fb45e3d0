"""Run the tools as real subprocesses against the test's coordinator."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import pytest

MODULES = {
    "meshtopic": "easymesh.cli.topic",
    "meshservice": "easymesh.cli.service",
    "meshnode": "easymesh.cli.nodes",
}


class Tools:
    """``tools.run('meshtopic', 'list')`` -> CompletedProcess; ``tools.start(...)`` -> Popen.

    The coordinator is passed through EASYMESH_COORDINATOR (unless ``env`` says otherwise);
    every process started is killed (by its pid) after the test.
    """

    def __init__(self, coordinator: Any) -> None:
        self.env = dict(os.environ, PYTHONUNBUFFERED="1", EASYMESH_COORDINATOR=coordinator.address)
        self.env.pop("EASYMESH_AUTHKEY", None)
        self.procs: list[subprocess.Popen] = []

    def _cmd(self, tool: str, args: tuple[str, ...]) -> list[str]:
        return [sys.executable, "-m", MODULES[tool], *args]

    def run(
        self, tool: str, *args: str, env: dict[str, str] | None = None, timeout: float = 30.0
    ) -> subprocess.CompletedProcess:
        return subprocess.run(
            self._cmd(tool, args),
            capture_output=True,
            text=True,
            env={**self.env, **(env or {})},
            timeout=timeout,
        )

    def start(self, tool: str, *args: str, env: dict[str, str] | None = None) -> subprocess.Popen:
        p = subprocess.Popen(
            self._cmd(tool, args),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env={**self.env, **(env or {})},
            start_new_session=True,
        )
        self.procs.append(p)
        return p

    def close(self) -> None:
        for p in self.procs:
            if p.poll() is None:
                os.kill(p.pid, signal.SIGKILL)
            p.communicate(timeout=10)


@pytest.fixture
def tools(coordinator: Any) -> Iterator[Tools]:
    t = Tools(coordinator)
    yield t
    t.close()
