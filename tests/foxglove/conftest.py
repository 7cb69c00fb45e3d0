"""A real ``meshfoxglove`` process against the test's coordinator, and a Foxglove client."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from typing import Any

import pytest

pytest.importorskip("foxglove")
pytest.importorskip("websockets")

from tests.conftest import _readline_with_timeout  # noqa: E402
from tests.foxglove.client import FoxgloveClient  # noqa: E402


class BridgeProcess:
    """``python -m easymesh.cli.foxglove --port 0 ...``; ``url`` is where it serves."""

    def __init__(self, coordinator: str, *args: str) -> None:
        cmd = [sys.executable, "-m", "easymesh.cli.foxglove", "--port", "0", *args]
        env = dict(os.environ, PYTHONUNBUFFERED="1", EASYMESH_COORDINATOR=coordinator)
        env.pop("EASYMESH_AUTHKEY", None)
        self.proc = subprocess.Popen(
            cmd,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
            start_new_session=True,
        )
        self.stderr: list[str] = []
        threading.Thread(target=self._drain, daemon=True, name="test-bridge-stderr").start()
        self.banner = self._readline(30.0)
        if " at ws://" not in self.banner:
            self.kill()
            raise RuntimeError(f"meshfoxglove did not start: {self.banner!r} {self.stderr[-5:]}")
        self.url = self.banner.split(" at ")[1].strip()

    def _drain(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self.stderr.append(line)

    def _readline(self, timeout: float) -> str:
        return _readline_with_timeout(self.proc, timeout)

    def stop(self, timeout: float = 15.0) -> int:
        """SIGTERM, then SIGKILL if it does not exit within ``timeout``."""
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.kill()
        return self.proc.returncode

    def kill(self) -> None:
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait(10)


@pytest.fixture
def bridge_factory(coordinator: Any) -> Iterator[Any]:
    """``bridge_factory(*options)`` starts meshfoxglove; all are stopped after the test."""
    started: list[BridgeProcess] = []

    def start(*args: str) -> BridgeProcess:
        b = BridgeProcess(coordinator.address, *args)
        started.append(b)
        return b

    yield start
    for b in started:
        b.stop()
        for f in (b.proc.stdout, b.proc.stderr):
            if f:
                f.close()


@pytest.fixture
def client_factory() -> Iterator[Any]:
    """``client_factory(url)`` connects a Foxglove protocol client; all closed after."""
    clients: list[FoxgloveClient] = []

    def connect(url: str) -> FoxgloveClient:
        c = FoxgloveClient(url)
        clients.append(c)
        return c

    yield connect
    for c in clients:
        c.close()
