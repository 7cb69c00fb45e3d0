"""Running a plan: the coordinator, then the nodes in file order; supervision; a clean stop.

One thread (the one calling :meth:`Launcher.run`, normally the main thread) makes every
decision. It blocks on one ``queue.SimpleQueue`` that the per-process threads (exits, the
coordinator's ready line), the signal handlers and :meth:`Launcher.stop` post to, with a
timeout set by the next due timer (delays, respawns). ``SimpleQueue.put`` is reentrant, so a
signal handler may post while the main thread waits; nothing sleeps to synchronise.

The coordinator is ready when it prints ``listening on HOST:PORT`` (that is also how a
``port: 0`` coordinator's real port is learnt); its ``post_delay`` is waited after that line,
not instead of it.

Stopping (Ctrl-C, SIGTERM, SIGHUP, a required node's exit, the coordinator's death): the
nodes first, then the coordinator (so nodes leave the mesh cleanly). Each group of processes
gets SIGINT, ``grace`` seconds, SIGTERM, ``term_grace`` seconds, then SIGKILL. A second Ctrl-C
skips the waiting and goes straight to SIGKILL. Signals go to whole process groups, so the
children of shell commands stop too.
"""

from __future__ import annotations

import heapq
import itertools
import queue
import shlex
import signal
import time
from collections.abc import Callable
from typing import Any

from easymesh import signals
from easymesh.launch.errors import LaunchError
from easymesh.launch.output import Printer
from easymesh.launch.plan import (
    Plan,
    client_address,
    coordinator_argv,
    coordinator_environment,
    node_argv,
    node_cwd,
    node_environment,
)
from easymesh.launch.process import Child, describe_exit, exit_status
from easymesh.launch.schema import NodeSpec


