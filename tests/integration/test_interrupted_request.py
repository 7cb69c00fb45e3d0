"""A blocking ``request()`` interrupted while it waits (Ctrl-C: KeyboardInterrupt, or any
exception a signal handler raises) takes its entry out of the request table at once: it
does not keep a ``max_in_flight`` slot, or a deadline, until an answer or close comes."""

from __future__ import annotations

import signal
import threading
from typing import Any

import pytest

WAIT = 30.0


class Interrupted(Exception):
    pass


def _raise(_signum: int, _frame: Any) -> None:
    raise Interrupted


def test_an_interrupted_blocking_request_gives_its_slot_back(node_factory: Any) -> None:
    main = threading.get_ident()
    assert main == threading.main_thread().ident  # signal handlers run on the main thread
    release = threading.Event()

    def interrupt_the_caller(x: Any) -> Any:
        signal.pthread_kill(main, signal.SIGUSR1)  # while the caller waits for this answer
        release.wait(WAIT)
        return x

    srv = node_factory("srv")
    srv.add_service("interrupt", interrupt_the_caller)
    srv.add_service("echo", lambda x: x)
    cli = node_factory("cli", max_in_flight=1)
    cli.wait_for_service("interrupt", timeout=WAIT)
    cli.wait_for_service("echo", timeout=WAIT)
    old = signal.signal(signal.SIGUSR1, _raise)
    try:
        with pytest.raises(Interrupted):
            cli.request("interrupt", 1, timeout=WAIT)
        # its slot is free at once (the one allowed): not held until the answer comes
        assert cli.request("echo", 2, timeout=WAIT) == 2
    finally:
        signal.signal(signal.SIGUSR1, old)
        release.set()
