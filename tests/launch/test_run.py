"""meshlaunch as a real process on real launch files, with stand-in nodes (fakenode.py)."""

from __future__ import annotations

import os
import signal
import socket
import time

from tests.launch.conftest import FAKENODE, PYTHON, alive, fake, wait_gone

NO_COORDINATOR = """\
coordinator:
  disabled: true
  client_host: somehost
  port: 7000
"""


def test_nodes_get_appended_args_copies_and_authkey(write_launch, meshlaunch):
    path = write_launch(f"""\
coordinator:
  disabled: true
  client_host: somehost
  port: 7000
  authkey: s3cret
nodes:
  camera:
    command: {fake("--fps", "30")}
    number: 3
  lidar:
    command: {PY_STRING("--mode", "fast")}
""")
    run = meshlaunch(str(path))
    reports = run.wait_for(lambda lines: len(run.fakenodes()) == 4 and run.fakenodes())
    by_name: dict[str, list] = {}
    for r in reports:
        by_name.setdefault(r["env"]["MESHLAUNCH_NODE"], []).append(r)
    tail = ["--name", "camera", "--coordinator", "somehost:7000"]  # the key: environment only
    assert [r["argv"] for r in by_name["camera"]] == [["--fps", "30", *tail]] * 3
    assert sorted(r["env"]["MESHLAUNCH_COPY"] for r in by_name["camera"]) == ["1", "2", "3"]
    assert by_name["lidar"][0]["argv"] == [
        "--mode",
        "fast",
        "--name",
        "lidar",
        "--coordinator",
        "somehost:7000",
    ]
    env = by_name["lidar"][0]["env"]
    assert env["EASYMESH_COORDINATOR"] == "somehost:7000" and env["EASYMESH_AUTHKEY"] == "s3cret"
    assert env["PYTHONUNBUFFERED"] == "1"
    # every copy is its own process group; output carries the copy number
    assert len({r["pgid"] for r in reports}) == 4 and all(r["pid"] == r["pgid"] for r in reports)
    assert set(run.started()) == {"camera#1", "camera#2", "camera#3", "lidar"}
    assert any(ln.startswith("[  camera#2] FAKENODE") for ln in run.lines)
    assert "s3cret" not in "\n".join(ln for ln in run.lines if "] started " in ln)
    pids = run.all_pids()
    run.signal(signal.SIGINT)
    assert run.wait() == 0
    assert wait_gone(pids) == []


def PY_STRING(*args: str) -> str:
    """A command given as one string (no shell): split into words like a shell would."""
    return '"' + " ".join([PYTHON, FAKENODE, *args]) + '"\n    shell: false'


def test_disabled_on_host_and_exclude(write_launch, meshlaunch):
    here = socket.gethostname()
    path = write_launch(f"""\
{NO_COORDINATOR}
nodes:
  muted: {{command: {fake("--exit=0")}, disabled: true}}
  here: {{command: {fake("--exit=0")}, on_host: {here}}}
  here_upper: {{command: {fake("--exit=0")}, on_host: [elsewhere, {here.upper()}]}}
  elsewhere: {{command: {fake("--exit=0")}, on_host: not-{here}}}
  excluded: {{command: {fake("--exit=0")}}}
  plain: {{command: {fake("--exit=0")}}}
""")
    run = meshlaunch(str(path), "-e", "excluded")
    assert run.wait() == 0  # every node exited 0 and no coordinator is ours: the launch ends
    assert set(run.started()) == {"here", "here_upper", "plain"}
    out = run.output
    assert "not starting muted (disabled: true)" in out
    assert f"not starting elsewhere (on_host: not-{here})" in out
    assert "not starting excluded (--exclude)" in out
    assert "every node has exited" in out

    run2 = meshlaunch(str(path), "--as-host", f"not-{here}.example.org", "--exclude=excluded,plain")
    assert run2.wait() == 0
    assert set(run2.started()) == {"elsewhere"}


def test_coordinator_on_host_elsewhere_is_not_started(write_launch, meshlaunch):
    path = write_launch(f"""\
coordinator: {{on_host: robot-that-is-not-here, port: 7001}}
nodes:
  a: {{command: {fake("--exit=0")}}}
""")
    run = meshlaunch(str(path))
    assert run.wait() == 0
    assert "coordinator" not in run.started()
    assert run.fakenodes()[0]["argv"][-2:] == ["--coordinator", "localhost:7001"]


def test_respawn_restarts_a_copy_until_stopped(write_launch, meshlaunch):
    path = write_launch(f"""\
{NO_COORDINATOR}
nodes:
  flaky:
    command: {fake("--exit=3")}
    number: 2
    respawn: true
    respawn_delay: 0.1
  steady: {{command: {fake()}}}
""")
    run = meshlaunch(str(path))
    run.wait_for(lambda lines: len(run.started().get("flaky#2", [])) >= 3)
    assert "flaky#2 exited (status 3); respawning in 0.1 s" in run.output
    copies = {
        r["env"]["MESHLAUNCH_COPY"]
        for r in run.fakenodes()
        if r["env"]["MESHLAUNCH_NODE"] == "flaky"
    }
    assert copies == {"1", "2"}
    pids = run.all_pids()
    assert len(set(pids)) == len(pids)  # a new process each time
    run.signal(signal.SIGTERM)
    assert run.wait() == 0
    assert wait_gone(run.all_pids()) == []


def test_required_node_ends_the_launch_with_its_status(write_launch, meshlaunch):
    path = write_launch(f"""\
{NO_COORDINATOR}
nodes:
  worker: {{command: {fake()}}}
  boss: {{command: {fake("--exit=5")}, required: true, pre_delay: 0.3}}
""")
    run = meshlaunch(str(path))
    assert run.wait() == 5
    assert "boss exited (status 5); it is required, so the launch ends" in run.output
    assert wait_gone(run.all_pids()) == []


