"""Fixtures for meshbag tests: ``meshbag`` runs the real command as a subprocess on the
test's coordinator; ``make_bag`` writes a bag with exact timestamps, no mesh needed."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

from easymesh.bag import BagWriter

COMMAND = [sys.executable, "-m", "easymesh.cli.bag"]


class BagProcess:
    """One ``meshbag ...`` process; stdout lines are collected by a reader thread."""

    def __init__(
        self, args: list[str], cwd: str, coordinator: str, env: dict[str, str] | None = None
    ) -> None:
        full_env = dict(os.environ, PYTHONUNBUFFERED="1", EASYMESH_COORDINATOR=coordinator)
        full_env.pop("EASYMESH_AUTHKEY", None)
        full_env.update(env or {})
        self.proc = subprocess.Popen(
            COMMAND + args,
            cwd=cwd,
            env=full_env,
            text=True,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            start_new_session=True,
        )
        self.lines: dict[str, list[str]] = {"stdout": [], "stderr": []}
        self._cond = threading.Condition()
        self._readers = [
            threading.Thread(
                target=self._read, args=(name, stream), daemon=True, name=f"test-meshbag-{name}"
            )
            for name, stream in (("stdout", self.proc.stdout), ("stderr", self.proc.stderr))
        ]
        for t in self._readers:
            t.start()

    def _read(self, name: str, stream: Any) -> None:
        for line in stream:
            with self._cond:
                self.lines[name].append(line)
                self._cond.notify_all()

    @property
    def output(self) -> str:
        return "".join(self.lines["stdout"])

    def stderr(self) -> str:
        return "".join(self.lines["stderr"])

    def wait_for(self, text: str, timeout: float = 20.0, stream: str = "stdout") -> str:
        """The first line on ``stream`` containing ``text``; AssertionError after ``timeout``."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                for line in self.lines[stream]:
                    if text in line:
                        return line
                left = deadline - time.monotonic()
                if left <= 0 or not any(t.is_alive() for t in self._readers):
                    raise AssertionError(
                        f"meshbag never printed {text!r}; stdout: {self.output!r}; "
                        f"stderr: {self.stderr()[-2000:]!r}"
                    )
                self._cond.wait(min(left, 0.5))

    def send_signal(self, sig: int) -> None:
        if self.proc.poll() is None:
            os.kill(self.proc.pid, sig)

    def wait(self, timeout: float = 20.0) -> int:
        rc = self.proc.wait(timeout)
        for t in self._readers:
            t.join(5.0)
        return rc

    def kill(self) -> None:
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait(5.0)
        for f in (self.proc.stdout, self.proc.stderr):
            if f:
                f.close()


@pytest.fixture
def meshbag(coordinator: Any, tmp_path: Any) -> Iterator[Any]:
    """``meshbag('record', 'a', ..., env={...}, coordinator=...)`` starts the command in
    ``tmp_path``, by default on the test's coordinator."""
    started: list[BagProcess] = []

    def start(
        *args: str, env: dict[str, str] | None = None, coordinator_address: str | None = None
    ) -> BagProcess:
        p = BagProcess(list(args), str(tmp_path), coordinator_address or coordinator.address, env)
        started.append(p)
        return p

    yield start
    for p in started:
        p.kill()


@pytest.fixture
def make_bag(tmp_path: Any) -> Any:
    """``make_bag(messages, name='in.bag')`` writes ``(seconds from start, topic, codec id,
    body)`` messages into ``tmp_path/name`` and returns the path."""

    def make(messages: list[tuple[float, str, int, bytes]], name: str = "in.bag") -> str:
        path = str(tmp_path / name)
        writer = BagWriter(path)
        base = time.time_ns()
        for offset, topic, codec, body in messages:
            writer.write(topic, codec, body, base + int(offset * 1e9))
        assert writer.close() == path
        return path

    return make
