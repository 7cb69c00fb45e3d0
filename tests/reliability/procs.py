"""Processes for the reliability tests: agents (nodes driven over stdin), coordinators
that may run inside a network namespace, and what /proc says about them."""

from __future__ import annotations

import json
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from typing import Any

AGENT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "agent.py")


def proc_status(pid: int) -> dict[str, int]:
    """VmRSS/VmHWM (kB), thread and fd counts of a live process."""
    out = {"fds": len(os.listdir(f"/proc/{pid}/fd"))}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            key = line.split(":")[0]
            if key in ("VmRSS", "VmHWM", "Threads"):
                out[key.lower()] = int(line.split()[1])
    return out


def rss_kb(pid: int) -> int:
    return proc_status(pid)["vmrss"]


def cpu_seconds(pid: int) -> float:
    fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class Proc:
    """A child process whose stdout lines are queued and whose stderr is kept.

    ``prefix`` runs it under another command (``["ip", "netns", "exec", ns]``);
    those exec the program, so ``pid`` is the program's own pid.
    """

    def __init__(self, argv: list[str], *, prefix: list[str] | None = None,
                 env: dict[str, str] | None = None, interrupt: bool = False) -> None:
        self.interrupt = interrupt  # stop() sends SIGINT at once (a coordinator ignores stdin)
        full_env = dict(os.environ, PYTHONUNBUFFERED="1")
        full_env.pop("EASYMESH_AUTHKEY", None)
        full_env.pop("EASYMESH_COORDINATOR", None)
        full_env.update(env or {})
        self.argv = (prefix or []) + argv
        self.proc = subprocess.Popen(self.argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, text=True, env=full_env,
                                     start_new_session=True)
        self.pid = self.proc.pid
        self.lines: queue.Queue[str] = queue.Queue()
        self.stderr_lines: list[str] = []
        for target, name in ((self._pump_out, "out"), (self._pump_err, "err")):
            threading.Thread(target=target, daemon=True, name=f"test-proc-{self.pid}-{name}").start()

    def _pump_out(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.put(line)

    def _pump_err(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self.stderr_lines.append(line)

    @property
    def log(self) -> str:
        return "".join(self.stderr_lines)

    def wait_for_log(self, text: str, timeout: float = 15.0) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if text in self.log:
                return True
            time.sleep(0.05)
        return text in self.log

    def expect(self, tag: str, timeout: float = 30.0) -> Any:
        """The JSON after the next stdout line starting with ``tag``."""
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"{self.argv[-6:]}: no {tag} line in {timeout} s; "
                                     f"alive={self.alive}; stderr tail:\n{self.log[-3000:]}")
            try:
                line = self.lines.get(timeout=min(left, 0.5))
            except queue.Empty:
                if not self.alive and self.lines.empty():
                    raise AssertionError(f"process exited ({self.proc.returncode}) before {tag}; "
                                         f"stderr tail:\n{self.log[-3000:]}") from None
                continue
            if line.startswith(tag + " "):
                return json.loads(line[len(tag) + 1:])

    def command(self, line: str, tag: str, timeout: float = 30.0) -> Any:
        assert self.proc.stdin is not None
        self.proc.stdin.write(line + "\n")
        self.proc.stdin.flush()
        return self.expect(tag, timeout)

    @property
    def alive(self) -> bool:
        return self.proc.poll() is None

    def status(self) -> dict[str, int]:
        return proc_status(self.pid)

    def signal(self, sig: int) -> None:
        if self.alive:
            try:
                os.kill(self.pid, sig)
            except ProcessLookupError:
                pass

    def kill(self) -> None:
        self.signal(signal.SIGCONT)  # a stopped process must be able to die and be reaped
        self.signal(signal.SIGKILL)
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            pass

    def stop(self, timeout: float = 10.0) -> None:
        """Close stdin (agents then close their node and exit), SIGINT, then SIGKILL."""
        self.signal(signal.SIGCONT)
        if self.alive:
            try:
                assert self.proc.stdin is not None
                self.proc.stdin.close()
            except (OSError, ValueError):
                pass
            if self.interrupt:
                self.signal(signal.SIGINT)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.signal(signal.SIGINT)
                try:
                    self.proc.wait(5)
                except subprocess.TimeoutExpired:
                    self.kill()
        for f in (self.proc.stdin, self.proc.stdout, self.proc.stderr):
            try:
                if f:
                    f.close()
            except (OSError, ValueError):
                pass


def agent_argv(name: str, coordinator: str, *, authkey: str | None = None, heartbeat: float | None = None,
               listen: tuple[str, ...] = (), service: tuple[str, ...] = (), extra: tuple[str, ...] = ()) -> list[str]:
    argv = [sys.executable, AGENT, "--name", name, "--coordinator", coordinator]
    if authkey:
        argv += ["--authkey", authkey]
    if heartbeat:
        argv += ["--heartbeat", str(heartbeat)]
    for t in listen:
        argv += ["--listen", t]
    for s in service:
        argv += ["--service", s]
    return argv + list(extra)


def coordinator_argv(host: str, port: int = 0, *, authkey: str | None = None,
                     heartbeat: float | None = None) -> list[str]:
    argv = [sys.executable, "-m", "easymesh", "--host", host, "--port", str(port)]
    if authkey:
        argv += ["--authkey", authkey]
    if heartbeat:
        argv += ["--heartbeat-interval", str(heartbeat)]
    return argv


def coordinator_port(proc: Proc, timeout: float = 20.0) -> int:
    """The port from the coordinator's 'listening on HOST:PORT' line."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            line = proc.lines.get(timeout=0.5)
        except queue.Empty:
            if not proc.alive:
                break
            continue
        if "listening on" in line:
            return int(line.split("listening on ")[1].split()[0].rsplit(":", 1)[1])
    raise AssertionError(f"coordinator did not start: {proc.log[-2000:]}")


def wait_until(predicate: Any, timeout: float = 10.0, interval: float = 0.05) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return bool(predicate())
