"""One supervised process: its own session and process group, its output pumped line by line.

Every child is started with ``start_new_session=True``: it leads a new process group (and
session), so a Ctrl-C typed at the terminal reaches meshlaunch alone, and a signal meshlaunch
sends to the group reaches everything the child started (the children of a shell command
too). Two threads per child, both ending on their own: ``easymesh-launch-<label>-out`` reads
the output pipe until end of file, ``easymesh-launch-<label>-wait`` waits for the exit and
posts ``("exit", child)`` on the launcher's event queue.
"""

from __future__ import annotations

import os
import queue
import signal
import subprocess
import threading
import time
from collections.abc import Callable
from typing import Any

from easymesh.launch.errors import LaunchError
from easymesh.launch.output import Printer

MAX_LINE = 64 * 1024  # a longer line without a newline is printed in pieces


def exit_status(returncode: int) -> int:
    """A shell-style status: the exit code, or 128 + N for a process killed by signal N."""
    return 128 - returncode if returncode < 0 else returncode


def describe_exit(returncode: int) -> str:
    """``status 3`` or ``killed by SIGKILL``."""
    if returncode < 0:
        try:
            return f"killed by {signal.Signals(-returncode).name}"
        except ValueError:
            return f"killed by signal {-returncode}"
    return f"status {returncode}"


class Child:
    """A process of the launch (a node copy or the coordinator).

    ``events`` receives ``("exit", self)`` once the process has exited and been reaped;
    ``on_line`` (if given) sees every output line, in the reader thread.
    """

    def __init__(
        self,
        label: str,
        argv: list[str],
        *,
        env: dict[str, str] | None = None,
        cwd: str | None = None,
        printer: Printer,
        color: str = "",
        events: queue.SimpleQueue[Any],
        on_line: Callable[[Child, str], None] | None = None,
        spec: Any = None,
        copy: int = 0,
    ) -> None:
        self.label = label
        self.argv = argv
        self.env = env
        self.cwd = cwd
        self.spec = spec
        self.copy = copy
        self._printer = printer
        self._color = color
        self._events = events
        self._on_line = on_line
        self._proc: subprocess.Popen[bytes] | None = None
        self._threads: list[threading.Thread] = []
        self.exited = threading.Event()

    @property
    def pid(self) -> int:
        """The process id, which is also the id of its process group. Raises if not started."""
        if self._proc is None:
            raise LaunchError(f"{self.label} was not started")
        return self._proc.pid

    @property
    def returncode(self) -> int | None:
        """None while running; the exit code, or -N when killed by signal N."""
        return self._proc.returncode if self.exited.is_set() and self._proc else None

    def start(self, announce: Callable[[Child], None] | None = None) -> None:
        """Start the process in a new session and begin pumping its output; ``announce`` is
        called in between (so a note about the start comes before the first output line).

        Raises LaunchError (from the OSError) when the program cannot be started.
        """
        try:
            self._proc = subprocess.Popen(
                self.argv,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                env=self.env,
                cwd=self.cwd,
                start_new_session=True,
            )
        except OSError as exc:
            raise LaunchError(f"cannot start {self.label} ({self.argv[0]}): {exc}") from exc
        if announce is not None:
            announce(self)
        for kind, target in (("out", self._pump), ("wait", self._wait)):
            t = threading.Thread(
                target=target, name=f"easymesh-launch-{self.label}-{kind}", daemon=True
            )
            self._threads.append(t)
            t.start()

    def _pump(self) -> None:
        assert self._proc is not None and self._proc.stdout is not None
        stream = self._proc.stdout
        try:
            while True:
                raw = stream.readline(MAX_LINE)
                if not raw:
                    break
                text = raw.decode("utf-8", "replace").rstrip("\r\n")
                self._printer.line(self.label, text, self._color)
                if self._on_line is not None:
                    self._on_line(self, text)
        except (OSError, ValueError):
            pass  # the pipe was closed under us: nothing more to read
        finally:
            stream.close()

    def _wait(self) -> None:
        assert self._proc is not None
        self._proc.wait()
        self.exited.set()
        self._events.put(("exit", self))

    def signal_group(self, sig: int) -> bool:
        """Send ``sig`` to the child's whole process group.

        Returns False when the group has no process left (nothing was sent).
        """
        if self._proc is None:
            return False
        try:
            os.killpg(self._proc.pid, sig)
        except ProcessLookupError:
            return False
        except PermissionError:
            # A group member changed its credentials (setuid); signal the leader alone.
            if self.exited.is_set():
                return False
            os.kill(self._proc.pid, sig)
        return True

    def join(self, timeout: float) -> bool:
        """Wait up to ``timeout`` seconds for both threads (all output printed).

        Returns False when the output pipe is still open: some process that escaped the
        group (``setsid``) holds it; its reader thread ends when that process exits.
        """
        deadline = time.monotonic() + timeout
        for t in self._threads:
            t.join(max(0.0, deadline - time.monotonic()))
        return not any(t.is_alive() for t in self._threads)
