"""easymesh.signals with real signals sent to this process (pytest runs on the main thread)."""

from __future__ import annotations

import ast
import logging
import os
import pathlib
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator

import pytest

from easymesh import signals

WAIT = 10.0


@pytest.fixture(autouse=True)
def keep_handlers() -> Iterator[None]:
    """Whatever a test does, the handlers it found are there after it."""
    saved = {sig: signal.getsignal(sig) for sig in signals.STOP_SIGNALS_HUP}
    yield
    for sig, handler in saved.items():
        signal.signal(sig, handler)


class Calls:
    """A stop function that records (signal, thread name) and wakes a waiter."""

    def __init__(self) -> None:
        self.calls: list[tuple[int, str]] = []
        self.cond = threading.Condition()

    def __call__(self, signum: int) -> None:
        with self.cond:
            self.calls.append((signum, threading.current_thread().name))
            self.cond.notify_all()

    def wait_for(self, n: int) -> list[tuple[int, str]]:
        with self.cond:
            assert self.cond.wait_for(lambda: len(self.calls) >= n, WAIT), self.calls
            return list(self.calls)


def test_install_calls_stop_on_the_signal_thread_every_time_then_restores() -> None:
    before = signal.getsignal(signal.SIGTERM)
    calls = Calls()
    restore = signals.install(calls)
    assert signal.getsignal(signal.SIGTERM) is not before
    os.kill(os.getpid(), signal.SIGTERM)
    assert calls.wait_for(1) == [(signal.SIGTERM, "easymesh-signals")]
    os.kill(os.getpid(), signal.SIGINT)  # a second signal: stop is called again
    assert calls.wait_for(2)[1] == (signal.SIGINT, "easymesh-signals")
    restore()
    restore()  # idempotent
    assert signal.getsignal(signal.SIGTERM) is before
    assert not [t for t in threading.enumerate() if t.name == "easymesh-signals"]


def test_a_failing_stop_is_logged_and_the_next_signal_still_arrives(caplog) -> None:
    calls = Calls()

    def stop(signum: int) -> None:
        calls(signum)
        if len(calls.calls) == 1:
            raise RuntimeError("boom")

    with caplog.at_level(logging.ERROR, logger="easymesh.signals"):
        with signals.stopping_on(stop):
            os.kill(os.getpid(), signal.SIGTERM)
            calls.wait_for(1)
            os.kill(os.getpid(), signal.SIGTERM)
            assert len(calls.wait_for(2)) == 2
    assert "stop function for signal 15 failed" in caplog.text and "boom" in caplog.text


def test_installed_over_an_inherited_sig_ign_and_put_back() -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    calls = Calls()
    with signals.stopping_on(calls):
        os.kill(os.getpid(), signal.SIGINT)
        assert calls.wait_for(1) == [(signal.SIGINT, "easymesh-signals")]
    assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN


def test_only_the_given_signals_are_taken() -> None:
    before = {sig: signal.getsignal(sig) for sig in signals.STOP_SIGNALS_HUP}
    with signals.stopping_on(Calls(), (signal.SIGHUP,)):
        assert signal.getsignal(signal.SIGTERM) is before[signal.SIGTERM]
        assert signal.getsignal(signal.SIGHUP) is not before[signal.SIGHUP]
    assert signal.getsignal(signal.SIGHUP) is before[signal.SIGHUP]


def test_off_the_main_thread_nothing_is_installed() -> None:
    before = signal.getsignal(signal.SIGTERM)
    results: list[object] = []

    def other() -> None:
        for restore in (signals.install(Calls()), signals.interrupt_on()):
            results.append(signal.getsignal(signal.SIGTERM))
            restore()

    t = threading.Thread(target=other)
    t.start()
    t.join(WAIT)
    assert results == [before, before]
    assert not [t for t in threading.enumerate() if t.name == "easymesh-signals"]


def test_interrupt_on_raises_keyboard_interrupt_in_the_main_thread() -> None:
    before = signal.getsignal(signal.SIGTERM)
    never = threading.Event()
    with pytest.raises(KeyboardInterrupt):
        with signals.interrupting_on():
            os.kill(os.getpid(), signal.SIGTERM)
            never.wait(WAIT)  # interrupted by the handler
    assert signal.getsignal(signal.SIGTERM) is before


def test_the_coordinator_stops_on_sigterm_with_status_0(tmp_path) -> None:
    """`easymesh` stops cleanly on SIGTERM, even one sent right after its ready line."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "easymesh", "--host", "127.0.0.1", "--port", "0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        assert "listening on 127.0.0.1:" in proc.stdout.readline()
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate(timeout=10)
    assert proc.returncode == 0, err
    assert "coordinator stopped" in out


def _handler_setters(path: pathlib.Path) -> list[int]:
    """Lines of ``path`` that set a signal handler (``signal.signal(...)``, or
    ``signal(...)`` imported from the signal module)."""
    tree = ast.parse(path.read_text())
    direct = {
        a.asname or a.name
        for n in ast.walk(tree)
        if isinstance(n, ast.ImportFrom) and n.module == "signal"
        for a in n.names
        if a.name == "signal"
    }
    lines = []
    for n in ast.walk(tree):
        if not isinstance(n, ast.Call):
            continue
        f = n.func
        if (
            isinstance(f, ast.Attribute)
            and f.attr == "signal"
            and isinstance(f.value, ast.Name)
            and f.value.id == "signal"
        ):
            lines.append(n.lineno)
        elif isinstance(f, ast.Name) and f.id in direct:
            lines.append(n.lineno)
    return lines


def test_only_the_signal_helper_sets_signal_handlers() -> None:
    """One signal helper for the coordinator, the node and every command (issue 11): a
    handler set elsewhere (meshfoxglove set its own, which called ``Event.set`` inside
    the handler, on the main thread) escapes what easymesh/signals.py guarantees."""
    package = pathlib.Path(signals.__file__).parent
    found = {
        str(p.relative_to(package)): lines
        for p in sorted(package.rglob("*.py"))
        if p.name != "signals.py" or p.parent != package
        for lines in [_handler_setters(p)]
        if lines
    }
    assert found == {}
    assert _handler_setters(pathlib.Path(signals.__file__))  # the finder finds them
