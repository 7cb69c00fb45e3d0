"""Smoke test: speedtest send/recv and call/serve run for about a second against a real
coordinator and print sane figures. No timing assertions: only that numbers exist and add up."""

from __future__ import annotations

import json
import subprocess
import sys
from typing import Any

import pytest

from tests.conftest import ROOT


def _start(*args: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "easymesh.demo.speedtest", *args, "--json",
                             "--timeout=30"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, cwd=ROOT, start_new_session=True)


def _results(out: str) -> list[dict[str, Any]]:
    return [json.loads(line[len("SPEEDTEST "):]) for line in out.splitlines()
            if line.startswith("SPEEDTEST ")]


def _finish(p: subprocess.Popen, timeout: float = 30) -> str:
    try:
        out, err = p.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        p.kill()
        out, err = p.communicate(timeout=5)
        pytest.fail(f"speedtest did not finish: {err[-2000:]}")
    assert p.returncode == 0, err[-2000:]
    return out


def _wait_ready(p: subprocess.Popen, marker: str) -> None:
    assert p.stdout is not None
    line = p.stdout.readline()  # the server prints its first line once it is reachable
    assert marker in line, (line, p.stderr.read() if p.poll() is not None else "")


@pytest.mark.timeout(60)
def test_send_recv(coordinator: Any) -> None:
    coord = f"--coordinator={coordinator.address}"
    recv = _start("recv", "--once", coord, "--topic=smoke")
    try:
        _wait_ready(recv, "listening to")
        send = _start("send", coord, "--topic=smoke", "--seconds=1", "--warmup=0.2",
                      "--message-size=100", "--rate=2000")
        sent = _results(_finish(send))
        got = _results(_finish(recv))
    finally:
        recv.kill()
    assert sent and sent[0]["role"] == "send" and sent[0]["sent"] > 0
    assert got and got[0]["role"] == "recv"
    r = got[0]
    assert r["complete"] and r["sent"] == sent[0]["sent"]
    assert 0 < r["received"] <= r["sent"] and r["drops"] == r["sent"] - r["received"]
    assert r["msgs_per_s"] > 0 and r["message_size"] == 100
    assert 0 < r["lat_p50_us"] <= r["lat_p99_us"] <= r["lat_max_us"]
    assert sent[0]["send_p50_us"] > 0


@pytest.mark.timeout(60)
def test_call_serve(coordinator: Any) -> None:
    coord = f"--coordinator={coordinator.address}"
    serve = _start("serve", coord, "--topic=smoke-svc")
    try:
        _wait_ready(serve, "providing")
        seq = _results(_finish(_start("call", coord, "--topic=smoke-svc", "--seconds=0.5",
                                      "--warmup=0.1", "--message-size=64")))
        par = _results(_finish(_start("call", coord, "--topic=smoke-svc", "--seconds=0.5",
                                      "--warmup=0.1", "--message-size=64", "--in-flight=20")))
    finally:
        serve.kill()
        serve.communicate(timeout=10)
    for res, k in ((seq, 1), (par, 20)):
        assert res and res[0]["role"] == "call" and res[0]["in_flight"] == k
        c = res[0]
        assert c["answered"] > 0 and c["errors"] == 0 and c["req_per_s"] > 0
        assert 0 < c["rtt_p50_us"] <= c["rtt_p99_us"]
