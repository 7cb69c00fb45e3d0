"""Issue 3, item 5: slow and stuck listeners.

A listener that takes 50 ms per message is offered FLOOD_BYTES (2 GB; set
EASYMESH_FLOOD_MB to change it) by a sender in another process: ``send()`` never
blocks, both processes stay under a bounded RSS (read from /proc), and every
message is accounted for in ``node.stats()``: delivered, dropped at the sender
(per-peer byte bound) or dropped at the receiver (listener queue bound).

A stuck service handler makes its callers time out and blocks no other service
or topic; neither does a stuck topic callback.
"""

from __future__ import annotations

import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

import easymesh
from easymesh import config

from .procs import proc_status, wait_until

MESSAGE = 1 << 20
FLOOD_BYTES = int(os.environ.get("EASYMESH_FLOOD_MB", "2048")) << 20
FIGURES: dict[str, object] = {}


@pytest.mark.timeout(300)
def test_flood_into_a_slow_listener(coordinator, agent):
    n = FLOOD_BYTES // MESSAGE
    recv = agent("slow", coordinator.address, listen=("flood:0.05",))
    send = agent("flooder", coordinator.address)
    peaks = {"slow": 0, "flooder": 0}
    done = threading.Event()

    def sample() -> None:
        while not done.wait(0.05):
            for name, p in (("slow", recv), ("flooder", send)):
                try:
                    peaks[name] = max(peaks[name], proc_status(p.pid)["vmrss"])
                except OSError:
                    pass

    sampler = threading.Thread(target=sample, name="test-rss-sampler")
    sampler.start()
    try:
        sent = send.command(f"send flood {n} {MESSAGE}", "SENT", timeout=240)
    finally:
        done.set()
        sampler.join(5)

    # every message is accounted for once the receiver has worked through its queue (and
    # through the batch its worker took out of it, which "queued" does not count)
    def settled() -> bool:
        st = recv.command("stats", "STATS")["topics"]["flood"]
        sender_drops = send.command("stats", "STATS")["dropped_outbound"]
        return st["handled"] + st["dropped"] == st["received"] and st["received"] + sender_drops == n

    assert wait_until(settled, 60, interval=0.5), (recv.command("stats", "STATS"), send.command("stats", "STATS"))
    r = recv.command("stats", "STATS")
    s = send.command("stats", "STATS")
    topic = r["topics"]["flood"]
    FIGURES.update({
        "offered_mb": n * MESSAGE >> 20, "messages": n, "send_total_s": round(sent["total_s"], 1),
        "slowest_send_ms": round(sent["max_send_s"] * 1000, 1),
        "handled": topic["handled"], "dropped_at_receiver": topic["dropped"],
        "dropped_at_sender": s["dropped_outbound"],
        "rss_peak_mb": {k: v // 1024 for k, v in peaks.items()},
    })
    print(f"\nflood: {FIGURES}")
    assert s["sent"] == n
    assert topic["handled"] + topic["dropped"] == topic["received"]
    assert topic["dropped"] + s["dropped_outbound"] > 0.9 * n  # the 50 ms listener saw few of them
    assert topic["handled"] >= 1
    # send() never waited for the listener: handling n messages takes it n * 50 ms
    assert sent["total_s"] < n * 0.05 / 2
    assert sent["max_send_s"] < 5
    # bounded memory: the queues' byte bounds plus a generous allowance for the interpreter,
    # socket buffers and memory malloc keeps for reuse; nowhere near the bytes offered
    allowance = 200 << 10  # kB
    assert peaks["slow"] < (config.DEFAULT_QUEUE_BYTES >> 10) + allowance
    assert peaks["flooder"] < (config.DEFAULT_MAX_PENDING_BYTES >> 10) + allowance


@pytest.mark.timeout(120)
def test_stuck_service_handler_blocks_nothing_else(coordinator, agent):
    srv = agent("stuck-server", coordinator.address, listen=("t", "stuck-topic:600"),
                service=("stuck:stuck", "echo:echo"))
    with easymesh.Node("caller", coordinator=coordinator.address) as cli:
        cli.wait_for_service("stuck", timeout=15)
        cli.wait_for_listener("stuck-topic", timeout=15)
        cli.send("stuck-topic", {"src": "caller", "seq": 0})  # its callback now sleeps 600 s
        # more stuck calls than the service has workers, from several threads at once
        with ThreadPoolExecutor(8, thread_name_prefix="test-caller") as pool:
            stuck = [pool.submit(cli.request, "stuck", i, 3) for i in range(8)]
            t0 = time.monotonic()
            assert [cli.request("echo", i, timeout=15) for i in range(20)] == list(range(20))
            echo_s = time.monotonic() - t0
            for i in range(50):
                cli.send("t", {"src": "caller", "seq": i})
            assert wait_until(lambda: srv.command("recv", "RECV")["t"].get("caller", {}).get("count") == 50, 15)
            for f in stuck:
                with pytest.raises(easymesh.RequestTimeout):
                    f.result(30)
        # and again, while the first eight are still stuck in (or queued for) the handler
        with pytest.raises(TimeoutError):
            cli.request("stuck", "late", timeout=1)
        assert cli.request("echo", "still", timeout=15) == "still"
        srv.command("release", "RELEASED")
    FIGURES["echo_while_stuck_s"] = round(echo_s, 2)
    print(f"\nstuck: 20 echo calls while 8 stuck calls waited: {echo_s:.2f} s")


@pytest.mark.timeout(120)
def test_each_dropped_message_is_counted_once(coordinator, agent):
    """Messages larger than the sender's per-peer bound, to a frozen listener: each one
    is either delivered or counted as dropped, exactly once."""
    import signal

    recv = agent("frozen", coordinator.address, listen=("big",))
    send = agent("big-sender", coordinator.address, extra=("--max-pending", str(1 << 20)))
    n = 40
    send.command("send big 1 10", "SENT")  # opens the link
    assert wait_until(lambda: "big-sender" in recv.command("recv", "RECV")["big"], 15)
    recv.signal(signal.SIGSTOP)
    try:
        sent = send.command(f"send big {n} {2 << 20}", "SENT", timeout=60)
        assert sent["max_send_s"] < 5
    finally:
        recv.signal(signal.SIGCONT)

    def accounted() -> tuple[int, int, int]:
        # With shared memory (same host) the 2 MB messages travel as small descriptors: the
        # sender's byte bound no longer drops them, the listener's queue_bytes may.
        got = recv.command("recv", "RECV")["big"]["big-sender"]["count"] - 1
        at_receiver = recv.command("stats", "STATS")["topics"]["big"]["dropped"]
        return got, send.command("stats", "STATS")["dropped_outbound"], at_receiver

    assert wait_until(lambda: sum(accounted()) >= n, 30)
    time.sleep(1)  # anything still in flight lands now
    got, dropped, at_receiver = accounted()
    FIGURES["frozen_listener"] = {
        "delivered": got, "dropped_at_sender": dropped, "dropped_at_receiver": at_receiver
    }
    assert got + dropped + at_receiver == n, (
        f"delivered {got} + counted as dropped {dropped} (sender) + {at_receiver} (receiver)"
        f" != sent {n}"
    )
