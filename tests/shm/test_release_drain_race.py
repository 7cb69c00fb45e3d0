"""Releases drained by several threads at once (review of session 3's release path).

Since a release is written by the thread that dropped a frame's last view
(``ShmHub._wake``), :meth:`Remote.drain` runs on any thread, several at once, and on the
I/O thread (``ShmHub._flush``). Each ref given back must reach exactly one RELEASE: one
lost is a block the sender never frees (its pool fills up until the link closes). The
threads run under ``tests/preempt.py``, so a thread can lose the GIL between any two
bytecodes, e.g. between ``while q`` and ``q.popleft()``."""

from __future__ import annotations

import threading
from collections import Counter

from easymesh.shm.descriptor import decode_release
from easymesh.shm.release import Remote
from tests.preempt import preemptible_threads

THREADS = 6
PER_THREAD = 3_000


def test_every_release_is_drained_once_by_threads_draining_at_once() -> None:
    remote = Remote()  # no arena needed: the finalizers' deque and drain() only
    drained: Counter[tuple[int, int]] = Counter()
    errors: list[BaseException] = []
    lock = threading.Lock()
    go = threading.Barrier(THREADS)

    def dropper(k: int) -> None:
        mine: list[tuple[int, int]] = []
        try:
            go.wait()
            for i in range(PER_THREAD):
                remote._gone((1, k * PER_THREAD + i))  # what a view's finalizer does
                for body in remote.drain():  # what ShmHub._wake then does
                    mine += decode_release(body)
        except BaseException as exc:  # noqa: BLE001  (reported below)
            errors.append(exc)
        with lock:
            drained.update(mine)

    with preemptible_threads():
        threads = [threading.Thread(target=dropper, args=(k,)) for k in range(THREADS)]
        for t in threads:
            t.start()
    for t in threads:
        t.join(120.0)
    assert not any(t.is_alive() for t in threads)
    for body in remote.drain():  # whatever is left (none expected)
        drained.update(decode_release(body))
    assert not errors, errors[:3]
    assert sum(drained.values()) == THREADS * PER_THREAD
    assert set(drained.values()) == {1}  # each ref once