def test_env_and_cwd(write_launch, meshlaunch, tmp_path):
    (tmp_path / "work").mkdir()
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    path = write_launch(f"""\
{NO_COORDINATOR}
x-common: &common
  FOO: from-anchor
nodes:
  a:
    command: {fake("--exit=0")}
    cwd: work
    env:
      <<: *common
      NUMBER: 42
      REMOVE_ME: null
  b:
    command: {fake("--exit=0")}
""")
    run = meshlaunch(str(path), cwd=str(elsewhere), env={"REMOVE_ME": "x", "FOO": "outer"})
    assert run.wait() == 0
    a, b = sorted(run.fakenodes(), key=lambda r: r["env"]["MESHLAUNCH_NODE"])
    assert a["cwd"] == str(tmp_path / "work")  # relative to the launch file, not to meshlaunch
    assert a["env"]["FOO"] == "from-anchor" and a["env"]["NUMBER"] == "42"
    assert a["env"]["REMOVE_ME"] is None
    assert b["cwd"] == str(elsewhere)  # default: meshlaunch's own folder
    assert b["env"]["FOO"] == "outer" and b["env"]["REMOVE_ME"] == "x"


def test_one_sigint_leaves_no_process_behind(write_launch, meshlaunch):
    """A shell command with a background child (which ignores SIGINT, as background jobs of
    a shell do), a node with its own child, a node that ignores SIGINT (needs SIGTERM), one
    that ignores SIGTERM too (needs SIGKILL), a real coordinator: all gone after one SIGINT."""
    path = write_launch(f"""\
coordinator: {{host: 127.0.0.1, client_host: 127.0.0.1, port: 0}}
nodes:
  shelly:
    command: 'sleep 300 & echo "CHILD $!"; exec {PYTHON} {FAKENODE} --child'
  stubborn: {{command: {fake("--ignore=INT")}}}
  mule: {{command: {fake("--ignore=INT,TERM")}}}
""")
    run = meshlaunch(str(path), "--grace=1")
    run.wait_for(lambda lines: len(run.fakenodes()) == 3 and len(run.grandchildren()) == 2)
    pids = run.all_pids()
    groups = {r["pgid"] for r in run.fakenodes()}
    assert len(pids) == 6 and all(alive(p) for p in pids)
    # port 0: the real port, read from the coordinator, reached the nodes (through the shell too)
    port = run.wait_for("listening on 127.0.0.1:").split("listening on 127.0.0.1:")[1].split()[0]
    shelly = next(r for r in run.fakenodes() if r["env"]["MESHLAUNCH_NODE"] == "shelly")
    assert shelly["argv"] == ["--child", "--name", "shelly", "--coordinator", f"127.0.0.1:{port}"]
    t0 = time.monotonic()
    run.signal(signal.SIGINT)
    assert run.wait(timeout=30) == 0
    assert time.monotonic() - t0 < 15
    assert wait_gone(pids, timeout=5) == []
    for pgid in groups:  # nothing at all is left in any group meshlaunch created
        left = [
            int(p)
            for p in os.listdir("/proc")
            if p.isdigit() and alive(int(p)) and _pgid(int(p)) == pgid
        ]
        assert not left, f"group {pgid} still has {left}"
    out = run.output
    assert "stubborn, mule: still running 1 s after SIGINT; sent SIGTERM" in out
    assert "mule: still running 2 s after SIGTERM; sent SIGKILL" in out
    assert "mule needed SIGKILL" in out


def _pgid(pid: int) -> int | None:
    try:
        return os.getpgid(pid)
    except ProcessLookupError:
        return None


def test_second_sigint_kills_at_once(write_launch, meshlaunch):
    path = write_launch(f"""\
{NO_COORDINATOR}
nodes:
  mule: {{command: {fake("--ignore=INT,TERM")}}}
""")
    run = meshlaunch(str(path), "--grace=60")
    run.wait_for("FAKENODE")
    pids = run.all_pids()
    run.signal(signal.SIGINT)
    run.wait_for("stopping everything")
    run.signal(signal.SIGINT)
    assert run.wait(timeout=15) == 0
    assert "second SIGINT" in run.output
    assert wait_gone(pids) == []


def test_coordinator_death_ends_the_launch(write_launch, meshlaunch):
    path = write_launch(f"""\
coordinator: {{host: 127.0.0.1, client_host: 127.0.0.1, port: 0}}
nodes:
  a: {{command: {fake()}}}
""")
    run = meshlaunch(str(path))
    run.wait_for("FAKENODE")
    os.kill(run.started()["coordinator"][0], signal.SIGKILL)
    assert run.wait() == 1
    assert "the coordinator exited unexpectedly (killed by SIGKILL)" in run.output
    assert wait_gone(run.all_pids()) == []


def test_processes_left_behind_by_an_exited_node_are_stopped(write_launch, meshlaunch):
    path = write_launch(f"""\
{NO_COORDINATOR}
nodes:
  parent:
    command: 'sleep 300 & echo "CHILD $!"; exec {PYTHON} {FAKENODE} --exit=0'
  keeper: {{command: {fake()}}}
""")
    run = meshlaunch(str(path))
    run.wait_for("parent left processes behind in its group; sent SIGTERM")
    assert wait_gone(run.grandchildren(), timeout=5) == []
    assert run.proc.poll() is None  # keeper still runs, so does the launch
    run.signal(signal.SIGINT)
    assert run.wait() == 0
    assert wait_gone(run.all_pids()) == []
