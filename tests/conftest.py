"""Shared fixtures: real coordinator processes, nodes that are always closed, and
guards that fail a test which leaks threads or raises in a background thread."""

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

import easymesh

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)


class CoordinatorProcess:
    """A real ``python -m easymesh`` process on 127.0.0.1 and a free port."""

    def __init__(self, *args: str, port: int = 0, authkey: str | None = None,
                 heartbeat_interval: float | None = None, env: dict[str, str] | None = None) -> None:
        cmd = [sys.executable, "-m", "easymesh", "--host", "127.0.0.1", "--port", str(port)]
        if authkey is not None:
            cmd += ["--authkey", authkey]
        if heartbeat_interval is not None:
            cmd += ["--heartbeat-interval", str(heartbeat_interval)]
        cmd += list(args)
        full_env = dict(os.environ, PYTHONUNBUFFERED="1")
        full_env.pop("EASYMESH_AUTHKEY", None)
        full_env.update(env or {})
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                     env=full_env, start_new_session=True)
        self.stderr_lines: list[str] = []
        self._stderr_thread = threading.Thread(target=self._read_stderr, daemon=True,
                                               name="test-coordinator-stderr")
        self._stderr_thread.start()
        line = _readline_with_timeout(self.proc, 20.0)
        if "listening on" not in line:
            self.kill()
            raise RuntimeError(f"coordinator did not start: {line!r} {self.stderr_lines[-5:]}")
        self.port = int(line.split("listening on ")[1].split()[0].rsplit(":", 1)[1])
        self.address = f"127.0.0.1:{self.port}"
        self.pid = self.proc.pid

    def _read_stderr(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self.stderr_lines.append(line)

    @property
    def log(self) -> str:
        return "".join(self.stderr_lines)

    def wait_for_log(self, text: str, timeout: float = 10.0) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if text in self.log:
                return True
            time.sleep(0.05)
        return text in self.log

    def kill(self, sig: int = signal.SIGKILL) -> None:
        if self.proc.poll() is None:
            try:
                os.kill(self.proc.pid, sig)
            except ProcessLookupError:
                pass
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait(5)

    def stop(self) -> None:
        """Ctrl-C, then SIGKILL if it does not exit within 10 s."""
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGINT)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.kill()
        if self.proc.stdout:
            self.proc.stdout.close()


def _readline_with_timeout(proc: subprocess.Popen, timeout: float) -> str:
    out: list[str] = []

    def read() -> None:
        assert proc.stdout is not None
        out.append(proc.stdout.readline())

    t = threading.Thread(target=read, daemon=True, name="test-readline")
    t.start()
    t.join(timeout)
    return out[0] if out else ""


@pytest.fixture
def coordinator_factory() -> Iterator[Any]:
    """Start coordinators: ``coordinator_factory(authkey=..., port=...)``; all stopped after the test."""
    started: list[CoordinatorProcess] = []

    def start(*args: str, **kwargs: Any) -> CoordinatorProcess:
        c = CoordinatorProcess(*args, **kwargs)
        started.append(c)
        return c

    yield start
    for c in started:
        c.stop()


@pytest.fixture
def coordinator(coordinator_factory: Any) -> CoordinatorProcess:
    """A real coordinator process (no authkey) on 127.0.0.1; ``.address`` is 'host:port'."""
    return coordinator_factory()


@pytest.fixture
def node_factory(coordinator: CoordinatorProcess) -> Iterator[Any]:
    """Create nodes on the test's coordinator: ``node_factory('name', **kwargs)``; all closed after."""
    nodes: list[easymesh.Node] = []

    def make(name: str, **kwargs: Any) -> easymesh.Node:
        kwargs.setdefault("coordinator", coordinator.address)
        kwargs.setdefault("connect_timeout", 10)
        n = easymesh.Node(name, **kwargs)
        nodes.append(n)
        return n

    yield make
    for n in nodes:
        n.close()


class NodeProcess:
    """A Python snippet run as a separate process (a real node in another process)."""

    def __init__(self, code: str, env: dict[str, str] | None = None) -> None:
        full_env = dict(os.environ, PYTHONUNBUFFERED="1")
        full_env.update(env or {})
        self.proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, text=True, env=full_env,
                                     start_new_session=True)
        self.pid = self.proc.pid

    def readline(self, timeout: float = 15.0) -> str:
        return _readline_with_timeout(self.proc, timeout)

    def wait_for_line(self, text: str, timeout: float = 15.0) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            line = self.readline(max(0.1, deadline - time.monotonic()))
            if text in line:
                return line
            if not line and self.proc.poll() is not None:
                break
        raise AssertionError(f"process never printed {text!r}; stderr: {self.stderr_tail()}")

    def stderr_tail(self) -> str:
        if self.proc.poll() is None:
            return "(still running)"
        return (self.proc.stderr.read() if self.proc.stderr else "")[-3000:]

    def kill(self, sig: int = signal.SIGKILL) -> None:
        if self.proc.poll() is None:
            try:
                os.kill(self.proc.pid, sig)
            except ProcessLookupError:
                pass

    def stop(self, timeout: float = 10.0) -> int:
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGINT)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                os.kill(self.proc.pid, signal.SIGKILL)
                self.proc.wait(5)
        return self.proc.returncode


@pytest.fixture
def node_process() -> Iterator[Any]:
    """Run ``node_process(code)`` as separate Python processes; all stopped after the test."""
    procs: list[NodeProcess] = []

    def start(code: str, env: dict[str, str] | None = None) -> NodeProcess:
        p = NodeProcess(code, env)
        procs.append(p)
        return p

    yield start
    for p in procs:
        p.stop()
        for f in (p.proc.stdout, p.proc.stderr):
            if f:
                f.close()


# -- guards -------------------------------------------------------------------------------------

_thread_errors: list[str] = []


def _excepthook(args: Any) -> None:
    _thread_errors.append(f"{args.thread.name if args.thread else '?'}: {args.exc_type.__name__}: {args.exc_value}")


threading.excepthook = _excepthook


def _easymesh_threads() -> set[threading.Thread]:
    return {t for t in threading.enumerate() if t.name.startswith("easymesh-")}


@pytest.fixture(autouse=True)
def no_leaked_threads(request: pytest.FixtureRequest) -> Iterator[None]:
    """Fail a test that leaves easymesh threads running or raised in a background thread."""
    before = _easymesh_threads()
    _thread_errors.clear()
    yield
    if request.node.get_closest_marker("allow_thread_leak"):
        return
    deadline = time.monotonic() + 5.0
    leaked = _easymesh_threads() - before
    while leaked and time.monotonic() < deadline:
        time.sleep(0.05)
        leaked = {t for t in leaked if t.is_alive()}
    errors = list(_thread_errors)
    _thread_errors.clear()
    assert not errors, f"exceptions in background threads: {errors}"
    assert not leaked, f"leaked threads: {sorted(t.name for t in leaked)}"
