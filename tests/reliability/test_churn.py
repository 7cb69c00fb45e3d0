"""Issue 3, item 8: churn. 50 nodes (5 processes x 10 slots) join and leave over and
over while messages flow; midway one churn process is killed with SIGKILL and
replaced. At the end the coordinator's topology is exactly the stable nodes, every
survivor sees the same topology, and nothing leaked: threads and fds in the churn
processes, connections (fds) in the coordinator, Unix socket files on disk.

CI runs CHURN_SECONDS (default 20 s of churn; the test takes about 25 s here).
The full one-minute run: ``EASYMESH_SLOW=1`` (or ``EASYMESH_CHURN_SECONDS=60``).
"""

from __future__ import annotations

import os
import signal
import sys
import threading
import time

import pytest

import easymesh

from .procs import agent_argv, proc_status, wait_until

HB = 0.5
PROCESSES, SLOTS = 5, 10
CHURN_SECONDS = float(os.environ.get("EASYMESH_CHURN_SECONDS") or (60 if os.environ.get("EASYMESH_SLOW") else 20))
CHURNER = os.path.join(os.path.dirname(os.path.abspath(__file__)), "churner.py")
FIGURES: dict[str, object] = {}


@pytest.mark.timeout(int(CHURN_SECONDS) + 150)
def test_fifty_nodes_churning(coordinator_factory, spawn, tmp_path):
    coord = coordinator_factory(heartbeat_interval=HB)
    sockdir = tmp_path / "socks"
    sockdir.mkdir(mode=0o700)  # a shared socket folder is refused
    got: dict[str, list[int]] = {}
    lock = threading.Lock()

    def hub_callback(topic, data):
        with lock:
            got.setdefault(data["src"], []).append(data["seq"])

    # hub and checker inspect the whole topology (watch='all'); the churning nodes are
    # plain nodes, told only of the hub they send to and call.
    with easymesh.Node("hub", coordinator=coord.address, heartbeat_interval=HB, watch="all") as hub:
        hub.listen("churn", hub_callback)
        hub.add_service("echo", lambda d: d)
        steady = spawn(agent_argv("steady", coord.address, heartbeat=HB))
        steady.expect("READY", 30)
        assert wait_until(lambda: sorted(n.name for n in hub.nodes()) == ["hub", "steady"], 15)
        steady.command("sendloop churn 0.005", "LOOPING")
        fds0 = proc_status(coord.pid)["fds"]
        rss0 = proc_status(coord.pid)["vmrss"]

        def churner(seed: int, seconds: float):
            p = spawn([sys.executable, CHURNER, "--coordinator", coord.address, "--slots", str(SLOTS),
                       "--seconds", str(seconds), "--socket-dir", str(sockdir), "--seed", str(seed),
                       "--heartbeat", str(HB)])
            p.expect("READY", 30)
            return p

        t0 = time.monotonic()
        procs = [churner(seed, CHURN_SECONDS) for seed in range(PROCESSES)]
        peak_nodes = peak_rss = 0
        killed = False
        while time.monotonic() - t0 < CHURN_SECONDS:
            peak_nodes = max(peak_nodes, len(hub.nodes()))
            peak_rss = max(peak_rss, proc_status(coord.pid)["vmrss"])
            if not killed and time.monotonic() - t0 > CHURN_SECONDS / 2:
                procs[0].signal(signal.SIGKILL)  # ten nodes vanish at once, mid-churn
                procs[0].proc.wait(10)
                procs.append(churner(100, CHURN_SECONDS / 2))
                killed = True
            time.sleep(0.2)
        results = [p.expect("CHURNED", 120) for p in procs[1:]]

        # the coordinator's topology: exactly the stable nodes, and every survivor agrees
        with easymesh.Node("checker", coordinator=coord.address, heartbeat_interval=HB,
                           socket_dir=str(sockdir), watch="all") as checker:
            want = ["checker", "hub", "steady"]
            assert wait_until(lambda: sorted(n.name for n in checker.nodes()) == want, 20), checker.nodes()
            assert wait_until(lambda: sorted(n.name for n in hub.nodes()) == want, 10)
            assert wait_until(lambda: sorted(n["name"] for n in steady.command("nodes", "NODES")) == want, 10)
            # a node starting in a socket folder removes the files that killed processes left
            me = next(n for n in checker.nodes() if n.id == checker.id)
            assert os.listdir(sockdir) == [os.path.basename(me.unix)]
        stopped = steady.command("stopsend", "STOPPED")

    # nothing leaked: socket files, coordinator connections, threads and fds in the churners
    assert wait_until(lambda: not os.listdir(sockdir), 10), os.listdir(sockdir)
    assert wait_until(lambda: proc_status(coord.pid)["fds"] <= fds0, 20), (proc_status(coord.pid), fds0)
    for r in results:
        assert r["leftover_threads"] == [], r
        assert r["threads_after"] == r["threads_before"], r
        assert r["fds_after"] == r["fds_before"], r
        assert r["request_errors"] == [], r["request_errors"][:5]
    assert stopped["n_errors"] == 0 and stopped["max_send_s"] < 2, stopped
    with lock:
        steady_seqs = got.get("steady", [])
    assert steady_seqs == sorted(steady_seqs) and len(steady_seqs) > 100  # flowed, in order
    FIGURES.update({
        "churn_seconds": CHURN_SECONDS, "joins": sum(r["joins"] for r in results),
        "leaves": sum(r["leaves"] for r in results), "peak_nodes_seen": peak_nodes,
        "coordinator_rss_mb": (rss0 // 1024, peak_rss // 1024), "steady_delivered": len(steady_seqs),
        "steady_sent": stopped["sent"],
    })
    print(f"\nchurn: {FIGURES}")
