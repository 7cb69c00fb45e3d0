"""Fixtures for meshlaunch tests: write launch files, run meshlaunch as a real process, and
check that processes are gone (a zombie waiting for its parent counts as gone)."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

FAKENODE = str(Path(__file__).with_name("fakenode.py"))
PYTHON = sys.executable


def fake(*args: str) -> str:
    """A YAML flow list running the fake node with ``args`` (JSON is valid YAML)."""
    return json.dumps([PYTHON, FAKENODE, *args])


def alive(pid: int) -> bool:
    """True when process ``pid`` exists and is not a zombie."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            state = f.read().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return False
    return state not in ("Z", "X")


def wait_gone(pids: list[int], timeout: float = 10.0) -> list[int]:
    """Wait until none of ``pids`` is alive; return the ones still alive at the deadline."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        left = [p for p in pids if alive(p)]
        if not left:
            return []
        time.sleep(0.05)
    return [p for p in pids if alive(p)]


class MeshLaunch:
    """``meshlaunch`` run as a real process (in its own session), its output collected."""

    def __init__(
        self, *args: str, cwd: str | None = None, env: dict[str, str] | None = None
    ) -> None:
        full_env = dict(os.environ, PYTHONUNBUFFERED="1")
        full_env.pop("EASYMESH_AUTHKEY", None)
        full_env.update(env or {})
        self.proc = subprocess.Popen(
            [PYTHON, "-m", "easymesh.cli.launch", "--color=never", *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            cwd=cwd,
            env=full_env,
            start_new_session=True,
        )
        self.lines: list[str] = []
        self.stderr = ""
        self._cond = threading.Condition()
        self._reader = threading.Thread(target=self._read, name="test-meshlaunch-out", daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            with self._cond:
                self.lines.append(line.rstrip("\n"))
                self._cond.notify_all()
        with self._cond:
            self._cond.notify_all()

    @property
    def output(self) -> str:
        with self._cond:
            return "\n".join(self.lines)

    def wait_for(self, check: Callable[[list[str]], Any] | str, timeout: float = 20.0) -> Any:
        """Wait until ``check(lines)`` is truthy (or a line contains the string ``check``)."""
        if isinstance(check, str):
            text = check

            def check(lines: list[str]) -> Any:
                return next((ln for ln in lines if text in ln), None)

        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                result = check(list(self.lines))
                if result:
                    return result
                left = deadline - time.monotonic()
                if left <= 0 or (not self._reader.is_alive() and self.proc.poll() is not None):
                    output = "\n".join(self.lines)
                    raise AssertionError(f"timed out waiting; output so far:\n{output}")
                self._cond.wait(min(left, 0.5))

    def count(self, text: str) -> int:
        return sum(text in ln for ln in list(self.lines))

    def started(self) -> dict[str, list[int]]:
        """Label -> pids, from meshlaunch's ``started LABEL (pid N)`` notes, in order."""
        result: dict[str, list[int]] = {}
        for ln in list(self.lines):
            m = re.search(r"\] started (\S+) \(pid (\d+)\)", ln)
            if m:
                result.setdefault(m.group(1), []).append(int(m.group(2)))
        return result

    def fakenodes(self) -> list[dict[str, Any]]:
        """Every ``FAKENODE {json}`` report, in order."""
        return [
            json.loads(ln.split("FAKENODE ", 1)[1]) for ln in list(self.lines) if "FAKENODE " in ln
        ]

    def all_pids(self) -> list[int]:
        pids = [p for ps in self.started().values() for p in ps]
        return pids + self.grandchildren()

    def grandchildren(self) -> list[int]:
        """Pids that nodes reported with a ``CHILD <pid>`` line."""
        found = (re.search(r"\] CHILD (\d+)$", ln) for ln in list(self.lines))
        return [int(m.group(1)) for m in found if m]

    def signal(self, sig: int = signal.SIGINT) -> None:
        os.kill(self.proc.pid, sig)

    def wait(self, timeout: float = 20.0) -> int:
        """Wait for meshlaunch to exit; returns its status."""
        code = self.proc.wait(timeout)
        self._reader.join(timeout)
        assert self.proc.stderr is not None
        self.stderr = self.proc.stderr.read()
        return code

    def cleanup(self) -> None:
        """Kill whatever is left (meshlaunch and every process it reported) with SIGKILL."""
        for pid in [self.proc.pid, *self.all_pids()]:
            if alive(pid):
                try:
                    os.killpg(pid, signal.SIGKILL)
                except (ProcessLookupError, PermissionError):
                    pass
        if self.proc.poll() is None:
            self.proc.wait(10)
        for f in (self.proc.stdout, self.proc.stderr):
            if f:
                f.close()


@pytest.fixture
def write_launch(tmp_path: Path) -> Callable[..., Path]:
    """``write_launch(text, name='launch.yaml')`` writes a launch file into tmp_path."""

    def write(text: str, name: str = "launch.yaml") -> Path:
        path = tmp_path / name
        path.write_text(text)
        return path

    return write


@pytest.fixture
def meshlaunch() -> Iterator[Callable[..., MeshLaunch]]:
    """Run ``meshlaunch(*args, cwd=..., env=...)``; everything left is killed after the test."""
    runs: list[MeshLaunch] = []

    def run(*args: str, **kwargs: Any) -> MeshLaunch:
        m = MeshLaunch(*args, **kwargs)
        runs.append(m)
        return m

    yield run
    for m in runs:
        m.cleanup()
