"""meshlaunch with real easymesh processes: its own coordinator, someone else's, the demo."""

from __future__ import annotations

import io
import subprocess
import sys
import threading
from pathlib import Path

from easymesh.launch import Launcher, Printer, make_plan, parse_config
from tests.launch.conftest import PYTHON, fake, wait_gone


def test_end_to_end_coordinator_receiver_sender(write_launch, meshlaunch):
    path = write_launch(f"""\
coordinator: {{host: 127.0.0.1, client_host: 127.0.0.1, port: 0, authkey: e2e-key}}
nodes:
  receiver:
    command: ["{PYTHON}", -m, easymesh.demo.receiver]
  sender:
    command: ["{PYTHON}", -m, easymesh.demo.sender, --interval, "0.2", --count, "3"]
    required: true
    pre_delay: 0.3
""")
    run = meshlaunch(str(path))
    assert run.wait(timeout=60) == 0, run.output + run.stderr
    out = run.output
    assert "receiver] receiver got: topic=some-topic; data={'hello': 'world!', 'n': 0}" in out
    assert "sender exited (status 0); it is required, so the launch ends" in out
    assert "easymesh coordinator stopped" in out
    assert "e2e-key" not in out  # the key is masked in the notes
    assert wait_gone(run.all_pids()) == []


def test_no_coordinator_uses_the_running_one(write_launch, meshlaunch, coordinator):
    host, port = coordinator.address.rsplit(":", 1)
    path = write_launch(f"""\
coordinator: {{client_host: {host}, port: {port}}}
nodes:
  probe: {{command: {fake("--exit=0")}}}
  receiver:
    command: ["{PYTHON}", -m, easymesh.demo.receiver, --count, "1"]
  sender:
    command: ["{PYTHON}", -m, easymesh.demo.sender]
""")
    run = meshlaunch(str(path), "--no-coordinator")
    assert run.wait(timeout=60) == 0, run.output + run.stderr
    assert "coordinator" not in run.started()
    assert "coordinator not started (--no-coordinator)" in run.output
    assert run.fakenodes()[0]["argv"][-2:] == ["--coordinator", coordinator.address]
    assert "receiver got: topic=some-topic; data={'hello': 'world!'}" in run.output
    assert coordinator.proc.poll() is None  # not ours: left running


class _Recorder(io.StringIO):
    """A stream that sets ``ready`` once ``count`` lines contain ``text``."""

    def __init__(self, text: str, count: int) -> None:
        super().__init__()
        self.text, self.count, self.ready = text, count, threading.Event()

    def write(self, s: str) -> int:
        n = super().write(s)
        if self.getvalue().count(self.text) >= self.count:
            self.ready.set()
        return n


def test_launcher_api_in_process_stop_from_another_thread():
    config = parse_config(
        f"""\
coordinator: {{disabled: true}}
nodes:
  a: {{command: {fake()}, number: 2}}
""",
        source="api.yaml",
    )
    out = _Recorder("FAKENODE", 2)
    launcher = Launcher(make_plan(config), printer=Printer(out, color=False), grace=2)
    stopper = threading.Thread(
        target=lambda: out.ready.wait(20) and launcher.stop(), name="test-stopper"
    )
    stopper.start()
    assert launcher.run(handle_signals=False) == 0
    stopper.join(5)
    assert out.ready.is_set() and "stop request: stopping everything" in out.getvalue()
    assert wait_gone([c.pid for c in launcher.children()]) == []
    assert all(c.returncode == 0 for c in launcher.children())


def test_demo_runs_and_exits_cleanly():
    result = subprocess.run(
        [sys.executable, "-m", "easymesh.demo", "--seconds=1"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "receiver got: topic=some-topic" in result.stdout
    assert "it is required, so the launch ends" in result.stdout


def test_the_example_launch_file_runs(meshlaunch):
    example = Path(__file__).parents[2] / "examples" / "launch.yaml"
    run = meshlaunch(str(example))
    assert run.wait(timeout=60) == 0, run.output + run.stderr
    out = run.output
    assert set(run.started()) == {"coordinator", "receiver#1", "receiver#2", "sender"}
    got = [ln for ln in run.lines if "receiver got: topic=some-topic" in ln]
    assert {ln.split("]")[0].strip("[ ") for ln in got} == {"receiver#1", "receiver#2"}
    assert len(got) >= 7  # 8 sent; the last may still be in flight when the sender's exit ends it
    assert "sender exited (status 0); it is required, so the launch ends" in out