class Launcher:
    """Runs one :class:`Plan`. ``run()`` returns meshlaunch's exit status:

    0 after a requested stop (signal or :meth:`stop`), when a required node exits with 0, or
    when (with no coordinator of ours) every node exited with 0; a required node's own status
    (128 + N if killed by signal N) when it fails; 1 when the coordinator could not start or
    died, or when nodes ended on their own and one failed.
    """

    def __init__(
        self,
        plan: Plan,
        *,
        printer: Printer | None = None,
        grace: float = 5.0,
        term_grace: float = 2.0,
        kill_wait: float = 5.0,
        ready_timeout: float = 20.0,
    ) -> None:
        self.plan = plan
        self.printer = printer or Printer(labels=plan.labels())
        self.grace, self.term_grace, self.kill_wait = grace, term_grace, kill_wait
        self.ready_timeout = ready_timeout
        self._events: queue.SimpleQueue[tuple[str, Any]] = queue.SimpleQueue()
        self._timers: list[tuple[float, int, Callable[[], None]]] = []
        self._seq = itertools.count()
        self._children: list[Child] = []
        self._live: set[Child] = set()
        self._leftovers: set[Child] = set()
        self._coordinator: Child | None = None
        self._port: int | None = None
        self._address = ""
        self._stop_reason: str | None = None
        self._status = 0
        self._hurry = False
        self._started_all = False
        self._failures = 0

    @property
    def address(self) -> str:
        """``client_host:port`` given to the nodes ('' until known)."""
        return self._address

    def children(self) -> list[Child]:
        """Every process started so far (respawned copies included)."""
        return list(self._children)

    def stop(self) -> None:
        """Ask the launch to stop (from any thread); ``run()`` returns once all have stopped."""
        self._events.put(("stop", None))

    def run(self, *, handle_signals: bool = True) -> int:
        """Start everything, supervise until the launch ends, stop everything; return the
        exit status. With ``handle_signals`` (and on the main thread) SIGINT, SIGTERM and SIGHUP
        stop the launch. Raises nothing for a node's failure; the status says it."""
        restore = self._install_signals() if handle_signals else None
        try:
            self._startup()
            self._loop(lambda: self._stop_reason is not None)
        finally:
            try:
                self._shutdown()
            finally:
                if restore is not None:
                    restore()
        return self._status

    # -- the event loop ----------------------------------------------------------------------

    def _loop(self, done: Callable[[], bool], until: float | None = None) -> None:
        while not done():
            now = time.monotonic()
            while self._timers and self._timers[0][0] <= now and self._stop_reason is None:
                heapq.heappop(self._timers)[2]()
            if done() or (until is not None and now >= until):
                return
            timer = self._timers[0][0] if self._timers and self._stop_reason is None else None
            ends = [t for t in (until, timer) if t is not None]
            timeout = max(0.0, min(ends) - now) if ends else None
            try:
                # in slices: see signals.WAIT_SLICE (a stop signal must not wait for the timeout)
                slice_ = signals.WAIT_SLICE if timeout is None else min(timeout, signals.WAIT_SLICE)
                kind, obj = self._events.get(timeout=slice_)
            except queue.Empty:
                continue
            self._handle(kind, obj)

    def _wait(self, seconds: float) -> None:
        if seconds > 0:
            self._loop(lambda: self._stop_reason is not None, time.monotonic() + seconds)

    def _handle(self, kind: str, obj: Any) -> None:
        if kind == "exit":
            self._on_exit(obj)
        elif kind == "ready":
            if self._port is None:
                self._port = obj
        elif kind in ("signal", "stop"):
            what = signal.Signals(obj).name if kind == "signal" else "stop request"
            if self._stop_reason is None:
                self.printer.note(f"{what}: stopping everything")
                self._begin_stop(what, 0)
            elif not self._hurry:
                self._hurry = True
                self.printer.note(f"second {what}: no more waiting, SIGKILL to what is left")

    def _hurried(self) -> bool:
        return self._hurry

    def _begin_stop(self, reason: str, status: int) -> None:
        if self._stop_reason is None:
            self._stop_reason, self._status = reason, status

    def _schedule(self, delay: float, action: Callable[[], None]) -> None:
        heapq.heappush(self._timers, (time.monotonic() + delay, next(self._seq), action))

    def _install_signals(self) -> Callable[[], None]:
        return signals.install(
            lambda signum: self._events.put(("signal", signum)), signals.STOP_SIGNALS_HUP
        )

    # -- starting ----------------------------------------------------------------------------

    def _startup(self) -> None:
        plan, coord = self.plan, self.plan.coordinator
        for name, why in plan.skipped:
            self.printer.note(f"not starting {name} ({why})")
        if plan.start_coordinator:
            if not self._start_coordinator():
                return
            self._wait(coord.post_delay)
        else:
            self._port = coord.port
        self._address = client_address(coord, self._port or 0)
        if not plan.start_coordinator:
            self.printer.note(
                f"coordinator {plan.coordinator_note}; nodes will use {self._address}"
            )
        for spec in plan.nodes:
            self._wait(spec.pre_delay)
            if self._stop_reason is not None:
                return
            for copy in range(1, spec.number + 1):
                self._spawn(spec, copy)
            self._wait(spec.post_delay)
            if self._stop_reason is not None:
                return
        self._started_all = True
        if not plan.nodes and not plan.start_coordinator:
            self.printer.note("nothing to start on this host")
            self._begin_stop("nothing to run", 0)
        self._check_all_done()

    def _start_coordinator(self) -> bool:
        coord = self.plan.coordinator

        def watch(child: Child, text: str) -> None:
            if "listening on " in text:
                try:
                    port = int(text.split("listening on ", 1)[1].split()[0].rsplit(":", 1)[1])
                except (IndexError, ValueError):
                    return
                self._events.put(("ready", port))

        child = Child(
            "coordinator",
            coordinator_argv(coord),
            env=coordinator_environment(coord),
            printer=self.printer,
            color=self.printer.color_for("coordinator"),
            events=self._events,
            on_line=watch,
        )
        self._coordinator = child
        try:
            self._start(child)
        except LaunchError as exc:
            self.printer.note(str(exc))
            self._begin_stop("the coordinator could not start", 1)
            return False
        self._loop(
            lambda: (
                self._port is not None or self._stop_reason is not None or child.exited.is_set()
            ),
            time.monotonic() + self.ready_timeout,
        )
        if self._stop_reason is not None:
            return False
        if self._port is None:
            if child.exited.is_set():
                self.printer.note(
                    f"the coordinator exited ({describe_exit(child.returncode or 0)})"
                    " before it was ready; stopping"
                )
            else:
                self.printer.note(
                    f"the coordinator did not print 'listening on HOST:PORT' within "
                    f"{self.ready_timeout:g} s; stopping"
                )
            self._begin_stop("the coordinator did not start", 1)
            return False
        return True

    def _start(self, child: Child) -> None:
        key = self.plan.coordinator.authkey

        def announce(child: Child) -> None:
            shown = " ".join("***" if key and w == key else shlex.quote(w) for w in child.argv)
            self.printer.note(f"started {child.label} (pid {child.pid}): {shown}")

        child.start(announce)
        self._children.append(child)

    def _spawn(self, spec: NodeSpec, copy: int) -> None:
        key = self.plan.coordinator.authkey
        child = Child(
            spec.label(copy),
            node_argv(spec, self._address),
            env=node_environment(spec, self._address, key, copy),
            cwd=node_cwd(self.plan.config, spec),
            printer=self.printer,
            color=self.printer.color_for(spec.name),
            events=self._events,
            spec=spec,
            copy=copy,
        )
        try:
            self._start(child)
        except LaunchError as exc:
            self.printer.note(str(exc))
            self._after_exit(spec, copy, 127)
            return
        self._live.add(child)

    # -- exits -------------------------------------------------------------------------------

    def _on_exit(self, child: Child) -> None:
        rc = child.returncode if child.returncode is not None else 0
        if child is self._coordinator:
            if self._stop_reason is None:
                self.printer.note(
                    f"the coordinator exited unexpectedly ({describe_exit(rc)}); "
                    "stopping everything"
                )
                self._begin_stop("the coordinator exited", 1)
            return
        self._live.discard(child)
        if self._stop_reason is not None:
            return
        if child.signal_group(signal.SIGTERM):
            self.printer.note(f"{child.label} left processes behind in its group; sent SIGTERM")
            self._leftovers.add(child)
            self._schedule(self.term_grace, lambda: self._kill_leftovers(child))
        self._after_exit(child.spec, child.copy, rc)

    def _kill_leftovers(self, child: Child) -> None:
        # Soon after the leader's exit: the group id cannot have been reused while the group
        # had members, and it is forgotten here, so no later signal can reach a stranger.
        if child.signal_group(signal.SIGKILL):
            self.printer.note(
                f"{child.label}: processes left behind survived SIGTERM; sent SIGKILL"
            )
        self._leftovers.discard(child)
        self._check_all_done()

    def _after_exit(self, spec: NodeSpec, copy: int, rc: int) -> None:
        label = spec.label(copy)
        if spec.required:
            self.printer.note(
                f"{label} exited ({describe_exit(rc)}); it is required, so the launch ends"
            )
            self._begin_stop(f"{label} exited", exit_status(rc))
        elif spec.respawn:
            self.printer.note(
                f"{label} exited ({describe_exit(rc)}); respawning in {spec.respawn_delay:g} s"
            )
            self._schedule(spec.respawn_delay, lambda: self._spawn(spec, copy))
        else:
            self.printer.note(f"{label} exited ({describe_exit(rc)})")
            self._failures += rc != 0
            self._check_all_done()

    def _check_all_done(self) -> None:
        if not self._started_all or self._live or self._timers or not self.plan.nodes:
            return
        if self._stop_reason is not None:
            return
        if self._coordinator is None:
            self.printer.note("every node has exited")
            self._begin_stop("every node has exited", 1 if self._failures else 0)
        else:
            self.printer.note(
                "every node has exited; the coordinator keeps running (Ctrl-C to stop)"
            )

    # -- stopping ----------------------------------------------------------------------------

    def _shutdown(self) -> None:
        self._timers.clear()
        self._begin_stop("the launch ended", self._status)
        # Only groups known to hold processes: a leader not yet reaped (its id is still ours)
        # or processes a node left behind. Never the ids of long-gone nodes, which the system
        # may have given to someone else since.
        holding = [c for c in self._children if not c.exited.is_set() or c in self._leftovers]
        nodes = [c for c in holding if c is not self._coordinator]
        killed = self._stop_all(nodes)
        if self._coordinator in holding:
            killed += self._stop_all([self._coordinator])
        for child in holding:  # whatever a group still holds, at the end of the grace periods
            child.signal_group(signal.SIGKILL)
        for child in self._children:
            if not child.join(2.0):
                self.printer.note(
                    f"output of {child.label} is still open: a process escaped "
                    "its process group (setsid?)"
                )
        if holding:
            extra = f"; {', '.join(killed)} needed SIGKILL" if killed else ""
            self.printer.note(f"stopped {len(holding)} process group(s){extra}")

    def _stop_all(self, children: list[Child]) -> list[str]:
        """SIGINT, wait, SIGTERM, wait, SIGKILL to the groups of ``children``; returns the
        labels of those whose main process needed SIGKILL."""
        steps = (
            (signal.SIGINT, self.grace),
            (signal.SIGTERM, self.term_grace),
            (signal.SIGKILL, self.kill_wait),
        )
        previous: tuple[signal.Signals, float] | None = None
        for sig, wait in steps:
            if self._hurry and sig != signal.SIGKILL:
                continue
            running = [c for c in children if not c.exited.is_set()]
            signalled = [c for c in children if c.signal_group(sig)]
            if not signalled:
                return []
            if previous is not None and running:
                names = ", ".join(c.label for c in running)
                self.printer.note(
                    f"{names}: still running {previous[1]:g} s after "
                    f"{previous[0].name}; sent {sig.name}"
                )
            if sig == signal.SIGKILL:
                self._loop(_all_exited(running), time.monotonic() + wait)
                for c in running:
                    if not c.exited.is_set():
                        self.printer.note(
                            f"{c.label} (pid {c.pid}) survived SIGKILL for "
                            f"{wait:g} s (stuck in the kernel?)"
                        )
                return [c.label for c in running]
            self._loop(_all_exited(running, unless=self._hurried), time.monotonic() + wait)
            previous = (sig, wait)
        return []


def _all_exited(
    children: list[Child], unless: Callable[[], bool] = lambda: False
) -> Callable[[], bool]:
    """A predicate: every one of ``children`` has exited (and been reaped), or ``unless()``."""
    return lambda: unless() or all(c.exited.is_set() for c in children)
